"""Conformance suite: every backend must reproduce the same trajectories, weight updates and losses.

The oracle is a per-step float64 loop over the equations of :mod:`neurorate.model.dynamics` and
:mod:`neurorate.model.losses` (written once, independent of every backend). Backends are parametrised by name:
"torch" and "lava" today; a third party adds theirs with ``NEURORATE_CONFORMANCE_BACKENDS=name[,name]``
(constructor options in ``BACKEND_OPTIONS``). Tolerance: 1e-5 relative to the largest reference value.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest
import torch

from neurorate.backends.base import get_backend
from neurorate.model import dynamics as dyn
from neurorate.model import losses
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.base import Task

RTOL = 1e-5
BACKEND_OPTIONS = {"torch": {"dtype": "float64", "device": "cpu"}}
_HAS_LAVA = importlib.util.find_spec("lava") is not None
_lava = pytest.param("lava", marks=[pytest.mark.lava, pytest.mark.skipif(not _HAS_LAVA, reason="lava-nc missing")])
BACKENDS = ["torch", _lava] + [b for b in os.environ.get("NEURORATE_CONFORMANCE_BACKENDS", "").split(",") if b]


def backend(name: str):
    return get_backend(name, **BACKEND_OPTIONS.get(name, {}))


@dataclasses.dataclass(repr=False)
class RandomTask(Task):
    """Random inputs, targets and masks (loss "mse") or labels (loss "ce"); a pure function of (seed, i)."""

    batch_size: int = 3
    seed: int = 0
    n_steps: int = 104
    n_in: int = 2
    n_out: int = 2
    kind: str = "mse"
    dt: float = 1.0
    tau: float = 2.0

    name = "random"

    def __post_init__(self):
        Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)
        self.loss_kind = self.kind

    def _generate(self, rng, b):
        x = rng.normal(size=(self.n_steps, b, self.n_in)).astype(np.float32)
        if self.kind == "mse":
            target = rng.uniform(-0.5, 0.5, (self.n_steps, b, self.n_out)).astype(np.float32)
            mask = (rng.uniform(size=target.shape) < 0.6).astype(np.float32)
        else:
            target = rng.integers(0, self.n_out, (self.n_steps, b)).astype(np.int64)
            mask = (rng.uniform(size=target.shape) < 0.8).astype(np.float32)
        return x, target, mask


def oracle(spec: NetworkSpec, task: Task, rule: str, iterations: int, lr: float):
    """Per-step SGD training with on-line traces, straight from dynamics.py. Returns (weights, losses)."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
    w = {"w_in": t(spec.w_in), "w_rec": t(spec.w_rec), "w_out": t(spec.w_out), "b": t(spec.b), "b_out": t(spec.b_out)}
    fb = t(spec.feedback)
    f, fp = dyn.activation(spec.activation)
    hist = []
    for it in range(iterations):
        x, target, mask = task.batch(it)
        x, mask = t(x), t(mask)
        target = torch.as_tensor(target) if task.loss_kind == "ce" else t(target)
        norm = losses.normalizer(task.loss_kind, target, mask)
        traces = dyn.init_traces(spec.form, 1, x.shape[1], spec.n_hidden, spec.n_in, x)
        traces = dyn.Traces(*(tr[0] for tr in traces))
        grads = {k: torch.zeros_like(v) for k, v in w.items()}
        state = torch.zeros(x.shape[1], spec.n_hidden, dtype=torch.float64)
        ys = []
        for k in range(x.shape[0]):
            pre_prev = dyn.rate(state, spec.form, f)
            state, pre = dyn.step(state, dyn.drive(x[k], w["w_in"], w["b"]), w["w_rec"], spec.alpha, spec.form, f)
            psi = fp(pre)
            traces = dyn.trace_step(traces, spec.form, spec.alpha, pre_prev, x[k], psi)
            r = dyn.rate(state, spec.form, f)
            y = dyn.readout(r, w["w_out"], w["b_out"])
            ys.append(y)
            g = losses.output_grad(task.loss_kind, y, target[k], mask[k], norm)
            feedback = w["w_out"].T if rule in ("eprop", "eprop_online") else fb
            d = dyn.trace_gradients(traces, spec.form, dyn.learning_signal(g, feedback), psi)
            for name, dd in zip(("w_rec", "w_in", "b"), d):
                grads[name] += dd
            grads["w_out"] += g.T @ r
            grads["b_out"] += g.sum(0)
        hist.append(float(losses.loss(task.loss_kind, torch.stack(ys), target, mask)))
        for name in w:
            w[name] = w[name] - lr * grads[name]
    return {k: v.numpy() for k, v in w.items()}, np.array(hist)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _simulate_oracle(spec: NetworkSpec, x: np.ndarray):
    f, _ = dyn.activation(spec.activation)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)
    state = torch.zeros(x.shape[1], spec.n_hidden, dtype=torch.float64)
    out = {"states": [], "rates": [], "outputs": [], "preacts": []}
    for k in range(x.shape[0]):
        state, pre = dyn.step(state, dyn.drive(t(x[k]), t(spec.w_in), t(spec.b)), t(spec.w_rec), spec.alpha,
                              spec.form, f)
        r = dyn.rate(state, spec.form, f)
        for key, val in (("states", state), ("rates", r), ("preacts", pre),
                         ("outputs", dyn.readout(r, t(spec.w_out), t(spec.b_out)))):
            out[key].append(val.numpy())
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("name", BACKENDS)
def test_float_trajectories_match_oracle(name):
    specs = [NetworkSpec.random(n_in=2, n_hidden=12, n_out=3, gain=g, seed=s, form=form, activation=act, alpha=a)
             for g, s, form, act, a in ((1.5, 0, "A", "tanh", 0.5), (0.8, 1, "A", "tanh", 0.3))]
    x = np.random.default_rng(1).normal(size=(120, 3, 2))
    res = backend(name).simulate(specs, x)
    for j, spec in enumerate(specs):
        ref = _simulate_oracle(spec, x)
        for key in ("states", "rates", "outputs", "preacts"):
            assert rel_err(getattr(res, key)[j], ref[key]) < RTOL, (name, j, key)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("form,activation", [("B", "relu"), ("C", "tanh")])
