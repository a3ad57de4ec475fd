"""Delayed match-to-sample ("DMS"), following neurogym 2.3.1 ``DelayMatchSample-v0``.

A sample direction is shown, then after a delay a test direction; the network reports whether they match.
Time is in milliseconds. One trial::

    fixation 300 | sample 500 | delay 1000 | test 500 | decision 900   (dt = 100 -> 3+5+10+5+9 = 32 steps)

Durations are floored to a multiple of ``dt`` and period ``p`` covers steps ``[int(start_p/dt), int(end_p/dt))``,
as in neurogym. ``timing="short"`` is the one-trial-per-sequence variant of Liu et al. (rich/lazy code):
fixation 0, sample 100, delay 500, test 100, decision 100 (8 steps).

Inputs, 3 channels (float32):

* channel 0, fixation: 1 on every step except the decision period (0: the "go" cue);
* channels 1-2, ring units at ``theta = (0, pi)``: ``cos(theta - theta_sample) * 0.5 + 0.5`` during the sample
  period, ``cos(theta - theta_test) * 0.5 + 0.5`` during the test period, each plus N(0, (sigma / sqrt(dt))^2)
  noise (dt in ms, neurogym's convention); 0 elsewhere.

Per trial, ``theta_sample ~ U{0, pi}`` and ``gt ~ U{1, 2}``: 1 = match (``theta_test = theta_sample``),
2 = non-match (``theta_test = theta_sample + pi``). Labels, 3 classes (loss "ce"): 0 (fixate) outside the
decision period, ``gt`` during it. Mask: every step, or only the decision steps with ``fixate=False``.

Layout as in :mod:`neurorate.tasks.perceptual`: one seeded, trial-aligned trial per batch column, or
``seq_len`` steps of consecutive trials per column. The network time constant defaults to neurogym's 100 ms,
so ``alpha = dt / tau = 1`` (no leak) unless ``tau`` or ``dt`` is changed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.ring import RingTask

PERIODS = ("fixation", "sample", "delay", "test", "decision")
TIMINGS = {
    "default": {"fixation": 300.0, "sample": 500.0, "delay": 1000.0, "test": 500.0, "decision": 900.0},
    "short": {"fixation": 0.0, "sample": 100.0, "delay": 500.0, "test": 100.0, "decision": 100.0},
}
MATCH, NON_MATCH = 1, 2


@dataclasses.dataclass(repr=False)
class DelayMatchSampleTask(RingTask):
    """Delayed match-to-sample task (neurogym ``DelayMatchSample-v0``).

    The fields of :class:`~neurorate.tasks.ring.RingTask` (batch_size, seed, dt, tau, timing, sigma, seq_len,
    fixate).
    """

    name = "dms"
    PERIODS = PERIODS
    TIMINGS = TIMINGS

    def trials(self, ground_truth, sample, rng: np.random.Generator | None = None):
        """Trials with given answers and sample directions: ``x (L, n, 3)``, ``labels (L, n)``, ``mask (L, n)``.

        Parameters
        ----------
        ground_truth : (n,) 1 (match) or 2 (non-match), neurogym's ``trial["ground_truth"]``.
        sample : (n,) sample direction index in {0, 1}: ``theta_sample = pi * sample``.
        rng : the noise generator; None gives noiseless inputs (as neurogym with ``sigma=0``).
        """
        gt = np.asarray(ground_truth, dtype=np.int64).reshape(-1)
        sample = np.broadcast_to(np.asarray(sample, dtype=np.int64), gt.shape)
        if gt.size and not (np.isin(gt, (MATCH, NON_MATCH)).all() and np.isin(sample, (0, 1)).all()):
            raise NeurorateError("dms: ground_truth must be 1 or 2 and sample 0 or 1")
        theta = np.array([0.0, np.pi])
        sample_theta = theta[sample]
        test_theta = np.where(gt == MATCH, sample_theta, np.mod(sample_theta + np.pi, 2 * np.pi))
        ring = {
            "sample": np.cos(theta[None, :] - sample_theta[:, None]) * 0.5 + 0.5,
            "test": np.cos(theta[None, :] - test_theta[:, None]) * 0.5 + 0.5,
        }  # (n, 2) each

        x = np.zeros((self.trial_steps, gt.size, 3), dtype=np.float32)
        x[:, :, 0] = 1.0
        d0, d1 = self.periods["decision"]
        x[d0:d1, :, 0] = 0.0
        for period, stim in ring.items():
            self.stimulate(x, period, stim, rng)
        labels, mask = self.labels_and_mask(gt)
        return x, labels, mask

    def hypotheses(self) -> list[tuple[tuple, int, float]]:
        """Every trial type ``draw`` can produce, as ``(variables of trials(), answer label, probability)``: match or
        non-match with each sample direction, equally likely (for :func:`neurorate.tasks.bayes.bayes_accuracy`)."""
        return [((np.array([gt]), np.array([s])), gt, 0.25) for gt in (MATCH, NON_MATCH) for s in (0, 1)]

    def draw(self, rng: np.random.Generator, n: int) -> tuple:
        """Answers ``gt ~ U{MATCH, NON_MATCH}`` and sample directions ``~ U{0, 1}`` of ``n`` trials."""
        gt = rng.integers(MATCH, NON_MATCH + 1, n)
        sample = rng.integers(0, 2, n)
        return gt, sample
