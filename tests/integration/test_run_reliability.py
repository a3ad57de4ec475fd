"""`neurorate run` / `neurorate lyapunov` / `nr.train` results a user can trust (docs/cli.md, "What happens when
something goes wrong"): run directories never collide or mix, everything is checked before anything is written,
divergence is a status, Ctrl-C keeps a partial result, and help agrees with behaviour.

Every test runs in its own temporary folder (tests/conftest.py), so default `runs/` directories land there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import neurorate as nr
from neurorate.cli.app import main
from neurorate.errors import NeurorateError
from neurorate.io.results import RunInterrupted, unique_run_dir
from neurorate.training import (
    DIVERGENCE_FACTOR,
    LIMITS,
    baseline_loss,
    check_sizes,
    divergence_iteration,
    estimate_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--iterations", "6", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--device", "cpu"]


def run_main(capsys, *args) -> tuple[int, str, str]:
    """``neurorate ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
        sys.exit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    code = f"from neurorate.cli.app import main\nmain({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def spec_task(n=8, batch=4, seed=0, gain=1.5):
    t = nr.make_task("romo", batch_size=batch, seed=seed)
    s = nr.NetworkSpec.random(n_in=t.n_in, n_hidden=n, n_out=t.n_out, gain=gain, seed=seed, activation="relu",
                              alpha=t.alpha, dt=t.dt_seconds, input_bias=False)
    return s, t


