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
import math
from typing import Any

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.base import Task

PERIODS = ("fixation", "stimulus", "delay", "decision")
TIMINGS = {
    "default": {"fixation": 100.0, "stimulus": 2000.0, "delay": 0.0, "decision": 100.0},
    "short": {"fixation": 0.0, "stimulus": 700.0, "delay": 0.0, "decision": 100.0},
}


def resolve_timing(task: str, timing: str | dict, presets: dict[str, dict], periods: tuple[str, ...]) -> dict:
    """Durations (ms) of every period: a preset name, or a dict overriding the "default" preset.

    Raises :class:`NeurorateError` on an unknown preset or period, or a negative or non-numeric duration.
    """
    if isinstance(timing, str):
        if timing not in presets:
            raise NeurorateError(
                f"{task}: unknown timing {timing!r}; choose one of {', '.join(presets)} or a dict"
            )
        return dict(presets[timing])
    if not isinstance(timing, dict):
        raise NeurorateError(f"{task}: timing must be a preset name or a dict of durations in ms")
    unknown = set(timing) - set(periods)
    if unknown:
        raise NeurorateError(f"{task}: unknown period(s) {sorted(unknown)} in timing; periods are {periods}")
    out = dict(presets["default"])
    for period, value in timing.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise NeurorateError(f"{task}: duration of {period!r} must be a number >= 0 (ms), got {value!r}")
        out[period] = float(value)
    return out


def period_bounds(durations: dict[str, float], periods: tuple[str, ...], dt: float) -> tuple[dict, int]:
    """Step ranges ``{period: (start, end)}`` and the trial length, with neurogym's rounding.

    Each duration is floored to a multiple of ``dt``; periods follow one another; a period covers steps
    ``int(start / dt)`` to ``int(end / dt)`` (exclusive) and the trial has ``int(t_end / dt)`` steps.
    """
    bounds, t = {}, 0.0
    for period in periods:
        duration = (durations[period] // dt) * dt
        bounds[period] = (int(t / dt), int((t + duration) / dt))
        t = t + duration
    return bounds, int(t / dt)


def concatenate_trials(arrays: list[np.ndarray], batch_size: int, seq_len: int | None) -> list[np.ndarray]:
    """Lay ``n * batch_size`` trials ``(L, n * B, ...)`` out as ``n`` consecutive trials per column, cut at seq_len.

    Trial ``j * B + b`` is the ``j``-th trial of column ``b``. Without ``seq_len`` the arrays are returned as they are.
    """
    if seq_len is None:
        return arrays
    out = []
    for a in arrays:
        length, n = a.shape[0], a.shape[1] // batch_size
        a = a.reshape(length, n, batch_size, *a.shape[2:]).swapaxes(0, 1)
        out.append(np.ascontiguousarray(a.reshape(n * length, batch_size, *a.shape[3:])[:seq_len]))
    return out


def check_common(name: str, seq_len: int | None, sigma: float) -> None:
    """Validate the options the neurogym-style tasks share."""
    if seq_len is not None and (isinstance(seq_len, bool) or int(seq_len) != seq_len or seq_len < 1):
        raise NeurorateError(f"{name}: seq_len must be a positive integer or None, got {seq_len!r}")
    if not sigma >= 0:
        raise NeurorateError(f"{name}: sigma must be >= 0, got {sigma}")


@dataclasses.dataclass(repr=False)
class PerceptualDecisionTask(Task):
    """Two-alternative perceptual decision task (neurogym ``PerceptualDecisionMaking-v0``).

    Parameters
    ----------
    batch_size : trials (columns) per batch.
    seed : seed of the batch stream.
    dt : time step in ms (neurogym default 100).
    tau : network time constant in ms; the default 100 gives ``alpha = 1`` (no leak).
    timing : "default", "short" (R5: stimulus 700, decision 100, no fixation) or a dict of durations (ms)
        overriding the default ones.
    cohs : coherences, drawn uniformly per trial.
    sigma : input noise, standard deviation ``sigma / sqrt(dt)`` per step (neurogym's convention, dt in ms).
    seq_len : None for one trial per column; else the steps per column, filled with consecutive trials.
    fixate : mask the fixate labels too (True, as neurogym) or only the decision steps (False).

    Attributes
    ----------
    periods : ``{period: (first step, end step)}`` of one trial.
    trial_steps : steps of one trial.
    """

    batch_size: int = 16
    seed: int = 0
    dt: float = 100.0
    tau: float = 100.0
    timing: str | dict = "default"
    cohs: tuple = (0.0, 6.4, 12.8, 25.6, 51.2)
    sigma: float = 1.0
    seq_len: int | None = None
    fixate: bool = True

    name = "2af"
    loss_kind = "ce"
    time_unit = "ms"
    n_in = 3
    n_out = 3

    def __post_init__(self):
        Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)
        check_common("2af", self.seq_len, self.sigma)
        self.cohs = tuple(float(c) for c in self.cohs)
        if not self.cohs or any(not (0 <= c <= 100) for c in self.cohs):
            raise NeurorateError(
                f"2af: cohs must be a non-empty list of coherences in [0, 100], got {self.cohs}"
            )
        self.durations = resolve_timing("2af", self.timing, TIMINGS, PERIODS)
        self.periods, self.trial_steps = period_bounds(self.durations, PERIODS, self.dt)
        if self.periods["decision"][1] <= self.periods["decision"][0]:
            raise NeurorateError(f"2af: the decision period is shorter than dt={self.dt} ms")
        self.n_steps = self.trial_steps if self.seq_len is None else int(self.seq_len)

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
        n, (f0, f1), (s0, s1), (d0, d1) = (
            gt.size,
            *(self.periods[p] for p in ("fixation", "stimulus", "decision")),
        )
        theta = np.array([0.0, np.pi])
        stim = np.cos(theta[None, :] - theta[gt][:, None]) * (coh / 200)[:, None] + 0.5  # (n, 2)
        x = np.zeros((self.trial_steps, n, 3), dtype=np.float32)
        x[f0:f1, :, 0] = 1.0
        x[s0:s1, :, 1:] = stim.astype(np.float32)
        if rng is not None and s1 > s0:
            noise = rng.standard_normal((s1 - s0, n, 2)) * (self.sigma / math.sqrt(self.dt))
            x[s0:s1, :, 1:] = (
                x[s0:s1, :, 1:] + noise
            )  # float32 + float64 noise, stored as float32 (as neurogym)
        labels = np.zeros((self.trial_steps, n), dtype=np.int64)
        labels[d0:d1] = gt + 1
        mask = (
            np.ones((self.trial_steps, n), dtype=np.float32)
            if self.fixate
            else (labels > 0).astype(np.float32)
        )
        return x, labels, mask

    def _generate(self, rng: np.random.Generator, batch_size: int):
        per_column = 1 if self.seq_len is None else -(-self.seq_len // self.trial_steps)
        n = per_column * batch_size
        gt = rng.integers(0, 2, n)
        coh = np.asarray(self.cohs)[rng.integers(0, len(self.cohs), n)]
        x, labels, mask = self.trials(gt, coh, rng if self.sigma > 0 else None)
        x, labels, mask = concatenate_trials([x, labels, mask], batch_size, self.seq_len)
        return x, labels, mask

    def _extra_config(self) -> dict[str, Any]:
        out = super()._extra_config()
        out.update(
            cohs=list(self.cohs),
            durations=self.durations,
            periods=dict(self.periods),
            trial_steps=self.trial_steps,
        )
        return out
