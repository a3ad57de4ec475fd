"""Rules as estimators of the influence matrix (docs/theory.md §3.6), float64.

E1 rtrl == BPTT for every form, activation and loss (1e-10); E2 snap1 == an independent SnAp-1 written here
(explicit per-trial loops over the model equations), == its autograd reading (the other units' rates detached) and
== its fast form A kernel; E3 snap1 == e-prop when diag(W) = 0, and differs by the self-connection otherwise;
E4 uoro and kf_rtrl are unbiased: the mean squared error of a mean of s draws is tr(Cov)/s (the 1/sqrt(s) law)
and the mean of many draws approaches the exact gradient; E5 the dispatch by property, reproducible draws and
the refusals.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.analysis.alignment import replicate
from neurorate.backends.torch import gradients as G
from neurorate.backends.torch.ensemble import stack
from neurorate.errors import NeurorateError
from neurorate.learning import Rule, get_rule
from neurorate.model.spec import NetworkSpec

torch.set_num_threads(1)
N, N_IN, N_OUT, T, B, ALPHA = 7, 3, 2, 12, 3, 0.3
DT = torch.float64
TRAINED = ("w_rec", "w_in", "b")


def make(gain=1.3, form="A", activation="tanh", alpha=ALPHA, seed=0, zero_diag=False, n=N):
    spec = NetworkSpec.random(n_in=N_IN, n_hidden=n, n_out=N_OUT, gain=gain, seed=seed, form=form,
                              activation=activation, alpha=alpha)
    if zero_diag:
        w = spec.w_rec.copy()
        np.fill_diagonal(w, 0.0)
        spec = spec.replace(w_rec=w)
    return stack([spec], DT, torch.device("cpu")), spec


def data(kind="mse", seed=1, t=T, b=B):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, t, b, N_IN, generator=g, dtype=DT)
    if kind == "mse":
        target = torch.randn(t, b, N_OUT, generator=g, dtype=DT)
        mask = (torch.rand(t, b, N_OUT, generator=g, dtype=DT) > 0.3).to(DT)
    else:
        target = torch.randint(0, N_OUT, (t, b), generator=g)
        mask = torch.ones(t, b, dtype=DT)
    return x, target, mask


def grads(rule, ens, kind="mse", impl="auto", **kw):
    x, target, mask = data(kind)
    return G.gradients(ens, rule, kind, x, target, mask, impl=impl, **kw)


def max_rel(a, b):
    return float((a - b).abs().max() / (b.abs().max() + 1e-300))


# ---------------------------------------------------------------- E1 exact RTRL
@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_rtrl_equals_bptt(form, activation, kind):
    ens, _ = make(1.3 if activation != "identity" else 0.8, form, activation)
    lb, ab, gb = grads("bptt", ens, kind, impl="autograd")
    lr, ar, gr = grads("rtrl", ens, kind)
    assert torch.allclose(lb, lr, rtol=0, atol=1e-13) and torch.equal(ab, ar)
    for name in gb:
        assert gr[name].shape == gb[name].shape, name
        assert max_rel(gr[name], gb[name]) < 1e-10, name
        assert gb[name].abs().max() > 1e-6, f"{name}: an empty comparison"


# ---------------------------------------------------------------- E2/E3 SnAp-1
def independent_snap1(spec: NetworkSpec, x, target, mask, kind="mse"):
    """SnAp-1 per trial from the model equations: m[k, l] = J[k, k] m[k, l] + dMbar[k, l] (numpy, loops)."""
    f = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "identity": lambda a: a}[spec.activation]
    fp = {"tanh": lambda a: 1 - np.tanh(a) ** 2, "relu": lambda a: (a > 0) * 1.0,
          "identity": np.ones_like}[spec.activation]
    w, u, b, v = spec.w_rec, spec.w_in, spec.b.reshape(-1), spec.w_out
    al, n = spec.alpha, spec.n_hidden
    x = x[0].numpy()
    target, mask = target.numpy(), mask.numpy()
    norm = max(mask.sum(), 1.0)
    g = {"w_rec": np.zeros((n, n)), "w_in": np.zeros((n, N_IN)), "b": np.zeros(n)}
    for trial in range(x.shape[1]):
        s = np.zeros(n)
        m = {"w_rec": np.zeros((n, n)), "w_in": np.zeros((n, N_IN)), "b": np.zeros(n)}
        for t in range(x.shape[0]):
            xt = x[t, trial]
            pre = f(s) if spec.form == "A" else s  # what W multiplies
            if spec.form == "A":
                a = (1 - al) * s + al * (w @ pre + u @ xt + b)
                jd = (1 - al) + al * np.diag(w) * fp(s)
                direct = al * np.ones(n)
                new, rate, out_deriv = a, f(a), fp(a)
            elif spec.form == "B":
                uu = (1 - al) * s + al * (w @ pre + u @ xt + b)
                jd = fp(uu) * ((1 - al) + al * np.diag(w))
                direct = al * fp(uu)
                new = f(uu)
                rate, out_deriv = new, np.ones(n)
            else:
                uu = w @ pre + u @ xt + b
                jd = (1 - al) + al * fp(uu) * np.diag(w)
                direct = al * fp(uu)
                new = (1 - al) * s + al * f(uu)
                rate, out_deriv = new, np.ones(n)
            m["w_rec"] = jd[:, None] * m["w_rec"] + direct[:, None] * pre[None, :]
            m["w_in"] = jd[:, None] * m["w_in"] + direct[:, None] * xt[None, :]
            m["b"] = jd * m["b"] + direct
            s = new
            y = v @ rate + spec.b_out.reshape(-1)
            if kind == "mse":
                dy = mask[t, trial] * (y - target[t, trial]) / norm
            else:
                p = np.exp(y - y.max())
                p /= p.sum()
                dy = mask[t, trial] * (p - np.eye(N_OUT)[target[t, trial]]) / norm
            c = out_deriv * (v.T @ dy)
            g["w_rec"] += c[:, None] * m["w_rec"]
            g["w_in"] += c[:, None] * m["w_in"]
            g["b"] += c * m["b"]
    return g


@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_snap1_equals_an_independent_snap1(form, activation, kind):
    ens, spec = make(1.4, form, activation)
    x, target, mask = data(kind)
    oracle = independent_snap1(spec, x, target, mask, kind)
    for impl in ("auto", "estimator", "autograd"):  # fast kernel (form A), forward traces, detach reading
        _, _, g = G.gradients(ens, "snap1", kind, x, target, mask, impl=impl)
        for name in TRAINED:
            got = g[name][0].reshape(oracle[name].shape).numpy()
            assert np.abs(got - oracle[name]).max() < 1e-12 * max(1.0, np.abs(oracle[name]).max()), (impl, name)


@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
@pytest.mark.parametrize("impl", ["auto", "estimator"])
def test_snap1_equals_eprop_when_the_self_connections_are_zero(form, kind, impl):
    ens, _ = make(1.4, form, zero_diag=True)
    _, _, ge = grads("eprop", ens, kind)
    _, _, gs = grads("snap1", ens, kind, impl=impl)
    for name in ge:
        assert (gs[name] - ge[name]).abs().max() <= 1e-12 * max(1.0, float(ge[name].abs().max())), name


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_snap1_differs_from_eprop_by_the_self_connection(form):
    ens, _ = make(1.4, form)
    _, _, ge = grads("eprop", ens)
    _, _, gs = grads("snap1", ens)
    assert max_rel(gs["w_rec"], ge["w_rec"]) > 1e-3
    assert max_rel(gs["w_out"], ge["w_out"]) < 1e-14  # the readout is exact in both


def test_eprop_as_an_estimator_is_eprop():
    """The e-prop truncation through the estimator protocol (J ~ diag(d)) equals the eprop rule's kernels."""
    from neurorate.learning.estimators import estimator_gradients

    eprop_est = Rule("eprop_est", "e-prop via the protocol", "presynaptic rates", "symmetric", online=True,
                     estimator="neurorate.learning.estimators.snap1:EpropTrace")
    for form in "ABC":
        ens, _ = make(1.4, form)
        x, target, mask = data()
        _, _, ge = G.gradients(ens, "eprop", "mse", x, target, mask)
        for fast in (True, False):
            _, _, gp = estimator_gradients(ens, eprop_est, "mse", x, target, mask, G.IDENTITY, fast=fast)
            for name in ge:
                assert max_rel(gp[name], ge[name]) < 1e-12, (form, fast, name)


