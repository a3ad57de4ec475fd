"""Learning rules against oracles (docs/theory.md §3.5), float64.

T1 on-line traces == autograd with the presynaptic detach, every parameter, every form (1e-10);
T2 BPTT == central finite differences; T3 g = 0: e-prop == BPTT; T4 detach changes no values;
T5 truncation bias grows with g; T6 random feedback B = W_out^T reproduces e-prop; T7 form B, alpha = 1:
e-prop == trunc1; and rflo == eprop_random.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorate.backends.torch import gradients as G
from neurorate.backends.torch.ensemble import stack
from neurorate.model.spec import NetworkSpec

N, N_IN, N_OUT, T, B, ALPHA = 12, 3, 2, 25, 4, 0.3
DT = torch.float64


def make(gain, form="A", activation="tanh", alpha=ALPHA, seed=0, feedback=None):
    spec = NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=gain, seed=seed, form=form,
                              activation=activation, alpha=alpha)
    if feedback is not None:
        spec = spec.replace(feedback=feedback(spec))
    return stack([spec], DT, torch.device("cpu")), spec


def data(kind="mse", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, T, B, N_IN, generator=g, dtype=DT)
    if kind == "mse":
        target = torch.randn(T, B, N_OUT, generator=g, dtype=DT)
        mask = (torch.rand(T, B, N_OUT, generator=g, dtype=DT) > 0.3).to(DT)
    else:
        target = torch.randint(0, N_OUT, (T, B), generator=g)
        mask = torch.ones(T, B, dtype=DT)
    return x, target, mask


def grads(rule, ens, kind="mse", seed=1):
    x, target, mask = data(kind, seed)
    loss, _, g = G.gradients(ens, rule, kind, x, target, mask)
    return loss, g


def max_rel(a, b):
    return float((a - b).abs().max() / (b.abs().max() + 1e-300))


@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("gain", [0.0, 0.5, 1.5])
@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_online_traces_equal_autograd_detach(form, gain, kind):
    ens, _ = make(gain, form)
    loss_a, ga = grads("eprop", ens, kind)
    loss_o, go = grads("eprop_online", ens, kind)
    assert torch.allclose(loss_a, loss_o, rtol=0, atol=1e-12)
    for name in ga:
        assert (ga[name] - go[name]).abs().max() < 1e-10, name
        assert ga[name].abs().max() > 1e-6, f"{name}: zero gradient makes the comparison empty"


@pytest.mark.parametrize("form", ["A", "B", "C"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bptt_equals_finite_differences(form, activation):
    ens, _ = make(1.2, form, activation)
    x, target, mask = data("mse")
    _, _, g = G.gradients(ens, "bptt", "mse", x, target, mask)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name, p in ens.params.items():
        flat = p.view(-1)
        for idx in rng.choice(flat.numel(), size=min(6, flat.numel()), replace=False):
            old = flat[idx].item()
            flat[idx] = old + eps
            lp, _, _ = G.gradients(ens, "bptt", "mse", x, target, mask)
            flat[idx] = old - eps
            lm, _, _ = G.gradients(ens, "bptt", "mse", x, target, mask)
            flat[idx] = old
            fd = (lp - lm).item() / (2 * eps)
            assert abs(fd - g[name].reshape(-1)[idx].item()) < 1e-7 * max(1.0, abs(fd)), (name, idx)


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_zero_gain_eprop_equals_bptt(form):
    ens, _ = make(0.0, form)
    _, ge = grads("eprop", ens)
    _, gb = grads("bptt", ens)
    for name in gb:
        assert max_rel(ge[name], gb[name]) < 1e-12, name


def test_detach_changes_no_values_and_readout_gradient():
    ens, _ = make(1.5)
    x, target, mask = data()
    s_e, r_e, _ = G.forward(ens, x, detach_pre=True)
    s_b, r_b, _ = G.forward(ens, x)
    assert torch.equal(s_e, s_b) and torch.equal(r_e, r_b)
    le, ge = grads("eprop", ens)
    lb, gb = grads("bptt", ens)
    assert torch.equal(le, lb)
    assert max_rel(ge["w_out"], gb["w_out"]) < 1e-14 and max_rel(ge["b_out"], gb["b_out"]) < 1e-14


def test_truncation_bias_grows_with_gain():
    cos = []
    for gain in (0.0, 0.5, 1.5):
        ens, _ = make(gain)
        _, ge = grads("eprop", ens)
        _, gb = grads("bptt", ens)
        a, b = ge["w_rec"].reshape(-1), gb["w_rec"].reshape(-1)
        cos.append(float(a @ b / (a.norm() * b.norm())))
    assert cos[0] == pytest.approx(1.0, abs=1e-12)
    assert cos[0] > cos[1] > cos[2]


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_random_feedback_with_readout_transpose_is_eprop(form):
    ens, _ = make(1.0, form, feedback=lambda s: s.w_out.T.copy())
    _, ge = grads("eprop", ens)
    _, gr = grads("eprop_random", ens)
    _, gf = grads("rflo", ens)
    for name in ge:
        assert max_rel(gr[name], ge[name]) < 1e-12, name
        assert max_rel(gf[name], ge[name]) < 1e-10, name


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_rflo_equals_random_feedback_eprop(form):
    ens, _ = make(1.0, form)
    _, gr = grads("eprop_random", ens)
    _, gf = grads("rflo", ens)
    _, ge = grads("eprop", ens)
    for name in gr:
        assert max_rel(gf[name], gr[name]) < 1e-10, name
    assert max_rel(gr["w_rec"], ge["w_rec"]) > 1e-3  # the random feedback really differs from W_out^T


def test_form_b_alpha_one_eprop_equals_trunc1():
    ens, _ = make(1.0, "B", alpha=1.0)
    _, ge = grads("eprop", ens)
    _, gt = grads("trunc1", ens)
    for name in ge:
        assert max_rel(gt[name], ge[name]) < 1e-12, name


def test_trunc1_differs_from_eprop_when_leaky():
    ens, _ = make(1.0, "A", alpha=0.3)
    _, ge = grads("eprop", ens)
    _, gt = grads("trunc1", ens)
    assert max_rel(gt["w_rec"], ge["w_rec"]) > 1e-2


@pytest.mark.parametrize("rule", ["eprop", "eprop_random"])
@pytest.mark.parametrize("kind", ["mse", "ce"])
@pytest.mark.parametrize("gain", [0.5, 1.5])
def test_vectorised_form_a_path_equals_autograd(rule, kind, gain):
    ens, _ = make(gain, "A")
    x, target, mask = data(kind)
    la, aa, ga = G.gradients(ens, rule, kind, x, target, mask, impl="autograd")
    lf, af, gf = G.gradients(ens, rule, kind, x, target, mask, impl="auto")
    assert torch.allclose(la, lf, rtol=0, atol=1e-13) and torch.equal(aa, af)
    for name in ga:
        assert ga[name].shape == gf[name].shape, name
        assert (ga[name] - gf[name]).abs().max() < 1e-12, name


def test_vectorised_path_with_one_task_per_network():
    ens, _ = make(1.0, "A")
    ens2 = stack([NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=g, seed=1, alpha=ALPHA)
                  for g in (0.5, 1.5)], DT, torch.device("cpu"))
    xs, ts, ms = zip(*(data("mse", seed) for seed in (1, 2)))
    x = torch.cat(xs)
    target, mask = torch.stack(ts), torch.stack(ms)
    la, _, ga = G.gradients(ens2, "eprop", "mse", x, target, mask, impl="autograd")
    lf, _, gf = G.gradients(ens2, "eprop", "mse", x, target, mask)
    assert torch.allclose(la, lf, atol=1e-13)
    for name in ga:
        assert (ga[name] - gf[name]).abs().max() < 1e-12, name


@pytest.mark.parametrize("kind", ["mse", "ce"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("gain", [0.0, 1.5])
def test_handwritten_bptt_equals_autograd(kind, activation, gain):
    ens, _ = make(gain, "A", activation)
    x, target, mask = data(kind)
    la, aa, ga = G.gradients(ens, "bptt", kind, x, target, mask, impl="autograd")
    lf, af, gf = G.gradients(ens, "bptt", kind, x, target, mask)
    assert torch.allclose(la, lf, rtol=0, atol=1e-13) and torch.equal(aa, af)
    for name in ga:
        assert ga[name].shape == gf[name].shape, name
        assert (ga[name] - gf[name]).abs().max() < 1e-12, name
