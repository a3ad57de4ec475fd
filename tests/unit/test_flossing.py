"""Oracle tests of neurorate.analysis.flossing: gradients of the three modes, per-network Adam, the flossing effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorate.analysis.flossing import floss, flossing_loss
from neurorate.analysis.lyapunov import max_lyapunov, orthonormal_frame, stack_specs
from neurorate.errors import NeurorateError
from neurorate.model.spec import NetworkSpec
from neurorate.optim import EnsembleOptimizer
from neurorate.tasks.romo import RomoTask

torch.set_num_threads(1)
F64 = torch.float64


def small_spec(n=5, gain=1.5, form="A", alpha=0.5, seed=0):
    return NetworkSpec.random(n_in=2, n_hidden=n, n_out=1, gain=gain, seed=seed, form=form, alpha=alpha)


def inputs(t=40, s=2, n_in=2, seed=1):
    return torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (t, s, n_in)), dtype=F64)


def grads(spec, x, mode, k, target=0.0):
    ens = stack_specs([spec], dtype=F64)
    for name in ("w_rec", "w_in", "b"):
        ens[name].requires_grad_(True)
    loss, lam = flossing_loss(ens, spec.form, spec.activation, x, k, mode, target)
    g = torch.autograd.grad(loss.sum(), [ens["w_rec"], ens["w_in"], ens["b"]], allow_unused=True)
    grads = [None if gi is None else gi[0].numpy().reshape(-1) for gi in g]
    return grads, float(loss.detach()), lam[0].detach().numpy()


@pytest.mark.parametrize("form", ["A", "C"])
def test_full_mode_gradient_matches_finite_differences(form):
    spec, x, k, h = small_spec(form=form), inputs(), 3, 1e-6
    (g_w, g_u, g_b), _, _ = grads(spec, x, "full", k, target=-0.1)

    def loss_of(**changes):
        ens = stack_specs([spec.replace(**changes)], dtype=F64)
        return float(flossing_loss(ens, form, spec.activation, x, k, "full", -0.1)[0])

    for name, g in (("w_rec", g_w), ("w_in", g_u), ("b", g_b)):
        base = getattr(spec, name)
        fd = np.zeros(base.size)
        for i in range(base.size):
            e = np.zeros(base.size)
            e[i] = h
            fd[i] = (loss_of(**{name: base + e.reshape(base.shape)}) -
                     loss_of(**{name: base - e.reshape(base.shape)})) / (2 * h)
        assert np.max(np.abs(g - fd)) < 1e-6 * max(1.0, np.max(np.abs(fd))), name


def test_onestep_k1_gradient_is_the_three_factor_product():
    """dlog||v||/dW_ij = alpha v_i f'(a_{t-1,j}) q_j / ||v||^2, summed over accumulated steps (science §5.3)."""
    spec, x, target = small_spec(n=6, gain=1.2), inputs(t=50, s=3), -0.05
    (g_w, g_u, g_b), _, lam = grads(spec, x, "onestep", 1, target)
    al, w, u, b = spec.alpha, spec.w_rec, spec.w_in, spec.b
    n_t, warm = x.shape[0], int(0.1 * x.shape[0])
    xs = x.numpy()
    dlam, lam_ref = np.zeros((6, 6)), 0.0
    for s in range(xs.shape[1]):
        a, q = np.zeros(6), orthonormal_frame(6, 1, seed=0).numpy()[:, 0]
        for t in range(n_t):
            fp = 1 - np.tanh(a) ** 2
            v = (1 - al) * q + al * w @ (fp * q)
            a = (1 - al) * a + al * (w @ np.tanh(a) + u @ xs[t, s] + b)
            nv = np.linalg.norm(v)
            if t >= warm:
                dlam += al * np.outer(v, fp * q) / nv**2
                lam_ref += np.log(nv)
            q = v / nv
    count, streams = n_t - warm, xs.shape[1]
    lam_ref /= count * streams
    expect = 2 * (lam_ref - target) * dlam / (count * streams)
    assert abs(lam[0] - lam_ref) < 1e-12
    assert np.max(np.abs(g_w - expect.reshape(-1))) < 1e-12
    # W_in and b reach D_t only through f'(a), which onestep holds constant: no gradient
    assert (g_u is None or not np.any(g_u)) and (g_b is None or not np.any(g_b))


def test_state_mode_equals_full_without_recurrence_and_differs_with_it():
    """With W_rec = 0 the e-prop detach cuts nothing (every cut path carries a factor W): state == full.
    At g = 1.5 the state-mode gradient is non-zero and differs from the full one."""
    x = inputs(t=60)
    zero = small_spec(n=6).replace(w_rec=np.zeros((6, 6)))
    for g_state, g_full in zip(grads(zero, x, "state", 3, -0.2)[0], grads(zero, x, "full", 3, -0.2)[0]):
        assert np.allclose(g_state, g_full, rtol=0, atol=1e-13)
    spec = small_spec(n=6, gain=1.5)
    (s_w, s_u, s_b), _, _ = grads(spec, x, "state", 3)
    (f_w, f_u, f_b), _, _ = grads(spec, x, "full", 3)
    for gs, gf in ((s_w, f_w), (s_u, f_u), (s_b, f_b)):
        assert np.linalg.norm(gs) > 1e-3 * np.linalg.norm(gf) > 0
        assert np.linalg.norm(gs - gf) > 0.05 * np.linalg.norm(gf)
    # the forward values are identical (detach changes no values): same exponents
    assert np.allclose(grads(spec, x, "state", 3)[2], grads(spec, x, "full", 3)[2], atol=1e-14)


