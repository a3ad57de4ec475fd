"""The Lava backend's loihi graph (e-prop on Lava's learning engine): float conformance with the torch backend's
e-prop in float64 (states, outputs, losses, weight updates over several SGD trials), its refusals, one line each,
before anything is written, and ``neurorate run --lava-graph loihi`` end to end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neurorate as nr
from neurorate.backends.base import get_backend
from neurorate.errors import NeurorateError
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.base import Task

lava = [pytest.mark.lava]
pytestmark = lava

TOL = 1e-12
WEIGHTS = ("w_in", "w_rec", "w_out", "b", "b_out")


@dataclasses.dataclass(repr=False)
class SmallTask(Task):
    """Non-negative random inputs (the synapses' x1 trace is unsigned on chip), random targets and masks; a pure
    function of (seed, i)."""

    batch_size: int = 1
    seed: int = 0
    n_steps: int = 12
    n_in: int = 3
    n_out: int = 2
    kind: str = "mse"
    dt: float = 1.0
    tau: float = 2.0

    name = "small"

    def __post_init__(self):
        Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)
        self.loss_kind = self.kind

    def _generate(self, rng, b):
        x = rng.uniform(0.0, 1.0, size=(self.n_steps, b, self.n_in))
        if self.kind == "mse":
            target = rng.uniform(-0.5, 0.5, (self.n_steps, b, self.n_out))
            mask = (rng.uniform(size=target.shape) < 0.7).astype(np.float64)
        else:
            target = rng.integers(0, self.n_out, (self.n_steps, b)).astype(np.int64)
            mask = (rng.uniform(size=target.shape) < 0.8).astype(np.float64)
        return x, target, mask


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def torch64():
    return get_backend("torch", dtype="float64", device="cpu")


def loihi():
    return get_backend("lava", graph="loihi")


def _spec(n=16, alpha=0.5, seed=5, gain=1.2, **kw) -> NetworkSpec:
    return NetworkSpec.random(n_in=3, n_hidden=n, n_out=2, gain=gain, seed=seed, activation="relu", alpha=alpha, **kw)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
@pytest.mark.parametrize("rule", ["eprop", "eprop_random"])
def test_training_equals_torch_eprop(rule, alpha):
    """3 SGD trials (symmetric W_out^T and random feedback): losses, accuracies and every weight's change equal the
    torch backend's e-prop in float64; the update is not trivially zero."""
    spec = _spec(n=16, alpha=alpha)
    task = SmallTask(seed=3)
    kw = dict(iterations=3, lr=[0.3], optimizer="sgd", progress=False)
    seen = []
    run = loihi().train([spec], task, rule, callback=lambda i, loss, acc: seen.append((i, float(loss[0]))), **kw)[0]
    ref = torch64().train([spec], task, rule, **kw)[0]
    assert rel_err(run.losses, ref.losses) < TOL
    np.testing.assert_array_equal(run.accuracy, ref.accuracy)
    for key in WEIGHTS:
        change, want = getattr(run.spec, key) - getattr(spec, key), getattr(ref.spec, key) - getattr(spec, key)
        assert np.abs(want).max() > 1e-4, key
        assert rel_err(change, want) < TOL, key
    assert [i for i, _ in seen] == [0, 1, 2] and [v for _, v in seen] == list(run.losses)
    assert run.extra["graph"] == "loihi" and run.extra["ticks"] == 3 * 4 * 16  # 12 steps -> 2^4 epochs of 4 ticks


def test_states_and_outputs_equal_torch():
    """Trajectories (each of B = 2 inputs run as its own trial from zero), N = 32, alpha 0.2."""
    spec = _spec(n=32, alpha=0.2, seed=1, gain=1.5)
    x = np.random.default_rng(0).uniform(0, 1, (10, 2, 3))
    ours, ref = loihi().simulate([spec], x), torch64().simulate([spec], x)
    for key in ("states", "rates", "outputs", "preacts"):
        assert np.abs(np.asarray(getattr(ref, key))).max() > 0.05, key
        assert rel_err(getattr(ours, key), np.asarray(getattr(ref, key))) < TOL, key


def test_cross_entropy_and_two_networks_through_nr_train():
    """nr.train with backend_options={"graph": "loihi"}: two networks with their own learning rates, a
    cross-entropy task; the trained weights and losses equal torch's."""
    specs = [_spec(n=8, seed=s, gain=g) for s, g in ((0, 0.8), (1, 1.4))]
    task = SmallTask(kind="ce", seed=2, n_steps=7)
    kw = dict(rule="eprop", iterations=3, lr=[0.5, 0.2], optimizer="sgd", lyapunov=False, progress=False)
    ours = nr.train(specs, task, backend="lava", backend_options={"graph": "loihi"}, **kw)
    ref = nr.train(specs, task, backend="torch", dtype="float64", device="cpu", **kw)
    for a, b, s in zip(ours, ref, specs):
        assert rel_err(a.losses, b.losses) < TOL
        for key in WEIGHTS:
            assert rel_err(getattr(a.spec, key) - getattr(s, key), getattr(b.spec, key) - getattr(s, key)) < TOL


def test_divergence_matches_torch():
    """A learning rate that blows the network up: the same iteration is reported as diverged, NaN losses after,
    and the network is frozen with the weights it ran that trial with (finite, as torch's)."""
    spec = _spec(n=8, seed=0, gain=1.0)
    task = SmallTask(seed=1, n_steps=10)
    kw = dict(iterations=6, lr=[3e3], optimizer="sgd", progress=False)
    ref = torch64().train([spec], task, "eprop", **kw)[0]
    run = loihi().train([spec], task, "eprop", **kw)[0]
    assert ref.diverged and run.diverged and run.diverged_at == ref.diverged_at
    np.testing.assert_array_equal(np.isnan(run.losses), np.isnan(ref.losses))
    ok = ~np.isnan(ref.losses)
    assert rel_err(run.losses[ok], ref.losses[ok]) < TOL
    for key in WEIGHTS:  # frozen with the weights the diverging trial ran with
        assert rel_err(getattr(run.spec, key), getattr(ref.spec, key)) < TOL, key


def _refused(tmp_path, spec, task, **kw) -> str:
    out = tmp_path / "run"
    args = dict(rule="eprop", backend="lava", iterations=2, optimizer="sgd", lyapunov=False, progress=False,
                backend_options={"graph": "loihi"}, out=out)
    args.update(kw)
    with pytest.raises(NeurorateError) as info:
        nr.train(spec, task, **args)
    assert not out.exists()  # refused in the validate step, before anything is written
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_refuses_tanh(tmp_path):
    msg = _refused(tmp_path, _spec().replace(activation="tanh"), SmallTask())
    assert "runs relu neurons only, not 'tanh'" in msg and "x1 is unsigned" in msg


def test_refuses_a_batch(tmp_path):
    msg = _refused(tmp_path, _spec(), SmallTask(batch_size=4))
    assert "one trial at a time (Loihi has no batch dimension), got a batch of 4" in msg


@pytest.mark.parametrize("form", ["B", "C"])
def test_refuses_forms_b_c(tmp_path, form):
    msg = _refused(tmp_path, _spec(form=form), SmallTask())
    assert f"runs form A only, not form {form!r}" in msg and "N x N trace" in msg


def test_refuses_adam(tmp_path):
    msg = _refused(tmp_path, _spec(), SmallTask(), optimizer="adam")
    assert "optimizer 'adam' is not local and is not run on the Lava backend" in msg


def test_refuses_bptt(tmp_path):
    msg = _refused(tmp_path, _spec(), SmallTask(), rule="bptt")
    assert "rule 'bptt' cannot run on the Lava backend: it needs the whole trajectory backwards in time" in msg


def test_refuses_a_profile(tmp_path):
    msg = _refused(tmp_path, _spec(), SmallTask(), profile="loihi2")
    assert "runs a hardware profile only in the engine view" in msg and "loihi2-engine" in msg


def test_refuses_an_unknown_graph(tmp_path):
    msg = _refused(tmp_path, _spec(), SmallTask(), backend_options={"graph": "chip"})
    assert msg == "unknown Lava graph 'chip'; choose fused or loihi"
    with pytest.raises(NeurorateError, match="unknown Lava graph"):
        get_backend("lava", graph="chip")


def test_refusals_hold_on_direct_calls():
    """The backend's own train/simulate check the same limits (a caller that skips nr.train)."""
    with pytest.raises(NeurorateError, match="one trial at a time"):
        loihi().train([_spec()], SmallTask(batch_size=2), "eprop", iterations=1, lr=[0.1], progress=False)
    with pytest.raises(NeurorateError, match="relu neurons only"):
        loihi().simulate([_spec().replace(activation="identity")], np.zeros((3, 1, 3)))


def _cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        from neurorate.cli.app import main
        main({args!r})
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=240,
                          env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, check=False)


