"""The local executor's worker processes: same results as in-process, no orphans after SIGKILL, errors with logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import neurorate as nr
from neurorate.errors import NeurorateError
from neurorate.studies.config import load_config
from neurorate.studies.executor import default_workers
from neurorate.studies.runner import plan

TINY = {"name": "tiny", "tasks": ["romo"], "rules": ["bptt", "eprop"], "gains": [0.5, 1.5], "lrs": [1e-2],
        "seeds": [0, 1], "flossing": [False, True], "floss_iterations": 3, "iterations": 20, "hidden": 8, "batch": 4,
        "lyapunov_k": 2, "probe_batch": 8, "log_every": 5, "richlazy": False}


def test_workers_give_the_same_table_as_in_process(tmp_path):
    seq = nr.study(TINY, out=tmp_path / "seq", progress=False, workers=1)
    par = nr.study(TINY, out=tmp_path / "par", progress=False, workers=2)
    assert par.num_rows == seq.num_rows == 3 * 4 * 4
    for col in ("run_id", "ensemble", "loss", "final_loss", "lambda_max_before", "lambda_max_flossed",
                "lambda_max_after"):
        a, b = np.asarray(par.column(col).to_pylist()), np.asarray(seq.column(col).to_pylist())
        assert a.dtype.kind == "U" and (a == b).all() or np.array_equal(a, b, equal_nan=True), col
    assert sorted(p.name for p in (tmp_path / "par" / "logs").iterdir()) == sorted(
        j.part_name[:-8] + ".log" for j in plan(load_config(TINY)))
    for name, workers in (("seq", 1), ("par", 2)):
        sessions = json.loads((tmp_path / name / "manifest.json").read_text())["sessions"]
        assert [(e["ensembles"], e["workers"]) for e in sessions] == [(3, workers)] and sessions[0]["wall_time"] > 0
    nr.study(TINY, out=tmp_path / "par", progress=False, workers=2, resume=True)  # nothing left: no new session
    assert len(json.loads((tmp_path / "par" / "manifest.json").read_text())["sessions"]) == 1
    for bad in (0, 1.5, "two", True):
        with pytest.raises(NeurorateError, match="workers must be an integer from 1 to 1024"):
            nr.study(TINY, out=tmp_path / "bad", workers=bad)
    with pytest.raises(NeurorateError, match="local executor"):
        nr.study(TINY, out=tmp_path / "bad2", workers=2, executor="submitit:debug")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()  # refused before any write


def test_default_workers(monkeypatch):
    small, big = load_config(TINY), load_config({**TINY, "iterations": 2000})
    monkeypatch.delenv("NEURORATE_WORKERS", raising=False)
    assert default_workers(small, 3) == 1  # 80 network-iterations per ensemble: in-process
    assert default_workers(big, 3) == min(3, len(os.sched_getaffinity(0)))
    assert default_workers(big, 1) == 1
    monkeypatch.setenv("NEURORATE_WORKERS", "2")
    assert default_workers(small, 3) == 2
    monkeypatch.setenv("NEURORATE_WORKERS", "two")
    with pytest.raises(NeurorateError, match="NEURORATE_WORKERS"):
        default_workers(small, 3)


KILLED = textwrap.dedent("""
    import json, sys, time
    import neurorate.studies.runner as st
    original = st._record
    def slow_record(out, manifest, job, rows, wall):
        original(out, manifest, job, rows, wall)
        time.sleep(120)  # the test SIGKILLs this process here, while the other worker is still busy
    st._record = slow_record
    st.study(json.loads(sys.argv[1]), out=sys.argv[2], progress=False, workers=2)
""")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker processes")
def test_sigkill_leaves_no_orphans(tmp_path):
    # the flossed ensemble (started first: longest first) is still in its flossing phase, which reports no
    # progress to the parent (so no broken pipe stops it), when the bptt one is recorded and the study killed:
    # only the watchdog (the parent is gone) stops it within the deadline
    cfg = {**TINY, "floss_iterations": 300}
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, json.dumps(cfg), str(out)])
    manifest = out / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (manifest.exists() and json.loads(manifest.read_text())["finished"]):
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "a worker process should still be running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 3
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers must exit when the study process is killed"
    assert len(json.loads(manifest.read_text())["finished"]) == 1


SITE = textwrap.dedent("""
    import neurorate.studies.ensemble as st
    from neurorate.errors import NeurorateError
    original = st.run_ensemble
    def failing(config, job, **kw):
        if job.rule == "eprop" and not job.flossing:
            raise NeurorateError("injected failure for the test")
        return original(config, job, **kw)
    st.run_ensemble = failing