# ------------------------------------------------------------------------------------------------ no mixing
def test_tests_run_outside_the_repository():
    assert not Path.cwd().resolve().is_relative_to(ROOT)


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    code = "from neurorate.cli.app import main\nimport sys\nmain(sys.argv[1:])\n"
    procs = [subprocess.Popen([sys.executable, "-c", code, "run", *SMALL, "--seed", str(s)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    dirs = sorted((tmp_path / "runs").iterdir())
    assert len(dirs) == 2
    for seed, d in zip((0, 1), sorted(dirs, key=lambda d: "-s1-" in d.name)):
        assert f"-s{seed}-" in d.name and len(d.name.rsplit("-", 1)[1]) == 6
        rows = (d / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["iteration"] for r in rows] == list(range(6))
        result = json.loads((d / "result.json").read_text())
        assert result["status"] == "ok" and result["seed"] == seed
    written = {line.split()[3] for o, _ in outs for line in o.splitlines() if line.startswith("results written")}
    assert written == {str(Path("runs") / d.name) for d in dirs}


def test_unique_run_dir_draws_another_suffix_when_the_name_exists(tmp_path, monkeypatch):
    import secrets

    drawn = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(drawn))
    (tmp_path / "runs" / "stem-aaaaaa").mkdir(parents=True)
    (tmp_path / "runs" / "stem-aaaaaa" / "mine").write_text("x")
    got = unique_run_dir(tmp_path / "runs", "stem")
    assert got == tmp_path / "runs" / "stem-bbbbbb" and got.is_dir() and not any(got.iterdir())
    assert (tmp_path / "runs" / "stem-aaaaaa" / "mine").read_text() == "x"


def test_out_an_existing_run_is_refused_and_overwrite_replaces_it_whole(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_main(capsys, "run", *SMALL[:-3], "--device", "cpu", "--out", str(out))[0] == 0  # with Lyapunov
    assert (out / "lyapunov.json").is_file()
    before = (out / "metrics.jsonl").read_text()
    rc, so, err = run_main(capsys, "run", *SMALL, "--iterations", "3", "--out", str(out))
    assert rc == 2 and so == "" and "--overwrite" in one_error_line(err) and "not empty" in err
    assert (out / "metrics.jsonl").read_text() == before
    (out / "notes.txt").write_text("the user's")  # a file neurorate did not write: refused, nothing deleted
    rc, _, err = run_main(capsys, "run", *SMALL, "--iterations", "3", "--out", str(out), "--overwrite")
    assert rc == 2 and "did not write (notes.txt)" in one_error_line(err)
    assert (out / "notes.txt").read_text() == "the user's" and (out / "metrics.jsonl").read_text() == before
    (out / "notes.txt").unlink()
    old_id = json.loads((out / "result.json").read_text())["run_id"]
    rc, _, err = run_main(capsys, "run", *SMALL, "--iterations", "3", "--out", str(out), "--overwrite")
    assert rc == 0, err
    assert [json.loads(r)["iteration"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert json.loads((out / "lyapunov.json").read_text())["lambda_max_before"] is None  # the new run's
    assert json.loads((out / "result.json").read_text())["run_id"] != old_id


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(out), "--overwrite")
    assert rc == 2 and "not a directory neurorate can replace" in one_error_line(err)
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]


def test_out_empty_is_refused_and_nothing_is_written(tmp_path, capsys):
    rc, so, err = run_main(capsys, "run", *SMALL, "--out", "")
    assert rc == 2 and so == "" and "--out must name a directory" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_train_api_refuses_a_used_out_and_overwrites_on_request(tmp_path):
    spec, task = spec_task()
    nr.train(spec, task, iterations=4, lyapunov=False, progress=False, out=tmp_path / "r")
    with pytest.raises(NeurorateError, match="overwrite"):
        nr.train(spec, task, iterations=2, lyapunov=False, progress=False, out=tmp_path / "r")
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 4
    res = nr.train(spec, task, iterations=2, lyapunov=False, progress=False, out=tmp_path / "r", overwrite=True)
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2 and res.status == "ok"


def test_result_json_says_running_while_training_then_ok(tmp_path):
    spec, task = spec_task()
    seen = []

    def peek(i, losses, acc):
        seen.append(json.loads((tmp_path / "r" / "result.json").read_text())["status"])
        assert not (tmp_path / "r" / "spec_final.npz").exists()

    nr.train(spec, task, iterations=3, lyapunov=False, progress=False, out=tmp_path / "r", callback=peek)
    assert seen == ["running"] * 3
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "ok"
    assert not [p.name for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]


def test_a_failing_backend_leaves_a_run_marked_failed(tmp_path, monkeypatch):
    from neurorate.backends.torch import TorchBackend

    def broken(self, specs, task, rule, *, callback=None, **kw):
        callback(0, np.array([0.5]), np.array([0.25]))
        raise RuntimeError("device lost")

    monkeypatch.setattr(TorchBackend, "train", broken)
    spec, task = spec_task()
    with pytest.raises(RuntimeError, match="device lost"):
        nr.train(spec, task, iterations=3, lyapunov=False, progress=False, out=tmp_path / "r")
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "device lost" in result["error"] and result["iterations_done"] == 1


# ------------------------------------------------------------------------------ checked before anything is written
@pytest.mark.parametrize("args, message", [
    (("--profile", "loihi9"), "unknown hardware profile 'loihi9'"),
    (("--profile", "/etc/passwd"), "invalid TOML"),
    (("--backend", "lava", "--rule", "bptt"), "cannot run on the Lava backend"),
    (("--backend", "lava", "--optimizer", "adam"), "not run on the Lava backend"),
    (("--hidden", "100000"), "hidden = 100000 is above the ceiling"),
    (("--hidden", "100000", "--allow-large"), "of memory but only"),
    (("--iterations", str(10**12)), "iterations = 1000000000000 is above the ceiling"),
    (("--batch", str(10**9)), "batch = 1000000000 is above the ceiling"),
    (("--iterations", "1e12"), "Invalid value for '--iterations'"),
    (("--gain", "inf"), "--gain must be finite, got inf"),
    (("--gain", "nan"), "--gain must be finite, got nan"),
    (("--lr", "nan"), "--lr must be finite, got nan"),
    (("--tau", "inf"), "--tau must be finite, got inf"),
    (("--rule", "hebb"), "unknown rule 'hebb'"),
    (("--floss-every", "5"), "floss_every needs floss_iterations > 0"),
    (("--neuron", "lif", "--rule", "rflo"), "supports the rules"),
])
def test_bad_run_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    if "lava" in args:
        pytest.importorskip("lava")
    rc, so, err = run_main(capsys, "run", *SMALL, *args)
    assert rc == 2 and so == ""
    assert message in one_error_line(err), err  # the one line: no "-> runs/X" header before it
    assert list(tmp_path.iterdir()) == []


def test_memory_check_against_the_available_memory(tmp_path, capsys, monkeypatch):
    import neurorate.training as training

    monkeypatch.setattr(training, "available_bytes", lambda: 2**30)
    rc, _, err = run_main(capsys, "run", *SMALL, "--hidden", "20000", "--allow-large")
    assert rc == 2 and "needs about" in one_error_line(err) and "only 1.0 GiB is available" in err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    avail = training.available_bytes()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert avail is None or 0 < avail <= total


def test_memory_check_on_a_gpu_uses_its_free_memory(tmp_path, monkeypatch):
    """A CUDA device (faked: no GPU here) with 256 MiB free refuses an ensemble the host could hold, before any
    directory exists; the CPU and the Lava backend (no device) are not checked against it."""
    import torch

    import neurorate as nr
    import neurorate.training as training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (2**28, 80 * 2**30))
    monkeypatch.setattr(training, "available_bytes", lambda: 64 * 2**30)
    assert training.gpu_free_bytes("auto") == 2**28 and training.gpu_free_bytes("cpu") is None
    assert training.gpu_free_bytes("gpu") is None  # a misspelt device is the backend's one-line error, not this
    specs = [nr.NetworkSpec.random(n_hidden=256, seed=s) for s in range(64)]
    task = nr.make_task("romo", batch_size=32, seed=0)
    need = estimate_bytes(256, 1, 2, 32, task.n_steps, 1000, networks=64)
    assert 2**28 < need < 64 * 2**30
    with pytest.raises(NeurorateError, match=r"GPU memory but only 0.2 GiB is free on cuda; .* or --device cpu"):
        nr.train(specs, task, iterations=1000, device="cuda", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert training.check_resources(256, 1, 2, 32, task.n_steps, 1000, networks=64, device="cpu") == need
    assert training.check_resources(256, 1, 2, 32, task.n_steps, 1000, networks=64, device=None) == need


def test_memory_estimate_covers_the_spec_and_the_trajectories():
    n, b, t = 20000, 32, 56
    est = estimate_bytes(n, 1, 2, b, t, 1500)
    assert est >= 3 * 8 * n * n  # initial, flossed and final spec in float64 (the 3.2 GB spec_initial.npz at 20000)
    grown = estimate_bytes(64, 1, 2, b, t, 1500, rule="bptt")
    assert estimate_bytes(64, 1, 2, 2 * b, t, 1500, rule="bptt") > grown
    assert estimate_bytes(64, 1, 2, b, t, 10**9) - estimate_bytes(64, 1, 2, b, t, 0) >= 16 * 10**9  # histories


def test_ceilings_are_lifted_deliberately(monkeypatch):
    with pytest.raises(NeurorateError, match="above the ceiling"):
        check_sizes(hidden=LIMITS["hidden"] + 1)
    check_sizes(hidden=LIMITS["hidden"])
    check_sizes(True, hidden=LIMITS["hidden"] + 1)
    monkeypatch.setenv("NEURORATE_ALLOW_LARGE", "1")
    check_sizes(hidden=LIMITS["hidden"] + 1, iterations=LIMITS["iterations"] + 1)


def test_missing_lava_extra_is_named_before_the_run_directory_exists(tmp_path):
    code = ("import sys\nsys.modules['lava'] = None\nfrom neurorate.cli.app import main\n"
            f"main({['run', '--backend', 'lava', *SMALL]!r})\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2 and "'lava' extra" in one_error_line(p.stderr)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- divergence
# Romo, e-prop, g = 1.5, N = 128, seed 23: the first loss (computed before any update) is 1400x the zero-output loss
# 0.032 and falls to 0.02 within 60 iterations; the rule before this one flagged it diverged at iteration 0
SEED23_LIKE = np.concatenate([np.geomspace(43.9, 0.02, 60), np.full(200, 0.02)])


@pytest.mark.parametrize("losses, reference, at", [
    ([1.0, 2.0, 999.0, 3.0], None, None),
    ([1.0] * 10 + [1000.5], None, 10),  # 1000x the best loss so far (and the starting level)
    ([1.0, np.nan, 1.0], None, 1),
    ([np.inf, 1.0], None, 0),  # a non-finite loss diverges wherever it is, the first iteration included
    ([0.5, 400.0, 600.0], None, None),
    ([6.5e17, 6.4e17], 0.03, None),  # a huge starting loss that does not grow is not a divergence (iteration 0 was)
    (SEED23_LIKE, 0.032, None),
    (np.concatenate([SEED23_LIKE, [20.0, 33.0]]), 0.032, 261),  # after learning: 1000x the floor 0.032 is 32
    ([0.5] + [0.04] * 9 + [31.0, 41.0], 0.03, 11),  # the best so far (0.04) is the reference above the floor
    ([0.03] * 10 + [1e-6] * 5 + [1e-3, 0.02], 0.03, None),  # a spike from a tiny loss: the floor keeps the scale
    ([0.03] * 10 + [1e-6] * 5 + [31.0], 0.03, 15),
    ([], None, None),
])
def test_divergence_iteration_rule(losses, reference, at):
    assert DIVERGENCE_FACTOR == 1000.0
    assert divergence_iteration(losses, reference=reference) == at


def test_baseline_loss_is_the_zero_output_loss():
    assert baseline_loss(nr.make_task("2af", seed=0)) == pytest.approx(np.log(3), rel=1e-12)
    task = nr.make_task("romo", seed=0)
    _, target, mask = task.batch(0)
    assert baseline_loss(task) == pytest.approx(0.5 * np.sum(mask * target**2) / np.sum(mask), rel=1e-12)


def test_a_finite_blow_up_is_diverged_in_result_json_and_the_last_line(tmp_path, capsys):
    out = tmp_path / "r"
    rc, so, err = run_main(capsys, "run", "--hidden", "8", "--batch", "4", "--lr", "1.0", "--iterations", "5",
                           "--no-lyapunov", "--device", "cpu", "--out", str(out))
    assert rc == 0, err
    last = so.strip().splitlines()[-1]
    assert last.startswith(f"results written to {out}") and "status diverged at iteration 1" in last
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "diverged" and result["diverged_at"] == 1 and result["final_loss"] is None
    assert result["losses"][1] > DIVERGENCE_FACTOR * baseline_loss(nr.make_task("romo", batch_size=4, seed=0))


def test_train_result_marks_the_blow_up_on_every_path(tmp_path):
    spec, task = spec_task(n=8, batch=4)
    res = nr.train(spec, task, iterations=3, lr=1.0, lyapunov=False, progress=False)
    assert res.diverged and res.diverged_at == 1 and res.status == "diverged" and np.isnan(res.final_loss())
    huge_start = nr.train(*spec_task(n=1, batch=32), iterations=3, lyapunov=False, progress=False)
    assert huge_start.losses[0] > DIVERGENCE_FACTOR * baseline_loss(nr.make_task("romo", batch_size=32, seed=0))
    assert huge_start.status == "ok"  # a large starting loss alone is not a divergence
    ok = nr.train(*spec_task(), iterations=3, lyapunov=False, progress=False)
    assert ok.status == "ok" and ok.diverged_at is None


# ---------------------------------------------------------------------------------------------- Ctrl-C
def _wait_for(proc, predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_during_run_keeps_a_partial_result(tmp_path):
    out = tmp_path / "r"
    code = "from neurorate.cli.app import main\nimport sys\nmain(sys.argv[1:])\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--iterations", "100000", "--hidden", "8", "--batch",
                             "4", "--no-lyapunov", "--device", "cpu", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    assert _wait_for(proc, lambda: metrics.exists() and metrics.read_text().count("\n") >= 10)
    proc.send_signal(signal.SIGINT)
    so, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("neurorate run:") and len(lines) == 2 and "Traceback" not in err
    result = json.loads((out / "result.json").read_text())
    done = result["iterations_done"]
    assert lines[1] == (f"interrupted after {done} of 100000 iterations; kept in {out}: metrics.jsonl ({done} "
                        "iterations), learning_curve.png, config.json, spec_initial.npz and result.json with status "
                        '"interrupted" (no final spec)')
    assert result["status"] == "interrupted" and done >= 10 and len(result["losses"]) == done
    rows = [json.loads(r) for r in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(done))
    np.testing.assert_allclose([r["loss"] for r in rows], result["losses"], rtol=1e-12)
    assert (out / "learning_curve.png").stat().st_size > 1000 and not (out / "spec_final.npz").exists()


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    """A Ctrl-C while ``neurorate`` imports its application (the libraries load for about a second): one line and
    exit code 130, no traceback."""
    import importlib.abc

    import neurorate.cli

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "neurorate.cli.app":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "neurorate.cli.app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exc:
        neurorate.cli.main(["run", "--help"])
    assert exc.value.code == 130
    assert capsys.readouterr().err == "interrupted while starting; nothing was run\n"


def test_interrupt_inside_train_raises_run_interrupted(tmp_path):
    spec, task = spec_task()

    def stop(i, losses, acc):
        if i == 4:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="interrupted after 5 of 50 iterations") as exc:
        nr.train(spec, task, iterations=50, lyapunov=False, progress=False, out=tmp_path / "r", callback=stop)
    assert isinstance(exc.value, KeyboardInterrupt)
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "interrupted" and result["iterations_done"] == 5 and result["iterations"] == 50


def test_ctrl_c_during_lyapunov_says_nothing_was_written(tmp_path):
    code = "from neurorate.cli.app import main\nimport sys\nmain(sys.argv[1:])\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "lyapunov", "--hidden", "400", "--streams", "64",
                             "--progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(proc.stderr.read(12)), daemon=True)
    reader.start()
    assert _wait_for(proc, lambda: bool(seen)) and "lyapunov:" in seen[0]  # the progress bar has started
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = seen[0] + proc.stderr.read()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith("interrupted while computing the Lyapunov spectrum; nothing was "
                                                 "written") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ help agrees with behaviour
def test_lyapunov_draws_the_network_of_run_with_the_same_defaults(tmp_path, capsys):
    from neurorate.analysis.lyapunov import lyapunov_spectrum
    from neurorate.defaults import RUN_DEFAULTS

    rc, so, err = run_main(capsys, "lyapunov", "--hidden", "16", "--k", "4", "--json", "--out", str(tmp_path / "l"))
    assert rc == 0, err
    data = json.loads(so)
    assert RUN_DEFAULTS["gain"] == 1.5 and RUN_DEFAULTS["activation"] == "relu" and not RUN_DEFAULTS["input_bias"]
    spec, task = spec_task(n=16, batch=32, gain=RUN_DEFAULTS["gain"])
    expect = lyapunov_spectrum(spec, task, k=4, return_stats=True)
    np.testing.assert_allclose(data["spectrum"], expect.mean, atol=1e-12)
    np.testing.assert_allclose(data["std"], expect.std, atol=1e-12)
    saved = json.loads((tmp_path / "l" / "lyapunov.json").read_text())
    assert saved["config"]["activation"] == "relu" and saved["config"]["gain"] == 1.5
    rc, _, err = run_main(capsys, "lyapunov", "--hidden", "16", "--k", "4", "--out", str(tmp_path / "l"))
    assert rc == 2 and "--overwrite" in one_error_line(err)
    rc, _, err = run_main(capsys, "lyapunov", "--gain", "inf")
    assert rc == 2 and "--gain must be finite, got inf" in one_error_line(err)


def test_help_states_the_defaults_it_uses(capsys):
    rc, so, _ = run_main(capsys, "run", "--help")
    flat = " ".join(so.replace("│", " ").split())
    from neurorate.defaults import RUN_DEFAULTS

    assert rc == 0 and f"(default: {RUN_DEFAULTS['lr']:g} with adam, {RUN_DEFAULTS['lr_sgd']:g} with sgd)" in flat
    assert "3e-3" not in flat and "0.00015 with adam" in flat
    rc, so, _ = run_main(capsys, "--version")
    assert rc == 0 and so.strip() == f"neurorate {nr.__version__}"


def test_training_progress_bars_stay_on_screen():
    from neurorate.backends.base import progress_bar

    bar = progress_bar(3, True, "torch")
    assert bar.leave is True
    bar.close()


@pytest.mark.parametrize("case", ["tasks", "shapes", "lyapunov_k", "floss_k", "lr", "threads"])
def test_train_checks_ensembles_k_lr_and_threads_before_writing(tmp_path, monkeypatch, case):
    s8 = nr.NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, seed=0)
    s16 = nr.NetworkSpec.random(n_in=1, n_hidden=16, n_out=2, seed=0)
    task = nr.make_task("romo", batch_size=4)
    kwargs = {"tasks": dict(spec=[s8, s8, s8], task=[task, task]), "shapes": dict(spec=[s8, s16], task=task),
              "lyapunov_k": dict(spec=s8, task=task, lyapunov_k=0),
              "floss_k": dict(spec=s8, task=task, floss_iterations=1, floss_k=0),
              "lr": dict(spec=s8, task=task, lr="x"), "threads": dict(spec=s8, task=task)}[case]
    if case == "threads":
        monkeypatch.setenv("NEURORATE_THREADS", "abc")
    words = {"tasks": "one task or one per network", "shapes": "must share n_hidden", "lyapunov_k": "lyapunov_k",
             "floss_k": "floss_k must be a positive integer", "lr": "lr must be a number",
             "threads": "NEURORATE_THREADS"}
    with pytest.raises(NeurorateError, match=words[case]) as info:
        nr.train(**kwargs, iterations=2, out=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_train_uses_the_backends_default_optimizer():
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=6, n_out=2, seed=0)
    task = nr.make_task("romo", batch_size=2)
    result = nr.train(spec, task, backend="lava", iterations=2, lyapunov=False, progress=False)
    assert result.optimizer == "sgd" and result.lr == 0.05


# ------------------------------------------------------------------ what --overwrite may delete, signals, dead runs
def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "important.csv").write_text("data")
    return path


@pytest.mark.parametrize("marker", ["config.json", "result.json", "lyapunov.json"])
def test_overwrite_never_deletes_a_users_folder_named_like_a_run(tmp_path, capsys, marker):
    """A folder is a run directory only by neurorate's marker, never because it holds a file of a run's name."""
    out = tmp_path / "proj"
    out.mkdir()
    (out / marker).write_text('{"status": "ok"}')
    (out / "important.csv").write_text("data")
    rc, so, err = run_main(capsys, "run", *SMALL, "--out", str(out), "--overwrite")
    assert rc == 2 and so == "" and "not replacing it" in one_error_line(err)
    assert sorted(p.name for p in out.iterdir()) == sorted([marker, "important.csv"])
    assert (out / "important.csv").read_text() == "data"


def test_overwrite_refuses_a_study_directory(tmp_path, capsys):
    study = tmp_path / "study"
    nr.study({"name": "tiny", "tasks": ["romo"], "rules": ["eprop"], "gains": [1.0], "lrs": [1e-2], "seeds": [0],
              "iterations": 2, "hidden": 8, "batch": 4, "log_every": 1, "lyapunov": False, "richlazy": False},
             out=study, progress=False, workers=1)
    before = sorted(str(p.relative_to(study)) for p in study.rglob("*"))
    rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(study), "--overwrite")
    assert rc == 2 and "is a study directory" in one_error_line(err)
    assert sorted(str(p.relative_to(study)) for p in study.rglob("*")) == before


def test_overwrite_refuses_the_current_directory_and_those_above_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    assert run_main(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    monkeypatch.chdir(out)
    for target in (".", str(tmp_path)):
        rc, _, err = run_main(capsys, "run", *SMALL, "--out", target, "--overwrite")
        assert rc == 2 and "is the current directory or contains it" in one_error_line(err)
    assert (out / "spec_final.npz").is_file() and (out / "result.json").is_file()


def test_overwrite_refuses_a_link_and_an_older_run_without_marker(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_main(capsys, "run", *SMALL, "--out", str(out))[0] == 0
    (tmp_path / "link").symlink_to(out)
    rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(tmp_path / "link"), "--overwrite")
    assert rc == 2 and "symbolic link" in one_error_line(err)
    old = json.loads((out / "result.json").read_text())
    del old["format"]  # as an earlier version wrote it
    (out / "result.json").write_text(json.dumps(old))
    rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(out), "--overwrite")
    assert rc == 2 and "no neurorate run marker" in one_error_line(err)
    assert (out / "spec_final.npz").is_file()


def _start_run(out: Path, *extra: str, iterations: int = 1_000_000) -> subprocess.Popen:
    code = ("import sys\nfrom neurorate.cli.app import main\n"
            f"main({['run', *SMALL[2:], '--iterations', str(iterations), '--out', str(out), *extra]!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # training has begun: metrics are being written
        if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0:
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run did not start within 120 s")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_live_run_is_never_replaced_and_a_signal_ends_it_like_ctrl_c(tmp_path, capsys, sig, code):
    out = tmp_path / "same"
    a = _start_run(out)
    try:
        run_id = json.loads((out / "result.json").read_text())["run_id"]
        rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(out), "--overwrite")  # run B
        assert rc == 2 and "still running (pid " in one_error_line(err)
        rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(out))  # without --overwrite: not empty
        assert rc == 2
    finally:
        a.send_signal(sig)
        so, se = a.communicate(timeout=120)
    assert a.returncode == code, se
    last = se.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert last.startswith(f"stopped by {name} after ") and str(out) in last and "Traceback" not in se
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted" and result["stopped_by"] == name and result["run_id"] == run_id
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == result["iterations_done"] and all(json.loads(x)["iteration"] == i for i, x in enumerate(lines))


