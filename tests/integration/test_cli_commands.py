"""`neurorate tasks`, the NIR commands' --overwrite, and help rendered at the terminal's width."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import neurorate as nr
from neurorate.cli import main


def call(argv, capsys) -> tuple[int, str, str]:
    """``neurorate ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------ neurorate tasks
def test_tasks_lists_the_built_in_tasks_one_line_each(capsys):
    code, out, err = call(["tasks"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["TASK", "LOSS", "IN", "OUT", "STEPS", "DT"]
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert rows["romo"][1:6] == ["mse", "1", "2", "56", "0.5"] and "working memory" in out
    assert rows["2af"][1:6] == ["ce", "3", "3", "22", "100"]
    assert rows["dms"][1:6] == ["ce", "3", "3", "32", "100"]
    assert lines[4].startswith("neurogym:<env id>  ce")


def test_tasks_json_and_the_neurogym_environments(capsys):
    code, out, err = call(["tasks", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    by_name = {t["name"]: t for t in data["tasks"]}
    for name in ("romo", "2af", "dms"):
        t = nr.make_task(name, batch_size=1)
        assert (by_name[name]["loss"], by_name[name]["n_in"], by_name[name]["n_out"], by_name[name]["n_steps"]) == (
            t.loss_kind, t.n_in, t.n_out, t.n_steps)
        assert by_name[name]["summary"]
    pytest.importorskip("neurogym")
    envs = data["neurogym"]
    assert {"PerceptualDecisionMaking-v0", "DelayMatchSample-v0", "DelayComparison-v0"} <= set(envs["usable"])
    assert "Box" in envs["not_usable"]["ReachingDelayResponse-v0"]  # continuous actions: not for the adapter
    for env_id in ("DelayComparison-v0", "GoNogo-v0"):  # what is listed as usable is a task
        assert nr.make_task(f"neurogym:{env_id}", batch_size=2).loss_kind == "ce"
    code, out, _ = call(["tasks"], capsys)
    assert "usable as --task neurogym:<env id>" in out and "PerceptualDecisionMaking-v0" in out


def test_tasks_lists_a_plugin_task_and_says_when_neurogym_is_missing(tmp_path):
    """A task of an installed plugin (an entry point) gets its line from its docstring; without neurogym the
    command says how to get the environments instead of failing."""
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent('''
        import dataclasses
        import numpy as np
        from neurorate.tasks.base import Task

        @dataclasses.dataclass(repr=False)
        class GoNoGo(Task):
            """Go/no-go: respond after a go cue, withhold after a no-go cue."""
            batch_size: int = 4
            seed: int = 0
            dt: float = 100.0
            tau: float = 200.0
            name = "gonogo"
            loss_kind = "ce"
            time_unit = "ms"
            n_in, n_out, n_steps = 2, 3, 10

            def __post_init__(self):
                Task.__init__(self, self.batch_size, self.seed, self.dt, self.tau)

            def _generate(self, rng, batch_size):
                labels = np.zeros((self.n_steps, batch_size), np.int64)
                return np.zeros((self.n_steps, batch_size, 2), np.float32), labels, np.ones_like(labels, np.float32)
    '''))
    dist = tmp_path / "my_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[neurorate.tasks]\ngonogo = my_tasks:GoNoGo\n")
    code = "import sys\nsys.modules['neurogym'] = None\nfrom neurorate.cli import main\nmain(['tasks'])\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("gonogo"))
    assert line.split()[1:6] == ["ce", "2", "3", "10", "100"] and "Go/no-go: respond after a go cue" in line
    assert "neurogym is not installed" in p.stdout


# ------------------------------------------------------------------------------------------------ NIR --overwrite
@pytest.mark.parametrize("command", ["export-nir", "import-nir"])
def test_nir_commands_refuse_to_overwrite_without_overwrite(tmp_path, capsys, command):
    pytest.importorskip("nir")
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=6, n_out=2, gain=1.0, seed=0)
    spec.save(tmp_path / "spec.npz")
    source = tmp_path / "spec.npz"
    if command == "import-nir":
        assert call(["export-nir", str(source), str(tmp_path / "net.nir")], capsys)[0] == 0
        source = tmp_path / "net.nir"
    target = tmp_path / ("back.npz" if command == "import-nir" else "out.nir")
    target.write_bytes(b"precious results\n")
    before = target.stat()

    code, out, err = call([command, str(source), str(target)], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"error: {target} exists; pass --overwrite to replace it"]
    assert target.read_bytes() == b"precious results\n" and target.stat().st_mtime_ns == before.st_mtime_ns

    code, out, err = call([command, str(source), str(target), "--overwrite"], capsys)
    assert code == 0, err
    assert target.read_bytes() != b"precious results\n"
    back = nr.from_nir(target) if command == "export-nir" else nr.NetworkSpec.load(target)
    assert back.n_hidden == 6

    (tmp_path / "a-directory").mkdir()  # a directory is never replaced, --overwrite or not
    code, _, err = call([command, str(source), str(tmp_path / "a-directory"), "--overwrite"], capsys)
    assert code == 2 and err.splitlines() == [f"error: {tmp_path / 'a-directory'} is a directory; give the file "
                                              "to write"]


# ------------------------------------------------------------------------------------------------ help width
LONG = "adam on torch, sgd on lava, where updates are applied inside the Lava process"
"""A phrase of ``neurorate run --help`` that does not fit into 80 columns with its option."""


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
@pytest.mark.parametrize("argv", [["run", "--help"], ["--help"]], ids=["run", "root"])
def test_help_uses_the_terminal_width(rich, argv):
    env = {**os.environ, "COLUMNS": "200", "TYPER_USE_RICH": "1" if rich else "0"}
    code = f"from neurorate.cli import main\nmain({argv!r})\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    widest = max(len(line.rstrip()) for line in p.stdout.splitlines())
    assert 120 < widest <= 200, widest
    if argv[0] == "run":
        assert any(LONG in line for line in p.stdout.splitlines()), "the --optimizer help was wrapped"
    narrow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**env, "COLUMNS": "80"})
    assert max(len(line.rstrip()) for line in narrow.stdout.splitlines()) <= 80
