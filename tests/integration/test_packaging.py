"""Packaging: the user's layout installs as sub-packages of neurorate; `import neurorate` stays light."""

from __future__ import annotations

import subprocess
import sys


def run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_backends_and_tasks_are_subpackages_not_top_level(tmp_path):
    code = """
import importlib.util, neurorate.backends.torch, neurorate.tasks.romo, neurorate.hardware_profiles
from importlib import resources
assert importlib.util.find_spec("backends") is None and importlib.util.find_spec("tasks") is None
names = sorted(p.name for p in resources.files("neurorate.hardware_profiles").iterdir() if p.name.endswith(".toml"))
print(",".join(names))
"""
    p = run(code, tmp_path)  # outside the repository: only installed names are importable
    assert p.returncode == 0, p.stderr
    assert {"loihi2.toml", "loihi1.toml", "xylo.toml", "fp32.toml"} <= set(p.stdout.strip().split(","))


def test_import_neurorate_loads_no_heavy_or_optional_dependency(tmp_path):
    code = """
import sys, neurorate
spec = neurorate.NetworkSpec.random(n_hidden=4)
task = neurorate.make_task("romo")
heavy = [m for m in ("torch", "lava", "norse", "snntorch", "nir", "nirtorch", "neurogym") if m in sys.modules]
print(heavy)
"""
    p = run(code, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_entry_points_register_builtin_backends_and_tasks():
    from importlib import metadata

    backends = {ep.name for ep in metadata.entry_points(group="neurorate.backends")}
    tasks = {ep.name for ep in metadata.entry_points(group="neurorate.tasks")}
    assert {"torch", "lava"} <= backends and {"romo", "2af", "dms", "neurogym"} <= tasks
