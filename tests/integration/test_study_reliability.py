"""Studies a user can trust: configs and names checked, overrides validated before the directory exists, one
study per directory (a lock naming its holder), a report that names a corrupt file, rebuilds results.parquet,
says when ensembles are missing and leaves diverged runs out of its means while counting them per setting."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import neurorate as nr
from neurorate.errors import NeurorateError
from neurorate.studies.config import embedded_configs, load_config

ROOT = Path(__file__).resolve().parents[2]
# two small ensembles (BPTT, e-prop), 2 gains x 2 seeds, no Lyapunov spectra or rich/lazy probes: a few seconds
SMALL = {"name": "small", "tasks": ["romo"], "rules": ["bptt", "eprop"], "gains": [0.5, 1.5], "lrs": [1e-2],
         "seeds": [0, 1], "iterations": 12, "hidden": 8, "batch": 4, "log_every": 4, "lyapunov": False,
         "richlazy": False}
SMALL_TOML = textwrap.dedent("""
    [study]
    name = "small"
    tasks = ["romo"]
    rules = ["bptt", "eprop"]
    gains = [0.5, 1.5]
    lrs = [1e-2]
    seeds = [0, 1]
    iterations = 12
    hidden = 8
    batch = 4
    log_every = 4
    lyapunov = false
    richlazy = false
