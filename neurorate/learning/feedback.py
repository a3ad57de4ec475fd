"""The fixed random feedback matrix ``B`` of the random-feedback rules (one recipe for every backend).

A spec made by :meth:`neurorate.model.spec.NetworkSpec.random` carries its ``feedback``; for a spec without
one (``feedback=None``, e.g. built from user arrays) ``B`` is drawn from the spec's seed: the fourth stream
of ``SeedSequence(seed)``, ``U(-1/sqrt(N), 1/sqrt(N))`` -- the draw ``NetworkSpec.random`` makes with
``feedback_init="uniform"``. The torch and Lava backends and the spiking networks all use this function, so
a random-feedback rule computes the same gradient everywhere (docs/rules.md).
"""

from __future__ import annotations

import numpy as np

FEEDBACK_INITS = ("uniform", "gaussian")


def draw_feedback(rng: np.random.Generator, n_hidden: int, n_out: int, init: str = "uniform") -> np.ndarray:
    """A random feedback ``B (N, n_out)`` from ``rng``: "uniform" = ``U(+-1/sqrt(N))`` (the readout's scale) or
    "gaussian" = ``N(0, 1/n_out)``. :meth:`neurorate.model.spec.NetworkSpec.random` draws with it."""
    if init == "uniform":
        k = 1.0 / np.sqrt(n_hidden)
        return rng.uniform(-k, k, (n_hidden, n_out))
    if init == "gaussian":
        return rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_out)
    raise ValueError(f"unknown feedback init {init!r}; choose one of {', '.join(FEEDBACK_INITS)}")


def feedback_matrix(spec) -> np.ndarray:
    """The spec's fixed random feedback ``B (N, n_out)``, drawn from its seed if the spec has none."""
    if spec.feedback is not None:
        return spec.feedback
    seed = int(spec.init.get("seed", 0))
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])
    return draw_feedback(rng, spec.n_hidden, spec.n_out)