def test_a_killed_run_reads_stale_and_can_be_replaced(tmp_path, capsys):
    out = tmp_path / "k"
    proc = _start_run(out)
    proc.kill()
    proc.communicate(timeout=60)
    assert json.loads((out / "result.json").read_text())["status"] == "running"  # what the dead process left
    loaded = nr.load_run(out)
    assert loaded["summary"]["status"] == "stale" and loaded["summary"]["recorded_status"] == "running"
    assert loaded["spec"] is None
    rc, so, _ = run_main(capsys, "runs", str(tmp_path), "--json")
    rows = json.loads(so)
    assert rc == 0 and [(r["run"], r["status"]) for r in rows] == [("k", "stale")]
    assert rows[0]["iterations_done"] == len((out / "metrics.jsonl").read_text().splitlines()) > 0
    rc, _, err = run_main(capsys, "run", *SMALL, "--out", str(out), "--overwrite")
    assert rc == 0, err
    assert nr.load_run(out)["summary"]["status"] == "ok"


def test_liveness_without_a_lock_file_uses_the_recorded_process(tmp_path):
    from neurorate.io.dirs import process_identity, run_state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = process_identity()
    cases = [({**me}, "running"),  # this process: alive
             ({**me, "pid": gone.pid}, "stale"),  # a process that has ended
             ({**me, "process_start": "another-boot:1"}, "stale"),  # this pid, but another process (recycled)
             ({**me, "pid": gone.pid, "host": "elsewhere"}, "running")]  # another host: nothing here can tell
    for record, expected in cases:
        assert run_state(tmp_path, {"status": "running", **record})["status"] == expected, record
    assert run_state(tmp_path, {"status": "ok", "pid": gone.pid})["status"] == "ok"


