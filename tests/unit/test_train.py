"""Training on the torch backend: ensembles, optimizers, reproducibility, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend
from neurorate.backends.torch.ensemble import stack
from neurorate.optim import EnsembleOptimizer


def small_specs(gains=(0.5, 1.0, 1.5), seeds=(0, 1, 2), n=16):
    return [nr.NetworkSpec.random(n_hidden=n, gain=g, seed=s) for g, s in zip(gains, seeds)]


@pytest.mark.parametrize("rule", ["bptt", "eprop", "eprop_online", "rflo"])
def test_ensemble_equals_separate_runs(rule):
    task = nr.make_task("romo", batch_size=8, seed=3)
    specs = small_specs()
    lrs = [1e-3, 3e-3, 1e-2]
    be = TorchBackend(dtype="float64")
    together = be.train(specs, task, rule, iterations=15, lr=lrs, progress=False)
    for spec, lr, run in zip(specs, lrs, together):
        alone = be.train([spec], task, rule, iterations=15, lr=lr, progress=False)[0]
        np.testing.assert_allclose(run.losses, alone.losses, rtol=1e-12, atol=0)
        np.testing.assert_allclose(run.spec.w_rec, alone.spec.w_rec, rtol=0, atol=1e-13)
        np.testing.assert_allclose(run.spec.w_in, alone.spec.w_in, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rule", ["eprop", "bptt", "eprop_online"])
@pytest.mark.parametrize("task_name", ["romo", "2af"])
def test_per_network_tasks_equal_separate_runs(rule, task_name):
    n_in, n_out = (1, 2) if task_name == "romo" else (3, 3)
    specs = [nr.NetworkSpec.random(n_in=n_in, n_out=n_out, n_hidden=16, gain=g, seed=s, activation="relu")
             for g, s in ((0.5, 0), (1.0, 1), (1.5, 2))]
    tasks = [nr.make_task(task_name, batch_size=8, seed=s) for s in (0, 1, 2)]
    be = TorchBackend(dtype="float64")
    together = be.train(specs, tasks, rule, iterations=10, lr=3e-3, progress=False)
    for spec, task, run in zip(specs, tasks, together):
        alone = be.train([spec], task, rule, iterations=10, lr=3e-3, progress=False)[0]
        np.testing.assert_allclose(run.losses, alone.losses, rtol=1e-12)


def test_seeded_runs_reproduce_bit_for_bit():
    def once():
        spec = nr.NetworkSpec.random(n_hidden=16, gain=1.2, seed=7)
        task = nr.make_task("romo", batch_size=8, seed=7)
        return nr.train(spec, task, rule="eprop", iterations=20, lr=3e-3, lyapunov=False, progress=False,
                        device="cpu")

    a, b = once(), once()
    assert np.array_equal(a.losses, b.losses)
    assert np.array_equal(a.spec.w_rec, b.spec.w_rec)
    assert np.array_equal(a.spec.w_out, b.spec.w_out)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_ensemble_optimizer_matches_torch_optim(kind):
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    grads = [torch.randn(2, 5, 4, generator=g, dtype=torch.float64) for _ in range(6)]
    lrs = [1e-2, 3e-3]
    ours = {"w": p0.clone()}
    opt = EnsembleOptimizer(kind, torch.tensor(lrs, dtype=torch.float64))
    for gr in grads:
        opt.step(ours, {"w": gr}, torch.ones(2, dtype=torch.bool))
    for m, lr in enumerate(lrs):
        ref = torch.nn.Parameter(p0[m].clone())
        topt = torch.optim.Adam([ref], lr=lr) if kind == "adam" else torch.optim.SGD([ref], lr=lr)
        for gr in grads:
            topt.zero_grad()
            ref.grad = gr[m].clone()
            topt.step()
        assert torch.allclose(ours["w"][m], ref.detach(), rtol=0, atol=1e-14)


def test_diverged_network_is_recorded_and_others_go_on():
    task = nr.make_task("romo", batch_size=8, seed=0)
    specs = small_specs(gains=(1.0, 1.0), seeds=(0, 1))
    be = TorchBackend(dtype="float64")
    runs = be.train(specs, task, "bptt", iterations=30, lr=[1e-3, 1e9], optimizer="sgd", progress=False)
    alone = be.train([specs[0]], task, "bptt", iterations=30, lr=1e-3, optimizer="sgd", progress=False)[0]
    assert runs[1].diverged and runs[1].diverged_at is not None
    assert np.isnan(runs[1].losses[runs[1].diverged_at:]).all()
    assert not runs[0].diverged
    np.testing.assert_allclose(runs[0].losses, alone.losses, rtol=1e-12)
    assert np.isfinite(runs[1].spec.w_rec).all()  # frozen at the last finite weights


def test_bptt_learns_romo_and_loss_decreases():
    spec = nr.NetworkSpec.random(n_hidden=32, gain=1.5, seed=0)
    task = nr.make_task("romo", batch_size=16, seed=0)
    res = nr.train(spec, task, rule="bptt", iterations=300, lr=1e-2, lyapunov=False, progress=False, device="cpu")
    assert res.losses[:20].mean() > 0.02
    assert res.final_loss() < 0.5 * res.losses[:20].mean()


def test_train_list_returns_list_and_validates():
    task = nr.make_task("romo", batch_size=4, seed=0)
    specs = small_specs(gains=(0.5, 1.0), seeds=(0, 1))
    res = nr.train(specs, task, rule="eprop", iterations=3, lr=[1e-3, 2e-3], lyapunov=False, progress=False)
    assert isinstance(res, list) and [r.lr for r in res] == [1e-3, 2e-3]
    with pytest.raises(nr.NeurorateError, match="unknown rule"):
        nr.train(specs[0], task, rule="hebb", iterations=1, lyapunov=False)
    with pytest.raises(nr.NeurorateError, match="lr must be a positive"):
        nr.train(specs[0], task, lr=-1.0, iterations=1, lyapunov=False)
    with pytest.raises(nr.NeurorateError, match="one learning rate or one per network"):
        nr.train(specs, task, lr=[1e-3, 1e-3, 1e-3], iterations=1, lyapunov=False)
    wrong = nr.NetworkSpec.random(n_in=3, n_hidden=8, n_out=3)
    with pytest.raises(nr.NeurorateError, match="n_in=3"):
        nr.train(wrong, task, iterations=1, lyapunov=False)
    mixed = [nr.NetworkSpec.random(n_hidden=8), nr.NetworkSpec.random(n_hidden=8, form="B")]
    with pytest.raises(nr.NeurorateError, match="must share form"):
        nr.train(mixed, task, iterations=1, lyapunov=False)


def test_simulate_matches_manual_numpy_step():
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=10, n_out=2, gain=1.3, seed=4, alpha=0.4)
    x = np.random.default_rng(0).standard_normal((30, 3, 1))
    sim = TorchBackend(dtype="float64").simulate([spec], x)
    a = np.zeros((3, 10))
    for t in range(30):
        a = 0.6 * a + 0.4 * (np.tanh(a) @ spec.w_rec.T + x[t] @ spec.w_in.T + spec.b)
        np.testing.assert_allclose(sim.states[0, t], a, rtol=0, atol=1e-13)
    np.testing.assert_allclose(sim.outputs[0, -1], np.tanh(a) @ spec.w_out.T + spec.b_out, atol=1e-13)


def test_stack_roundtrip_preserves_specs():
    specs = small_specs()
    ens = stack(specs, torch.float64, torch.device("cpu"))
    back = ens.to_specs(specs)
    for a, b in zip(specs, back):
        for name in ("w_in", "w_rec", "w_out", "b", "b_out"):
            assert np.array_equal(getattr(a, name), getattr(b, name))


def test_periodic_flossing_keeps_optimizer_state_and_matches_manual_chunks():
    from neurorate.analysis.flossing import floss

    spec = nr.NetworkSpec.random(n_hidden=12, gain=0.5, seed=0)
    task = nr.make_task("romo", batch_size=4, seed=0)
    kw = dict(rule="eprop", iterations=12, lr=3e-3, lyapunov=False, progress=False, device="cpu", dtype="float64")
    res = nr.train(spec, task, floss_iterations=3, floss_every=5, floss_k=2, **kw)
    # the same schedule by hand: floss, 5 its, floss, 5 its, floss, 2 its, with one Adam state throughout
    be = TorchBackend(dtype="float64")
    cur, _ = floss([spec], task, iterations=3, k=2, progress=False)
    losses, state, done = [], None, 0
    for n in (5, 5, 2):
        runs = be.train(cur, task, "eprop", iterations=n, lr=3e-3, progress=False, start_iteration=done,
                        optimizer_state=state)
        state, done = runs[0].extra["optimizer_state"], done + n
        losses.append(runs[0].losses)
        cur = [runs[0].spec]
        if done < 12:
            cur, _ = floss(cur, task, iterations=3, k=2, progress=False)
    np.testing.assert_allclose(res.losses, np.concatenate(losses), rtol=1e-12)
    np.testing.assert_allclose(res.spec.w_rec, cur[0].w_rec, atol=1e-12)
    with pytest.raises(nr.NeurorateError, match="floss_every needs floss_iterations"):
        nr.train(spec, task, floss_every=5, **kw)


def test_run_config_records_backend_options(tmp_path):
    """config.json says which backend options a run used (a run is reproducible from its directory)."""
    import json

    task = nr.make_task("romo", batch_size=4, seed=0)
    spec = small_specs(gains=(1.0,), seeds=(0,), n=8)[0]
    for options, expected in (({"compiled": False}, {"compiled": False}), (None, {})):
        out = tmp_path / f"run-{len(expected)}"
        nr.train(spec, task, rule="eprop", iterations=2, lyapunov=False, progress=False, out=out,
                 backend_options=options)
        assert json.loads((out / "config.json").read_text())["backend_options"] == expected