# ---------------------------------------------------------------- E4 unbiased stochastic estimates
DRAWS = 4096


def draws(rule, form, seed=1):
    """DRAWS independent gradient estimates of a small network (one pass: the network replicated) and the
    exact gradient, each flattened over the trained parameters."""
    ens, _ = make(1.5, form, n=5, alpha=0.4, seed=3)
    x, target, mask = data("mse", seed=0, t=6, b=2)
    _, _, exact = G.gradients(ens, "bptt", "mse", x, target, mask)
    _, _, many = G.gradients(replicate(ens, DRAWS), rule, "mse", x, target, mask, seed=seed)
    d = torch.cat([many[k].reshape(DRAWS, -1) for k in TRAINED], 1)
    e = torch.cat([exact[k].reshape(-1) for k in TRAINED])
    return d, e


@pytest.mark.parametrize("rule", ["uoro", "kf_rtrl"])
@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_stochastic_estimates_are_unbiased_at_the_predicted_rate(rule, form):
    d, e = draws(rule, form)
    trace = d.var(0).sum()  # tr Cov of one draw
    assert trace > 1e-6 * (e @ e), "no randomness: the property would hold trivially"
    # unbiased with finite variance <=> the mean squared error of a mean of s draws is tr(Cov) / s, at every s
    # (a bias b would add |b|^2, growing relative to tr(Cov)/s as s grows)
    for s in (1, 4, 16, 64):
        groups = d.reshape(DRAWS // s, s, -1).mean(1)
        ratio = float(((groups - e) ** 2).sum(1).mean() / (trace / s))
        assert 0.7 < ratio < 1.3, (s, ratio)
    # the error of the mean of all draws is of the size theory predicts, sqrt(tr Cov / DRAWS) ...
    err = float((d.mean(0) - e).norm())
    assert err < 3 * float((trace / DRAWS).sqrt())
    # ... and the mean points along the exact gradient: 1 - cos ~ (relative error)^2 / 2
    mean = d.mean(0)
    predicted = float((trace / DRAWS).sqrt() / e.norm())
    assert 1 - float(mean @ e / (mean.norm() * e.norm())) < 2 * predicted ** 2


def test_the_rate_test_catches_a_biased_estimate():
    """A bias as large as the standard error of a 64-draw mean doubles the statistic at s = 64."""
    d, e = draws("uoro", "A")
    trace = d.var(0).sum()
    biased = d + (trace / 64).sqrt() * torch.ones_like(e) / e.numel() ** 0.5
    groups = biased.reshape(DRAWS // 64, 64, -1).mean(1)
    assert float(((groups - e) ** 2).sum(1).mean() / (trace / 64)) > 1.6


def test_draws_are_reproducible_and_differ_between_batches():
    ens, _ = make(1.4, "A")
    for rule in ("uoro", "kf_rtrl"):
        a = grads(rule, ens, step0=0)[2]["w_rec"]
        b = grads(rule, ens, step0=0)[2]["w_rec"]
        c = grads(rule, ens, step0=T)[2]["w_rec"]
        d = grads(rule, ens, step0=0, seed=5)[2]["w_rec"]
        assert torch.equal(a, b)
        assert not torch.equal(a, c) and not torch.equal(a, d)


# ---------------------------------------------------------------- E5 dispatch and refusals
def test_estimator_rules_are_computed_by_their_estimators_not_by_eprop_or_bptt():
    ens, _ = make(1.4, "B")
    _, _, gb = grads("bptt", ens)
    _, _, ge = grads("eprop", ens)
    for rule in ("uoro", "kf_rtrl", "snap1"):
        g = grads(rule, ens)[2]["w_rec"]
        assert max_rel(g, gb["w_rec"]) > 1e-6 and max_rel(g, ge["w_rec"]) > 1e-6, rule
    with pytest.raises(NeurorateError, match="stochastic estimate; it has no autograd reading"):
        grads("uoro", ens, impl="autograd")
    # the e-prop kernels refuse a rule that is not the e-prop truncation
    from neurorate.learning.eprop import factorized_gradients, online_gradients

    x, target, mask = data()
    for kernel, args in ((online_gradients, (G.IDENTITY,)), (factorized_gradients, ())):
        with pytest.raises(NeurorateError, match="computes the e-prop truncation only"):
            kernel(make(1.0, "A")[0], get_rule("snap1"), "mse", x, target, mask, *args)


def test_rule_descriptions_with_estimators_are_validated():
    base = dict(name="x", summary="s", detach="nothing", feedback="symmetric")
    assert Rule(**base, online=True, estimator="m:E").online  # an estimator rule may run forward, any detach
    with pytest.raises(NeurorateError, match="forward traces compute the 'presynaptic rates' truncation"):
        Rule(**base, online=True)  # without one it would be computed as e-prop: refused
    with pytest.raises(NeurorateError, match="stochastic needs an estimator"):
        Rule(**base, stochastic=True)
    with pytest.raises(NeurorateError, match="estimator must be 'module:attr'"):
        Rule(**base, estimator="no_colon")
    broken = Rule(**base, estimator="no_such_module:E")
    with pytest.raises(NeurorateError, match="cannot be loaded: ModuleNotFoundError"):
        broken.make_estimator()


def test_compiled_path_and_engine_view_do_not_take_estimator_rules():
    from neurorate.backends.torch import TorchBackend
    from neurorate.backends.torch import compiled as C

    assert C.applies("cpu", "A", "tanh", "snap1", "mse", None)  # its own kernel mode (tests/unit/test_compiled.py)
    for rule in ("rtrl", "snap1", "uoro", "kf_rtrl"):
        if rule != "snap1":
            assert not C.applies("cpu", "A", "tanh", rule, "mse", None)  # the torch path, not another rule's kernel
        spec = NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, activation="relu")
        with pytest.raises(NeurorateError, match=f"engine view\\) cannot train this: rule {rule}") as info:
            TorchBackend.check_options({}, specs=[spec], batch=1, profile="loihi2-engine", rule=rule,
                                       optimizer="sgd", loss="mse")
        assert "\n" not in str(info.value)
        with pytest.raises(NeurorateError, match="not available on the lava backend"):
            nr.learning.check_rule(rule, backend="lava")
        # the Lava backend's own check names the backend the rule runs on (an RTRL-type rule runs forward in
        # time: not "needs the whole trajectory backwards")
        from neurorate.backends.base import backend_capabilities, check_compatible

        with pytest.raises(NeurorateError, match=f"rule '{rule}' is not available on the Lava backend \\(it runs on "
                                                 "torch\\)"):
            check_compatible(backend_capabilities("lava"), rule)


@pytest.mark.parametrize("rule", ["rtrl", "snap1", "uoro", "kf_rtrl"])
def test_estimator_rules_train_on_the_torch_backend_with_their_gradient(rule):
    """nr.train with SGD moves the weights by -lr x the rule's gradient of the first batch (compiled path on)."""
    spec = NetworkSpec.random(n_in=1, n_hidden=6, n_out=2, gain=1.5, seed=2)
    task = nr.make_task("romo", batch_size=3, seed=0)
    lr = 0.05
    res = nr.train(spec, task, rule=rule, iterations=1, lr=lr, optimizer="sgd", lyapunov=False, dtype="float64",
                   device="cpu", progress=False)
    ens = stack([spec], DT, torch.device("cpu"))
    x, target, mask = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in task.batch(0))
    _, _, g = G.gradients(ens, rule, "mse", x.unsqueeze(0), target, mask)
    for name in ("w_rec", "w_in", "w_out"):
        moved = (getattr(spec, name) - getattr(res.spec, name)) / lr
        np.testing.assert_allclose(moved, g[name][0].numpy().reshape(moved.shape), rtol=1e-9, atol=1e-12)