def test_a_full_disk_mid_run_keeps_whole_lines_and_marks_the_run_failed(tmp_path, capsys, monkeypatch):
    """The write of iteration 5's line stops half-way (ENOSPC): the half line is cut back, the run is "failed" with
    the reason, and the command line says so in one line naming the path and what was kept."""
    import errno

    real_write, state = os.write, {"fd": None}

    def full_disk(fd, data):
        if fd == state["fd"]:  # the rest of the line: the disk is full now
            raise OSError(errno.ENOSPC, "No space left on device")
        if b'"iteration": 5,' in bytes(data):
            state["fd"] = fd
            return real_write(fd, bytes(data)[:10])  # the first 10 bytes fit
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    out = tmp_path / "r"
    rc, so, err = run_main(capsys, "run", *SMALL, "--iterations", "20", "--out", str(out))
    line = one_error_line(err.split("\n", 1)[1])  # after the header line
    assert rc == 2 and so == ""
    assert f"cannot write {out / 'metrics.jsonl'}: No space left on device" in line
    assert "stopped at iteration 6 of 20" in line and "metrics.jsonl (5 whole lines)" in line
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(x)["iteration"] for x in text.splitlines()] == [0, 1, 2, 3, 4]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert result["format"] == "neurorate-run"


def _small_filesystem(path: Path, size: str = "64k") -> None:
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and a kernel that allows it")


