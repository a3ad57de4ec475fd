"""Ensemble training speed, side by side in one run: the compiled CPU path, the torch path, the naive loop and
the batched-matmul peak (targets: docs/benchmarks.md, "Targets").

For each rule (e-prop, BPTT, RFLO), N in (64, 128, 256) and M in (1, 16, 64) networks (Romo, B = 32, T = 56, tanh,
float32, Adam): milliseconds per iteration of

* ``compiled``: :class:`neurorate.backends.torch.TorchBackend` with the numba kernel (the path it chooses by
  default on the CPU; one thread, the default policy, and the machine's usable cores across networks),
* ``torch``: the same backend with ``compiled=False`` (the fused torch kernels, one intra-op thread; the reference
  and the GPU path),
* ``naive``: one network at a time in the paper's style (an ``nn.Module`` CTRNN with ``nn.Linear`` layers stepped in
  a Python loop, ``torch.optim.Adam``, e-prop by the presynaptic ``detach``), per network,

and the achieved GFLOP/s (each rule's count of docs/theory.md §8, :func:`training_flops`: BPTT's backward pass adds
``W^T delta`` to e-prop's products; RFLO in form A runs the factorised e-prop kernel, so it has e-prop's count)
against a single-thread batched-matmul peak (``torch.bmm`` of ``(M, B, N) x (N, N)``) measured in the same run at
the same shapes. The machine is shared: the rows are compared side by side in one run, and the load average is
recorded.

It prints, per row, the compiled path's share of the bmm rate and its speed-up over the naive loop (per
network-iteration) and over the torch path, then one line per target with the best measured value. Usage:
``python benchmarks/bench_ensemble.py [--quick] [--sizes 64x16,128x64] [--write]`` (``--write`` replaces the table of
the "Ensemble training" section of docs/benchmarks.md; the reading below the table is kept).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend

ROOT = Path(__file__).resolve().parent.parent
MARK = "## Ensemble training"


class NaiveCTRNN(torch.nn.Module):
    """The paper's style: nn.Linear layers, a Python loop over time, one network."""

    def __init__(self, n_in, n, n_out, alpha, detach):
        super().__init__()
        self.input2h, self.h2h, self.out = (torch.nn.Linear(n_in, n), torch.nn.Linear(n, n),
                                            torch.nn.Linear(n, n_out))
        self.alpha, self.detach = alpha, detach

    def forward(self, x):
        a = torch.zeros(x.shape[1], self.h2h.in_features)
        outs = []
        for t in range(x.shape[0]):
            r = torch.tanh(a)
            a = a + self.alpha * (-a + self.h2h(r.detach() if self.detach else r) + self.input2h(x[t]))
            outs.append(self.out(torch.tanh(a)))
        return torch.stack(outs)


def naive_ms_per_iteration(n, iterations, detach=True):
    task = nr.make_task("romo", batch_size=32, seed=0)
    net = NaiveCTRNN(1, n, 2, 0.5, detach)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = [tuple(torch.as_tensor(a) for a in task.batch(i)) for i in range(iterations + 3)]
    for i in range(iterations + 3):
        if i == 3:
            t0 = time.perf_counter()
        x, y, m = batches[i]
        loss = 0.5 * (m * (net(x) - y) ** 2).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / iterations * 1e3


def eprop_flops(n, m, b=32, t=56, n_in=1, n_out=2):
    """Multiply-adds x 2 of one e-prop iteration (forward + factorised gradient), docs/theory.md §8."""
    forward = 2 * (n * n + n * n_in + n * n_out)
    gradient = 2 * n * n + 2 * n * n_in + 4 * n * n_out
    return m * b * t * (forward + gradient)


def training_flops(rule, n, m, b=32, t=56, n_in=1, n_out=2):
    """Multiply-adds x 2 of one training iteration of ``rule`` (docs/theory.md §8): e-prop and RFLO (form A: the
    factorised kernel) :func:`eprop_flops`; BPTT adds the backward product ``W^T delta`` (``2 N^2`` per step and
    trial), about 1.5x e-prop."""
    extra = 2 * n * n * m * b * t if rule == "bptt" else 0
    return eprop_flops(n, m, b, t, n_in, n_out) + extra