def test_float_trajectories_forms_b_c(name, form, activation):
    spec = NetworkSpec.random(n_in=2, n_hidden=10, n_out=2, gain=1.3, seed=3, form=form, activation=activation)
    x = np.random.default_rng(2).normal(size=(100, 2, 2))
    res = backend(name).simulate([spec], x)
    ref = _simulate_oracle(spec, x)
    for key in ("states", "outputs", "preacts"):
        assert rel_err(getattr(res, key)[0], ref[key]) < RTOL, (name, key)


CASES = [("A", "tanh", "eprop", "mse", 0.5), ("A", "relu", "eprop_random", "ce", 0.02),
         ("B", "tanh", "eprop_online", "mse", 0.5), ("C", "tanh", "rflo", "mse", 0.5)]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("form,activation,rule,kind,lr", CASES)
def test_float_weight_updates_match_oracle(name, form, activation, rule, kind, lr):
    """>= 100 steps per trial, 3 SGD updates: weights and losses agree with the oracle."""
    spec = NetworkSpec.random(n_in=2, n_hidden=10, n_out=3, gain=1.2, seed=5, form=form, activation=activation,
                              alpha=0.5)
    task = RandomTask(n_out=3, kind=kind, seed=7)
    runs = backend(name).train([spec], task, rule, iterations=3, lr=[lr], optimizer="sgd", progress=False)
    weights, hist = oracle(spec, task, rule, 3, lr)
    assert np.all(np.isfinite(hist)) and rel_err(runs[0].losses, hist) < RTOL
    for key, ref in weights.items():
        change = getattr(runs[0].spec, key) - getattr(spec, key)
        assert np.abs(ref - getattr(spec, key)).max() > 0, key  # the update is not trivially zero
        assert rel_err(change, ref - getattr(spec, key)) < RTOL, (name, key)


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "torch"])
def test_romo_sgd_loss_curves_agree_with_torch(name):
    """SGD e-prop on Romo for 30 iterations, two networks at once: the loss curves equal torch's."""
    from neurorate.tasks.romo import RomoTask

    specs = [NetworkSpec.random(n_in=1, n_hidden=16, n_out=2, gain=g, seed=s) for g, s in ((0.5, 0), (1.5, 1))]
    task = RomoTask(batch_size=8, seed=3)
    kw = dict(iterations=30, lr=[0.2, 0.5], optimizer="sgd", progress=False)
    ref = backend("torch").train(specs, task, "eprop", **kw)
    seen = []
    def record(i, loss, acc):
        seen.append((i, loss.copy(), acc.copy()))

    runs = backend(name).train(specs, task, "eprop", callback=record, **kw)
    for r, t in zip(runs, ref):
        assert rel_err(r.losses, t.losses) < RTOL
        assert rel_err(r.accuracy, t.accuracy) < RTOL
        assert rel_err(r.spec.w_rec, t.spec.w_rec) < RTOL
        assert r.losses[-1] < r.losses[0]  # it learns
    assert [s[0] for s in seen] == list(range(30))
    np.testing.assert_array_equal(np.stack([s[1] for s in seen], 1), np.stack([r.losses for r in runs]))


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "torch"])
def test_divergence_matches_torch(name):
    spec = NetworkSpec.random(n_in=2, n_hidden=8, n_out=2, gain=1.0, seed=0, activation="identity")
    task = RandomTask(n_steps=20, seed=1)
    kw = dict(iterations=8, lr=[1e4], optimizer="sgd", progress=False)
    ref = backend("torch").train([spec], task, "eprop", **kw)[0]
    run = backend(name).train([spec], task, "eprop", **kw)[0]
    assert ref.diverged and run.diverged and run.diverged_at == ref.diverged_at
    np.testing.assert_array_equal(np.isnan(run.losses), np.isnan(ref.losses))


