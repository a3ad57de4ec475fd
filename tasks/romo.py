"""Romo delayed frequency comparison, as Schuessler et al. (2020) implemented it.

Time is in units of tau (tau = 1, dt = 0.5, so alpha = 0.5). One trial (durations in tau)::

    fixation 3 | f1 1 | delay U[2, 8] per trial | f2 1 | decision delay 5 | decision 10 | padding
    fixed length t_max = 3 + 1 + 8 + 1 + 5 + 10 = 28 tau -> T = 56 steps

Input: one channel, ``f1`` during the first stimulus, ``f2`` during the second, 0 elsewhere, with
``f1, f2 ~ U[0.5, 1.5]`` redrawn until ``|f1 - f2| >= min_diff``. Output: two channels; during the
decision window the target is 0.5 on the channel of the larger stimulus (0 if f1 > f2) and 0 on the
other. Mask: both channels in the decision window, and (``fixate``) every step from 0 to the end of f2,
where the target is 0. The decision-delay steps and the padding are unmasked. Loss: masked MSE.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.base import Task


@dataclasses.dataclass(repr=False)
class RomoTask(Task):
    """Romo task (Schuessler et al. 2020); see the module docstring for the timing and the loss."""

    batch_size: int = 32
    seed: int = 0
    dt: float = 0.5
    tau: float = 1.0
    fixation: float = 3.0
    stimulus: float = 1.0
    delay_min: float = 2.0
    delay_max: float = 8.0
    decision_delay: float = 5.0
    decision: float = 10.0
    f_min: float = 0.5
    f_max: float = 1.5
    min_diff: float = 0.2
    target_level: float = 0.5
    fixate: bool = True

    name = "romo"
    loss_kind = "mse"
    time_unit = "tau"
    n_in = 1
    n_out = 2

    def __post_init__(self):
        Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)
        for field in ("fixation", "stimulus", "decision_delay", "decision"):
            if getattr(self, field) < 0:
                raise NeurorateError(f"romo: {field} must be >= 0, got {getattr(self, field)}")
        if not (0 <= self.delay_min <= self.delay_max):
            raise NeurorateError(f"romo: need 0 <= delay_min <= delay_max, got {self.delay_min}, {self.delay_max}")
        if not (self.f_max - self.f_min > self.min_diff >= 0):
            raise NeurorateError("romo: need f_max - f_min > min_diff >= 0")
        self._steps = lambda d: int(d / self.dt + 1e-9)
        t_max = (self.fixation + 2 * self.stimulus + self.delay_max + self.decision_delay + self.decision)
        self.n_steps = self._steps(t_max)

    def _generate(self, rng: np.random.Generator, batch_size: int):
        b = batch_size
        f1 = rng.uniform(self.f_min, self.f_max, b)
        f2 = rng.uniform(self.f_min, self.f_max, b)
        bad = np.abs(f1 - f2) < self.min_diff
        while bad.any():  # redraw both frequencies of a too-similar pair, as Schuessler's generator does
            f1[bad] = rng.uniform(self.f_min, self.f_max, bad.sum())
            f2[bad] = rng.uniform(self.f_min, self.f_max, bad.sum())
            bad = np.abs(f1 - f2) < self.min_diff
        delay = rng.uniform(self.delay_min, self.delay_max, b)

        s = self._steps
        t = np.arange(self.n_steps)[:, None]  # (T, 1)
        n_fix, n_stim, n_dd, n_dec = s(self.fixation), s(self.stimulus), s(self.decision_delay), s(self.decision)
        n_delay = (delay / self.dt + 1e-9).astype(np.int64)  # int(delay / dt) steps, per trial
        on1 = n_fix
        on2 = on1 + n_stim + n_delay  # (B,)
        end2 = on2 + n_stim
        dec_on = end2 + n_dd
        dec_off = dec_on + n_dec

        x = np.zeros((self.n_steps, b, 1), dtype=np.float32)
        x[..., 0] = np.where((t >= on1) & (t < on1 + n_stim), f1, 0.0) + np.where((t >= on2) & (t < end2), f2, 0.0)
        in_decision = (t >= dec_on) & (t < dec_off)  # (T, B)
        target = np.zeros((self.n_steps, b, 2), dtype=np.float32)
        choice = np.where(f1 > f2, 0, 1)
        target[..., 0] = np.where(in_decision & (choice == 0), self.target_level, 0.0)
        target[..., 1] = np.where(in_decision & (choice == 1), self.target_level, 0.0)
        masked = in_decision | ((t < end2) if self.fixate else False)
        mask = np.repeat(masked[..., None], 2, axis=-1).astype(np.float32)
        return x, target, mask
