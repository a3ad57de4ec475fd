"""The `neurorate` command line: results written, JSON output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neurorate as nr


def cli(*args, env=None, prelude=""):
    code = textwrap.dedent(prelude) + f"\nfrom neurorate.cli.app import main\nmain({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_run_json_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    p = cli("run", "--iterations", "30", "--hidden", "16", "--batch", "8", "--no-lyapunov", "--out", str(out),
            "--json", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["iterations"] == 30 and len(summary["losses"]) == 30
    assert summary["status"] == "ok" and summary["final_loss"] > 0
    for name in ("config.json", "environment.json", "metrics.jsonl", "spec_initial.npz", "spec_final.npz",
                 "result.json", "learning_curve.png"):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(30))
    np.testing.assert_allclose([m["loss"] for m in metrics], summary["losses"], rtol=1e-12)
    config = json.loads((out / "config.json").read_text())
    assert config["rule"] == "eprop" and config["task"]["name"] == "romo" and config["inits"][0]["seed"] == 0
    env = json.loads((out / "environment.json").read_text())
    assert env["versions"]["torch"] and "git_revision" in env
    final = nr.NetworkSpec.load(out / "spec_final.npz")
    initial = nr.NetworkSpec.load(out / "spec_initial.npz")
    assert final.n_hidden == 16 and not np.array_equal(final.w_rec, initial.w_rec)


def test_run_text_output_says_where_results_are(tmp_path):
    out = tmp_path / "r"
    p = cli("run", "--iterations", "5", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert f"results written to {out}" in p.stdout


@pytest.mark.parametrize("args, message", [
    (("--task", "nope"), "unknown task 'nope'"),
    (("--rule", "hebb"), "unknown rule 'hebb'"),
    (("--backend", "tpu"), "unknown backend 'tpu'"),
    (("--hidden", "0"), "--hidden must be > 0"),
    (("--batch", "-3"), "--batch must be > 0"),
    (("--iterations", "0"), "--iterations must be > 0"),
    (("--gain", "-0.5"), "--gain must be >= 0"),
    (("--lr", "0"), "--lr must be > 0"),
    (("--optimizer", "rmsprop"), "unknown optimizer"),
    (("--form", "Z"), "unknown form"),
    (("--device", "tpu"), "unknown device"),
    (("--out", "/proc/forbidden/x"), "cannot write to output directory"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    p = cli("run", "--iterations", "2", "--hidden", "4", "--no-lyapunov", *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0], p.stderr
    assert "Traceback" not in p.stderr


def test_missing_extra_names_the_extra():
    blocker = """
    import sys
    sys.modules["lava"] = None  # as if lava-nc were not installed
    """
    p = cli("run", "--backend", "lava", "--optimizer", "sgd", "--iterations", "2", "--hidden", "4", "--no-lyapunov",
            prelude=blocker)
    assert p.returncode == 2, p.stderr
    assert "lava" in p.stderr and "extra" in p.stderr and "Traceback" not in p.stderr


def test_cite_prints_bibtex():
    p = cli("cite", "eprop")
    assert p.returncode == 0 and "@article{bellec2020solution" in p.stdout


def test_run_lif_writes_run_directory_exportable_to_nir(tmp_path):
    out = tmp_path / "lif"
    p = cli("run", "--neuron", "lif", "--iterations", "12", "--hidden", "8", "--batch", "4", "--out", str(out),
            "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["backend"] == "torch (lif)" and len(summary["losses"]) == 12
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in rows], summary["losses"], rtol=1e-12)
    q = cli("export-nir", str(out), str(tmp_path / "lif.nir"))
    assert q.returncode == 0, q.stderr
    bad = cli("run", "--neuron", "lif", "--rule", "rflo", "--iterations", "2")
    assert bad.returncode == 2 and "supports the rules" in bad.stderr
    for option in (["--form", "B"], ["--activation", "tanh"]):  # refused, not silently ignored
        bad = cli("run", "--neuron", "lif", *option, "--iterations", "2", "--out", str(tmp_path / "never"))
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "rate networks only" in bad.stderr
        assert not (tmp_path / "never").exists()


def test_study_cli_runs_reports_and_overrides_neurons(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(textwrap.dedent("""
        [study]
        name = "tiny"
        tasks = ["romo"]
        rules = ["eprop"]
        gains = [0.5, 1.5]
        lrs = [1e-2]
        seeds = [0, 1]
        iterations = 12
        hidden = 8
        batch = 4
        lyapunov_k = 2
        probe_batch = 8
        log_every = 4
    """))
    out = tmp_path / "study"
    p = cli("study", "--config", str(config), "--out", str(out), "--neurons", "rate,lif", "--workers", "1",
            "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "study tiny: 8 runs in 2 ensembles (24 logged rows)" in p.stdout and "report:" in p.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet")
    assert sorted(set(table.column("neuron").to_pylist())) == ["lif", "rate"]
    assert (out / "report.md").is_file() and (out / "figures" / "curves_romo.png").stat().st_size > 1000
    again = cli("study", "--config", str(config), "--out", str(out), "--neurons", "rate,lif")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "resume" in again.stderr
    bad = cli("study", "--config", str(config), "--out", str(tmp_path / "x"), "--neurons", "lif", "--workers", "0")
    assert bad.returncode == 2 and "workers must be an integer from 1 to 1024" in bad.stderr


def test_study_ctrl_c_says_what_is_kept_and_how_to_resume(tmp_path):
    import signal
    import time

    config = tmp_path / "long.toml"
    config.write_text('[study]\nname = "long"\ntasks = ["romo"]\nrules = ["bptt"]\ngains = [1.0]\nlrs = [1e-3]\n'
                      'seeds = [0]\niterations = 100000\nhidden = 8\nbatch = 4\nlyapunov = false\n')
    out = tmp_path / "study"
    code = f"from neurorate.cli.app import main\nmain(['study', '--config', {str(config)!r}, '--out', {str(out)!r}])\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "config.json").exists():
        time.sleep(0.1)
    time.sleep(1.0)  # training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().count("\n") == 0 and err.startswith("interrupted: 0 finished ensembles are kept in")
    assert "--resume" in err