def test_a_real_full_filesystem_ends_a_run_and_a_study_in_one_line(tmp_path):
    disk = tmp_path / "disk"
    _small_filesystem(disk)
    try:
        p = cli("run", *SMALL[2:], "--iterations", "3000", "--out", str(disk / "r"))
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert one_error_line(p.stderr.split("\n", 1)[1]).startswith(f"error: cannot write {disk / 'r'}")
        assert "No space left on device" in p.stderr
        text = (disk / "r" / "metrics.jsonl").read_text()
        assert text == "" or text.endswith("\n")
        assert json.loads((disk / "r" / "result.json").read_text())["status"] == "failed"
        subprocess.run(["rm", "-rf", str(disk / "r")], check=True)
        p = cli("study", "--config", "quick", "--iterations", "30", "--out", str(disk / "s"), "--no-report")
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        line = one_error_line(p.stderr)
        assert "No space left on device" in line and "continue with --resume" in line
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_files_are_readable_by_the_group(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert run_main(capsys, "run", *SMALL, "--out", str(tmp_path / "r"))[0] == 0
        nr.study({"name": "tiny", "tasks": ["romo"], "rules": ["eprop"], "gains": [1.0], "lrs": [1e-2], "seeds": [0],
                  "iterations": 2, "hidden": 8, "batch": 4, "log_every": 1, "lyapunov": False, "richlazy": False},
                 out=tmp_path / "s", progress=False, workers=1)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files
            if p.stat().st_mode & 0o777 != 0o644} == {}


