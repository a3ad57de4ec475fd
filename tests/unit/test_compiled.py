"""The compiled CPU path (backends/torch/compiled.py) against the torch reference (docs/api.md).

Oracle: the torch path of the same backend (``compiled=False``), which the other oracle tests pin to autograd.
Float64: losses, accuracies, gradients and the weights after 30 Adam iterations agree to 1e-12 for every rule x
activation x loss; float32: the compiled path is as close to the float64 reference as torch's own float32 path.
Tiny networks (N = 6, B = 4) keep the file fast; the kernel's compile time is paid once (numba's cache).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend
from neurorate.backends.torch import compiled as cmp
from neurorate.backends.torch import gradients as grad_mod
from neurorate.backends.torch.ensemble import PARAMS, stack
from neurorate.errors import NeurorateError

pytestmark = pytest.mark.skipif(not cmp.available(), reason="needs numba")

RULES = ("eprop", "eprop_random", "rflo", "bptt", "snap1")
TASKS = {"mse": "romo", "ce": "2af"}


def _setup(kind: str, activation: str, m: int = 2, n: int = 6, per_network: bool = False):
    name = TASKS[kind]
    tasks = [nr.make_task(name, batch_size=4, seed=s) for s in range(m)] if per_network else \
        nr.make_task(name, batch_size=4, seed=0)
    t0 = tasks[0] if per_network else tasks
    specs = [nr.NetworkSpec.random(n_in=t0.n_in, n_hidden=n, n_out=t0.n_out, gain=1.2 + 0.3 * j, seed=j,
                                   activation=activation, alpha=t0.alpha) for j in range(m)]
    return specs, tasks


def _train(specs, tasks, rule, compiled, dtype="float64", iterations=30, lr=(1e-2, 3e-3), **kw):
    be = TorchBackend(device="cpu", dtype=dtype, compiled=compiled)
    return be.train(specs, tasks, rule, iterations=iterations, lr=list(lr[:len(specs)]), progress=False, **kw)


def _weights(run):
    return np.concatenate([np.ravel(getattr(run.spec, p)) for p in PARAMS])


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_float64_equals_torch_after_30_adam_iterations(rule, activation, kind):
    specs, tasks = _setup(kind, activation, per_network=(rule == "eprop_random"))
    ours = _train(specs, tasks, rule, compiled=True)
    ref = _train(specs, tasks, rule, compiled=False)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(a.accuracy, b.accuracy)
        wa, wb = _weights(a), _weights(b)
        assert np.max(np.abs(wa - wb)) <= 1e-12 * max(1.0, np.max(np.abs(wb)))
        assert a.diverged == b.diverged
    # the training moved the weights (the comparison is not of two untouched copies)
    assert np.max(np.abs(_weights(ref[0]) - np.concatenate([np.ravel(getattr(specs[0], p)) for p in PARAMS]))) > 1e-3


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_gradients_equal_torch(rule, activation, kind):
    """One SGD step with lr = 1 moves every weight by exactly minus its gradient: compare with the torch kernels."""
    specs, tasks = _setup(kind, activation)
    ens = stack(specs, torch.float64, torch.device("cpu"))
    x, target, mask = (torch.as_tensor(np.asarray(a)) for a in tasks.batch(0))
    x = x.unsqueeze(0).double()
    target = target if kind == "ce" else target.double()
    loss, acc, grads = grad_mod.gradients(ens, rule, kind, x, target, mask.double())
    runs = _train(specs, tasks, rule, compiled=True, iterations=1, lr=(1.0, 1.0), optimizer="sgd")
    for j, run in enumerate(runs):
        np.testing.assert_allclose(run.losses[0], float(loss[j]), rtol=1e-13)
        for name in PARAMS:
            moved = np.ravel(getattr(specs[j], name)) - np.ravel(getattr(run.spec, name))
            want = grads[name][j].numpy().ravel()
            assert np.max(np.abs(moved - want)) <= 1e-13 * max(1.0, np.max(np.abs(want))), name
        assert np.max(np.abs(grads["w_rec"][j].numpy())) > 0


@pytest.mark.parametrize("rule", RULES)
def test_float32_within_torch_float32_gap(rule):
    specs, tasks = _setup("mse", "tanh")
    ref64 = _train(specs, tasks, rule, compiled=False, dtype="float64", iterations=10)
    t32 = _train(specs, tasks, rule, compiled=False, dtype="float32", iterations=10)
    c32 = _train(specs, tasks, rule, compiled=True, dtype="float32", iterations=10)
    for r, t, c in zip(ref64, t32, c32):
        gap = np.max(np.abs(_weights(t) - _weights(r)))
        assert 0 < gap < 1e-4
        assert np.max(np.abs(_weights(c) - _weights(r))) <= 4 * gap
        lgap = np.max(np.abs(t.losses - r.losses))
        assert np.max(np.abs(c.losses - r.losses)) <= 4 * lgap + 1e-7


def test_seeded_runs_are_bit_reproducible_and_thread_independent():
    specs, tasks = _setup("ce", "relu", m=3)
    runs = [TorchBackend(device="cpu", dtype="float32", threads=th).train(
        specs, tasks, "bptt", iterations=5, lr=1e-2, progress=False) for th in (1, 1, 2)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a.losses, b.losses)
            np.testing.assert_array_equal(_weights(a), _weights(b))


def test_divergence_freeze_matches_torch():
    """A network whose loss becomes non-finite is frozen at that iteration on both paths; the other trains on."""
    specs, tasks = _setup("mse", "relu")
    specs[1] = specs[1].replace(w_rec=specs[1].w_rec * 5.0)  # huge ReLU rates: SGD overflows at iteration 2
    kw = dict(iterations=8, lr=(1e-2, 1e-2), optimizer="sgd")
    ours, ref = _train(specs, tasks, "eprop", True, **kw), _train(specs, tasks, "eprop", False, **kw)
    assert ref[1].diverged and 0 < ref[1].diverged_at < 7 and not ref[0].diverged
    for a, b in zip(ours, ref):
        assert (a.diverged, a.diverged_at) == (b.diverged, b.diverged_at)
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(_weights(a), _weights(b), rtol=1e-12, atol=1e-12)


def test_optimizer_state_continues_across_calls():
    """15 + 15 iterations with the optimizer state handed over equal 30 in one call."""
    specs, tasks = _setup("mse", "tanh")
    whole = _train(specs, tasks, "eprop", True)
    first = _train(specs, tasks, "eprop", True, iterations=15)
    second = _train([r.spec for r in first], tasks, "eprop", True, iterations=15, start_iteration=15,
                    optimizer_state=first[0].extra["optimizer_state"])
    for w, s in zip(whole, second):
        np.testing.assert_array_equal(_weights(w), _weights(s))


class _Counting:
    calls = 0

    def __init__(self, real):
        self.real = real

    def __call__(self, *args, **kwargs):
        type(self).calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch):
    _Counting.calls = 0
    monkeypatch.setattr(cmp, "CompiledStep", _Counting(cmp.CompiledStep))
    return _Counting


def test_dispatch_chooses_and_can_be_forced_off(counted, monkeypatch):
    specs, task = _setup("mse", "tanh")
    run = lambda **kw: _train(specs, task, kw.pop("rule", "eprop"), kw.pop("compiled", None), iterations=1, **kw)  # noqa: E731
    run()
    assert counted.calls == 1  # default on the CPU
    run(compiled=False)
    run(rule="eprop_online")  # not a rule the kernel implements
    run(profile="fp32")  # a profile: the torch path
    _train([s.replace(form="B") for s in specs], task, "eprop", None, iterations=1)
    monkeypatch.setenv("NEURORATE_COMPILED", "0")
    run()
    assert counted.calls == 1
    run(compiled=True)  # an explicit option wins over the environment
    assert counted.calls == 2


def test_train_backend_option(counted):
    specs, task = _setup("ce", "tanh")
    off = nr.train(specs, task, rule="bptt", iterations=3, lr=1e-2, dtype="float64", device="cpu", progress=False,
                   backend_options={"compiled": False})
    assert counted.calls == 0
    on = nr.train(specs, task, rule="bptt", iterations=3, lr=1e-2, dtype="float64", device="cpu", progress=False)
    assert counted.calls == 1
    for a, b in zip(on, off):
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12)
    with pytest.raises(NeurorateError, match="compiled"):
        nr.train(specs, task, rule="bptt", iterations=1, device="cpu", progress=False,
                 backend_options={"compiled": "yes"})


def test_kernel_threads(monkeypatch):
    monkeypatch.setenv("NEURORATE_THREADS", "1")
    assert cmp.kernel_threads() == 1
    assert cmp.kernel_threads(2) == min(2, cmp.numba.config.NUMBA_NUM_THREADS)
    monkeypatch.delenv("NEURORATE_THREADS")
    assert cmp.kernel_threads() == 1  # the default: one thread (parallelism from worker processes)


@pytest.mark.parametrize("name", ["eprop", "eprop_random", "rflo", "bptt", "snap1", "eprop_online", "rtrl", "trunc1"])
def test_a_renamed_copy_of_a_rule_takes_the_same_path_and_trains_to_the_same_losses(counted, name):
    """The kernel is chosen by a rule's properties, never its name: a Rule value with a built-in's properties under
    another name (a plugin, a dataclasses.replace) gets the same kernel and the same numbers, bit for bit."""
    import dataclasses

    rule = nr.get_rule(name)
    copy = dataclasses.replace(rule, name=f"my_{name}")
    assert cmp.kernel_mode(copy) == cmp.kernel_mode(rule) == cmp.COMPILED_RULES.get(name)
    specs, task = _setup("mse", "tanh")
    runs = {}
    for r in (rule, copy):
        before = counted.calls
        runs[r.name] = (_train(specs, task, r, None, dtype="float32", iterations=4), counted.calls - before)
    (orig, n_orig), (mine, n_mine) = runs[name], runs[f"my_{name}"]
    assert n_orig == n_mine == (1 if name in cmp.COMPILED_RULES else 0)
    for a, b in zip(orig, mine):
        np.testing.assert_array_equal(a.losses, b.losses)
        np.testing.assert_array_equal(_weights(a), _weights(b))


def test_the_engine_view_takes_a_rule_by_its_properties():
    import dataclasses

    from neurorate.backends.torch import engine_profile as ep

    for name in ("eprop", "eprop_random"):
        assert ep.engine_trains(dataclasses.replace(nr.get_rule(name), name=f"my_{name}"))
    for name in ("bptt", "eprop_online", "rflo", "snap1", "trunc1"):
        assert not ep.engine_trains(nr.get_rule(name))
        assert not ep.engine_trains(dataclasses.replace(nr.get_rule(name), name=f"my_{name}"))


def test_a_renamed_eprop_trains_under_the_engine_profile_as_eprop_does():
    import dataclasses

    spec = nr.NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, seed=0, activation="relu")
    task = nr.make_task("romo", batch_size=1, seed=0)
    kw = dict(iterations=3, lr=0.3, optimizer="sgd", profile="loihi2-engine", lyapunov=False, progress=False)
    a = nr.train(spec, task, rule="eprop", **kw)
    b = nr.train(spec, task, rule=dataclasses.replace(nr.get_rule("eprop"), name="my_eprop"), **kw)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.spec.w_rec, b.spec.w_rec)