""")


def cli(*args, cwd=None):
    code = f"from neurorate.cli.app import main\nmain({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"})


def one_error_line(p) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
    return p.stderr


# ---------------------------------------------------------------------- the config file and the name
@pytest.mark.parametrize("text, expected", [
    ("", "no [study] table (the file is empty)"),
    ("# only a comment\n", "no [study] table (the file is empty)"),
    ('name = "x"\ngains = [1.0]\n', "no [study] table (found 'name', 'gains')"),
    ("[study]\n", "the [study] table is empty"),
    ('[study]\nname = "x"\n[other]\na = 1\n', "unknown top-level key 'other'"),
    ('study = 3\n', "'study' must be a table"),
])
def test_config_without_a_study_table_is_an_error(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(NeurorateError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value) and "\n" not in str(err.value)
    p = cli("study", "--config", str(path), cwd=tmp_path)
    assert str(path) in one_error_line(p)
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]  # no results/ directory: the default study did not start


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "", "   ", "..", ".", "a/b", "a\\b", "~user", "x\ny"])
def test_study_name_must_be_a_plain_name(tmp_path, name):
    with pytest.raises(NeurorateError, match="field 'name': must be a plain name") as err:
        load_config({**SMALL, "name": name})
    assert "\n" not in str(err.value)
    path = tmp_path / "c.toml"
    path.write_text(f"[study]\nname = {json.dumps(name)}\n")
    p = cli("study", "--config", str(path), cwd=tmp_path)
    assert "field 'name'" in one_error_line(p)
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]
    assert not (tmp_path.parent / "escape").exists()


def test_plain_names_are_accepted():
    for name in ("paper", "my-study_2", "gain sweep v3", "a.b"):
        assert load_config({**SMALL, "name": name}).name == name
    for name in embedded_configs():
        assert load_config(name).name == name


# ---------------------------------------------------------------------- overrides before the directory exists
@pytest.mark.parametrize("args, expected", [
    (["--profile", "loihi9"], "unknown hardware profile 'loihi9'"),
    (["--profile", "/etc/passwd"], "passwd"),
    (["--profile", "loihi1"], "activation 'tanh' is not available"),  # Romo's tanh units, unsigned spike counts
    (["--backend", "lava"], "rule 'bptt' cannot run on the Lava backend"),
    (["--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["--neurons", "lif", "--profile", "loihi2"], "full precision only"),
])
def test_bad_overrides_leave_nothing_behind(tmp_path, args, expected):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    out = tmp_path / "study"
    p = cli("study", "--config", str(config), "--out", str(out), *args)
    assert expected in one_error_line(p)
    assert not out.exists()


def test_lava_with_adam_is_refused_before_the_directory_exists(tmp_path):
    out = tmp_path / "study"
    with pytest.raises(NeurorateError, match="optimizer 'adam' is not local"):
        nr.study({**SMALL, "rules": ["eprop"], "backends": ["lava"]}, out=out, progress=False)
    assert not out.exists()


def test_a_failed_start_does_not_block_the_corrected_rerun(tmp_path):
    # a directory in which nothing finished (left by a failed or killed start) holds nothing to keep
    out = tmp_path / "study"
    (out / "results").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"digest": "0123456789abcdef", "config": {"name": "old"}}))
    cfg = {**SMALL, "rules": ["eprop"], "gains": [1.0], "seeds": [0]}
    table = nr.study(cfg, out=out, progress=False)
    assert len(set(table.column("run_id").to_pylist())) == 1
    assert json.loads((out / "config.json").read_text())["digest"] == load_config(cfg).digest()
    with pytest.raises(NeurorateError, match="already holds a study"):  # now something finished: kept
        nr.study(cfg, out=out, progress=False)


# ---------------------------------------------------------------------- one study per directory
HOLD = textwrap.dedent("""
    import sys, time
    from neurorate.studies.runner import StudyLock
    with StudyLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_a_second_study_or_resume_fails_at_once_naming_the_holder_and_sigkill_releases(tmp_path):
    import socket

    out = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = {**SMALL, "rules": ["eprop"], "gains": [1.0], "seeds": [0]}
        for resume in (False, True):
            start = time.perf_counter()
            with pytest.raises(NeurorateError) as err:
                nr.study(cfg, out=out, resume=resume, progress=False)
            assert time.perf_counter() - start < 5
            msg = str(err.value)
            assert "in use by another study" in msg and f"pid {holder.pid} on {socket.gethostname()}" in msg
            assert re.search(r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", msg) and "\n" not in msg
        config = tmp_path / "small.toml"
        config.write_text(SMALL_TOML)
        p = cli("study", "--config", str(config), "--out", str(out), "--resume")
        assert f"pid {holder.pid}" in one_error_line(p)
        assert not (out / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    table = nr.study(cfg, out=out, progress=False)  # the kernel released the lock of the killed holder
    assert len(set(table.column("run_id").to_pylist())) == 1
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()  # the lock names its last holder


def test_atomic_writes_use_unique_temporary_names(tmp_path):
    from neurorate.studies.runner import _atomic_write

    target = tmp_path / "config.json"
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(150):
                _atomic_write(target, json.dumps({"writer": tag, "i": i}).encode())
        except BaseException as exc:  # noqa: BLE001 - any failure of a writer fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 149
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


# ---------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "study"
    nr.study(SMALL, out=out, progress=False, workers=1)
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(finished, out)
    return out


@pytest.mark.parametrize("victim, content, expected", [
    ("results/part-0000-romo_bptt_floss0_rankfull_torch_none.parquet", b"PAR1 not really", "corrupt parquet part"),
    ("config.json", b'{"digest": "x", "config": {', "malformed study config"),
    ("config.json", b'{"digest": "x", "config": {"gains": [-1]}}', "malformed study config (field 'gains'"),
    ("manifest.json", b'{"finished": {"a": ', "malformed manifest"),
    ("manifest.json", b'{"finished": {"a": {"rows": 3}}}', "malformed manifest"),
    ("results/part-0001-romo_eprop_floss0_rankfull_torch_none.parquet", None, "part of a finished ensemble is missing"),
    ("config.json", None, "no such file"),
])
def test_report_names_a_corrupt_file_in_one_line(finished, tmp_path, victim, content, expected):
    out = _copy(finished, tmp_path)
    if content is None:
        (out / victim).unlink()
    else:
        (out / victim).write_bytes(content)
    p = cli("report", str(out))
    line = one_error_line(p)
    assert str(out / victim) in line and expected in line


@pytest.mark.parametrize("damage", ["missing", "corrupt", "stale"])
def test_report_rebuilds_results_parquet_from_the_parts(finished, tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = _copy(finished, tmp_path)
    good = pq.read_table(out / "results.parquet")
    if damage == "missing":
        (out / "results.parquet").unlink()
    elif damage == "corrupt":
        (out / "results.parquet").write_bytes(b"garbage")
    else:
        pq.write_table(good.slice(0, 5), out / "results.parquet")
    p = cli("report", str(out))
    assert p.returncode == 0, p.stderr
    word = {"missing": "missing", "corrupt": "corrupt", "stale": "out of date"}[damage]
    assert f"results.parquet was {word}: rebuilt from 2 parts" in p.stdout
    from neurorate.studies.runner import _same_table

    rebuilt = pq.read_table(out / "results.parquet")
    assert _same_table(rebuilt, good) and rebuilt.num_rows == 2 * 4 * 3
    assert rebuilt.column("run_id").to_pylist() == good.column("run_id").to_pylist()
    assert "was " + word in (out / "report.md").read_text()
    again = cli("report", str(out))  # now right: nothing to rebuild
    assert again.returncode == 0 and "rebuilt" not in again.stdout
    assert isinstance(good, pa.Table)


def test_report_header_says_which_ensembles_are_missing(finished, tmp_path):
    out = _copy(finished, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["finished"]["romo|eprop|floss=0|rank=full|torch|none"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    p = cli("report", str(out))
    assert p.returncode == 0, p.stderr
    assert "incomplete study: 1 ensembles have not finished (romo|eprop|floss=0|rank=full|torch|none)" in p.stdout
    text = (out / "report.md").read_text()
    assert "**Incomplete study**: 1 of the config's ensembles have not finished (romo|eprop|floss=0" in text
    assert "4 runs:" in text  # the bptt ensemble's 2 gains x 2 seeds
    complete = cli("report", str(_copy(finished, tmp_path / "again")))
    assert complete.returncode == 0 and "incomplete" not in complete.stdout.lower()
    assert "Incomplete" not in (tmp_path / "again" / "study" / "report.md").read_text()


# ---------------------------------------------------------------------- divergence
def test_best_lr_leaves_diverged_runs_out_of_the_mean():
    from neurorate.studies.claims import best_lr, diverged_by_setting

    def run(lr, seed, loss, status="ok"):
        return {"run_id": f"{lr}{seed}", "task": "romo", "rule": "eprop", "flossing": False, "rank": None,
                "backend": "torch", "profile": "none", "gain": 1.0, "lr": lr, "seed": seed, "final_loss": loss,
                "auc": loss, "status": status}

    # every lr has one diverged seed: the lowest mean over the others wins (it was the smallest lr, all "inf")
    runs = [run(1e-3, 0, 0.02), run(1e-3, 1, 0.03), run(1e-3, 2, math.nan, "diverged"),
            run(3e-3, 0, 0.01), run(3e-3, 1, 0.01), run(3e-3, 2, math.nan, "diverged")]
    key = ("romo", "eprop", False, None, "torch", "none", 1.0)
    assert best_lr(runs)[key] == 3e-3
    # fewer diverged seeds first: a lower mean at an lr with more divergences loses
    runs[0]["status"], runs[0]["final_loss"] = "diverged", math.nan
    runs[2]["status"], runs[2]["final_loss"] = "ok", 0.5
    runs[3]["status"] = "diverged"  # a finite loss marked diverged (e.g. a blow-up) is left out all the same
    assert diverged_by_setting(runs) == {key + (1e-3,): 1, key + (3e-3,): 2}
    assert best_lr(runs)[key] == 1e-3


DIVERGING = {"name": "div", "tasks": ["romo"], "rules": ["eprop"], "gains": [0.5, 3.0], "lrs": [1e-2, 0.3, 1.0],
             "seeds": [0, 1, 2], "iterations": 20, "hidden": 8, "batch": 4, "log_every": 5, "lyapunov": False,
             "richlazy": False, "activation": "relu"}


def test_diverged_runs_are_counted_per_setting_and_left_out_of_the_report_means(tmp_path):
    from neurorate.studies.claims import run_summaries
    from neurorate.studies.report import report

    out = tmp_path / "study"
    table = nr.study(DIVERGING, out=out, progress=False, workers=1)  # the study goes on past diverged runs
    runs = run_summaries(table)
    assert len(runs) == 2 * 3 * 3
    div = [r for r in runs if r["status"] == "diverged"]
    assert div and len(div) < len(runs)  # lr = 1.0 blows these ReLU networks up, lr = 1e-2 does not
    text = report(out).read_text()
    per: dict[tuple, int] = {}
    for r in div:
        per[(r["gain"], r["lr"])] = per.get((r["gain"], r["lr"]), 0) + 1
    # left out of the means; the claims rank them worst (they were left out of the claims too, which favoured the
    # gains where runs diverge) and the report counts them per gain at the best lr
    assert f"left out of every mean and figure, ranked worst in the claims): {len(div)}, per setting:" in text
    for (gain, lr), k in per.items():
        assert f"romo eprop g={gain:g} lr={lr:g} ({k}/3)" in text
    # the table's numbers: at each gain the lr with the fewest diverged seeds, then the lowest mean over the others
    for gain in DIVERGING["gains"]:
        def rank(lr, gain=gain):
            rs = [r for r in runs if r["gain"] == gain and r["lr"] == lr]
            kept = [r["final_loss"] for r in rs if r["status"] != "diverged"]
            return len(rs) - len(kept), sum(kept) / len(kept) if kept else math.inf

        lr = min(DIVERGING["lrs"], key=rank)
        kept = [r["final_loss"] for r in runs if r["gain"] == gain and r["lr"] == lr and r["status"] != "diverged"]
        row = next(line for line in text.splitlines() if line.startswith(f"| romo | eprop | False | {gain:g} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) == lr and float(cells[5]) == pytest.approx(sum(kept) / len(kept), rel=1e-3)


# ---------------------------------------------------------------------- help and summary
def test_study_help_lists_every_embedded_config():
    p = cli("study", "--help")
    assert p.returncode == 0
    configs = sorted(p.name[:-5] for p in (ROOT / "neurorate" / "studies" / "configs").glob("*.toml"))
    assert configs == embedded_configs() and {"paper", "quick", "lif", "hardware"} <= set(configs)
    assert f"({' | '.join(configs)})" in " ".join(p.stdout.split())


def test_quick_study_time_in_the_docs_matches_the_benchmark():
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    lines = bench.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| quick "))
    header = next(lines[i] for i in range(at, -1, -1) if lines[i].startswith("| study |"))
    column = [c.strip() for c in header.strip("|").split("|")].index("measured wall")
    seconds = [c.strip() for c in lines[at].strip("|").split("|")][column]
    assert re.fullmatch(r"\d+ s", seconds)
    study_md = (ROOT / "docs" / "study.md").read_text()
    line = next(ln for ln in study_md.splitlines() if "--config quick" in ln)
    assert f"{seconds} on 2 cores" in line
    quick = (ROOT / "neurorate" / "studies" / "configs" / "quick.toml").read_text().splitlines()[0]
    assert f"{seconds} on 2 CPU cores" in quick


def test_study_summary_counts_runs_not_rows(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    out = tmp_path / "study"
    p = cli("study", "--config", str(config), "--out", str(out), "--workers", "1", "--no-progress", "--no-report")
    assert p.returncode == 0, p.stderr
    # 2 ensembles x (2 gains x 1 lr x 2 seeds) networks; 12 iterations logged every 4: 3 rows per run
    assert f"study small: 8 runs in 2 ensembles (24 logged rows) in {out / 'results.parquet'}" in p.stdout


def test_an_empty_out_is_refused(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    p = cli("study", "--config", str(config), "--out", "", cwd=tmp_path)
    assert "--out must name a study directory, got an empty path" in one_error_line(p)
    assert sorted(os.listdir(tmp_path)) == ["small.toml"]
    with pytest.raises(NeurorateError, match="out must name a study directory"):
        nr.study(SMALL, out="", progress=False)


def test_resume_with_a_corrupt_config_json_names_the_file(finished, tmp_path):
    out = _copy(finished, tmp_path)
    (out / "config.json").write_text("{not json")
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    p = cli("study", "--config", str(config), "--out", str(out), "--resume")
    line = one_error_line(p)
    assert f"{out / 'config.json'}: malformed study config" in line


def test_a_study_config_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(SMALL_TOML.encode("utf-16"))
    with pytest.raises(NeurorateError, match=r"c\.toml: not a UTF-8 text file \(byte 0: invalid start byte\)$"):
        load_config(path)


# ------------------------------------------------------------------ where a study may write; signals
def test_a_study_never_writes_into_a_run_directory_or_a_users_folder(tmp_path):
    run = tmp_path / "run"
    p = cli("run", "--iterations", "3", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--device", "cpu",
            "--out", str(run))
    assert p.returncode == 0, p.stderr
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "important.csv").write_text("data")
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    for target, says in ((run, "is a run directory"), (folder, "important.csv")):
        before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
        p = cli("study", "--config", str(config), "--out", str(target), "--no-report")
        line = one_error_line(p)
        assert says in line and "a study writes only into a new, empty or study directory" in line
        assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
        with pytest.raises(NeurorateError, match="a study writes only into"):
            nr.study(SMALL, out=target, progress=False)
        assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert nr.load_run(run)["config"]["rule"] == "eprop"  # the run's own config, untouched


def test_study_config_json_carries_the_study_marker(finished):
    stored = json.loads((finished / "config.json").read_text())
    assert stored["format"] == "neurorate-study" and stored["format_version"] == 1
    from neurorate.io.dirs import classify

    assert classify(finished)[0] == "study"


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_stops_a_study_like_ctrl_c_and_resume_continues(tmp_path, sig, code):
    config = tmp_path / "long.toml"
    config.write_text(SMALL_TOML.replace("iterations = 12", "iterations = 200000"))
    out = tmp_path / "s"
    args = ["study", "--config", str(config), "--out", str(out), "--workers", "1", "--no-report"]
    code_ = f"from neurorate.cli.app import main\nmain({args!r})\n"
    proc = subprocess.Popen([sys.executable, "-c", code_], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "config.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # training has begun
    proc.send_signal(sig)
    so, se = proc.communicate(timeout=120)
    assert proc.returncode == code, se
    name = signal.Signals(sig).name
    assert se.strip().splitlines()[-1].startswith(f"stopped by {name}: 0 finished ensembles are kept in {out}")
    assert "--resume" in se and "Traceback" not in se
    from neurorate.io.dirs import lock_held

    assert lock_held(out / ".lock") is False  # released: a resume can start at once


def test_report_on_a_run_directory_says_what_it_is(tmp_path):
    run = tmp_path / "run"
    p = cli("run", "--iterations", "3", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--device", "cpu",
            "--out", str(run))
    assert p.returncode == 0, p.stderr
    line = one_error_line(cli("report", str(run)))
    assert f"{run} is a run directory (status ok), not a study" in line and "neurorate runs" in line
    assert not (run / "report.md").exists()
