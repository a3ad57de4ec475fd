"""Tasks: seeded batch generators with a loss and a decision accuracy.

A task's batch ``i`` is a pure function of (task config, seed, i): ``x, target, mask = task.batch(i)``
returns numpy arrays ``x (T, B, n_in)`` float32, ``target`` ``(T, B, n_out)`` float32 (loss "mse") or
``(T, B)`` int64 class labels (loss "ce"), and ``mask`` of the target's shape (mse) or ``(T, B)`` (ce).

Tasks are plugins found through the ``neurorate.tasks`` entry point group; ``make_task("romo")``,
``make_task("2af")``, ``make_task("dms")`` and ``make_task("neurogym:<env id>")`` are built in.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Any, ClassVar

import numpy as np

from neurorate.errors import NeurorateError, as_int, as_real

_BUILTIN_TASKS = {
    "romo": "neurorate.tasks.romo:RomoTask",
    "2af": "neurorate.tasks.perceptual:PerceptualDecisionTask",
    "dms": "neurorate.tasks.dms:DelayMatchSampleTask",
    "neurogym": "neurorate.tasks.neurogym_adapter:NeurogymTask",
}


class Task:
    """Base class of every task. Subclasses set the class attributes and implement :meth:`_generate`.

    Attributes
    ----------
    name : registry name ("romo", "2af", ...).
    loss_kind : "mse" or "ce" (see :mod:`neurorate.model.losses`).
    n_in, n_out : input and output channels.
    n_steps : steps T per batch.
    batch_size : trials B per batch.
    seed : the seed of the batch stream.
    dt, tau : time step and unit time constant, in the task's time unit (``time_unit``).
    alpha : the leak ``dt / tau`` a network for this task should use.
    """

    name: ClassVar[str] = "task"
    loss_kind: ClassVar[str] = "mse"
    time_unit: ClassVar[str] = "s"
    n_in: int
    n_out: int
    n_steps: int
    batch_size: int
    seed: int
    dt: float
    tau: float

    def __init__(self, batch_size: int, seed: int, dt: float, tau: float):
        batch_size = as_int(batch_size, "batch size", minimum=1)  # not a bool, a string or a fraction
        seed = as_int(seed, "seed", minimum=0)
        dt, tau = as_real(dt, "dt"), as_real(tau, "tau")
        if not (dt > 0 and tau > 0):
            raise NeurorateError(f"dt and tau must be positive, got dt={dt}, tau={tau}")
        if dt > tau:
            raise NeurorateError(f"dt={dt} > tau={tau} gives alpha = dt/tau > 1; choose dt <= tau")
        self.batch_size, self.seed, self.dt, self.tau = int(batch_size), int(seed), float(dt), float(tau)

    @property
    def alpha(self) -> float:
        """Leak ``dt / tau`` of a network run on this task."""
        return self.dt / self.tau

    @property
    def dt_seconds(self) -> float | None:
        """The step in seconds, or None where the task's time is in units of tau."""
        return self.dt if self.time_unit == "s" else (self.dt / 1000.0 if self.time_unit == "ms" else None)

    def rng(self, i: int) -> np.random.Generator:
        """The generator of batch ``i`` (independent of every other batch and of other seeds)."""
        if int(i) != i or i < 0:
            raise NeurorateError(f"batch index must be a non-negative integer, got {i}")
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(i),)))

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch ``i``: ``(x, target, mask)``, a pure function of (config, seed, i)."""
        return self._generate(self.rng(i), self.batch_size)

    def _generate(self, rng: np.random.Generator, batch_size: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def stream(self, n_trials: int, batch_size: int = 1, seed_offset: int = 10_000) -> np.ndarray:
        """Inputs of ``n_trials`` consecutive trials concatenated in time: ``(n_trials * T, batch_size, n_in)``.

        Drawn from batches ``seed_offset, seed_offset+1, ...`` (disjoint from the training batches) and used
        as the driving input of Lyapunov and flossing runs.
        """
        xs = [self._generate(self.rng(seed_offset + j), batch_size)[0] for j in range(n_trials)]
        return np.concatenate(xs, axis=0)

    def config(self) -> dict[str, Any]:
        """The task's full configuration (JSON-able); together with ``seed`` it fixes every batch."""
        out = {"name": self.name, "loss": self.loss_kind, "n_in": self.n_in, "n_out": self.n_out,
               "n_steps": self.n_steps, "batch_size": self.batch_size, "seed": self.seed,
               "dt": self.dt, "tau": self.tau, "alpha": self.alpha, "time_unit": self.time_unit}
        out.update(self._extra_config())
        return out

    def _extra_config(self) -> dict[str, Any]:
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(batch_size={self.batch_size}, seed={self.seed}, T={self.n_steps}, "
                f"alpha={self.alpha:g})")


def _load(target: str):
    module, _, attr = target.partition(":")
    import importlib

    return getattr(importlib.import_module(module), attr)


def available_tasks() -> list[str]:
    """Names accepted by :func:`make_task` (built-ins plus third-party entry points)."""
    names = set(_BUILTIN_TASKS)
    names.update(ep.name for ep in metadata.entry_points(group="neurorate.tasks"))
    return sorted(names)


def make_task(name: str, batch_size: int | None = None, seed: int = 0, **kwargs) -> Task:
    """Build a task by name: "romo", "2af", "dms", "neurogym:<env id>" or a plugin's name.

    ``batch_size`` defaults to the task's own default (Romo 32, neurogym tasks 16); extra keyword arguments
    (``dt``, ``tau``, timing ...) go to the task's constructor.
    """
    if not isinstance(name, str) or not name:
        raise NeurorateError("task name must be a non-empty string")
    key, _, env_id = name.partition(":")
    key = key.lower()
    eps = {ep.name: ep for ep in metadata.entry_points(group="neurorate.tasks")}
    if key in eps:
        cls = eps[key].load()
    elif key in _BUILTIN_TASKS:
        cls = _load(_BUILTIN_TASKS[key])
    else:
        raise NeurorateError(f"unknown task {name!r}; choose one of {', '.join(available_tasks())} "
                             "or 'neurogym:<env id>'")
    if key == "neurogym":
        if not env_id:
            raise NeurorateError("give the neurogym environment as 'neurogym:<env id>', "
                                 "e.g. neurogym:DelayComparison-v0")
        kwargs["env_id"] = env_id
    elif env_id:
        raise NeurorateError(f"task {key!r} takes no ':<env id>' suffix")
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    try:
        return cls(seed=seed, **kwargs)
    except TypeError as exc:
        raise NeurorateError(f"bad option for task {name!r}: {exc}") from None
