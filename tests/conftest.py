"""Shared pytest configuration: skip marked tests whose hardware or extra is missing, with the reason."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # Lava's forked processes are ~30x slower with threaded BLAS

_TESTS = Path(__file__).resolve().parent
_KINDS = ("unit", "conformance", "integration", "upstream")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    have = {
        "gpu": (_cuda(), "needs a CUDA device"),
        "lava": (importlib.util.find_spec("lava") is not None, "needs the 'lava' extra (lava-nc)"),
        "spiking": (importlib.util.find_spec("snntorch") is not None and importlib.util.find_spec("norse") is not None,
                    "needs the 'spiking' extra (snntorch, norse)"),
    }
    for item in items:
        # the folder is the kind of test (docs/testing.md): everything under integration/ is slow; upstream/ holds
        # xfail(strict=True) tests of third-party behaviour neurorate works around
        kind = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if kind in _KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        if kind == "integration":
            item.add_marker(pytest.mark.slow)
        for marker, (ok, reason) in have.items():
            if marker in item.keywords and not ok:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Tests compare numbers, not speed: one torch thread keeps them deterministic and fair on 2 cores."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _run_outside_the_repository(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: a command that writes relative paths (``runs/`` by default)
    writes there, never into the repository, so the test suite leaves ``git status`` clean."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def benchmark_script():
    """``benchmark_script("bench_ensemble")``: a script of benchmarks/ imported as a module (scripts are no package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, _TESTS.parent / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture
def run_cli(capsys):
    """``run_cli("run", "--iterations", "3", ...)``: ``neurorate ARGS`` in this process, returning
    ``(exit code, stdout, stderr)``."""
    from neurorate.cli.app import main

    def run(*args) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
            raise SystemExit(0)
        out = capsys.readouterr()
        return exc.value.code or 0, out.out, out.err

    return run


def one_error_line(err: str) -> str:
    """The one ``error:`` line a refused command prints on stderr (asserted to be the only line)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]
