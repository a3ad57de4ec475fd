"""The chosen device reaches every part of a run, and the torch path's loop has no host sync per iteration (CPU).

No GPU is needed: the device a backend holds is followed into the Lyapunov spectra, flossing, rich/lazy metrics
and spiking training by spies (with ``torch.device("cpu", 0)``, a device distinct from the default ``cpu``);
``aten`` operations that wait for a device (``nonzero``, ``item``, ``is_nonzero``) are counted with a
``TorchDispatchMode``; the blocked loss read-back and batch prefetch give exactly the per-iteration losses and
callback sequence. tests/integration/test_gpu.py compares CUDA with the CPU where a GPU exists.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import neurorate as nr
from neurorate.backends.torch import TorchBackend
from neurorate.backends.torch.loop import Batches, Readback

SYNC_OPS = ("nonzero", "_local_scalar_dense", "is_nonzero", "item", "equal")
"""aten operations whose result the host must wait for on a GPU."""
FACTORY_OPS = ("empty", "empty_like", "zeros", "zeros_like", "full", "full_like", "ones", "ones_like", "arange",
               "lift_fresh", "scalar_tensor")


class OpCounter(TorchDispatchMode):
    """Counts the aten operations (by name) and the devices of their tensor outputs."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.devices = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.devices[str(t.device)] += 1
        return out

    def count(self, names) -> int:
        return sum(self.ops[n] for n in names)


def _task(name="romo", seed=0):
    return nr.make_task(name, batch_size=4, seed=seed)


def _specs(task, n=8, gains=(0.5, 1.5)):
    return [nr.NetworkSpec.random(n_in=task.n_in, n_hidden=n, n_out=task.n_out, gain=g, seed=s)
            for s, g in enumerate(gains)]


# ------------------------------------------------------------------------------------ the device reaches everything
def _spy(monkeypatch, module, name, seen):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append((name, kwargs.get("device")))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def test_backend_device_reaches_lyapunov_and_flossing(monkeypatch):
    import neurorate.analysis.flossing as fl
    import neurorate.analysis.lyapunov as ly

    seen = []
    _spy(monkeypatch, ly, "lyapunov_spectrum", seen)
    _spy(monkeypatch, fl, "floss", seen)
    dev = torch.device("cpu", 0)
    task = _task()
    be = TorchBackend(device=dev, dtype="float64", compiled=False)
    nr.train(_specs(task), task, rule="eprop", backend=be, iterations=4, lr=1e-3, floss_iterations=2, floss_every=2,
             lyapunov_k=2, progress=False)
    names = [s[0] for s in seen]
    assert names.count("lyapunov_spectrum") == 3 and names.count("floss") == 2  # before/flossed/after; pre + periodic
    assert all(d == dev for _, d in seen), seen


def test_named_backend_device_reaches_lyapunov(monkeypatch):
    import neurorate.analysis.lyapunov as ly

    seen = []
    _spy(monkeypatch, ly, "lyapunov_spectrum", seen)
    task = _task()
    nr.train(_specs(task), task, iterations=2, device="auto", progress=False, lyapunov_k=2,
             backend_options={"compiled": False})
    assert [d for _, d in seen] == [torch.device("cuda" if torch.cuda.is_available() else "cpu")] * 2


def test_spiking_training_gets_the_device(monkeypatch):
    import neurorate.model.spiking_learning as sl

    seen = []
    _spy(monkeypatch, sl, "train_lif", seen)
    task = _task()
    nr.train(_specs(task), task, rule="eprop", neuron="lif", iterations=2, lr=1e-3, device="cpu", progress=False)
    assert seen == [("train_lif", torch.device("cpu"))]


def test_lif_on_an_explicit_device_gives_the_default_numbers():
    from neurorate.model.spiking_learning import train_lif

    task = _task()
    a = train_lif(_specs(task), task, iterations=3, lr=1e-3, dtype="float64")
    b = train_lif(_specs(task), task, iterations=3, lr=1e-3, dtype="float64", device=torch.device("cpu", 0))
    np.testing.assert_array_equal(a["losses"], b["losses"])
    np.testing.assert_array_equal(a["networks"][1].spec.w_rec, b["networks"][1].spec.w_rec)


