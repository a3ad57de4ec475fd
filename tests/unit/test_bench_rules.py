"""benchmarks/bench_rules.py: its table from constructed rows, and one tiny run of the script."""

from __future__ import annotations


def test_the_table_and_the_snap1_ratio_follow_the_rows(benchmark_script):
    bench = benchmark_script("bench_rules")
    rows = [("eprop", 64, "compiled", 20.0, 2.0, ""), ("eprop", 64, "torch", 40.0, 10.0, ""),
            ("snap1", 64, "compiled", 25.0, 3.0, ""), ("snap1", 64, "torch", 44.0, 12.0, ""),
            ("rtrl", 64, "torch", None, None, "not run: the preflight estimates 9.0 GiB")]
    lines = bench.markdown(rows, [64], "1.00, 1.00, 1.00", "2.00, 2.00, 2.00")
    text = "\n".join(lines)
    assert lines[0] == bench.MARK and "load average (1, 5, 15 min) 1.00, 1.00, 1.00 before" in text
    assert "| `snap1` | N^2 | T N (reverse kernel, form A); N P (forward traces) | 64 | compiled | 25.0 | 3 | 1.25x |" \
        in text
    assert "| `rtrl` | N^4 | N^2 P ~ N^3 | 64 | torch | - | - | not run: the preflight estimates 9.0 GiB |" in text
    assert "SnAp-1 / e-prop at N = 64: compiled 1.25x, torch 1.10x." in text


def test_a_tiny_run_prints_every_rule_and_path(capsys, benchmark_script):
    benchmark_script("bench_rules").main(["--quick", "--sizes", "4", "--rules", "eprop,snap1"])
    out = capsys.readouterr().out
    for rule, path in (("eprop", "compiled"), ("eprop", "torch"), ("snap1", "compiled"), ("snap1", "torch")):
        row = next(line for line in out.splitlines() if line.startswith(f"| `{rule}` |") and f"| {path} |" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 8 and float(cells[5]) > 0 and cells[7].endswith("x"), row
    assert "SnAp-1 / e-prop at N = 4:" in out
