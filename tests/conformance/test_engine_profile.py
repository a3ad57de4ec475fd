"""The torch backend under an engine profile (backends/torch/engine_profile.py, profile loihi2-engine).

* the compiled trial equals the numpy path through neurorate.hardware.engine integer for integer;
* with the engine's widths made wide, one trial's weight change is float e-prop's (same starting weights);
* at the chip's widths the change correlates with e-prop's (the engine's rounding is what remains);
* what the engine view does not train is refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend, stack
from neurorate.backends.torch import engine_profile as EP
from neurorate.errors import NeurorateError
from neurorate.hardware.profiles import load_profile
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.romo import RomoTask

WIDE = dict(trace_bits=16, tag_bits=24, weight_bits=16, trace_frac=14, state_frac=16, message_frac=12, frac_bits=16,
            exponent_min=-16)


def _specs(n=16, gains=(0.5, 1.5), seeds=(0, 1)):
    return [NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=g, seed=s, activation="relu", input_bias=False)
            for g in gains for s in seeds]


def _nets(specs, over=None, rule="eprop", lr=0.2):
    spec = load_profile("loihi2-engine").engine
    if over:
        spec = spec.model_copy(update=over)
    ens = stack(specs, torch.float64, torch.device("cpu"))
    return EP.EngineNetworks(ens, spec, rule), ens


def _trial(task, i, m):
    x, t, k = task.batch(i)
    rep = lambda a: np.broadcast_to(a[None, :, 0], (m,) + a[:, 0].shape).copy()  # noqa: E731
    return rep(x), rep(t), rep(k)


@pytest.mark.parametrize("rule", ["eprop", "eprop_random"])
def test_compiled_trial_equals_numpy_engine_path(rule):
    """Three trials of four networks (N = 16): outputs, W_rec, W_in, V, b, c equal as integers."""
    specs = _specs()
    task = RomoTask(batch_size=1, seed=3)
    pair = [_nets(specs, rule=rule)[0] for _ in range(2)]
    x, t, k = _trial(task, 0, len(specs))
    norm = k.reshape(len(specs), -1).sum(1)
    for n in pair:
        n.calibrate(x, t, k, np.full(len(specs), 0.2), norm)
    pair[1].compiled = False
    for i in range(3):
        x, t, k = _trial(task, i, len(specs))
        ya, yb = pair[0].trial(x, t, k), pair[1].trial(x, t, k)
        assert np.array_equal(ya, yb)
    for name in ("w_rec", "w_in", "w_out", "b", "b_out"):
        assert np.array_equal(getattr(pair[0], name), getattr(pair[1], name)), name
    start = _nets(specs, rule=rule)[0]
    assert np.abs(pair[0].w_rec - start.w_rec).sum() > 0  # it learned


def _float_eprop_dw(nets, x, t, k, lr):
    """Float e-prop (form A, ReLU, symmetric feedback) of one trial from the engine's starting weights: dW_rec."""
    p = nets.float_params()
    m, n = nets.m, nets.n
    al = nets._alpha[:, None]
    a, r, rbar = np.zeros((m, n)), np.zeros((m, n)), np.zeros((m, n))
    g = np.zeros((m, n, n))
    for s in range(x.shape[1]):
        rbar = (1 - al) * rbar + al * r
        a = (1 - al) * a + al * (np.einsum("mij,mj->mi", p["w_rec"], r) + np.einsum("mij,mj->mi", p["w_in"], x[:, s])
                                 + p["b"].reshape(m, -1))
        r = np.maximum(a, 0)
        y = np.einsum("mij,mj->mi", p["w_out"], r) + p["b_out"].reshape(m, -1)
        e = np.einsum("mji,mj->mi", p["w_out"], k[:, s] * (y - t[:, s])) * (a > 0)
        g += e[:, :, None] * rbar[:, None, :]
    norm = k.reshape(m, -1).sum(1)[:, None, None]
    return -np.asarray(lr)[:, None, None] * g / norm