def test_rtrl_under_a_hardware_profile_equals_bptt_of_the_quantised_network():
    """Under a profile the estimate is the full-precision gradient of the quantised forward pass (straight-through
    derivatives), as autograd's BPTT is."""
    from neurorate.backends.base import make_profile_quantizer

    spec = NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=1.3, seed=0, activation="relu")
    ens = stack([spec], DT, torch.device("cpu"))
    quant = make_profile_quantizer("int8", [spec], True, batch_dims=1)
    x, target, mask = data()
    _, _, gb = G.gradients(ens, "bptt", "mse", x, target, mask, quant, impl="autograd", step0=40)
    _, _, gr = G.gradients(ens, "rtrl", "mse", x, target, mask, quant, step0=40)
    for name in gb:
        assert max_rel(gr[name], gb[name]) < 1e-10, name


def test_memory_preflight_knows_each_rules_footprint():
    from neurorate.training import check_resources, estimate_bytes

    est = {r: estimate_bytes(64, 1, 2, 32, 56, 10, networks=16, rule=r, lyapunov_k=None)
           for r in ("eprop", "snap1", "uoro", "kf_rtrl", "rtrl")}
    assert est["eprop"] < est["snap1"] < est["uoro"] < est["kf_rtrl"] < est["rtrl"]
    extra = est["rtrl"] - est["eprop"]
    assert extra == 4 * 16 * get_rule("rtrl").state_floats(64, 1, 32)  # 3 B N^2 P float32 per network
    with pytest.raises(NeurorateError, match=r"rule 'rtrl' keeps .* GiB of influence estimates\) needs about "
                                             r".* GiB of memory but only") as info:
        check_resources(512, 1, 2, 32, 56, 10, networks=1, rule="rtrl", lyapunov_k=None)
    assert "\n" not in str(info.value)