def bmm_gflops(n, m, b=32, repeats=20, trials=5):
    """GFLOP/s of ``torch.bmm`` at ``(m, b, n) x (m, n, n)`` on the current torch threads: the best of ``trials``
    timings of ``repeats`` calls each (on a shared machine the best trial is the closest to the core's rate)."""
    a = torch.randn(m, b, n)
    w = torch.randn(m, n, n)
    out = torch.empty(m, b, n)
    torch.bmm(a, w, out=out)
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(repeats):
            torch.bmm(a, w, out=out)
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 2 * m * b * n * n / best / 1e9


def machine():
    try:
        model = [ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout
                 .splitlines() if ln.startswith("Model name")][0]
    except (IndexError, OSError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def ms_per_iteration(n, m, rule, compiled, threads, iterations):
    task = nr.make_task("romo", batch_size=32, seed=0)
    specs = [nr.NetworkSpec.random(n_hidden=n, gain=1.0 + 0.01 * j, seed=j) for j in range(m)]
    be = TorchBackend(device="cpu", dtype="float32", compiled=compiled, threads=threads)
    be.train(specs, task, rule, iterations=1, lr=1e-3, progress=False)  # warm-up (and the JIT's cache)
    t0 = time.perf_counter()
    be.train(specs, task, rule, iterations=iterations, lr=1e-3, progress=False)
    return (time.perf_counter() - t0) / iterations * 1e3


def targets(rows) -> list[str]:
    """The verdicts against docs/benchmarks.md "Targets" from the rows ``(rule, n, m, c1, cn, tp, naive, g1, gt,
    peak)``: >= 50 % of the bmm rate for e-prop and BPTT at N = 64 and 128, M >= 32; >= 25x the naive loop per
    network-iteration at N = 64, M = 64."""
    out = []
    share = [r for r in rows if r[0] in ("eprop", "bptt") and r[1] in (64, 128) and r[2] >= 32]
    if share:
        worst = min(share, key=lambda r: r[7] / r[9])
        best = max(share, key=lambda r: r[7] / r[9])
        met = all(r[7] / r[9] >= 0.5 for r in share)
        out.append(f">= 50 % of bmm (e-prop, BPTT; N = 64, 128; M >= 32): **{'met' if met else 'not met'}** "
                   f"({100 * worst[7] / worst[9]:.0f} % at {worst[0]} N = {worst[1]}, M = {worst[2]} to "
                   f"{100 * best[7] / best[9]:.0f} % at {best[0]} N = {best[1]}, M = {best[2]})")
    naive = [r for r in rows if r[1] == 64 and r[2] == 64]
    if naive:
        sp = {r[0]: r[6] * r[2] / r[3] for r in naive}
        met = all(v >= 25 for v in sp.values())
        out.append(f">= 25x the naive loop per network-iteration (N = 64, M = 64): **{'met' if met else 'not met'}** "
                   f"(" + ", ".join(f"{k} {v:.1f}x" for k, v in sp.items()) + ")")
    return out


def load() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one size, few iterations (a check, not a report)")
    ap.add_argument("--write", action="store_true", help="write the rows into docs/benchmarks.md")
    ap.add_argument("--sizes", default=None, help="NxM,... (default 64x1,64x16,64x64,128x1,128x16,128x64,256x1,"
                                                  "256x16,256x64)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.sizes:
        sizes = [tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")]
    else:
        sizes = [(64, 16)] if args.quick else [(n, m) for n in (64, 128, 256) for m in (1, 16, 64)]
    rules = ["eprop"] if args.quick else ["eprop", "bptt", "rflo"]
    load_before = load()
    rows = []
    naive = {}
    for n, m in sizes:
        if n not in naive:
            naive[n] = naive_ms_per_iteration(n, 5 if args.quick else 20)
            print(f"N={n}: naive loop {naive[n]:.2f} ms per network-iteration", flush=True)
        peak = bmm_gflops(n, m)
        its = 2 if args.quick else max(2, min(100, int(400 / (m * (n / 64) ** 2))))
        for rule in rules:
            c1 = ms_per_iteration(n, m, rule, True, 1, its)
            cn = ms_per_iteration(n, m, rule, True, cores, its) if cores > 1 else c1
            tp = ms_per_iteration(n, m, rule, False, 1, its)
            flops = training_flops(rule, n, m)
            gf = lambda t, f=flops: f / (t / 1e3) / 1e9  # noqa: E731
            row = (rule, n, m, c1, cn, tp, naive[n], gf(c1), gf(tp), peak)
            rows.append(row)
            print(f"{rule:6s} N={n:3d} M={m:2d}: compiled {c1:7.1f} ms/it (1 thread), {cn:7.1f} ({cores} threads); "
                  f"torch {tp:7.1f}; naive {naive[n]:.2f} per network; compiled/torch {tp / c1:.2f}x; "
                  f"{gf(c1):.1f} GFLOP/s = {100 * gf(c1) / peak:.0f}% of bmm {peak:.1f}; "
                  f"vs naive {naive[n] * m / c1:.1f}x", flush=True)
    load_after = load()
    from neurorate.backends.torch.compiled import kernel_threads

    verdicts = targets(rows)
    policy = (f"Thread policy: the compiled kernel runs {kernel_threads()} thread(s) across networks by default "
              "(`threads=`, `neurorate run --threads K` or NEURORATE_THREADS ask for more), torch one intra-op thread; "
              f"the 'compiled ({cores} thr)' column asks for {cores}.")
    lines = [MARK, "",
             f"`python benchmarks/bench_ensemble.py --write` on {datetime.date.today()}: {machine()}; load average "
             f"(1, 5, 15 min) {load_before} before and {load_after} after the run (2 cores: a load above 2 means "
             "other jobs shared them). Romo, B = 32, T = 56, tanh, float32, Adam; every row measured side by side in "
             f"one run. compiled = the numba kernel (1 thread; {cores} threads across networks); torch = "
             "`compiled=False`, one intra-op thread; naive = one network at a time (paper style), x M. %bmm = "
             "GFLOP/s (each rule's count, docs/theory.md §8: BPTT 1.5x e-prop) over single-thread `torch.bmm` at "
             "(M, B, N) x (N, N) in the same run. vs naive = naive ms per network-iteration x M / compiled ms per "
             "iteration. " + policy,
             "",
             f"| rule | N | M | compiled ms/it (1 thr) | compiled ms/it ({cores} thr) | torch ms/it | "
             "naive ms/it x M | compiled vs torch | compiled vs naive | compiled GFLOP/s | torch GFLOP/s | "
             "bmm GFLOP/s | compiled % bmm |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rule, n, m, c1, cn, tp, nv, g1, gt, peak in rows:
        lines.append(f"| {rule} | {n} | {m} | {c1:.1f} | {cn:.1f} | {tp:.1f} | {nv * m:.1f} | {tp / c1:.2f}x | "
                     f"{nv * m / c1:.1f}x | {g1:.1f} | {gt:.1f} | {peak:.1f} | {100 * g1 / peak:.0f}% |")
    lines += [""] + [f"Target: {v}." for v in verdicts]
    if args.write:
        path = ROOT / "docs" / "benchmarks.md"
        text = path.read_text()
        if MARK in text:
            start = text.index(MARK)
            nxt = text.find("\n## ", start)
            end = nxt if nxt >= 0 else len(text)
            reading = text.find("\nReading", start, end)  # the hand-written reading below the table is kept
            rest = text[reading:] if reading >= 0 else (text[nxt:] if nxt >= 0 else "")
            text = text[:start] + "\n".join(lines) + "\n" + rest
        else:
            at = text.index("## Study")
            text = text[:at] + "\n".join(lines) + "\n\n" + text[at:]
        path.write_text(text)
        print("wrote docs/benchmarks.md", file=sys.stderr)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
