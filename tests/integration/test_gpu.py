"""Every part of a run and of a study on CUDA gives the CPU's numbers (skipped without a GPU: CI has none).

float64 on both devices: the training of every rule (form A/B/C, MSE and cross-entropy, the loihi2 profile; the
estimator rules with their alignment records), the
blocked loss read-back, Lyapunov spectra, flossing, rich/lazy metrics, a LIF network, ``nr.train`` end to end and a
slice of the ``paper`` study equal the CPU to 1e-10. ``NEURORATE_GPU_CHECK_DEVICE=cpu`` runs the same comparisons
CPU against CPU (the dry run of ``benchmarks/gpu_check.py``, which checks that this file runs at all).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend

DEVICE = os.environ.get("NEURORATE_GPU_CHECK_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu] if DEVICE != "cpu" else []
TOL = dict(rtol=1e-10, atol=1e-10)


def _task(name="romo", batch=8, seed=0):
    return nr.make_task(name, batch_size=batch, seed=seed)


def _specs(task, n=32, form="A", activation="tanh"):
    return [nr.NetworkSpec.random(n_in=task.n_in, n_hidden=n, n_out=task.n_out, gain=g, seed=s, form=form,
                                  activation=activation, alpha=task.alpha) for g, s in ((0.5, 0), (1.5, 1))]


def _both(fn):
    return fn("cpu"), fn(DEVICE)


def _same_runs(cpu, dev):
    for a, b in zip(cpu, dev):
        np.testing.assert_allclose(b.losses, a.losses, **TOL)
        np.testing.assert_allclose(b.accuracy, a.accuracy, **TOL)
        for name in ("w_in", "w_rec", "w_out", "b", "b_out"):
            np.testing.assert_allclose(getattr(b.spec, name), getattr(a.spec, name), **TOL)
        assert a.diverged_at == b.diverged_at


@pytest.mark.parametrize("rule", ["bptt", "eprop", "eprop_online", "eprop_random", "rflo"])
def test_cuda_ensemble_matches_cpu_float64(rule):
    task = _task()
    specs = _specs(task)
    cpu, dev = _both(lambda d: TorchBackend(device=d, dtype="float64", compiled=False).train(
        specs, task, rule, iterations=10, lr=3e-3, progress=False))
    _same_runs(cpu, dev)


@pytest.mark.parametrize("form,activation", [("B", "tanh"), ("C", "relu")])
@pytest.mark.parametrize("rule", ["bptt", "eprop"])
def test_cuda_forms_b_c_match_cpu(form, activation, rule):
    task = _task()
    specs = _specs(task, form=form, activation=activation)
    cpu, dev = _both(lambda d: TorchBackend(device=d, dtype="float64", compiled=False).train(
        specs, task, rule, iterations=6, lr=3e-3, progress=False))
    _same_runs(cpu, dev)


@pytest.mark.parametrize("rule", ["bptt", "eprop", "rflo"])
def test_cuda_cross_entropy_per_network_tasks_match_cpu(rule):
    tasks = [_task("2af", seed=s) for s in (0, 1)]
    specs = _specs(tasks[0])
    cpu, dev = _both(lambda d: TorchBackend(device=d, dtype="float64", compiled=False).train(
        specs, tasks, rule, iterations=6, lr=3e-3, progress=False))
    _same_runs(cpu, dev)


@pytest.mark.parametrize("form,kind", [("A", "romo"), ("B", "2af"), ("C", "romo")])
@pytest.mark.parametrize("rule", ["rtrl", "snap1", "uoro", "kf_rtrl"])
def test_cuda_estimator_rules_match_cpu(rule, form, kind):
    """The estimator rules (and the stochastic ones' draws, made on the CPU) give the CPU's numbers, with the
    alignment recorded every other iteration."""
    task = _task(kind)
    specs = _specs(task, n=8 if rule == "rtrl" else 16, form=form)
    seen = {}

    def train(d):
        rec = seen.setdefault(d, {})
        return TorchBackend(device=d, dtype="float64").train(
            specs, task, rule, iterations=4, lr=3e-3, progress=False, grad_alignment_every=2,
            alignment_callback=lambda i, fields: rec.__setitem__(i, fields))

    cpu, dev = _both(train)
    _same_runs(cpu, dev)
    for i, fields in seen["cpu"].items():
        for name, value in fields.items():
            np.testing.assert_allclose(seen[DEVICE][i][name], value, **TOL)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("adam", 3e-3)])
def test_cuda_loihi2_profile_matches_cpu(optimizer, lr):
    task = _task()
    specs = _specs(task, n=16, activation="relu")
    cpu, dev = _both(lambda d: TorchBackend(device=d, dtype="float64", compiled=False).train(
        specs, task, "eprop", iterations=4, lr=lr, optimizer=optimizer, profile="loihi2", progress=False))
    _same_runs(cpu, dev)


def test_cuda_blocked_readback_and_prefetch_give_every_iteration_in_order():
    """The device default (losses read in blocks, batches uploaded in blocks) against one read per iteration."""
    task = _task()
    specs = _specs(task)
    seen = {}
    for key, every, block in (("one", 1, 1), ("blocks", None, None), ("odd", 7, 5)):
        be = TorchBackend(device=DEVICE, dtype="float64", compiled=False)
        be.readback_every, be.prefetch = every, block
        calls = []
        runs = be.train(specs, task, "eprop", iterations=23, lr=3e-3, progress=False,
                        callback=lambda i, losses, acc, calls=calls: calls.append((i, losses.copy(), acc.copy())))
        seen[key] = (runs, calls)
    ref_runs, ref_calls = seen["one"]
    for key in ("blocks", "odd"):
        runs, calls = seen[key]
        assert [c[0] for c in calls] == list(range(23))
        for a, b in zip(ref_calls, calls):
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_array_equal(a[2], b[2])
        for a, b in zip(ref_runs, runs):
            np.testing.assert_array_equal(a.losses, b.losses)
            np.testing.assert_array_equal(a.spec.w_rec, b.spec.w_rec)


@pytest.mark.skipif(DEVICE == "cpu", reason="host syncs exist only on a GPU")
def test_cuda_host_syncs_do_not_grow_with_iterations():
    """With blocks of 8, 32 more iterations add at most about 2 syncs per block (one upload, one read)."""
    task = _task()
    specs = _specs(task)

    def syncs(iterations):
        be = TorchBackend(device=DEVICE, dtype="float32", compiled=False)
        be.readback_every, be.prefetch = 8, 8
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                be.train(specs, task, "eprop", iterations=iterations, lr=3e-3, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    few, many = syncs(8), syncs(40)
    assert many - few <= 2 * (40 - 8) // 8 + 2, (few, many)


def test_cuda_lyapunov_spectrum_matches_cpu():
    task = _task()
    specs = _specs(task, activation="relu")
    cpu, dev = _both(lambda d: nr.lyapunov_spectrum(specs, task, k=4, n_streams=4, device=d))
    np.testing.assert_allclose(dev, cpu, **TOL)


@pytest.mark.parametrize("mode", ["state", "onestep", "full"])
def test_cuda_flossing_matches_cpu(mode):
    from neurorate.analysis.flossing import floss

    task = _task()
    specs = _specs(task, n=16)
    cpu, dev = _both(lambda d: floss(specs, task, iterations=3, mode=mode, k=4, lr=1e-3, steps=60, n_streams=2,
                                     device=d, dtype=torch.float64))
    np.testing.assert_allclose(dev[1], cpu[1], **TOL)
    for a, b in zip(cpu[0], dev[0]):
        np.testing.assert_allclose(b.w_rec, a.w_rec, **TOL)


def test_cuda_richlazy_metrics_match_cpu():
    from neurorate.analysis.richlazy import richlazy_metrics

    task = _task()
    before = _specs(task, n=12)
    after = [s.replace(w_rec=1.1 * s.w_rec + 0.01) for s in before]
    x, _, mask = task.batch(0)
    cpu, dev = _both(lambda d: richlazy_metrics(before, after, x, mask, kernel_trials=4, device=d))
    for a, b in zip(cpu, dev):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([b[k] for k in b], [a[k] for k in a], **TOL)


@pytest.mark.parametrize("rule", ["eprop", "bptt"])
def test_cuda_lif_network_matches_cpu(rule):
    from neurorate.model.spiking_learning import train_lif

    task = _task()
    specs = _specs(task, n=16)
    cpu, dev = _both(lambda d: train_lif(specs, task, rule=rule, iterations=5, lr=1e-3, dtype="float64", device=d))
    for key in ("losses", "accuracy", "rate"):
        np.testing.assert_allclose(dev[key], cpu[key], **TOL)
    for a, b in zip(cpu["networks"], dev["networks"]):
        np.testing.assert_allclose(b.spec.w_rec, a.spec.w_rec, **TOL)


def test_cuda_nr_train_end_to_end_matches_cpu():
    """nr.train on the device: training, every Lyapunov spectrum (float64) and the same divergence verdicts."""
    task = _task()
    specs = _specs(task)
    cpu, dev = _both(lambda d: nr.train(specs, task, rule="eprop", iterations=8, lr=3e-3, device=d, dtype="float64",
                                        lyapunov_k=3, progress=False, backend_options={"compiled": False}))
    for a, b in zip(cpu, dev):
        np.testing.assert_allclose(b.losses, a.losses, **TOL)
        np.testing.assert_allclose(b.spectrum_before, a.spectrum_before, **TOL)
        np.testing.assert_allclose(b.spectrum_after, a.spectrum_after, **TOL)
        assert a.diverged == b.diverged


def test_cuda_nr_train_lif_runs_on_the_device(monkeypatch):
    """nr.train(neuron="lif") hands its device to train_lif; float32 there (a spike can flip between devices),
    so the losses are compared loosely (the float64 comparison is test_cuda_lif_network_matches_cpu)."""
    import neurorate.model.spiking_learning as sl

    original, seen = sl.train_lif, []

    def spy(*args, **kwargs):
        seen.append(torch.device(kwargs["device"]).type)
        return original(*args, **kwargs)

    monkeypatch.setattr(sl, "train_lif", spy)
    task = _task()
    specs = _specs(task, n=16)
    cpu, dev = _both(lambda d: nr.train(specs, task, rule="eprop", neuron="lif", iterations=4, lr=1e-3, device=d,
                                        progress=False))
    assert seen == ["cpu", torch.device(DEVICE).type]
    for a, b in zip(cpu, dev):
        assert np.all(np.isfinite(b.losses))
        np.testing.assert_allclose(b.losses, a.losses, rtol=0.05)


def test_cuda_nr_train_with_flossing_runs_on_the_device():
    """Flossing in nr.train is float32 (its own precision) on either device: close, not bit-equal."""
    task = _task()
    specs = _specs(task, n=16)
    cpu, dev = _both(lambda d: nr.train(specs, task, rule="eprop", iterations=4, lr=3e-3, device=d, dtype="float64",
                                        floss_iterations=2, lyapunov_k=2, progress=False,
                                        backend_options={"compiled": False}))
    for a, b in zip(cpu, dev):
        np.testing.assert_allclose(b.floss_losses, a.floss_losses, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-4, atol=1e-7)


def test_cuda_study_slice_matches_cpu():
    """One ensemble of the paper study (shrunk: N = 16, 2 gains x 1 lr x 2 seeds, 6 iterations), float64."""
    from neurorate.studies.config import load_config
    from neurorate.studies.ensemble import plan, run_ensemble

    base = load_config("paper")
    tables = []
    for d in ("cpu", DEVICE):
        cfg = base.model_copy(update=dict(gains=[0.5, 1.5], lrs=[1e-3], seeds=[0, 1], iterations=6, hidden=16,
                                          batch=8, probe_batch=8, lyapunov_k=2, device=d, dtype="float64"))
        job = next(j for j in plan(cfg) if j.rule == "eprop" and not j.flossing)
        tables.append(run_ensemble(cfg, job).to_pydict())
    cpu, dev = tables
    assert cpu.keys() == dev.keys()
    checked = 0
    for key, col in cpu.items():
        values = [v for v in col if isinstance(v, float)]
        if values and len(values) == len(col) and "wall" not in key:  # wall times differ, everything else equal
            np.testing.assert_allclose(dev[key], col, rtol=1e-9, atol=1e-10, err_msg=key)
            checked += 1
    assert checked >= 5


@pytest.mark.skipif(DEVICE == "cpu", reason="auto picks CUDA only where there is one")
def test_auto_device_picks_cuda():
    assert TorchBackend(device="auto").device.type == "cuda"