@pytest.mark.parametrize("name", BACKENDS)
def test_fixed_point_bit_exact_with_torch(name):
    """loihi2 profile, same quantizer on both sides.

    Simulation (110 steps): states, rates and outputs bit-exact. Training (3 x 104 steps, eprop_online, 3
    SGD updates): weights live on the grid frozen from the initial weights and each update is rounded onto
    it (learning accumulator, stochastic rounding keyed by the iteration), so the trained weights and the
    losses are bit-exact too (float summation-order differences inside a gradient vanish in the rounding).
    """
    spec = NetworkSpec.random(n_in=2, n_hidden=10, n_out=2, gain=1.2, seed=5)
    x = np.random.default_rng(3).normal(size=(110, 2, 2))
    ref = backend("torch").simulate([spec], x, profile="loihi2")
    res = backend(name).simulate([spec], x, profile="loihi2")
    for key in ("states", "rates", "outputs"):
        np.testing.assert_array_equal(getattr(res, key), getattr(ref, key))
    step = 2.0 ** -16  # loihi2 state grid: the states really are on it
    np.testing.assert_array_equal(np.round(res.states / step) * step, res.states)
    float_sim = backend(name).simulate([spec], x)
    assert np.abs(float_sim.states - res.states).max() > 0  # the profile changes the trajectory
    task = RandomTask(seed=2)
    kw = dict(iterations=3, lr=[0.5], optimizer="sgd", progress=False, profile="loihi2")
    a = backend(name).train([spec], task, "eprop_online", **kw)[0]
    b = backend("torch").train([spec], task, "eprop_online", **kw)[0]
    for key in ("w_in", "w_rec", "w_out", "b", "b_out"):
        np.testing.assert_array_equal(getattr(a.spec, key), getattr(b.spec, key), err_msg=key)
        assert not np.array_equal(getattr(a.spec, key), getattr(spec, key)), f"{key} did not learn"
    w_step = 2.0 ** (np.floor(np.log2(np.abs(spec.w_rec).max())) + 1 - 7)  # 8-bit signed shared exponent
    np.testing.assert_array_equal(np.round(a.spec.w_rec / w_step) * w_step, a.spec.w_rec)
    # the loss is a float *metric* of bit-identical outputs, summed in a different order on each backend
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", BACKENDS)
def test_fixed_point_ensemble_networks_draw_the_bits_of_lone_networks(name):
    """loihi2 rounds traces and weight updates stochastically. The draws are keyed by (seed, step, stream,
    element index within one network), so network m of an ensemble gets exactly the bits it gets alone:
    a 2-network run on any backend equals the two single-network torch runs bit for bit."""
    specs = [NetworkSpec.random(n_in=2, n_hidden=10, n_out=2, gain=g, seed=5) for g in (1.2, 0.8)]
    task = RandomTask(seed=4)
    kw = dict(iterations=3, lr=[0.5], optimizer="sgd", progress=False, profile="loihi2")
    together = backend(name).train(specs, task, "eprop_online", **{**kw, "lr": [0.5, 0.5]})
    for spec, run in zip(specs, together):
        alone = backend("torch").train([spec], task, "eprop_online", **kw)[0]
        for key in ("w_in", "w_rec", "w_out", "b", "b_out"):
            np.testing.assert_array_equal(getattr(run.spec, key), getattr(alone.spec, key), err_msg=key)