def test_flossing_optimizer_leaves_a_network_with_a_nan_gradient_untouched():
    """flossing freezes a network whose loss or gradient is not finite; the other one still follows torch's Adam."""
    rng = np.random.default_rng(0)
    p0 = torch.tensor(rng.standard_normal((2, 4, 3)), dtype=F64)
    ours = {"w_rec": p0.clone()}
    ref = torch.nn.Parameter(p0[0].clone())
    opt, torch_opt = EnsembleOptimizer("adam", torch.tensor([1e-2, 1e-2], dtype=F64)), torch.optim.Adam([ref], lr=1e-2)
    for _ in range(20):
        g = torch.tensor(rng.standard_normal((2, 4, 3)), dtype=F64)
        g[1, 0, 0] = float("nan")
        opt.step(ours, {"w_rec": g}, torch.isfinite(g.reshape(2, -1)).all(dim=1))
        ref.grad = g[0].clone()
        torch_opt.step()
    assert torch.allclose(ours["w_rec"][0], ref.detach(), rtol=0, atol=1e-14)
    assert torch.equal(ours["w_rec"][1], p0[1])
    assert torch.isfinite(opt.m1["w_rec"]).all() and torch.isfinite(opt.m2["w_rec"]).all()


def test_ensemble_flossing_equals_separate_runs_with_own_learning_rates():
    task = RomoTask(seed=2)
    specs = [NetworkSpec.random(n_hidden=12, gain=g, seed=i) for i, g in enumerate((0.5, 1.5))]
    lrs = [1e-3, 5e-3]
    kw = {"iterations": 3, "mode": "state", "k": 3, "n_streams": 2, "dtype": F64}
    together, losses = floss(specs, task, lr=lrs, **kw)
    assert losses.shape == (2, 3)
    for i, spec in enumerate(specs):
        alone, loss_i = floss(spec, task, lr=lrs[i], **kw)
        assert np.allclose(losses[i], loss_i[0], rtol=0, atol=1e-13)
        for name in ("w_rec", "w_in", "b"):
            assert np.allclose(getattr(together[i], name), getattr(alone[0], name), rtol=0, atol=1e-13)
        assert not np.array_equal(together[i].w_rec, spec.w_rec)
        assert np.array_equal(together[i].w_out, spec.w_out) and np.array_equal(together[i].b_out, spec.b_out)
        rec = together[i].init["flossed"]
        assert rec["mode"] == "state" and rec["iterations"] == 3 and rec["lr"] == lrs[i] and rec["k"] == 3
        assert "flossed" not in spec.init  # the input specs are untouched


def test_flossing_moves_lambda_max_of_a_small_gain_network_to_zero():
    """docs/theory.md §5.3: state-mode flossing, 100 iterations, Romo, N = 64, tanh, form A, alpha 0.5, g = 0.5."""
    task = RomoTask()
    spec = NetworkSpec.random(n_in=1, n_hidden=64, n_out=2, gain=0.5, seed=0, alpha=0.5)
    before = max_lyapunov(spec, task)
    flossed, losses = floss(spec, task, iterations=100, mode="state")
    after = max_lyapunov(flossed[0], task)
    assert before < -0.3  # measured -0.401
    assert abs(after) < 0.05  # measured -0.014 per step
    assert losses[0, -1] < 0.01 * losses[0, 0]


def test_bad_flossing_options_raise():
    spec = small_spec()
    x = inputs().numpy()
    with pytest.raises(NeurorateError, match="mode"):
        floss(spec, x, iterations=1, mode="local")
    with pytest.raises(NeurorateError, match="lr"):
        floss([spec, spec], x, iterations=1, lr=[1e-3, 1e-3, 1e-3])
    with pytest.raises(NeurorateError, match="channels"):
        floss(spec, x[..., :1], iterations=1)


def test_relu_alpha_one_from_rest_has_finite_exponents_and_flossing_gradient():
    """Regression: with ReLU at alpha = 1 the first Jacobian W diag(f'(0)) is exactly 0. The warm-up must not
    carry that dead frame into the measurement, and the local modes must not backpropagate through it (the QR
    backward of a rank-deficient frame is NaN, which silently skipped every flossing iteration)."""
    import neurorate as nr
    from neurorate.analysis.flossing import flossing_loss
    from neurorate.analysis.lyapunov import stack_specs

    task = nr.make_task("2af", batch_size=4, seed=0)
    spec = nr.NetworkSpec.random(n_in=3, n_out=3, n_hidden=32, gain=0.25, seed=0, activation="relu",
                                 input_bias=False, alpha=1.0)
    lam_max = nr.max_lyapunov(spec, task)
    spectrum = nr.lyapunov_spectrum(spec, task, k=4)
    assert -5 < lam_max < 0 and abs(lam_max - spectrum[0]) < 0.05
    x = torch.as_tensor(task.stream(4, 4), dtype=torch.float64)
    for mode in ("state", "onestep"):
        ens = stack_specs([spec], dtype=torch.float64)
        ens["w_rec"].requires_grad_(True)
        loss, _ = flossing_loss(ens, "A", "relu", x, 4, mode=mode)
        grad = torch.autograd.grad(loss.sum(), [ens["w_rec"]])[0]
        assert torch.isfinite(grad).all() and grad.abs().max() > 1e-3, mode
    flossed, losses = nr.floss([spec], task, iterations=20, k=4)
    assert losses[0, -1] < 0.85 * losses[0, 0]
    assert nr.max_lyapunov(flossed[0], task) > lam_max + 0.2
