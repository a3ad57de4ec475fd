"""benchmarks/bench_ensemble.py: its target verdicts on constructed rows, and one tiny run of the script."""

from __future__ import annotations


def test_target_verdicts_follow_the_rows(benchmark_script):
    bench = benchmark_script("bench_ensemble")
    # (rule, n, m, compiled 1 thr, compiled k thr, torch, naive per network, compiled GFLOP/s, torch GFLOP/s, bmm)
    rows = [("eprop", 64, 64, 20.0, 20.0, 80.0, 8.0, 60.0, 15.0, 80.0),
            ("bptt", 64, 64, 40.0, 40.0, 120.0, 8.0, 36.0, 12.0, 80.0),
            ("eprop", 128, 64, 100.0, 100.0, 250.0, 13.0, 70.0, 28.0, 70.0)]
    share, naive = bench.targets(rows)
    assert share.startswith(">= 50 % of bmm") and "**not met** (45 % at bptt N = 64, M = 64 to 100 %" in share
    assert "**not met** (eprop 25.6x, bptt 12.8x)" in naive  # 8 ms x 64 / 20 ms, 8 x 64 / 40
    share, naive = bench.targets([r for r in rows if r[0] == "eprop"])
    assert "**met** (75 % at eprop N = 64" in share and "**met** (eprop 25.6x)" in naive


def test_a_tiny_run_prints_every_column(capsys, benchmark_script):
    benchmark_script("bench_ensemble").main(["--quick", "--sizes", "16x2"])
    out = capsys.readouterr().out
    assert "N=16: naive loop" in out and "| rule | N | M | compiled ms/it (1 thr)" in out
    row = next(line for line in out.splitlines() if line.startswith("| eprop | 16 | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 13 and cells[-1].endswith("%") and cells[7].endswith("x") and float(cells[3]) > 0
