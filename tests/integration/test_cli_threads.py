"""`neurorate run --threads K`: the thread count reaches the compiled kernel; 0 or garbage is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# counts the compiled kernel's thread choices and prints them when the process ends
SPY = """
import atexit, sys
import neurorate.backends.torch.compiled as c
_orig, _seen = c.kernel_threads, []
def _spy(threads=None):
    _seen.append(_orig(threads))
    return _seen[-1]
c.kernel_threads = _spy
atexit.register(lambda: print("kernel threads:", sorted(set(_seen)), len(_seen), file=sys.stderr))
"""


def cli(*args, env=None):
    code = textwrap.dedent(SPY) + f"\nfrom neurorate.cli.app import main\nmain({list(args)!r})\n"
    environ = {k: v for k, v in os.environ.items() if k != "NEURORATE_THREADS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**environ, **(env or {})})


RUN = ("run", "--iterations", "4", "--hidden", "8", "--batch", "4", "--no-lyapunov", "--device", "cpu", "--json")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_threads_reaches_the_kernel_and_does_not_change_the_numbers(tmp_path, threads):
    ref = cli(*RUN, "--out", str(tmp_path / "ref"))
    p = cli(*RUN, "--threads", threads, "--out", str(tmp_path / "t"))
    assert ref.returncode == 0 and p.returncode == 0, ref.stderr + p.stderr
    import numba

    want = min(int(threads), numba.config.NUMBA_NUM_THREADS)
    assert "kernel threads: [1] 4" in ref.stderr  # the default: one thread, one kernel call per iteration
    assert f"kernel threads: [{want}] 4" in p.stderr
    assert json.loads(p.stdout)["losses"] == json.loads(ref.stdout)["losses"]  # bit-identical


@pytest.mark.parametrize("value, message", [
    ("0", "error: --threads must be an integer from 1 to 1024, got 0"),
    ("-2", "error: --threads must be an integer from 1 to 1024, got -2"),
    ("99999", "error: --threads must be an integer from 1 to 1024, got 99999"),
    ("many", "error: Invalid value for '--threads'"),
])
def test_bad_threads_is_one_line_exit_2(tmp_path, value, message):
    out = tmp_path / "r"
    p = cli(*RUN, "--threads", value, "--out", str(out))
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("kernel threads:")]
    assert len(lines) == 1 and lines[0].startswith(message), p.stderr
    assert not out.exists()  # refused before anything is written


def test_threads_with_a_backend_without_threads_is_refused(tmp_path):
    p = cli("run", "--backend", "lava", "--threads", "2", "--iterations", "1", "--out", str(tmp_path / "r"))
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("kernel threads:")]
    assert lines == ["error: --threads is an option of backends that take a thread count, not of 'lava'"]
