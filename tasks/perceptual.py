"""Perceptual decision making ("2AF"), following neurogym 2.3.1 ``PerceptualDecisionMaking-v0``.

A two-alternative forced choice on a noisy two-unit ring stimulus. Time is in milliseconds. One trial::

    fixation 100 | stimulus 2000 | delay 0 | decision 100    (dt = 100 -> 1 + 20 + 0 + 1 = 22 steps)

Durations are floored to a multiple of ``dt`` and period ``p`` covers steps ``[int(start_p/dt), int(end_p/dt))``,
as in neurogym. ``timing="short"`` is the one-trial-per-sequence variant of Liu et al. (rich/lazy code):
fixation 0, stimulus 700, delay 0, decision 100 (8 steps).

Inputs, 3 channels (float32):

* channel 0, fixation: 1 during the fixation period, 0 elsewhere;
* channels 1-2, ring units at ``theta = (0, pi)``: during the stimulus period
  ``cos(theta - theta_gt) * coh / 200 + 0.5 + N(0, (sigma / sqrt(dt))^2)``, with ``dt`` in ms (neurogym's
  noise convention: ``sigma = 1`` gives a standard deviation of 0.1 at dt = 100 ms); 0 elsewhere.

Per trial, ``gt ~ U{0, 1}`` (choice index, ``theta_gt = pi * gt``) and ``coh ~ U{0, 6.4, 12.8, 25.6, 51.2}``.
Labels, 3 classes (loss "ce"): 0 (fixate) outside the decision period, ``gt + 1`` during it. Mask: 1 on every
step (neurogym / nn-brain train the fixate labels too), or only on the decision steps with ``fixate=False``.

Layout. Unlike ``neurogym.Dataset``, which streams concatenated trials from per-column environments whose
first batches are not reproducible, batch ``i`` here holds one whole trial per column (T = trial length), drawn
from a generator seeded by (seed, i): reproducible bit for bit, and trial-aligned so the state can be reset at
every trial and the decision step sits at a fixed index. ``seq_len=L`` instead concatenates
``ceil(L / trial length)`` independent trials per column and keeps the first L steps (neurogym's streaming
layout, e.g. R1's ``seq_len=100``).

The network time constant defaults to neurogym's 100 ms, so ``alpha = dt / tau = 1``: the leaky network is then
a plain (non-leaky) RNN. Pass e.g. ``tau=200`` or ``dt=20`` for a leaky network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.ring import RingTask

PERIODS = ("fixation", "stimulus", "delay", "decision")
TIMINGS = {
    "default": {"fixation": 100.0, "stimulus": 2000.0, "delay": 0.0, "decision": 100.0},
    "short": {"fixation": 0.0, "stimulus": 700.0, "delay": 0.0, "decision": 100.0},
}


@dataclasses.dataclass(repr=False)
class PerceptualDecisionTask(RingTask):
    """Two-alternative perceptual decision task (neurogym ``PerceptualDecisionMaking-v0``).

    The fields of :class:`~neurorate.tasks.ring.RingTask` (batch_size, seed, dt, tau, timing, sigma, seq_len,
    fixate), and

    Parameters
    ----------
    cohs : coherences, drawn uniformly per trial.
    """

    cohs: tuple = (0.0, 6.4, 12.8, 25.6, 51.2)

    name = "2af"
    PERIODS = PERIODS
    TIMINGS = TIMINGS

    def check_options(self) -> None:
        self.cohs = tuple(float(c) for c in self.cohs)
        if not self.cohs or any(not (0 <= c <= 100) for c in self.cohs):
            raise NeurorateError(f"2af: cohs must be a non-empty list of coherences in [0, 100], got {self.cohs}")

    def trials(self, ground_truth, coh, rng: np.random.Generator | None = None):
        """Trials with given choices and coherences: ``x (L, n, 3)``, ``labels (L, n)``, ``mask (L, n)``.

        Parameters
        ----------
        ground_truth : (n,) choice indices in {0, 1} (neurogym's ``trial["ground_truth"]``); label = index + 1.
        coh : (n,) coherences.
        rng : the noise generator; None gives noiseless inputs (as neurogym with ``sigma=0``).
        """
        gt = np.asarray(ground_truth, dtype=np.int64).reshape(-1)
        coh = np.broadcast_to(np.asarray(coh, dtype=np.float64), gt.shape)
        if gt.size and not np.isin(gt, (0, 1)).all():
            raise NeurorateError("2af: ground_truth must be 0 or 1")
        f0, f1 = self.periods["fixation"]
        theta = np.array([0.0, np.pi])
        stim = np.cos(theta[None, :] - theta[gt][:, None]) * (coh / 200)[:, None] + 0.5  # (n, 2)
        x = np.zeros((self.trial_steps, gt.size, 3), dtype=np.float32)
        x[f0:f1, :, 0] = 1.0
        self.stimulate(x, "stimulus", stim, rng)
        labels, mask = self.labels_and_mask(gt + 1)
        return x, labels, mask

    def draw(self, rng: np.random.Generator, n: int) -> tuple:
        """Choices ``gt ~ U{0, 1}`` and coherences ``coh ~ U(cohs)`` of ``n`` trials."""
        gt = rng.integers(0, 2, n)
        coh = np.asarray(self.cohs)[rng.integers(0, len(self.cohs), n)]
        return gt, coh

    def hypotheses(self) -> list[tuple[tuple, int, float]]:
        """Every trial type ``draw`` can produce, as ``(variables of trials(), answer label, probability)``: each
        choice with each coherence, equally likely (for :func:`neurorate.tasks.bayes.bayes_accuracy`)."""
        p = 1.0 / (2 * len(self.cohs))
        return [((np.array([gt]), np.array([c])), gt + 1, p) for gt in (0, 1) for c in self.cohs]

    def _extra_config(self) -> dict[str, Any]:
        out = super()._extra_config()
        out["cohs"] = list(self.cohs)
        return out