def test_richlazy_device_reaches_the_trajectories_and_kernels(monkeypatch):
    import neurorate.analysis.richlazy as rl

    task = _task()
    before = _specs(task)
    after = [s.replace(w_rec=1.05 * s.w_rec) for s in before]
    x, _, mask = task.batch(0)
    default = rl.richlazy_metrics(before, after, x, mask, kernel_trials=2)
    seen = []
    _spy(monkeypatch, rl, "rates_at", seen)
    _spy(monkeypatch, rl, "tangent_features", seen)
    seen.clear()
    on_dev = rl.richlazy_metrics(before, after, x, mask, kernel_trials=2, device=torch.device("cpu", 0))
    assert on_dev == default  # the CPU numbers are unchanged
    assert len(seen) == 6
    assert rl.analysis_device(None) == torch.device("cpu") and rl.analysis_device("cpu") == torch.device("cpu")


def test_study_ensemble_passes_its_device_to_richlazy(monkeypatch):
    import neurorate.analysis.richlazy as rl
    from neurorate.studies.config import load_config
    from neurorate.studies.ensemble import plan, run_ensemble

    seen = []
    _spy(monkeypatch, rl, "richlazy_metrics", seen)
    cfg = load_config("quick").model_copy(update=dict(gains=[1.0], lrs=[1e-3], seeds=[0], iterations=2, hidden=8,
                                                      batch=4, probe_batch=4, lyapunov=False, device="cpu"))
    run_ensemble(cfg, plan(cfg)[0])
    assert seen == [("richlazy_metrics", "cpu")]


def test_every_tensor_of_a_cpu_run_is_on_the_cpu():
    task = _task()
    with OpCounter() as probe:
        nr.train(_specs(task), task, iterations=2, device="cpu", floss_iterations=1, lyapunov_k=2, progress=False,
                 backend_options={"compiled": False})
    assert set(probe.devices) == {"cpu"} and probe.devices["cpu"] > 100


# ------------------------------------------------------------------------------------ no host sync per iteration
@pytest.mark.parametrize("rule", ["eprop", "bptt", "rflo"])
def test_torch_loop_makes_no_host_sync_per_iteration(rule):
    task = _task()

    def syncs(iterations):
        be = TorchBackend(device="cpu", dtype="float32", compiled=False)
        with OpCounter() as probe:
            be.train(_specs(task), task, rule, iterations=iterations, lr=1e-3, progress=False)
        return probe.count(SYNC_OPS)

    assert syncs(2) == syncs(7)


def test_profile_loop_makes_no_host_sync_per_iteration():
    task = _task()

    def syncs(iterations):
        be = TorchBackend(device="cpu", dtype="float64")
        with OpCounter() as probe:
            be.train(_specs(task), task, "eprop", iterations=iterations, lr=0.5, optimizer="sgd", profile="loihi2",
                     progress=False)
        return probe.count(SYNC_OPS)

    assert syncs(2) == syncs(6)


def test_optimizer_allocates_only_on_its_first_step():
    from neurorate.optim import EnsembleOptimizer

    for kind in ("adam", "sgd"):
        opt = EnsembleOptimizer(kind, torch.tensor([1e-3, 2e-3], dtype=torch.float64))
        params = {"w": torch.randn(2, 3, 3, dtype=torch.float64), "b": torch.randn(2, 1, 3, dtype=torch.float64)}
        active = torch.tensor([True, False])
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        with OpCounter() as first:
            opt.step(params, grads, active)
        with OpCounter() as later:
            opt.step(params, grads, active)
            opt.step(params, grads, active)
        assert first.count(FACTORY_OPS) > 0 and later.count(FACTORY_OPS) == 0, (kind, later.ops)