def test_wide_engine_computes_eprop_and_chip_engine_approximates_it():
    """Wide widths: one trial's dW_rec is e-prop's (corr > 0.999, mean |dW| within 10 %); chip widths: the same
    direction (corr > 0.4) with the 9-bit weights' rounding on top."""
    specs = _specs(n=32, gains=(1.0, 1.5), seeds=(0,))
    task = RomoTask(batch_size=1, seed=3)
    x, t, k = _trial(task, 0, len(specs))
    norm = k.reshape(len(specs), -1).sum(1)
    lr = np.full(len(specs), 0.2)
    for over, corr_min in ((WIDE, 0.999), ({}, 0.4)):
        nets, _ = _nets(specs, over)
        nets.calibrate(x, t, k, lr, norm)
        want = _float_eprop_dw(nets, x, t, k, lr * nets.lr_eff["w_rec"] / lr)
        w0 = nets.w_rec.copy()
        nets.trial(x, t, k)
        got = (nets.w_rec - w0) * np.ldexp(1.0, -nets.e_rec)[:, None, None]
        for j in range(len(specs)):
            c = np.corrcoef(got[j].ravel(), want[j].ravel())[0, 1]
            assert c > corr_min, (over, j, c)
            if over:
                ratio = np.abs(got[j]).mean() / np.abs(want[j]).mean()
                assert 0.9 < ratio < 1.1, ratio


def test_engine_profile_trains_through_nr_train():
    """nr.train with the profile: integer weights on their grids, a report of the frozen scales per network."""
    specs = _specs(n=8, gains=(1.5,), seeds=(0,))
    res = nr.train(specs[0], RomoTask(batch_size=1, seed=0), rule="eprop", iterations=5, lr=0.2, optimizer="sgd",
                   profile="loihi2-engine", lyapunov=False, progress=False, dtype="float64")
    run = TorchBackend(dtype="float64").train(specs, RomoTask(batch_size=1, seed=0), "eprop", iterations=5,
                                              lr=0.2, optimizer="sgd", profile="loihi2-engine", progress=False)[0]
    rep = run.extra["engine"]
    step = 2.0 ** -rep["weight_frac"]["w_rec"]
    w = np.asarray(run.spec.w_rec) / step
    assert np.array_equal(w, np.round(w)) and np.abs(w).max() <= 256
    assert np.isfinite(run.losses).all()
    assert np.allclose(np.asarray(res.spec.w_rec), np.asarray(run.spec.w_rec))


@pytest.mark.parametrize("kwargs, word", [
    (dict(optimizer="adam"), "optimizer adam"),
    (dict(rule="bptt"), "rule bptt"),
    (dict(batch=4), "batch 4"),
    (dict(activation="tanh"), "activation tanh"),
])
def test_refusals_are_one_line(kwargs, word):
    act = kwargs.pop("activation", "relu")
    spec = NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=1.0, seed=0, activation=act, input_bias=False)
    task = RomoTask(batch_size=kwargs.pop("batch", 1), seed=0)
    opts = dict(rule="eprop", optimizer="sgd", lr=0.1)
    opts.update(kwargs)
    with pytest.raises(NeurorateError) as err:
        TorchBackend(dtype="float64").train([spec], task, opts["rule"], iterations=1, lr=opts["lr"],
                                            optimizer=opts["optimizer"], profile="loihi2-engine", progress=False)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_engine_spec_validation():
    prof = load_profile("loihi2-engine")
    with pytest.raises(ValueError, match="power of two"):
        prof.engine.model_validate({**prof.engine.model_dump(), "epochs": 48})
    assert prof.engine.widths.accumulator_bits == 15


def test_batch_refused_before_anything_is_written(tmp_path):
    spec = NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=1.0, seed=0, activation="relu", input_bias=False)
    out = tmp_path / "run"
    with pytest.raises(NeurorateError, match="batch 32 \\(batch 1 only"):
        nr.train(spec, RomoTask(batch_size=32, seed=0), rule="eprop", iterations=1, lr=0.1, optimizer="sgd",
                 profile="loihi2-engine", lyapunov=False, progress=False, out=out)
    assert not out.exists()


@pytest.mark.parametrize("kwargs, word", [(dict(optimizer="adam"), "optimizer adam"), (dict(rule="rflo"), "rule rflo")])
def test_rule_and_optimizer_refused_before_anything_is_written(tmp_path, kwargs, word):
    spec = NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=1.0, seed=0, activation="relu", input_bias=False)
    out = tmp_path / "run"
    opts = {"rule": "eprop", "optimizer": "sgd", **kwargs}
    with pytest.raises(NeurorateError, match=word):
        nr.train(spec, RomoTask(batch_size=1, seed=0), iterations=1, lr=0.1, profile="loihi2-engine",
                 lyapunov=False, progress=False, out=out, **opts)
    assert not out.exists()
