"""The fixed random feedback matrix ``B`` of the random-feedback rules (one recipe for every backend).

A spec made by :meth:`neurorate.model.spec.NetworkSpec.random` carries its ``feedback``; for a spec without
one (``feedback=None``, e.g. built from user arrays) ``B`` is drawn from the spec's seed: the fourth stream
of ``SeedSequence(seed)``, ``U(-1/sqrt(N), 1/sqrt(N))`` -- the draw ``NetworkSpec.random`` makes with
``feedback_init="uniform"``. The torch and Lava backends and the spiking networks all use this function, so
a random-feedback rule computes the same gradient everywhere (docs/rules.md).
"""

from __future__ import annotations

import numpy as np


def feedback_matrix(spec) -> np.ndarray:
    """The spec's fixed random feedback ``B (N, n_out)``, drawn from its seed if the spec has none."""
    if spec.feedback is not None:
        return spec.feedback
    seed = int(spec.init.get("seed", 0))
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])
    k = 1.0 / np.sqrt(spec.n_hidden)
    return rng.uniform(-k, k, (spec.n_hidden, spec.n_out))
