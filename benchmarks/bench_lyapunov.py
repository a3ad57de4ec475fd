"""Benchmark: Lyapunov spectra of an ensemble in one batched program vs a per-network loop.

Main configuration (the target in docs/benchmarks.md): the full spectrum (k = N = 256) over T = 1000 steps of Romo
input for 32 networks, float64, one torch thread. The loop calls the same ``lyapunov_spectrum`` once per network; when
``--loop-networks`` is smaller than M it times that many networks and extrapolates linearly (said so in the
row). Extra rows show the regimes of everyday use (top-8 and lambda_max with several streams).

Usage::

    .venv/bin/python benchmarks/bench_lyapunov.py            # all rows, appends to docs/benchmarks.md
    .venv/bin/python benchmarks/bench_lyapunov.py --quick    # short T, no file written
    .venv/bin/python benchmarks/bench_lyapunov.py --floor    # per-step cost floor of the main configuration
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from neurorate.analysis.lyapunov import lyapunov_spectrum
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.romo import RomoTask

SECTION = "## Lyapunov spectrum"
HEADER = ("| date | machine | torch | config (M networks, N, k, T steps, S streams, t_ons) | batched (s) | "
          "per-network loop (s) | speed-up | batched == loop (max abs diff) |\n"
          "|---|---|---|---|---|---|---|---|\n")
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
        cores = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("CPU(s)")), "?")
    except (OSError, subprocess.CalledProcessError):
        model, cores = platform.processor() or "?", "?"
    return f"{model}, {cores} cores, 1 torch thread"


def run_config(m: int, n: int, k: int, t: int, streams: int, t_ons: int, loop_networks: int) -> dict:
    specs = [NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=0.5 + 1.5 * i / max(m - 1, 1), seed=i)
             for i in range(m)]
    x = RomoTask(seed=0).stream(-(-t // 56), batch_size=streams)[:t]
    warmup = t // 10
    start = time.perf_counter()
    batched = lyapunov_spectrum(specs, x, k=k, warmup=warmup, t_ons=t_ons)
    t_batched = time.perf_counter() - start
    n_loop = min(loop_networks, m)
    start = time.perf_counter()
    looped = [lyapunov_spectrum(s, x, k=k, warmup=warmup, t_ons=t_ons) for s in specs[:n_loop]]
    t_loop = (time.perf_counter() - start) * m / n_loop
    diff = float(np.max(np.abs(np.stack(looped) - batched[:n_loop])))
    return {"m": m, "n": n, "k": k, "t": t, "streams": streams, "t_ons": t_ons, "batched_s": t_batched,
            "loop_s": t_loop, "loop_measured": n_loop, "speedup": t_loop / t_batched, "diff": diff}


def row(r: dict, when: str, mach: str) -> str:
    loop = f"{r['loop_s']:.1f}" + ("" if r["loop_measured"] == r["m"] else
                                    f" (extrapolated from {r['loop_measured']} networks)")
    cfg = f"M={r['m']}, N={r['n']}, k={r['k']}, T={r['t']}, S={r['streams']}, t_ons={r['t_ons']}"
    return (f"| {when} | {mach} | {torch.__version__} | {cfg} | {r['batched_s']:.1f} | {loop} | "
            f"{r['speedup']:.2f}x | {r['diff']:.1e} |\n")


def append_rows(rows: list[str], doc: Path = DOC) -> None:
    """Add rows at the end of this benchmark's section, creating the section if missing; the rest of the
    file (other developers' sections) is left as it is."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\nWritten by `benchmarks/bench_lyapunov.py`.\n\n{HEADER}"
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    end = len(text) if nxt < 0 else nxt + 1
    section = text[start:end].rstrip("\n") + "\n" + "".join(rows)
    text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def _ms(fn, repeats: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def floor(m: int = 32, n: int = 256) -> str:
    """The per-step cost floor of the main configuration: what batching can and cannot remove on this CPU.

    Per step the batched program does M GEMMs ``W (f' * Q)`` and M QRs; the loop does the same work plus
    dispatch. Times one step of each part, batched, and one whole loop step (``lyapunov_spectrum`` of one
    network over 100 steps / 100), and a batched CholeskyQR2 (QR from GEMMs, Cholesky and triangular
    solves: the usual way to batch QR on accelerators) against LAPACK's Householder QR.
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(m, n, n, generator=g, dtype=torch.float64) / n**0.5
    z = torch.linalg.qr(torch.randn(m, n, n, generator=g, dtype=torch.float64))[0]

    def cholesky_qr2():
        q = z
        for _ in range(2):
            chol = torch.linalg.cholesky(q.mT @ q)
            q = torch.linalg.solve_triangular(chol.mT, q, upper=True, left=False)
        return q

    gemm = _ms(lambda: w @ z)
    householder = _ms(lambda: torch.linalg.qr(z))
    chol2 = _ms(cholesky_qr2)
    spec = NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=1.0, seed=0)
    x = RomoTask(seed=0).stream(2, batch_size=1)[:100]
    loop_step = _ms(lambda: lyapunov_spectrum(spec, x, k=n, warmup=10), repeats=2) / 100 * m
    return (f"\nPer-step cost floor at M = {m}, N = k = {n} (float64, 1 thread, `--floor`, "
            f"{datetime.date.today().isoformat()}): the {m} GEMMs take {gemm:.1f} ms batched, the {m} Householder "
            f"QRs {householder:.1f} ms, a batched CholeskyQR2 {chol2:.1f} ms ({chol2 / householder:.1f}x the "
            f"Householder time, so no help on CPU), and one step of the per-network loop over {m} networks "
            f"{loop_step:.1f} ms. Even with a free QR, batching could reach at most loop / GEMM = "
            f"**{loop_step / gemm:.1f}x**: the >= 10x target is out of reach on this CPU whatever the batching; "
            f"it needs an accelerator (GPU), where one batched kernel replaces {m} small ones.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 100 and no write (a smoke run)")
    ap.add_argument("--loop-networks", type=int, default=4, help="networks timed in the loop (extrapolated to M)")
    ap.add_argument("--only-main", action="store_true", help="just the N = 256, k = N configuration")
    ap.add_argument("--floor", action="store_true", help="only the per-step cost floor (appended as a paragraph)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.floor:
        text = floor()
        print(text)
        append_rows([text])
        return
    t_main = 100 if args.quick else 1000
    configs = [(32, 256, 256, t_main, 1, 1, args.loop_networks)]
    if not args.only_main:
        configs += [(32, 256, 256, t_main, 1, 10, args.loop_networks),
                    (32, 64, 8, 448, 16, 1, 32),   # top-8 with 16 streams (Romo, 8 trials): everyday use
                    (32, 64, 1, 448, 16, 1, 32),   # lambda_max before/after training
                    (32, 64, 8, 448, 1, 1, 32)]    # one stream: per-step dispatch dominates the loop
    when, mach = datetime.date.today().isoformat(), machine()
    rows = []
    for cfg in configs:
        r = run_config(*cfg)
        rows.append(row(r, when, mach))
        print(rows[-1], end="", flush=True)
    if not args.quick:
        append_rows(rows)
        print(f"appended {len(rows)} rows to {DOC}")


if __name__ == "__main__":
    main()