def test_optimizer_numbers_are_torch_adam():
    """Against torch.optim.Adam, network by network (the frozen network's parameters stay put)."""
    from neurorate.optim import EnsembleOptimizer

    gen = torch.Generator().manual_seed(0)
    p = torch.randn(2, 4, 4, dtype=torch.float64, generator=gen)
    grads = [torch.randn(2, 4, 4, dtype=torch.float64, generator=gen) for _ in range(5)]
    opt = EnsembleOptimizer("adam", torch.tensor([1e-2, 3e-3], dtype=torch.float64))
    ours = p.clone()
    for g in grads:
        opt.step({"w": ours}, {"w": g}, torch.tensor([True, True]))
    for j, lr in enumerate((1e-2, 3e-3)):
        ref = p[j].clone().requires_grad_(True)
        adam = torch.optim.Adam([ref], lr=lr)
        for g in grads:
            ref.grad = g[j].clone()
            adam.step()
        np.testing.assert_allclose(ours[j].numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_quantizer_constants_are_made_once():
    from neurorate.hardware.quantize import make_quantizer

    q = make_quantizer("loihi2", training=False, batch_dims=1)
    w = torch.randn(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q.calibrate({"w_rec": w})

    def calls():
        with OpCounter() as probe:
            out = (q.weight(w, "w_rec"), q.update(0.01 * w, "w_rec", step=3), q.state(w, step=1), q.rate(w, step=2))
        return probe, out

    first, a = calls()
    later, b = calls()
    assert first.count(("arange", "lift_fresh")) > 0 and later.count(FACTORY_OPS) == 0, later.ops
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ------------------------------------------------------------------------------------ blocked read-back and prefetch
@pytest.mark.parametrize("task_name,every,block", [("romo", 5, 3), ("romo", 64, 64), ("2af", 1, 4), ("2af", 3, 1)])
def test_blocked_readback_gives_the_same_losses_and_callbacks(task_name, every, block):
    """Per-network tasks (MSE: one network overflows to inf after its first updates; cross-entropy), blocked
    read-back and prefetch vs one read and one batch per iteration."""
    tasks = [_task(task_name, seed=s) for s in (0, 1, 2)]
    specs = _specs(tasks[0], gains=(0.5, 1.5, 1.0))
    lrs = [0.05, 0.1, 1e200]  # SGD: the third network's loss overflows (MSE) after its first updates
    out = {}
    for key, e, b in (("ref", 1, 1), ("blocked", every, block)):
        be = TorchBackend(device="cpu", dtype="float64", compiled=False)
        be.readback_every, be.prefetch = e, b
        calls = []
        runs = be.train(specs, tasks, "eprop", iterations=13, lr=lrs, optimizer="sgd", progress=False,
                        callback=lambda i, losses, acc, calls=calls: calls.append((i, losses.copy(), acc.copy())))
        out[key] = runs, calls
    (ref, ref_calls), (got, got_calls) = out["ref"], out["blocked"]
    assert [c[0] for c in got_calls] == list(range(13))
    for a, b in zip(ref_calls, got_calls):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a.losses, b.losses)
        np.testing.assert_array_equal(a.accuracy, b.accuracy)
        np.testing.assert_array_equal(a.spec.w_rec, b.spec.w_rec)
        assert (a.diverged, a.diverged_at) == (b.diverged, b.diverged_at)
    if task_name == "romo":
        assert [r.diverged_at is not None and r.diverged_at > 0 for r in ref] == [False, False, True]


def test_defaults_read_every_iteration_on_the_cpu_and_in_blocks_on_cuda():
    task = _task()  # (no GPU needed: only the defaults are read)
    rb = Readback(2, 5, torch.device("cpu"))
    assert rb.every == 1 and rb.seconds is None
    cuda = Readback(2, 5, torch.device("cuda"))
    assert cuda.every > 1 and cuda.seconds is not None
    assert Batches([task], 0, 5, torch.float32, torch.device("cpu")).block == 1


def test_batches_blocks_are_the_task_batches():
    tasks = [_task("romo", seed=s) for s in (0, 1)]
    got = Batches(tasks, 3, 10, torch.float64, torch.device("cpu"), block=4)
    for i in (0, 1, 2, 3, 4, 7, 8, 9):
        x, target, mask = got(i)
        for j, t in enumerate(tasks):
            ref = t.batch(3 + i)
            np.testing.assert_array_equal(x[j].numpy(), ref[0].astype(np.float64))
            np.testing.assert_array_equal(target[j].numpy(), ref[1].astype(np.float64))
            np.testing.assert_array_equal(mask[j].numpy(), ref[2].astype(np.float64))


def test_readback_reads_in_blocks_and_reports_in_order():
    calls = []
    rb = Readback(2, 7, torch.device("cpu"), every=3, callback=lambda i, lo, ac: calls.append((i, lo.copy())))
    for i in range(7):
        rb.push(i, torch.tensor([float(i), -float(i)]), torch.tensor([0.5, 0.25]))
        assert len(calls) == 3 * ((i + 1) // 3)
    rb.flush()
    assert rb.reads == 3 and [c[0] for c in calls] == list(range(7))
    np.testing.assert_array_equal(rb.loss[1], -np.arange(7.0))


def test_interrupt_reports_the_iterations_done_before_it(monkeypatch):
    """Ctrl-C in the middle of a block: the iterations done so far still reach the callback, in order."""
    import neurorate.backends.torch as tb

    original, calls, seen = tb._grad.gradients, [0], []

    def gradients(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(tb._grad, "gradients", gradients)
    task = _task()
    be = TorchBackend(device="cpu", dtype="float64", compiled=False)
    be.readback_every = 10
    with pytest.raises(KeyboardInterrupt):
        be.train(_specs(task), task, "eprop", iterations=12, lr=1e-3, progress=False,
                 callback=lambda i, losses, acc: seen.append(i))
    assert seen == [0, 1, 2, 3]


def test_flossing_losses_read_in_blocks_equal_one_read_per_iteration(monkeypatch):
    import neurorate.analysis.flossing as fl

    task = _task()
    specs = _specs(task)
    original = fl._readback_every
    assert original("cpu") == 1 and original("cuda") == fl.READBACK
    runs = {}
    for every in (1, 3):
        monkeypatch.setattr(fl, "_readback_every", lambda device, every=every: every)
        seen = []
        flossed, losses = fl.floss(specs, task, iterations=7, k=2, steps=40, n_streams=2,
                                   progress=lambda i, lo, seen=seen: seen.append((i, lo.copy())))
        runs[every] = flossed, losses, seen
    (f1, l1, s1), (f3, l3, s3) = runs[1], runs[3]
    np.testing.assert_array_equal(l1, l3)
    assert [i for i, _ in s3] == list(range(7))
    for (_, a), (_, b) in zip(s1, s3):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(f1[0].w_rec, f3[0].w_rec)


def test_lif_values_read_in_blocks_equal_one_read_per_iteration(monkeypatch):
    import neurorate.model.spiking_learning as sl

    task = _task()
    original = sl._readback_every
    assert original(torch.device("cpu")) == 1 and original(torch.device("cuda")) == sl.READBACK
    out = {}
    for every in (1, 4):
        monkeypatch.setattr(sl, "_readback_every", lambda device, every=every: every)
        seen = []
        res = sl.train_lif(_specs(task), task, iterations=6, lr=1e-3, dtype="float64",
                           callback=lambda i, lo, ac, seen=seen: seen.append((i, lo.copy(), ac.copy())))
        out[every] = res, seen
    (a, sa), (b, sb) = out[1], out[4]
    for key in ("losses", "accuracy", "rate"):
        np.testing.assert_array_equal(a[key], b[key])
    assert [s[0] for s in sb] == list(range(6))
    for x, y in zip(sa, sb):
        np.testing.assert_array_equal(x[1], y[1])
        np.testing.assert_array_equal(x[2], y[2])