@pytest.mark.slow
def test_cli_run_end_to_end(tmp_path):
    """``neurorate run --backend lava --lava-graph loihi --iterations 3`` trains and prints its result."""
    res = _cli(["run", "--backend", "lava", "--lava-graph", "loihi", "--iterations", "3",
                "--hidden", "16", "--no-lyapunov", "--json", "--out", "r"], tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["status"] == "ok" and np.isfinite(summary["final_loss"])
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["task"]["batch_size"] == 1 and config["backend_options"] == {"graph": "loihi"}  # one trial a step
    assert (tmp_path / "r" / "spec_final.npz").exists()


@pytest.mark.parametrize("args,message", [
    (["--backend", "lava", "--lava-graph", "loihi", "--batch", "32"],
     "error: the Lava loihi graph runs one trial at a time (Loihi has no batch dimension), got a batch of 32; "
     "use a batch of 1 (--batch 1) or the fused graph"),
    (["--backend", "lava", "--lava-graph", "loihi", "--batch", "1", "--activation", "tanh"],
     "error: the Lava loihi graph runs relu neurons only, not 'tanh': the synapses' presynaptic trace x1 is "
     "unsigned (signed rates would need split trace populations)"),
    (["--lava-graph", "loihi"], "error: --lava-graph is an option of the lava backend, not of 'torch'"),
    (["--backend", "lava", "--lava-graph", "chip"], "error: unknown Lava graph 'chip'; choose fused or loihi"),
])
def test_cli_refusal_is_one_line(tmp_path, capsys, args, message):
    """Refused before the run directory exists: one ``error:`` line on stderr, exit code 2."""
    from neurorate.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["run", *args, "--iterations", "3", "--hidden", "16", "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
    assert not (tmp_path / "r").exists()
