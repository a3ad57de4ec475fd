"""A trained network is the start of the next run: `neurorate run --init`, `neurorate lyapunov --spec`,
`nr.load_run` as a `TrainResult` that `nr.train` continues from (docs/cli.md, "Starting from a saved network")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import one_error_line

import neurorate as nr
from neurorate.errors import NeurorateError
from neurorate.io.results import TrainResult

SMALL = ["--iterations", "6", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--device", "cpu"]


@pytest.fixture
def trained(tmp_path, run_cli) -> Path:
    out = tmp_path / "first"
    assert run_cli("run", *SMALL[:-3], "--device", "cpu", "--out", str(out))[0] == 0  # with spectra
    return out


def test_load_run_returns_the_train_result_it_wrote(trained):
    res = nr.load_run(trained)
    assert isinstance(res, TrainResult) and res.status == "ok" and res.finished and res.run_dir == trained
    summary = json.loads((trained / "result.json").read_text())
    np.testing.assert_allclose(res.losses, summary["losses"], rtol=0, atol=0)
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_array_equal(res.accuracy, [x["accuracy"] for x in lines])
    final = nr.NetworkSpec.load(trained / "spec_final.npz")
    np.testing.assert_array_equal(res.spec.w_rec, final.w_rec)
    np.testing.assert_array_equal(res.spec_initial.w_rec, nr.NetworkSpec.load(trained / "spec_initial.npz").w_rec)
    assert res.lambda_max_before == summary["lambda_max_before"] and res.lyapunov_unit == "step"
    assert res.final_loss() == pytest.approx(summary["final_loss"], rel=1e-12)
    assert (res.rule, res.lr, res.iterations) == ("eprop", summary["lr"], 6)
    # the dictionary view of earlier versions
    assert res["summary"]["status"] == "ok" and res["config"]["rule"] == "eprop"
    np.testing.assert_array_equal(res["spec"].w_out, final.w_out)


def test_train_continues_from_a_loaded_run_exactly_where_it_ended(trained):
    res = nr.load_run(trained)
    task = nr.make_task("romo", batch_size=4, seed=0)
    cont = nr.train(res, task, iterations=3, lyapunov=False, progress=False, device="cpu")
    direct = nr.train(res.spec, task, iterations=3, lyapunov=False, progress=False, device="cpu")
    np.testing.assert_array_equal(cont.losses, direct.losses)
    np.testing.assert_array_equal(cont.spec_initial.w_rec, res.spec.w_rec)


def test_cli_init_from_a_run_directory_or_a_spec_file(trained, tmp_path, run_cli):
    for init in (trained, trained / "spec_final.npz"):
        out = tmp_path / f"from-{init.name}"
        rc, _, err = run_cli("run", "--iterations", "3", "--batch", "4", "--no-lyapunov", "--device", "cpu",
                              "--init", str(init), "--out", str(out))
        assert rc == 0, err
        assert f"N=8, network from {init}" in err.splitlines()[0]
        start = nr.NetworkSpec.load(out / "spec_initial.npz")
        np.testing.assert_array_equal(start.w_rec, nr.NetworkSpec.load(trained / "spec_final.npz").w_rec)
        assert start.init["init_from"] == str(init)
        assert json.loads((out / "config.json").read_text())["inits"][0]["init_from"] == str(init)


@pytest.mark.parametrize("extra,message", [
    (["--gain", "2"], "--gain does not apply to it"),
    (["--hidden", "8", "--form", "B"], "--hidden, --form do not apply to it"),
    (["--task", "2af"], "needs n_in=3, n_out=3"),
])
def test_cli_init_refuses_network_options_and_a_mismatched_task(trained, tmp_path, run_cli, extra, message):
    rc, so, err = run_cli("run", "--iterations", "3", "--no-lyapunov", "--init", str(trained), *extra,
                           "--out", str(tmp_path / "x"))
    assert rc == 2 and so == "" and message in one_error_line(err)
    assert not (tmp_path / "x").exists()


def test_an_unfinished_run_is_no_start(trained, tmp_path, run_cli):
    result = json.loads((trained / "result.json").read_text())
    (trained / "result.json").write_text(json.dumps({**result, "status": "interrupted"}))
    rc, _, err = run_cli("run", "--iterations", "3", "--init", str(trained), "--out", str(tmp_path / "x"))
    assert rc == 2 and "did not finish (status interrupted)" in one_error_line(err)
    loaded = nr.load_run(trained)
    assert not loaded.finished and loaded["spec"] is None
    np.testing.assert_array_equal(loaded.spec.w_rec, loaded.spec_initial.w_rec)  # what there is: the start
    with pytest.raises(NeurorateError, match="did not finish"):
        nr.train(loaded, nr.make_task("romo", batch_size=4), iterations=1, lyapunov=False, progress=False)
    rc, _, err = run_cli("run", "--iterations", "3", "--init", str(tmp_path / "nothing.npz"))
    assert rc == 2 and "no such spec file or run directory" in one_error_line(err)


def test_lyapunov_spec_is_the_spectrum_of_the_saved_network(trained, tmp_path, run_cli):
    out = tmp_path / "ly"
    rc, so, err = run_cli("lyapunov", "--spec", str(trained), "--k", "3", "--streams", "2", "--json",
                           "--out", str(out))
    assert rc == 0, err
    got = json.loads(so)
    from neurorate.cli.lyapunov import spectrum_with_progress

    task = nr.make_task("romo", seed=0)
    want = spectrum_with_progress(nr.NetworkSpec.load(trained / "spec_final.npz"), task, 3, None, "step", 2, False)
    np.testing.assert_allclose(got["spectrum"], want.mean, rtol=1e-12)
    record = json.loads((out / "lyapunov.json").read_text())
    assert record["config"]["spec"] == str(trained) and record["config"]["hidden"] == 8
    rc, _, err = run_cli("lyapunov", "--spec", str(trained), "--gain", "1")
    assert rc == 2 and "--gain does not apply" in one_error_line(err)


def test_train_with_a_backend_instance_writes_its_run_directory(tmp_path):
    """config.json records the backend's name, never the object (which is not JSON)."""
    from neurorate.backends.base import get_backend

    spec = nr.NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, seed=0)
    task = nr.make_task("romo", batch_size=4, seed=0)
    res = nr.train(spec, task, iterations=2, lyapunov=False, progress=False, backend=get_backend("torch"),
                   out=tmp_path / "r")
    assert res.status == "ok" and json.loads((tmp_path / "r" / "config.json").read_text())["backend"] == "torch"
    assert nr.load_run(tmp_path / "r").status == "ok"


def test_train_with_a_rule_value_writes_its_run_directory(tmp_path):
    """A Rule value (a plugin's, or a dataclasses.replace of a built-in) is recorded by its name."""
    import dataclasses

    rule = dataclasses.replace(nr.get_rule("eprop"), name="my_eprop")
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, seed=0)
    res = nr.train(spec, nr.make_task("romo", batch_size=4, seed=0), rule=rule, iterations=2, lyapunov=False,
                   progress=False, out=tmp_path / "r")
    assert res.status == "ok" and res.rule == "my_eprop"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["rule"] == "my_eprop"
    assert json.loads((tmp_path / "r" / "result.json").read_text())["rule"] == "my_eprop"