def test_neurorate_runs_lists_every_run_with_its_status(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(capsys, "run", *SMALL)[0] == 0  # runs/<default name>
    assert run_main(capsys, "run", *SMALL, "--gain", "3", "--lr", "1", "--out", "runs/blown")[0] == 0
    spec, task = spec_task()
    nr.train([spec, spec], task, iterations=3, lyapunov=False, progress=False, out="runs/ens")
    broken = Path("runs/broken")
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    rc, so, _ = run_main(capsys, "runs", "--json")
    rows = {r["run"]: r for r in json.loads(so)}
    assert rc == 0 and len(rows) == 5
    default = next(r for name, r in rows.items() if name.startswith("20"))
    assert (default["status"], default["task"], default["rule"], default["gain"], default["seed"]) == \
        ("ok", "romo", "eprop", 1.5, 0)
    assert default["iterations_done"] == default["iterations"] == 6 and default["final_loss"] > 0
    assert rows["blown"]["status"] == "diverged" and rows["blown"]["gain"] == 3
    assert rows["ens/net-000"]["status"] == rows["ens/net-001"]["status"] == "ok"
    assert rows["broken"]["status"] == "unreadable" and "result.json" in rows["broken"]["error"]
    rc, so, _ = run_main(capsys, "runs")
    lines = so.strip().splitlines()
    assert rc == 0 and lines[0].split()[:3] == ["RUN", "STATUS", "TASK"] and len(lines) == 7
    assert lines[-1] == "5 runs in runs: 1 diverged, 3 ok, 1 unreadable"
    rc, so, _ = run_main(capsys, "runs", "--status", "diverged", "--json")
    assert [r["run"] for r in json.loads(so)] == ["blown"]
    rc, _, err = run_main(capsys, "runs", "--status", "done")
    assert rc == 2 and "unknown status done" in one_error_line(err)
    rc, _, err = run_main(capsys, "runs", "nowhere")
    assert rc == 2 and "nowhere: no such directory" in one_error_line(err)


@pytest.mark.parametrize("where", ["/proc/neurorate-test/run", "file.txt/run"])
def test_an_out_that_cannot_be_created_is_one_line_before_the_header(tmp_path, capsys, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("a file, not a folder")
    rc, so, err = run_main(capsys, "run", *SMALL, "--out", where)
    line = one_error_line(err)  # no "neurorate run: ... -> DIR" header before it
    assert rc == 2 and so == "" and ("cannot write to output directory" in line or "is not a directory" in line)
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_an_interrupt_between_memory_and_disk_leaves_one_whole_line_per_iteration(tmp_path):
    """The metrics file after an interrupt holds exactly the iterations kept in memory: a missing last line is
    written, a partial one cut (a signal can land between the two records of an iteration, or inside a write)."""
    from neurorate.io.results import RunDirectory

    rd = RunDirectory(tmp_path / "r", iterations=10)
    for k in range(3):
        rd.append_metrics(k, 0.5 + k, 1.0)
    with open(rd.metrics_path, "ab") as fh:
        fh.write(b'{"iteration": 3, "lo')  # a write cut short
    rd.catch_up(np.array([0.5, 1.5, 2.5, 3.5, 4.5]), np.array([1.0, 1.0, 1.0, 0.25, np.nan]))
    rows = [json.loads(x) for x in rd.metrics_path.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4] and rows[3]["loss"] == 3.5 and rows[4]["accuracy"] is None
    assert rd.metrics_path.read_text().endswith("\n") and rd.lines == 5
    rd.catch_up(np.array([0.5, 1.5]), np.array([1.0, 1.0]))  # the file ahead of memory: cut to it
    assert len(rd.metrics_path.read_text().splitlines()) == 2