""")


def test_a_failing_ensemble_is_reported_with_its_log_and_the_rest_is_kept(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)  # imported by every worker at start-up
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "study"
    cfg = {**TINY, "flossing": [False]}
    with pytest.raises(NeurorateError, match=r"romo\|eprop.*injected failure for the test.*log: .*\.log.*resume"):
        nr.study(cfg, out=out, progress=False, workers=2)
    manifest = out / "manifest.json"  # written at the first finished ensemble
    finished = json.loads(manifest.read_text())["finished"] if manifest.exists() else {}
    assert list(finished) in ([], ["romo|bptt|floss=0|rank=full|torch|none"])
    log = next((out / "logs").glob("*eprop*.log")).read_text()
    assert "error: injected failure for the test" in log


def test_progress_counts_training_and_flossing_iterations():
    from neurorate.studies.ensemble import progress_units, run_ensemble

    rate = load_config({**TINY, "rules": ["eprop"], "lyapunov": False})
    lif = load_config({**TINY, "neurons": ["lif"], "rules": ["eprop"], "flossing": [False], "lrs": [1e-2, 3e-2]})
    for cfg, job in [(rate, j) for j in plan(rate)] + [(lif, j) for j in plan(lif)]:
        counted = []
        run_ensemble(cfg, job, progress=counted.append)
        expected = cfg.iterations + (cfg.floss_iterations if job.flossing else 0)
        assert progress_units(cfg, job) == expected
        assert sum(counted) == pytest.approx(expected), job.key


def test_report_flags_finite_blow_ups():
    import pyarrow as pa

    from neurorate.studies.report import exploded_runs

    table = pa.table({"run_id": ["ok", "ok", "blown", "blown", "nan", "nan"], "iteration": [10, 20, 10, 20, 10, 20],
                      "loss": [0.05, 0.01, 0.05, 80.0, 0.05, float("nan")]})
    runs = [{"run_id": "ok", "status": "ok", "final_loss": 0.01},
            {"run_id": "blown", "status": "ok", "final_loss": 80.0},
            {"run_id": "nan", "status": "diverged", "final_loss": float("nan")}]
    assert [r["run_id"] for r in exploded_runs(table, runs)] == ["blown"]  # 1600x the first logged loss
    runs[1]["final_loss"] = 40.0  # 800x: below the 1000x threshold
    assert exploded_runs(table, runs) == []


@pytest.mark.lava
def test_float64_study_gives_the_same_runs_on_torch_and_lava(tmp_path):
    """With ``dtype = "float64"`` the torch ensemble computes as the Lava process does (float64), so the same
    networks on the two backends agree to rounding, at full precision and under loihi2 (where torch's e-prop
    rounds its eligibility traces as Lava does); float32 torch does not (the default, for speed)."""
    cfg = {**TINY, "rules": ["eprop"], "flossing": [False], "optimizer": "sgd", "lrs": [0.3], "iterations": 12,
           "backends": ["torch", "lava"], "profiles": ["none", "loihi2"], "richlazy": False, "lyapunov": False,
           "log_every": 4}
    for dtype, tol in (("float64", 1e-10), ("float32", None)):
        table = nr.study({**cfg, "dtype": dtype}, out=tmp_path / dtype, progress=False, workers=1)
        rows = table.select(["backend", "profile", "gain", "seed", "iteration", "loss"]).to_pylist()
        by = {(b, p): np.array([r["loss"] for r in rows if r["backend"] == b and r["profile"] == p])
              for b in ("torch", "lava") for p in ("none", "loihi2")}
        assert all(v.shape == (4 * 3,) and np.isfinite(v).all() for v in by.values())
        assert np.abs(by["torch", "none"] - by["torch", "loihi2"]).max() > 1e-6  # the profile changes the runs
        diff = max(np.abs(by["torch", p] - by["lava", p]).max() for p in ("none", "loihi2"))
        if tol is None:
            assert diff > 1e-9  # float32 torch vs float64 Lava
        else:
            assert diff < tol
    assert load_config({**TINY, "dtype": "float32"}).digest() == load_config(TINY).digest()
    assert load_config({**TINY, "dtype": "float64"}).digest() != load_config(TINY).digest()


def test_lava_studies_run_in_process_by_default(monkeypatch):
    monkeypatch.delenv("NEURORATE_WORKERS", raising=False)
    big = {**TINY, "iterations": 2000, "rules": ["eprop"], "flossing": [False], "optimizer": "sgd"}
    assert default_workers(load_config(big), 2) == min(2, len(os.sched_getaffinity(0)))
    assert default_workers(load_config({**big, "backends": ["torch", "lava"]}), 2) == 1  # Lava is multiprocess