def test_stochastic_draws_use_the_device_of_the_ensemble():
    ens, _ = make(1.0, "C")
    big = replicate(ens, 3)
    assert big.m == 3 and dataclasses.is_dataclass(big)
    x, target, mask = data()
    _, _, g = G.gradients(big, "uoro", "mse", x, target, mask)
    assert g["w_rec"].shape == (3, N, N) and g["w_rec"].device == x.device
    assert not torch.equal(g["w_rec"][0], g["w_rec"][1])  # the copies draw independently


def test_the_estimator_plugin_of_the_docs_computes_through_its_class(tmp_path, monkeypatch):
    """The example of docs/rules.md ("How to add a rule"), written to a module: with diag(W) = 0 its decay is e-prop's,
    so its gradient is e-prop's; otherwise it lies between e-prop and SnAp-1 and is neither."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    start = text.index("# my_rules.py\nfrom neurorate.learning import Rule\nfrom neurorate.learning.estimators")
    code = text[start:text.index("```", start)]
    (tmp_path / "my_rules.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    half = importlib.import_module("my_rules").HALF
    try:
        ens, _ = make(1.4, "B", zero_diag=True)
        _, _, ge = grads("eprop", ens)
        _, _, gh = grads(half, ens)
        for name in ge:
            assert max_rel(gh[name], ge[name]) < 1e-12, name
        ens, _ = make(1.4, "A")
        g_half, g_e, g_s = (grads(r, ens)[2]["w_rec"] for r in (half, "eprop", "snap1"))
        assert max_rel(g_half, g_e) > 1e-4 and max_rel(g_half, g_s) > 1e-4
    finally:
        import sys

        sys.modules.pop("my_rules", None)


# ---------------------------------------------------------------- nr.gradient_alignment
def test_gradient_alignment_follows_the_influence_matrices():
    spec = NetworkSpec.random(n_in=1, n_hidden=10, n_out=2, gain=1.5, seed=0)
    task = nr.make_task("romo", batch_size=4, seed=0)
    exact = nr.gradient_alignment(spec, task, "rtrl")
    assert set(exact) == {"w_rec", "w_in", "b", "w_out", "b_out", "all"}
    for stats in exact.values():
        assert stats["cosine"] == pytest.approx(1.0, abs=1e-12) and stats["relative_error"] < 1e-10
        assert stats["sign_agreement"] == pytest.approx(1.0)
    e, s = nr.gradient_alignment(spec, task, "eprop"), nr.gradient_alignment(spec, task, "snap1")
    assert e["w_rec"]["cosine"] < 1 - 1e-3 and abs(e["w_rec"]["cosine"] - s["w_rec"]["cosine"]) > 1e-6
    assert e["w_out"]["cosine"] == pytest.approx(1.0, abs=1e-12)  # the readout is exact for every rule
    w = spec.w_rec.copy()
    np.fill_diagonal(w, 0.0)
    flat = spec.replace(w_rec=w)  # no self-connections: SnAp-1 is e-prop
    e0, s0 = nr.gradient_alignment(flat, task, "eprop"), nr.gradient_alignment(flat, task, "snap1")
    for name in e0:
        for stat in e0[name]:
            assert s0[name][stat] == pytest.approx(e0[name][stat], abs=1e-12), (name, stat)
    # a list of specs: one dict each, the same numbers as one at a time
    both = nr.gradient_alignment([spec, flat], task, "snap1")
    assert both[0]["w_rec"]["cosine"] == pytest.approx(s["w_rec"]["cosine"], abs=1e-12)


def test_gradient_alignment_of_a_stochastic_rule_improves_with_samples():
    spec = NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=1.2, seed=1)
    task = nr.make_task("romo", batch_size=2, seed=0)
    errs = [nr.gradient_alignment(spec, task, "uoro", samples=s)["all"]["relative_error"] for s in (1, 64, 1024)]
    assert errs[0] > errs[1] > errs[2]
    again = nr.gradient_alignment(spec, task, "uoro", samples=64)
    assert again["all"]["relative_error"] == errs[1]  # the same seed repeats the draws
    with pytest.raises(NeurorateError, match="samples must be an integer >= 1"):
        nr.gradient_alignment(spec, task, "uoro", samples=0)
    with pytest.raises(NeurorateError, match="unknown rule"):
        nr.gradient_alignment(spec, task, "nope")
    with pytest.raises(NeurorateError, match="needs n_in=3"):
        nr.gradient_alignment(spec, nr.make_task("2af", batch_size=2), "eprop")


@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_the_detach_feedback_family_read_as_estimators_has_the_numbers_of_its_kernels(form, kind):
    """Every built-in rule through the estimator protocol (the estimator of its detach, with its feedback) equals
    its own kernels: bptt (RTRL), eprop, eprop_online, eprop_random, rflo (J ~ diag(d)), trunc1 (J ~ 0)."""
    ens, _ = make(1.3, form, n=6)
    for rule in ("bptt", "eprop", "eprop_online", "eprop_random", "rflo", "trunc1"):
        lk, _, gk = grads(rule, ens, kind)
        le, _, ge = grads(rule, ens, kind, impl="estimator")
        assert torch.allclose(lk, le, rtol=0, atol=1e-13), rule
        for name in gk:
            assert max_rel(ge[name], gk[name]) < 1e-10, (rule, name)


def test_gradient_alignment_runs_on_the_backends_threads_and_restores_torchs(monkeypatch):
    import torch

    import neurorate as nr
    from neurorate.analysis import alignment

    seen = []
    real = alignment.rule_and_exact
    monkeypatch.setattr(alignment, "rule_and_exact",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, seed=0)
    task = nr.make_task("romo", batch_size=2, seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("NEURORATE_THREADS", raising=False)
        alignment.gradient_alignment(spec, task, rule="eprop")
        assert torch.get_num_threads() == 2  # torch's setting is back
        monkeypatch.setenv("NEURORATE_THREADS", "3")
        alignment.gradient_alignment(spec, task, rule="eprop")
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 3]
