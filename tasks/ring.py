"""The skeleton shared by the neurogym-style ring tasks (2AF in :mod:`neurorate.tasks.perceptual`, DMS in
:mod:`neurorate.tasks.dms`).

Both follow neurogym 2.3.1: time in milliseconds, a trial made of named periods whose durations are floored to a
multiple of ``dt`` (period ``p`` covers steps ``[int(start_p/dt), int(end_p/dt))``), three input channels
(fixation and two ring units at ``theta = (0, pi)``), stimulus noise ``N(0, (sigma / sqrt(dt))^2)`` per step,
three classes (0 = fixate outside the decision period), and one seeded, trial-aligned trial per batch column
(or ``seq_len`` steps of consecutive trials per column, neurogym's streaming layout).

A ring task is a dataclass with the fields ``batch_size, seed, dt, tau, timing, sigma, seq_len, fixate`` (plus
its own), the class attributes ``PERIODS`` and ``TIMINGS``, and two methods: :meth:`RingTask.draw` (the trial
variables of ``n`` trials, drawn from the batch's generator) and ``trials(*variables, rng)`` (the arrays of those
trials). Everything else (validation, periods, batch layout, noise, labels, mask, config) is here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.base import Task


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
class RingTask(Task):
    """Base of the neurogym-style ring tasks (see the module docstring); subclasses are dataclasses.

    Parameters
    ----------
    batch_size : trials (columns) per batch.
    seed : seed of the batch stream.
    dt : time step in ms (neurogym default 100).
    tau : network time constant in ms; the default 100 gives ``alpha = 1`` (no leak).
    timing : a preset name of the subclass's ``TIMINGS`` ("default", "short") or a dict of durations (ms)
        overriding the default ones.
    sigma : input noise, standard deviation ``sigma / sqrt(dt)`` per step (neurogym's convention, dt in ms).
    seq_len : None for one trial per column; else the steps per column, filled with consecutive trials.
    fixate : mask the fixate labels too (True, as neurogym) or only the decision steps (False).

    Attributes
    ----------
    periods : ``{period: (first step, end step)}`` of one trial.
    trial_steps : steps of one trial.
    durations : ``{period: duration in ms}`` before flooring to ``dt``.
    """

    batch_size: int = 16
    seed: int = 0
    dt: float = 100.0
    tau: float = 100.0
    timing: str | dict = "default"
    sigma: float = 1.0
    seq_len: int | None = None
    fixate: bool = True

    PERIODS: ClassVar[tuple[str, ...]]
    TIMINGS: ClassVar[dict[str, dict[str, float]]]
    loss_kind = "ce"
    time_unit = "ms"
    n_in = 3
    n_out = 3

    def __post_init__(self):
        Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)
        check_common(self.name, self.seq_len, self.sigma)
        self.check_options()
        self.durations = resolve_timing(self.name, self.timing, self.TIMINGS, self.PERIODS)
        self.periods, self.trial_steps = period_bounds(self.durations, self.PERIODS, self.dt)
        if self.periods["decision"][1] <= self.periods["decision"][0]:
            raise NeurorateError(f"{self.name}: the decision period is shorter than dt={self.dt} ms")
        self.n_steps = self.trial_steps if self.seq_len is None else int(self.seq_len)

    def check_options(self) -> None:
        """Validate the subclass's own options (raise :class:`NeurorateError`); nothing by default."""

    def draw(self, rng: np.random.Generator, n: int) -> tuple:
        """The trial variables of ``n`` trials (the positional arguments of ``trials``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def stimulate(self, x: np.ndarray, period: str, stim: np.ndarray, rng: np.random.Generator | None) -> None:
        """Write the ring stimulus ``stim (n, 2)`` into channels 1-2 of ``x`` during ``period``, plus noise."""
        s0, s1 = self.periods[period]
        x[s0:s1, :, 1:] = stim.astype(np.float32)
        if rng is not None and s1 > s0:
            noise = rng.standard_normal((s1 - s0, x.shape[1], 2)) * (self.sigma / math.sqrt(self.dt))
            x[s0:s1, :, 1:] = x[s0:s1, :, 1:] + noise  # float32 + float64 noise, stored as float32 (as neurogym)

    def labels_and_mask(self, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(L, n)``: 0 outside the decision period, ``answer`` during it; the mask of every step, or of
        the decision steps only when ``fixate`` is False."""
        d0, d1 = self.periods["decision"]
        labels = np.zeros((self.trial_steps, answer.size), dtype=np.int64)
        labels[d0:d1] = answer
        mask = (np.ones((self.trial_steps, answer.size), dtype=np.float32) if self.fixate
                else (labels > 0).astype(np.float32))
        return labels, mask

    def _generate(self, rng: np.random.Generator, batch_size: int):
        per_column = 1 if self.seq_len is None else -(-self.seq_len // self.trial_steps)
        variables = self.draw(rng, per_column * batch_size)
        x, labels, mask = self.trials(*variables, rng if self.sigma > 0 else None)
        return tuple(concatenate_trials([x, labels, mask], batch_size, self.seq_len))

    def _extra_config(self) -> dict[str, Any]:
        out = super()._extra_config()
        out.update(durations=self.durations, periods=dict(self.periods), trial_steps=self.trial_steps)
        return out
