"""The backend abstraction: the same network and the same rules on different engines.

A backend is any object with ``name``, ``simulate``, ``train`` and ``jacobian_vector`` (the
:class:`Backend` protocol) registered under the ``neurorate.backends`` entry-point group; a third party
adds one without touching the core. Every backend must pass the conformance suite
(``tests/test_conformance.py``): same trajectories, same weight updates, same losses.

``train`` of a backend does only the training itself; :func:`neurorate.train` wraps it with the
backend-neutral parts (validation, flossing pre-training and Lyapunov spectra from the shared modules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.learning.registry import BUILTIN_RULES

_BUILTIN_BACKENDS = {
    "torch": "neurorate.backends.torch:TorchBackend",
    "lava": "neurorate.backends.lava:LavaBackend",
}

RULES = tuple(r.name for r in BUILTIN_RULES)
"""Names of the built-in learning rules (derived from :data:`neurorate.learning.BUILTIN_RULES`; their properties
and the rules of plugins: :func:`neurorate.learning.rules`, docs/rules.md)."""

OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class SimResult:
    """Trajectories of M networks: ``states``/``rates`` ``(M, T, B, N)``, ``outputs`` ``(M, T, B, n_out)``,
    ``preacts`` ``(M, T, B, N)`` (a in form A, u in forms B/C)."""

    states: np.ndarray
    rates: np.ndarray
    outputs: np.ndarray
    preacts: np.ndarray


@dataclasses.dataclass
class BackendRun:
    """What a backend's ``train`` returns for one network."""

    spec: Any  # trained NetworkSpec
    losses: np.ndarray  # (iterations,)
    accuracy: np.ndarray  # (iterations,)
    diverged: bool = False
    diverged_at: int | None = None
    wall_time: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What a backend provides (see the module docstring)."""

    name: str

    def simulate(self, specs: list, inputs: np.ndarray, profile: Any = None) -> SimResult:
        """Run the networks on ``inputs (T, B, n_in)`` from the zero state."""

    def train(self, specs: list, task: Any, rule: str, *, iterations: int, lr: list[float], optimizer: str,
              profile: Any = None, progress: bool | None = None,
              callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
              **options: Any) -> list[BackendRun]:
        """Train the networks on ``task`` and return one :class:`BackendRun` per spec."""

    def jacobian_vector(self, spec: Any, state: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The tangent map ``D(state) q`` of one step (docs/theory.md §4.1)."""


def available_backends() -> list[str]:
    """Names accepted by ``backend=`` (built-ins plus entry points)."""
    names = set(_BUILTIN_BACKENDS)
    names.update(ep.name for ep in metadata.entry_points(group="neurorate.backends"))
    return sorted(names)


def get_backend(name: str | Backend, **options: Any) -> Backend:
    """Instantiate a backend by name ("torch", "lava" or a plugin), passing ``options`` to its constructor."""
    if not isinstance(name, str):
        return name
    eps = {ep.name: ep for ep in metadata.entry_points(group="neurorate.backends")}
    if name in eps:
        target = eps[name].value
    elif name in _BUILTIN_BACKENDS:
        target = _BUILTIN_BACKENDS[name]
    else:
        raise NeurorateError(f"unknown backend {name!r}; choose one of {', '.join(available_backends())}")
    import importlib

    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(**options)
