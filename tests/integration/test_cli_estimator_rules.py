"""`neurorate run` with the estimator rules and --grad-alignment-every (metrics.jsonl gets the alignment fields)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def cli(*args):
    code = f"from neurorate.cli.app import main\nmain({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})


@pytest.mark.parametrize("rule", ["snap1", "uoro"])
def test_run_with_an_estimator_rule_records_the_alignment(tmp_path, rule):
    out = tmp_path / "run"
    p = cli("run", "--rule", rule, "--iterations", "4", "--hidden", "8", "--batch", "4", "--no-lyapunov",
            "--grad-alignment-every", "2", "--device", "cpu", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2, 3]
    for m in lines:
        measured = m["iteration"] % 2 == 0
        assert ("align_cos_w_rec" in m) == measured and ("align_sign_all" in m) == measured
        if measured:
            assert -1 <= m["align_cos_w_rec"] <= 1 and m["align_rel_error_all"] >= 0
    assert json.loads((out / "config.json").read_text())["rule"] == rule


def test_refusals_are_one_line(tmp_path):
    for args, words in ((["--neuron", "lif", "--grad-alignment-every", "2"], "without --profile, flossing or "
                                                                           "--grad-alignment-every"),
                        (["--grad-alignment-every", "0"], "grad_alignment_every must be a positive integer"),
                        (["--rule", "rtrl", "--hidden", "512"], "rule 'rtrl' keeps"),
                        (["--rule", "uoro", "--backend", "lava"], "not available on the Lava backend")):
        p = cli("run", "--iterations", "2", "--no-lyapunov", "--out", str(tmp_path / "r"), *args)
        assert p.returncode == 2, (args, p.stderr)
        assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
        assert not (tmp_path / "r").exists()
