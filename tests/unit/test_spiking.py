"""LIF networks: e-prop autograd+detach == online traces, the LIF step against snnTorch and norse, NIR round
trip of LIF graphs, and ensemble training == separate training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.model.spiking import LIFNetwork, simulate
from neurorate.model.spiking_learning import autograd_gradients, online_gradients, train_lif

torch.set_num_threads(1)
T, B, N_IN, N, N_OUT = 30, 4, 3, 12, 2


def _nets(gains=(0.5, 1.5, 3.0), alpha=0.2, threshold=0.5, kappa=0.6):
    return [LIFNetwork(nr.NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=g, seed=1, alpha=alpha),
                       threshold=threshold, kappa=kappa) for g in gains]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.uniform(0, 2, (T, B, N_IN)))
    return x, torch.as_tensor(rng.standard_normal((T, B, N_OUT))), torch.as_tensor(rng.uniform(0, 1, (T, B, N_OUT)))


@pytest.mark.parametrize("rule", ["eprop", "eprop_random"])
def test_eprop_autograd_detach_equals_online_traces(rule):
    nets = _nets()
    x, target, mask = _data()
    rate = simulate(nets, x.numpy())["z"].mean()
    assert 0.05 < rate < 0.6  # the networks spike, so the pseudo-derivative is exercised
    a = autograd_gradients(nets, x, target, mask, rule=rule)
    o = online_gradients(nets, x, target, mask, rule=rule)
    for name in a:
        assert a[name].abs().max() > 1e-4, name
        torch.testing.assert_close(a[name], o[name], rtol=0, atol=1e-10)


def test_eprop_and_bptt_share_the_forward_pass_and_readout_gradient():
    """Detaching changes no values: same loss and readout gradients; the recurrent gradient differs (truncation)."""
    x, target, mask = _data()
    a = autograd_gradients(_nets(gains=(1.5,)), x, target, mask, rule="eprop")
    b = autograd_gradients(_nets(gains=(1.5,)), x, target, mask, rule="bptt")
    for name in ("w_out", "b_out"):
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-12)
    assert (a["w_rec"] - b["w_rec"]).abs().max() > 1e-4


def _currents(net, x, z_prev):
    s = net.spec
    return z_prev @ s.w_rec.T + x @ s.w_in.T + s.b


def test_lif_step_equals_snntorch_leaky_subtract():
    snn = pytest.importorskip("snntorch")
    net = _nets(gains=(1.5,))[0]
    x = _data()[0].numpy()
    sim = simulate(net, x)
    lif = snn.Leaky(beta=torch.tensor(net.beta, dtype=torch.float64), threshold=net.threshold,
                    reset_mechanism="subtract")
    mem = torch.zeros(B, N, dtype=torch.float64)
    for t in range(T):
        z_prev = np.zeros((B, N)) if t == 0 else sim["z"][0, t - 1]
        spk, mem = lif(torch.as_tensor(_currents(net, x[t], z_prev)), mem)
        np.testing.assert_allclose(mem.numpy(), sim["v"][0, t], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(spk.numpy(), sim["z"][0, t])


def test_lif_step_equals_norse_lif_box_step_for_step():
    """norse resets within the step (its state is post-reset, and the reset then decays). Mapping neurorate's
    state v into norse's as ``u = v - theta z / beta`` and scaling the input by ``1/alpha`` makes each step
    identical: norse's pre-reset membrane and spikes equal neurorate's ``v_t, z_t``."""
    pytest.importorskip("norse.torch")
    from norse.torch.functional.lif_box import (
        LIFBoxFeedForwardState,
        LIFBoxParameters,
        lif_box_feed_forward_step,
    )
    from norse.torch.functional.reset import reset_subtract

    net = _nets(gains=(1.5,))[0]
    alpha, theta, dt = net.spec.alpha, net.threshold, 1e-3
    x = _data()[0].numpy()
    sim = simulate(net, x)
    f64 = lambda a: torch.tensor(a, dtype=torch.float64)
    p = LIFBoxParameters(tau_mem_inv=f64(alpha / dt), v_leak=f64(0.0), v_th=f64(theta), v_reset=f64(0.0),
                         reset_method=reset_subtract)
    for t in range(T):
        v_prev = np.zeros((B, N)) if t == 0 else sim["v"][0, t - 1]
        z_prev = np.zeros((B, N)) if t == 0 else sim["z"][0, t - 1]
        state = LIFBoxFeedForwardState(v=torch.as_tensor(v_prev - theta * z_prev / net.beta))
        current = torch.as_tensor(_currents(net, x[t], z_prev) / alpha)
        z, new = lif_box_feed_forward_step(current, state, p, dt=dt)
        np.testing.assert_allclose((new.v + theta * z).numpy(), sim["v"][0, t], rtol=0, atol=1e-10)
        np.testing.assert_array_equal(z.numpy(), sim["z"][0, t])


def test_lif_nir_round_trip(tmp_path):
    pytest.importorskip("nir")
    from neurorate.io import nir as nir_io

    net = _nets(gains=(1.5,))[0]
    back = nir_io.from_nir(nir_io.write_nir(net, tmp_path / "lif.nir"))
    assert isinstance(back, LIFNetwork)
    for name in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback"):
        np.testing.assert_array_equal(getattr(back.spec, name), getattr(net.spec, name))
    assert (back.threshold, back.kappa, back.gamma, back.spec.alpha) == (net.threshold, net.kappa, net.gamma, 0.2)
    graph = nir_io.read_nir(tmp_path / "lif.nir")
    assert type(graph.nodes["lif"]).__name__ == "LIF" and graph.nodes["lif"].tau.shape == (N,)
    # a consumer that ignores the neurorate metadata still gets the same network from the standard fields
    graph.metadata = {}
    graph.nodes["lif"].metadata = {}
    plain = nir_io.from_nir(graph)
    x = _data()[0].numpy()
    np.testing.assert_allclose(simulate(plain, x)["y"], simulate(net, x)["y"], rtol=0, atol=1e-12)
    assert plain.kappa == pytest.approx(net.kappa, abs=1e-12)


def test_lif_file_save_load_and_cli_export(tmp_path):
    from neurorate.cli.nir import export_nir, load_network

    net = _nets(gains=(1.5,))[0]
    net.save(tmp_path / "spec_final.npz")
    back = load_network(tmp_path)
    assert isinstance(back, LIFNetwork) and back.threshold == net.threshold
    np.testing.assert_array_equal(back.spec.w_rec, net.spec.w_rec)
    pytest.importorskip("nir")
    from neurorate.io import nir as nir_io

    assert isinstance(nir_io.from_nir(export_nir(tmp_path, tmp_path / "x.nir")), LIFNetwork)


def test_ensemble_training_equals_separate_training():
    task = nr.make_task("romo", batch_size=8, seed=0)
    specs = [nr.NetworkSpec.random(n_in=1, n_hidden=16, n_out=2, gain=g, seed=0, alpha=0.2) for g in (0.5, 1.5)]
    together = train_lif(specs, task, rule="eprop", iterations=4, lr=1e-2, threshold=0.5, dtype="float64")
    for j, spec in enumerate(specs):
        alone = train_lif([spec], task, rule="eprop", iterations=4, lr=1e-2, threshold=0.5, dtype="float64")
        np.testing.assert_allclose(together["losses"][:, j], alone["losses"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(together["networks"][j].spec.w_rec, alone["networks"][0].spec.w_rec, atol=1e-12)
    assert not np.allclose(together["networks"][1].spec.w_rec, specs[1].w_rec)


def test_train_api_neuron_lif_groups_learning_rates_and_matches_train_lif(tmp_path):
    import neurorate as nr
    from neurorate.model.spiking_learning import train_lif

    task = nr.make_task("romo", batch_size=4, seed=0)
    specs = [nr.NetworkSpec.random(n_hidden=8, gain=g, seed=s, alpha=0.2) for g, s in ((0.5, 0), (1.5, 1), (1.0, 2))]
    res = nr.train(specs, task, rule="eprop", iterations=6, lr=[1e-3, 3e-3, 1e-3], neuron="lif", out=tmp_path,
                   lyapunov=False, dtype="float32")
    ref_a = train_lif([specs[0], specs[2]], task, rule="eprop", iterations=6, lr=1e-3)
    ref_b = train_lif([specs[1]], task, rule="eprop", iterations=6, lr=3e-3)
    np.testing.assert_allclose(res[0].losses, ref_a["losses"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(res[2].losses, ref_a["losses"][:, 1], rtol=1e-6)
    np.testing.assert_allclose(res[1].losses, ref_b["losses"][:, 0], rtol=1e-6)
    assert [r.lr for r in res] == [1e-3, 3e-3, 1e-3] and all(r.backend == "torch (lif)" for r in res)
    assert (tmp_path / "net-001" / "spec_final.npz").is_file()
    with pytest.raises(nr.NeurorateError, match="supports the rules"):
        nr.train(specs[0], task, rule="rflo", neuron="lif", iterations=1, lyapunov=False)


def test_train_api_neuron_lif_trains_in_the_dtype_asked_for():
    import neurorate as nr
    from neurorate.model.spiking_learning import train_lif

    task = nr.make_task("romo", batch_size=4, seed=0)
    spec = nr.NetworkSpec.random(n_hidden=8, gain=1.5, seed=1, alpha=0.2)
    res = nr.train(spec, task, rule="eprop", iterations=5, lr=3e-3, neuron="lif", lyapunov=False, dtype="float64")
    ref = train_lif([spec], task, rule="eprop", iterations=5, lr=3e-3, dtype="float64")
    np.testing.assert_array_equal(res.losses, ref["losses"][:, 0])  # the same program, not merely close
    np.testing.assert_array_equal(res.spec.w_rec, ref["networks"][0].spec.w_rec)
    single = nr.train(spec, task, rule="eprop", iterations=5, lr=3e-3, neuron="lif", lyapunov=False)
    assert not np.array_equal(single.spec.w_rec, res.spec.w_rec)  # float32 by default: other rounding
    with pytest.raises(nr.NeurorateError, match="float32 or float64, not dtype='bfloat16'"):
        nr.train(spec, task, iterations=1, neuron="lif", dtype="bfloat16", lyapunov=False)


# ------------------------------------------------------------------------------------------ ALIF
def _alif(gains=(0.5, 1.5, 3.0), beta_a=0.7, rho=0.9, fraction=1.0):
    return [LIFNetwork(nr.NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=g, seed=1, alpha=0.2),
                       threshold=0.5, kappa=0.6, beta_a=beta_a, rho=rho, adaptive_fraction=fraction) for g in gains]


@pytest.mark.parametrize("rule", ["eprop", "eprop_random"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_alif_eprop_autograd_detach_equals_online_traces(rule, fraction):
    """ALIF e-prop (Bellec et al. 2020): autograd with z_{t-1} detached in W z and the reset but kept in the
    adaptation equals the forward traces e_t = psi_t (zbar_t - beta_a eps_t), for all parameters, in float64."""
    nets = _alif(fraction=fraction)
    x, target, mask = _data()
    sim = simulate(nets, x.numpy())
    assert 0.05 < sim["z"].mean() < 0.6 and sim["a"].max() > 1.0  # spiking and adapting
    a = autograd_gradients(nets, x, target, mask, rule=rule)
    o = online_gradients(nets, x, target, mask, rule=rule)
    for name in a:
        assert a[name].abs().max() > 1e-4, name
        torch.testing.assert_close(a[name], o[name], rtol=0, atol=1e-10)
    # the adaptation changes the recurrent gradient (the eps term is exercised, not zero)
    plain = autograd_gradients(_alif(beta_a=0.0, fraction=fraction), x, target, mask, rule=rule)
    assert (a["w_rec"] - plain["w_rec"]).abs().max() > 1e-4


def test_alif_with_beta_a_zero_is_lif_exactly():
    """beta_a = 0: the trajectories equal a plain LIF loop (spikes exactly, membrane to rounding), and the
    outputs and both e-prop gradients are bit for bit independent of rho and the adaptive fraction."""
    x, target, mask = _data()
    ref, other = _alif(beta_a=0.0, rho=0.9), _alif(beta_a=0.0, rho=0.3, fraction=0.5)
    sim = simulate(ref, x.numpy())
    for j, net in enumerate(ref):
        s, v, z = net.spec, np.zeros((B, N)), np.zeros((B, N))
        for t in range(T):
            v = net.beta * v + z @ s.w_rec.T + x[t].numpy() @ s.w_in.T + s.b - net.threshold * z
            z = (v >= net.threshold).astype(float)
            np.testing.assert_allclose(sim["v"][j, t], v, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(sim["z"][j, t], z)
            v = sim["v"][j, t]  # continue from neurorate's membrane: no drift of rounding differences
    np.testing.assert_array_equal(simulate(other, x.numpy())["y"], sim["y"])
    for fn in (autograd_gradients, online_gradients):
        g0, g1 = fn(ref, x, target, mask), fn(other, x, target, mask)
        for name in g0:
            torch.testing.assert_close(g0[name], g1[name], rtol=0, atol=0)
    assert not any(n.adaptive for n in ref) and all(n.adaptive for n in _alif())


def test_alif_adaptation_raises_the_threshold():
    """a_t = rho a_{t-1} + z_{t-1}; a unit spikes when v_t >= theta + beta_a a_t (checked on the simulation)."""
    net = _alif(gains=(1.5,), fraction=0.5)[0]
    sim = simulate(net, _data()[0].numpy())
    a, z, v = sim["a"][0], sim["z"][0], sim["v"][0]
    np.testing.assert_allclose(a[1:], net.rho * a[:-1] + z[:-1], rtol=0, atol=1e-12)
    beta_a = net.adaptation
    assert beta_a[: N // 2].tolist() == [0.7] * (N // 2) and not beta_a[N // 2:].any()
    np.testing.assert_array_equal(z, (v - beta_a * a >= net.threshold).astype(float))


def test_alif_save_load_and_nir_refusal(tmp_path):
    net = _alif(gains=(1.5,), fraction=0.5)[0]
    back = LIFNetwork.load(net.save(tmp_path / "alif.npz"))
    assert (back.beta_a, back.rho, back.adaptive_fraction) == (0.7, 0.9, 0.5)
    x = _data()[0].numpy()
    np.testing.assert_array_equal(simulate(back, x)["y"], simulate(net, x)["y"])
    pytest.importorskip("nir")
    from neurorate.io import nir as nir_io

    with pytest.raises(nr.NeurorateError, match="NIR has no adaptive-threshold"):
        nir_io.to_nir(net)


def test_train_api_neuron_alif_matches_train_lif_and_validates(tmp_path):
    task = nr.make_task("romo", batch_size=4, seed=0)
    spec = nr.NetworkSpec.random(n_hidden=8, gain=1.0, seed=0, alpha=0.2)
    res = nr.train(spec, task, rule="eprop", iterations=5, lr=3e-3, neuron="alif", out=tmp_path / "run",
                   backend_options={"threshold": 0.5, "rho": 0.9}, lyapunov=False)
    ref = train_lif([spec], task, rule="eprop", iterations=5, lr=3e-3, threshold=0.5, beta_a=1.0, rho=0.9)
    np.testing.assert_allclose(res.losses, ref["losses"][:, 0], rtol=1e-6)
    assert res.backend == "torch (alif)"
    saved = LIFNetwork.load(tmp_path / "run" / "spec_final.npz")
    assert (saved.beta_a, saved.rho, saved.threshold) == (1.0, 0.9, 0.5)
    with pytest.raises(nr.NeurorateError, match="use neuron='alif'"):
        nr.train(spec, task, iterations=1, neuron="lif", backend_options={"beta_a": 1.0}, lyapunov=False)
    with pytest.raises(nr.NeurorateError, match="unknown spiking option"):
        nr.train(spec, task, iterations=1, neuron="alif", backend_options={"tau_a": 3.0}, lyapunov=False)


def test_train_lif_per_network_tasks_equal_separate_runs():
    """One task stream per network (the study's layout) trains each network as it would alone on its stream."""
    tasks = [nr.make_task("romo", batch_size=4, seed=s) for s in (0, 1)]
    specs = [nr.NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=g, seed=0, alpha=0.2) for g in (0.5, 1.5)]
    kw = {"rule": "eprop", "iterations": 3, "lr": 1e-2, "threshold": 0.5, "dtype": "float64", "beta_a": 0.5}
    both = train_lif(specs, tasks, **kw)
    for j in range(2):
        alone = train_lif([specs[j]], tasks[j], **kw)
        np.testing.assert_allclose(both["losses"][:, j], alone["losses"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(both["networks"][j].spec.w_rec, alone["networks"][0].spec.w_rec, atol=1e-12)
    assert not np.allclose(both["losses"][:, 0], train_lif([specs[0]], tasks[1], **kw)["losses"][:, 0])
