"""NIR export/import of rate networks: lossless round trip, an independent executor (nirtorch) that reproduces
the torch backend's trajectories, errors, CLI (what norse's, snntorch's and nirtorch's importers do is in
tests/upstream)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import neurorate as nr
from neurorate.errors import FileFormatError

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")
pytest.importorskip("nirtorch")
from neurorate.backends.torch import TorchBackend  # noqa: E402
from neurorate.io import nir as nir_io  # noqa: E402 (after the importorskips)

torch.set_num_threads(1)
T, B, N_IN, N, N_OUT = 25, 4, 3, 10, 2
ARRAYS = ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")


def _spec(form="A", activation="tanh", dt=None, alpha=0.2):
    return nr.NetworkSpec.random(n_in=N_IN, n_hidden=N, n_out=N_OUT, gain=1.4, seed=3, form=form,
                                 activation=activation, alpha=alpha, dt=dt)


def _inputs(seed=5):
    return np.random.default_rng(seed).standard_normal((T, B, N_IN))


def _run_graph(graph, x):
    """Step a NIR graph with nirtorch (neurorate's LI map); returns outputs (T,B,n_out) and LI states (T,B,N)."""
    module = nir_io.to_torch(graph)
    state, ys, vs = None, [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = module(torch.as_tensor(x[t]), state)
            ys.append(y.numpy())
            vs.append(state["li"].numpy())
    return np.array(ys), np.array(vs)


@pytest.mark.parametrize("form,activation,dt", [("A", "tanh", None), ("B", "relu", 0.01), ("C", "tanh", 2e-3)])
def test_file_round_trip_is_lossless(tmp_path, form, activation, dt):
    spec = _spec(form, activation, dt)
    path = nir_io.write_nir(spec, tmp_path / "net.nir")
    back = nir_io.from_nir(path)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(spec, name), err_msg=name)
    assert (back.alpha, back.form, back.activation, back.dt, back.init) == (
        spec.alpha, spec.form, spec.activation, spec.dt, spec.init)
    graph = nir_io.read_nir(path)
    li = graph.nodes["li"]
    step = dt if dt is not None else nir_io.NOMINAL_DT
    np.testing.assert_allclose(li.tau, np.full(N, step / spec.alpha), rtol=1e-15)
    assert li.tau.shape == li.r.shape == li.v_leak.shape == (N,)
    assert li.metadata["neurorate.activation"] == activation and graph.metadata["neurorate.form"] == form
    assert graph.metadata["neurorate.dt_nominal"] == (dt is None)


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_nirtorch_execution_equals_torch_backend(tmp_path, form):
    """nirtorch reads the recurrent edge with a one-step delay: W f(a_{t-1}), i.e. no extra alignment needed."""
    spec = _spec(form, "tanh")
    graph = nir_io.read_nir(nir_io.write_nir(spec, tmp_path / "net.nir"))
    x = _inputs()
    ys, vs = _run_graph(graph, x)
    sim = TorchBackend(dtype="float64").simulate([spec], x)
    np.testing.assert_allclose(ys, sim.outputs[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(vs, sim.states[0], rtol=0, atol=1e-10)


def test_consumer_ignoring_metadata_runs_the_linear_li_network():
    spec = _spec("A", "tanh")
    graph = nir_io.to_nir(spec)
    graph.metadata = {}
    graph.nodes["li"].metadata = {}
    x = _inputs()
    ys, _ = _run_graph(graph, x)
    linear = TorchBackend(dtype="float64").simulate([spec.replace(activation="identity")], x)
    np.testing.assert_allclose(ys, linear.outputs[0], rtol=0, atol=1e-10)
    honoured = TorchBackend(dtype="float64").simulate([spec], x)
    assert np.abs(ys - honoured.outputs[0]).max() > 1e-2


def test_foreign_li_graph_folds_r_and_v_leak():
    rng = np.random.default_rng(0)
    spec = _spec("A", "identity")
    graph = nir_io.to_nir(spec, dt=1e-3)
    graph.metadata = {}
    li = graph.nodes["li"]
    graph.nodes["li"] = nir.LI(tau=li.tau, r=rng.uniform(0.5, 2.0, N), v_leak=rng.standard_normal(N))
    imported = nir_io.from_nir(graph)
    assert imported.activation == "identity" and imported.alpha == pytest.approx(spec.alpha, rel=1e-12)
    x = _inputs()
    ys, vs = _run_graph(graph, x)
    sim = TorchBackend(dtype="float64").simulate([imported], x)
    np.testing.assert_allclose(vs, sim.states[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(ys, sim.outputs[0], rtol=0, atol=1e-10)


def test_heterogeneous_tau_is_refused():
    graph = nir_io.to_nir(_spec())
    graph.metadata = {}
    graph.nodes["li"] = nir.LI(tau=np.linspace(1e-3, 5e-3, N), r=np.ones(N), v_leak=np.zeros(N))
    with pytest.raises(FileFormatError, match="one time constant"):
        nir_io.from_nir(graph)


def test_malformed_files_raise_one_line_file_format_error(tmp_path):
    good = nir_io.write_nir(_spec(), tmp_path / "good.nir")
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"\x80\x04this is a pickle, not HDF5" * 10)
    import h5py

    not_nir = tmp_path / "other.h5"
    with h5py.File(not_nir, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    for path in (truncated, garbage, not_nir, tmp_path / "missing.nir"):
        with pytest.raises(FileFormatError) as info:
            nir_io.from_nir(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def _cli(*args):
    code = f"from neurorate.cli.app import main\nmain({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ), check=False)


def test_cli_export_and_import(tmp_path):
    spec = _spec("A", "tanh", dt=0.01)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec.save(run_dir / "spec_final.npz")
    p = _cli("export-nir", str(run_dir), str(tmp_path / "net.nir"))
    assert p.returncode == 0, p.stderr
    p = _cli("import-nir", str(tmp_path / "net.nir"), str(tmp_path / "back.npz"))
    assert p.returncode == 0, p.stderr
    back = nr.NetworkSpec.load(tmp_path / "back.npz")
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(spec, name))
    assert back.dt == 0.01 and back.alpha == spec.alpha
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not a nir file")
    p = _cli("import-nir", str(bad), str(tmp_path / "x.npz"))
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "bad.nir" in p.stderr
    p = _cli("export-nir", str(tmp_path / "no_such_run"), str(tmp_path / "y.nir"))
    assert p.returncode == 2 and "no such spec file" in p.stderr
