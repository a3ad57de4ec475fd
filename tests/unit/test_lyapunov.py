"""Oracle tests of neurorate.analysis.lyapunov (float64, small networks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurorate.analysis.lyapunov import (
    LOG_FLOOR,
    lyapunov_from_trajectory,
    lyapunov_spectrum,
    max_lyapunov,
    orthonormal_frame,
)
from neurorate.errors import NeurorateError
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.base import Task
from neurorate.tasks.romo import RomoTask

torch.set_num_threads(1)


def make_spec(w, alpha=0.5, form="A", activation="tanh", n_in=1, seed=0, bias=0.3, dt=None):
    rng = np.random.default_rng(seed)
    n = w.shape[0]
    return NetworkSpec(w_in=rng.standard_normal((n, n_in)), w_rec=w, w_out=np.ones((1, n)),
                       b=bias * rng.standard_normal(n), b_out=np.zeros(1), alpha=alpha, form=form,
                       activation=activation, dt=dt)


def gaussian(n, g, seed=0):
    return np.random.default_rng(seed).standard_normal((n, n)) * g / np.sqrt(n)


def np_step(spec, s, x):
    """Independent numpy reference: one step of the network and its dense Jacobian D_t per stream."""
    f = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z}[spec.activation]
    fp = {"tanh": lambda z: 1 - np.tanh(z) ** 2, "relu": lambda z: (z > 0) * 1.0,
          "identity": np.ones_like}[spec.activation]
    al, w, eye = spec.alpha, spec.w_rec, np.eye(spec.n_hidden)
    drive = x @ spec.w_in.T + spec.b
    if spec.form == "A":
        new = (1 - al) * s + al * (f(s) @ w.T + drive)
        jac = [(1 - al) * eye + al * w * fp(si)[None, :] for si in s]
    elif spec.form == "B":
        u = (1 - al) * s + al * (s @ w.T + drive)
        new = f(u)
        jac = [fp(ui)[:, None] * ((1 - al) * eye + al * w) for ui in u]
    else:
        u = s @ w.T + drive
        new = (1 - al) * s + al * f(u)
        jac = [(1 - al) * eye + al * fp(ui)[:, None] * w for ui in u]
    return new, np.stack(jac)


def inputs(t, s=3, n_in=1, seed=1):
    return np.random.default_rng(seed).uniform(0, 1.5, (t, s, n_in))


# ------------------------------------------------------------------ constant linear maps
def test_linear_diagonal_equals_log_eigenvalues():
    w = np.diag([1.8, 0.9, 0.2, -0.6, -1.5, -3.5])  # includes 1-a+a*w < 0: log|.| is what counts
    spec = make_spec(w, alpha=0.5, activation="identity")
    exact = np.sort(np.log(np.abs(1 - 0.5 + 0.5 * np.diag(w))))[::-1]
    got = lyapunov_spectrum(spec, inputs(600, s=1), warmup=100)
    assert np.max(np.abs(got - exact)) < 1e-12  # D diagonal: exact once Q has aligned


@pytest.mark.parametrize("kind", ["triangular", "gaussian"])
def test_linear_nonnormal_equals_log_abs_eigenvalues(kind):
    n, alpha = 8, 0.3
    rng = np.random.default_rng(3)
    if kind == "triangular":  # strongly non-normal, real eigenvalues 1-a+a*w_ii, well separated
        w = np.triu(rng.standard_normal((n, n)) * 2.0, 1) + np.diag(np.linspace(1.5, -2.5, n))
    else:  # complex pairs: QR gives log|eig| twice for each pair
        w = gaussian(n, 1.2, seed=4)
    exact = np.sort(np.log(np.abs(np.linalg.eigvals((1 - alpha) * np.eye(n) + alpha * w))))[::-1]
    spec = make_spec(w, alpha=alpha, activation="identity")
    got = lyapunov_spectrum(spec, inputs(6000, s=1), warmup=1000)
    # QR converges as O(1/steps) (the initial-frame transient); measured after 5000 steps: 3e-13
    # (triangular, separated moduli) and 2e-5 (complex pairs, equal moduli within a pair)
    assert np.max(np.abs(got - exact)) < 1e-4


# ------------------------------------------------------------------ nonlinear oracles
@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_sum_of_full_spectrum_is_mean_log_det(form):
    n, t, warm = 7, 150, 20
    spec = make_spec(gaussian(n, 1.3, seed=5), alpha=0.4, form=form)
    x = inputs(t, s=3)
    s, logdets = np.zeros((3, n)), []
    for step in range(t):
        s, jac = np_step(spec, s, x[step])
        if step >= warm:
            logdets.append(np.log(np.abs(np.linalg.det(jac))))
    got = lyapunov_spectrum(spec, x, warmup=warm)
    assert abs(got.sum() - np.mean(logdets)) < 1e-10


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_analytic_tangent_map_matches_dense_jacrev(form):
    """Per-stream exponents equal a plain QR loop over dense Jacobians from torch.func.jacrev of the step."""
    n, k, t, warm = 5, 3, 60, 10
    spec = make_spec(gaussian(n, 1.5, seed=6), alpha=0.6, form=form)
    x = torch.as_tensor(inputs(t, s=2))
    w, u, b, al = (torch.as_tensor(a, dtype=torch.float64) for a in (spec.w_rec, spec.w_in, spec.b, spec.alpha))

    def step(state, x_t):  # written out independently of neurorate.model.dynamics
        if form == "A":
            return (1 - al) * state + al * (w @ torch.tanh(state) + u @ x_t + b)
        if form == "B":
            return torch.tanh((1 - al) * state + al * (w @ state + u @ x_t + b))
        return (1 - al) * state + al * torch.tanh(w @ state + u @ x_t + b)

    q0 = orthonormal_frame(n, k, seed=0).numpy()
    ref = np.zeros((2, k))
    for stream in range(2):
        state, q = torch.zeros(n, dtype=torch.float64), q0.copy()
        for step_i in range(t):
            jac = torch.func.jacrev(step)(state, x[step_i, stream]).numpy()
            state = step(state, x[step_i, stream])
            q, r = np.linalg.qr(jac @ q)
            if step_i >= warm:
                ref[stream] += np.log(np.abs(np.diag(r)))
            q = q * np.sign(np.diag(r))
    ref /= t - warm
    got = lyapunov_spectrum(spec, x.numpy(), k=k, warmup=warm, return_stats=True)
    assert np.max(np.abs(got.per_stream[0] - ref)) < 1e-12


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_max_lyapunov_matches_two_trajectory_divergence(gain):
    """lambda_1 from Jacobians vs the growth rate of a small perturbation of the simulated network."""
    n, t, warm, eps = 40, 1500, 300, 1e-7
    spec = make_spec(gaussian(n, gain, seed=7), alpha=0.5, bias=0.1)
    x = inputs(t, s=2, seed=2) * 0.3
    s = np.zeros((2, n))
    d = np.random.default_rng(0).standard_normal((2, n))
    s2 = s + eps * d / np.linalg.norm(d, axis=1, keepdims=True)
    growth = np.zeros(2)
    for step in range(t):
        s, _ = np_step(spec, s, x[step])
        s2, _ = np_step(spec, s2, x[step])
        dist = np.linalg.norm(s2 - s, axis=1)
        if step >= warm:
            growth += np.log(dist / eps)
        s2 = s + eps * (s2 - s) / dist[:, None]  # renormalise the separation
    direct = growth.mean() / (t - warm)
    lam = max_lyapunov(spec, x, warmup=warm)
    assert np.sign(direct) == np.sign(lam)
    assert abs(lam - direct) < 0.05 * abs(direct)


def test_autonomous_tanh_network_transition_to_chaos():
    n = 200
    lams = {}
    for g in (0.5, 2.0):
        spec = NetworkSpec(w_in=np.zeros((n, 1)), w_rec=gaussian(n, g, seed=8), w_out=np.ones((1, n)),
                           b=np.zeros(n), b_out=np.zeros(1), alpha=1.0, form="A", activation="tanh")
        a0 = np.random.default_rng(9).standard_normal((2, n))
        lams[g] = max_lyapunov(spec, np.zeros((800, 2, 1)), warmup=300, initial_state=a0)
    assert lams[0.5] < 0 < lams[2.0]
    # g = 0.5 decays to the fixed point 0, where D = W: lambda -> log(spectral radius) ~ log(0.5)
    assert abs(lams[0.5] - np.log(np.max(np.abs(np.linalg.eigvals(gaussian(n, 0.5, seed=8)))))) < 0.02


# ------------------------------------------------------------------ batching, trajectories, units, ReLU
def test_ensemble_equals_per_network_loop():
    specs = [make_spec(gaussian(10, g, seed=i), alpha=a, seed=i) for i, (g, a) in
             enumerate([(0.5, 0.5), (1.5, 0.2), (2.5, 1.0)])]
    task = RomoTask(seed=3)
    batched = lyapunov_spectrum(specs, task, k=4, n_streams=3, return_stats=True)
    for i, spec in enumerate(specs):
        alone = lyapunov_spectrum(spec, task, k=4, n_streams=3, return_stats=True)
        assert np.allclose(batched.mean[i], alone.mean, rtol=0, atol=1e-12)
        assert np.allclose(batched.std[i], alone.std, rtol=0, atol=1e-12)
    assert batched.mean.shape == (3, 4) and np.all(np.diff(batched.mean, axis=1) <= 0)
    assert np.allclose(max_lyapunov(specs, task, n_streams=3), [max_lyapunov(s, task, n_streams=3) for s in specs])


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_from_trajectory_equals_simulation(form):
    n, t = 9, 120
    spec = make_spec(gaussian(n, 1.4, seed=10), alpha=0.3, form=form)
    x = inputs(t, s=2)
    s, rows = np.zeros((2, n)), []
    for step in range(t):
        new, _ = np_step(spec, s, x[step])
        if form == "A":
            rows.append(s)  # a_{t-1}
        else:  # u_t
            al, w = spec.alpha, spec.w_rec
            drive = x[step] @ spec.w_in.T + spec.b
            rows.append((1 - al) * s + al * (s @ w.T + drive) if form == "B" else s @ w.T + drive)
        s = new
    sim = lyapunov_spectrum(spec, x, k=5, warmup=12)
    rec = lyapunov_from_trajectory(spec, np.stack(rows), k=5, warmup=12)
    assert np.max(np.abs(sim - rec)) < 1e-12


def test_unit_conversions_are_exact():
    spec = make_spec(gaussian(6, 1.0), alpha=0.25, dt=0.02)
    x = inputs(100, s=2)
    per_step = lyapunov_spectrum(spec, x, return_stats=True)
    per_tau = lyapunov_spectrum(spec, x, units="tau", return_stats=True)
    per_s = lyapunov_spectrum(spec, x, units="second", return_stats=True)
    assert np.array_equal(per_tau.mean, per_step.mean / 0.25) and per_tau.unit == "tau"
    assert np.array_equal(per_s.mean, per_step.mean / 0.02) and np.array_equal(per_s.std, per_step.std / 0.02)
    with pytest.raises(NeurorateError, match="seconds"):  # Romo's time is in units of tau
        lyapunov_spectrum(spec.replace(dt=None), RomoTask(), k=1, units="second")

    class MsTask(RomoTask):
        time_unit = "ms"

    ms = MsTask(dt=20.0, tau=100.0)  # dt = 20 ms
    a = lyapunov_spectrum(spec.replace(dt=None), ms, k=2, n_streams=2)
    b = lyapunov_spectrum(spec.replace(dt=None), ms, k=2, n_streams=2, units="second")
    assert np.array_equal(b, a / 0.02)
    assert isinstance(ms, Task)


def test_relu_rank_deficiency_is_clamped_not_nan():
    """Form B ReLU: units 4..7 are always silent (f' = 0), units 0..3 always active (a linear block), so
    D_t = diag(f') ((1-a) I + a W) has rank 4. The top 4 exponents are log|eig| of the active block and
    the other 4 are clamped near log(1e-30) instead of NaN/-inf."""
    n, m, alpha = 8, 4, 0.5
    w = gaussian(n, 0.3, seed=11)
    b = np.where(np.arange(n) < m, 2.0, -50.0)
    spec = make_spec(w, alpha=alpha, form="B", activation="relu").replace(b=b)
    x = inputs(2500, s=2) * 0.1
    full = lyapunov_spectrum(spec, x, warmup=500)
    block = np.log(np.abs(np.linalg.eigvals((1 - alpha) * np.eye(m) + alpha * w[:m, :m])))
    assert np.all(np.isfinite(full))
    assert np.max(np.abs(full[:m] - np.sort(block)[::-1])) < 2e-3  # O(1/steps) QR convergence
    assert np.all(full[m:] < -30) and np.all(full[m:] >= np.log(LOG_FLOOR) - 1e-9)


def test_bad_input_raises_one_line_errors():
    spec = make_spec(gaussian(4, 1.0))
    x = inputs(50)
    for kwargs, msg in [({"units": "bits"}, "units"), ({"k": 5}, "k must"), ({"t_ons": 0}, "t_ons"),
                        ({"warmup": 60}, "fit")]:
        with pytest.raises(NeurorateError, match=msg):
            lyapunov_spectrum(spec, x, **kwargs)
    with pytest.raises(NeurorateError, match="share"):
        lyapunov_spectrum([spec, spec.replace(form="B")], x)
    with pytest.raises(NeurorateError, match="channels"):
        lyapunov_spectrum(spec, inputs(50, n_in=2))


def test_reorthonormalisation_interval_does_not_change_the_answer():
    spec = make_spec(gaussian(8, 1.3, seed=12), alpha=0.5)
    x = inputs(400, s=2)
    every = lyapunov_spectrum(spec, x, warmup=40)
    every5 = lyapunov_spectrum(spec, x, warmup=40, t_ons=5)
    assert np.max(np.abs(every - every5)) < 1e-10  # the product of R over a window has the same diagonal product


def test_cli_lyapunov_writes_spectrum_plot_and_json(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from neurorate.cli.lyapunov import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode, as in the main CLI
    def _noop():
        pass

    out = tmp_path / "lyap"
    res = CliRunner().invoke(app, ["lyapunov", "--gain", "0.5", "--hidden", "16", "--k", "4", "--out", str(out),
                                   "--activation", "tanh", "--input-bias", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output.strip().splitlines()[-1])
    saved = json.loads((out / "lyapunov.json").read_text())
    assert (out / "spectrum.png").stat().st_size > 1000
    spec = NetworkSpec.random(n_in=1, n_hidden=16, n_out=2, gain=0.5, seed=0, alpha=0.5)
    expect = lyapunov_spectrum(spec, RomoTask(), k=4)
    assert np.allclose(saved["spectrum"]["mean"], expect, atol=1e-12)
    assert data["lambda_max"] == pytest.approx(expect[0], abs=1e-12) and data["unit"] == "step"
    bad = CliRunner().invoke(app, ["lyapunov", "--units", "bits", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and isinstance(bad.exception, NeurorateError)


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_batched_tangent_map_equals_dynamics_tangent_step(form):
    from neurorate.analysis.lyapunov import tangent
    from neurorate.model import dynamics

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 6, 2, generator=g, dtype=torch.float64)
    w = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    fp = torch.rand(3, 4, 6, generator=g, dtype=torch.float64)
    alpha = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    ref = dynamics.tangent_step(q, w.unsqueeze(1), alpha.reshape(-1, 1, 1, 1), form, fp, fp)
    assert torch.allclose(tangent(q, w, alpha.reshape(-1, 1, 1, 1), form, fp), ref, rtol=0, atol=1e-14)


def test_progress_reports_every_step_and_changes_no_number():
    import neurorate as nr
    from neurorate.analysis.lyapunov import lyapunov_spectrum

    specs = [nr.NetworkSpec.random(n_in=1, n_hidden=16, n_out=2, gain=g, seed=0) for g in (0.5, 1.5)]
    task = nr.make_task("romo", seed=0)
    calls = []
    quiet = lyapunov_spectrum(specs, task, k=4, n_streams=2)
    loud = lyapunov_spectrum(specs, task, k=4, n_streams=2, progress=lambda total, done: calls.append((total, done)))
    np.testing.assert_array_equal(quiet, loud)
    total = calls[0][0]
    assert total == 8 * task.n_steps and calls[-1] == (total, total)
    assert [d for _, d in calls] == sorted({d for _, d in calls}) and len(calls) >= 100
