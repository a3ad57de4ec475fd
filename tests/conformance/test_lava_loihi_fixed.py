"""The Lava loihi graph in fixed point (backends/lava/loihi_engine.py, procs/loihi_fixed.py) against the torch
backend's engine view: the same network, trials and frozen scales give the same integers, bit for bit.

Lava's bit-approximate LearningDense draws its stochastic rounding from a fixed-seed stream that the engine view
reproduces (tests/conformance/test_engine_model.py), so the comparison is exact although the weight update rounds
stochastically. N = 8, three Romo trials (256 ticks each).
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from neurorate.backends.torch import engine_profile as EP
from neurorate.backends.torch import stack
from neurorate.hardware.profiles import load_profile
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.romo import RomoTask

lava_missing = pytest.mark.skipif(not importlib.util.find_spec("lava"), reason="lava-nc missing")


@pytest.mark.lava
@lava_missing
@pytest.mark.parametrize("rule, gain", [("eprop", 1.5), ("eprop_random", 1.0)])
def test_lava_fixed_point_graph_equals_torch_engine_view(rule, gain):
    from neurorate.backends.lava import loihi_engine

    spec = NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=gain, seed=1, activation="relu", input_bias=False)
    ens = stack([spec], torch.float64, torch.device("cpu"))
    nets = EP.EngineNetworks(ens, load_profile("loihi2-engine").engine, rule)
    task = RomoTask(batch_size=1, seed=4)
    x, t, k = (a[None, :, 0] for a in task.batch(0))
    nets.calibrate(x, t, k, np.array([0.5]), np.maximum(k.sum(), 1.0)[None])
    start = copy.deepcopy(nets)
    trials = 3
    for i in range(trials):
        x, t, k = (a[None, :, 0] for a in task.batch(i))
        nets.trial(x, t, k)
    lava = loihi_engine.train(copy.deepcopy(start), task, trials)[0]
    torch_side = {"w_in": nets.w_in[0], "w_rec": nets.w_rec[0], "w_out": nets.w_out[0], "b": nets.b[0],
                  "b_out": nets.b_out[0]}
    for name, want in torch_side.items():
        assert np.array_equal(lava[name], want), f"{name}: lava {lava[name].tolist()} vs torch {want.tolist()}"
    moved = {name: int(np.abs(want - getattr(start, name)[0]).sum()) for name, want in torch_side.items()}
    assert moved["w_rec"] > 0 and moved["w_in"] > 0 and moved["w_out"] > 0, moved


@pytest.mark.lava
@lava_missing
def test_nr_train_on_the_loihi_graph_with_the_engine_profile_equals_torch():
    """``nr.train(..., backend="lava", backend_options={"graph": "loihi"}, profile="loihi2-engine")`` trains in fixed
    point: the same weights and losses as the torch backend under the same profile (two networks, two trials)."""
    import neurorate as nr

    specs = [NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=g, seed=2, activation="relu", input_bias=False)
             for g in (0.5, 1.5)]
    common = dict(rule="eprop", iterations=2, lr=0.3, optimizer="sgd", profile="loihi2-engine", lyapunov=False,
                  progress=False, dtype="float64")
    lava = nr.train(specs, RomoTask(batch_size=1, seed=5), backend="lava", backend_options={"graph": "loihi"},
                    **common)
    ref = nr.train(specs, RomoTask(batch_size=1, seed=5), backend="torch", **common)
    for a, b in zip(lava, ref):
        assert np.array_equal(np.asarray(a.losses), np.asarray(b.losses))
        for name in ("w_in", "w_rec", "w_out", "b", "b_out"):
            assert np.array_equal(np.asarray(getattr(a.spec, name)), np.asarray(getattr(b.spec, name))), name
