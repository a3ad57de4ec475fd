"""The cost of each learning rule per training iteration: milliseconds and peak memory (docs/rules.md, "Costs").

For every rule of the registry that trains rate networks on the torch backend (bptt, eprop, eprop_random, rflo,
snap1, uoro, kf_rtrl, rtrl; ``--rules`` picks), N in (32, 64, 128), M = 16 networks, B = 32 Romo trials (T = 56),
tanh, float32, Adam, on the CPU with one thread:

* ``ms/it``: wall time per training iteration of :class:`neurorate.backends.torch.TorchBackend.train`, the best
  over ``--rounds`` rounds that measure every configuration of one N in turn (the machine is shared: a burst of
  other work slows one round of a configuration, not all, and the best is the least disturbed), each measurement
  the best of ``--repeats`` runs of about ``--target`` seconds after a warm-up iteration; a configuration whose
  first iteration takes longer than ``--single`` seconds is timed on that iteration, in one round;
* ``peak MiB``: the peak resident memory of the measuring process during the configuration's runs above its resident
  memory before them (``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs; "-" where the platform has
  neither). Every configuration runs in a fresh process, after a tiny run of the same rule and path has loaded its
  kernels, so that no configuration inherits another's memory;
* ``path``: ``compiled`` (the numba kernel, where :func:`neurorate.backends.torch.compiled.applies`) and ``torch``
  (``compiled=False``) rows for the rules the kernel implements, the torch path for the others;
* the time and memory order of the rule per trial and step (:data:`ORDERS`, docs/theory.md §3.6 and §8).

A rule whose memory estimate (:func:`neurorate.training.estimate_bytes`, which counts the rule's estimator state)
exceeds ``--max-gib`` is listed as not run, with its estimate. The load average before and after is recorded.
Usage: ``python benchmarks/bench_rules.py [--quick] [--sizes 32,64,128] [--rules eprop,snap1] [--write]``
(``--write`` replaces the table of the "Costs" section of docs/rules.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend
from neurorate.backends.torch import compiled as cmp
from neurorate.training import estimate_bytes

ROOT = Path(__file__).resolve().parent.parent
MARK = "## Costs"
RULES = ("eprop", "eprop_random", "rflo", "bptt", "snap1", "uoro", "kf_rtrl", "rtrl")
ORDERS = {  # time per trial and step, memory per trial (P = N + n_in + 1)
    "eprop": ("N^2", "N (form A traces)"),
    "eprop_random": ("N^2", "N (form A traces)"),
    "rflo": ("N^2", "N (form A traces)"),
    "bptt": ("N^2", "T N (the trajectory)"),
    "snap1": ("N^2", "T N (reverse kernel, form A); N P (forward traces)"),
    "uoro": ("N^2", "N P"),
    "kf_rtrl": ("N^3", "N^2 + P"),
    "rtrl": ("N^4", "N^2 P ~ N^3"),
}


def load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _kib(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(rule: str, n: int, compiled: bool, m: int = 16, batch: int = 32, repeats: int = 3,
            target: float = 2.0, single: float = 20.0) -> tuple[float, float | None]:
    """``(ms per iteration, peak MiB above the start)`` of one configuration, in this process (see the module
    docstring; :func:`rows` runs each in a fresh process)."""
    torch.set_num_threads(1)
    task = nr.make_task("romo", batch_size=batch, seed=0)
    be = TorchBackend(device="cpu", dtype="float32", compiled=compiled, threads=1)
    tiny = [nr.NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, seed=0)]
    be.train(tiny, nr.make_task("romo", batch_size=2, seed=0), rule, iterations=1, lr=1e-3, progress=False)
    specs = [nr.NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=1.0 + 0.01 * j, seed=j) for j in range(m)]
    base = _kib("VmRSS")
    peak_ok = _reset_peak()
    t0 = time.perf_counter()
    be.train(specs, task, rule, iterations=1, lr=1e-3, progress=False)  # the first iteration (kernels are loaded)
    best = time.perf_counter() - t0
    if best <= single:  # else that iteration is the measurement
        t0 = time.perf_counter()
        be.train(specs, task, rule, iterations=1, lr=1e-3, progress=False, start_iteration=1)
        best = time.perf_counter() - t0
        its = max(1, min(50, round(target / max(best, 1e-3))))
        for r in range(repeats):
            t0 = time.perf_counter()
            be.train(specs, task, rule, iterations=its, lr=1e-3, progress=False, start_iteration=2 + r * its)
            best = min(best, (time.perf_counter() - t0) / its)
    hwm = _kib("VmHWM")
    peak = (hwm - base) / 1024 if (peak_ok and hwm is not None and base is not None) else None
    return best * 1e3, peak


def measure_in_child(rule: str, n: int, compiled: bool, m: int, batch: int, repeats: int, target: float,
                     single: float) -> tuple[float, float | None]:
    """:func:`measure` in a fresh Python process (its result is the last line of the child's output)."""
    args = json.dumps([rule, n, compiled, m, batch, repeats, target, single])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", args], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{rule} N={n}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    ms, peak = json.loads(p.stdout.strip().splitlines()[-1])
    return ms, peak


def rows(sizes, rules, m=16, batch=32, repeats=2, target=1.0, single=20.0, max_gib=4.0, rounds=3, log=print):
    """One row per (rule, N, path): ``(rule, n, path, ms or None, peak MiB or None, note)``."""
    out = []
    for n in sizes:
        configs, best, notes = [], {}, {}
        for rule in rules:
            need = estimate_bytes(n, 1, 2, batch, 56, 1, networks=m, rule=rule, lyapunov_k=None) / 2**30
            paths = (True, False) if cmp.applies("cpu", "A", "tanh", rule, "mse", None) else (False,)
            for compiled in paths:
                configs.append((rule, compiled))
                if need > max_gib:
                    notes[(rule, compiled)] = (f"not run: the memory preflight estimates {need:.1f} GiB (above "
                                               f"--max-gib {max_gib:g})")
        for rnd in range(rounds):
            for cfg in configs:
                if cfg in notes or (cfg in best and best[cfg][0] > 1e3 * single):
                    continue
                ms, peak = measure_in_child(cfg[0], n, cfg[1], m, batch, repeats, target, single)
                old = best.get(cfg, (float("inf"), None))
                best[cfg] = (min(ms, old[0]), peak if old[1] is None or peak is None else max(peak, old[1]))
                log(f"round {rnd + 1}: {cfg[0]} N={n} {'compiled' if cfg[1] else 'torch'}: {ms:.1f} ms/it, "
                    f"peak {peak if peak is None else round(peak)} MiB")
        for cfg in configs:
            path = "compiled" if cfg[1] else "torch"
            if cfg in notes:
                out.append((cfg[0], n, path, None, None, notes[cfg]))
            else:
                out.append((cfg[0], n, path, best[cfg][0], best[cfg][1], ""))
    return out


def ratio(table, rule, other, n, path):
    """``rule``'s ms/it over ``other``'s at ``n`` on ``path`` (None where either is missing)."""
    get = {(r, k, p): ms for r, k, p, ms, _, _ in table}
    a, b = get.get((rule, n, path)), get.get((other, n, path))
    return None if a is None or b is None else a / b


def _mib(peak: float | None) -> str:
    return "-" if peak is None else "< 1" if peak < 0.5 else f"{peak:.0f}"


def markdown(table, sizes, load_before, load_after, m=16, batch=32, rounds=3) -> list[str]:
    lines = [MARK, "",
             f"`python benchmarks/bench_rules.py --write` on {datetime.date.today()}: {os.cpu_count()} CPU cores "
             f"(shared), torch {torch.__version__}; load average (1, 5, 15 min) {load_before} before and "
             f"{load_after} after the run (a load above the core count means other jobs shared them). Romo, "
             f"M = {m} networks, B = {batch}, T = 56, tanh, float32, Adam, one thread. ms/it: the best over "
             f"{rounds} rounds that measure every configuration of one N in turn, each the best of 2 runs of about "
             "1 s (one iteration, in one round, for a configuration whose iteration exceeds 20 s); peak MiB: the "
             "peak resident memory of a fresh process during the configuration's runs above its memory before "
             "them (the whole ensemble of M networks). Orders per trial and step (P = N + n_in + 1; "
             "docs/theory.md §3.6).",
             "",
             "| rule | time order | memory order | N | path | ms/it | peak MiB | vs eprop (same path) |",
             "|---|---|---|---|---|---|---|---|"]
    for rule, n, path, ms, peak, note in table:
        t_ord, m_ord = ORDERS.get(rule, ("?", "?"))
        vs = ratio(table, rule, "eprop", n, path) if rule != "eprop" else 1.0
        lines.append(f"| `{rule}` | {t_ord} | {m_ord} | {n} | {path} | "
                     f"{'-' if ms is None else f'{ms:.1f}'} | {_mib(peak)} | "
                     f"{note or ('-' if vs is None else f'{vs:.2f}x')} |")
    lines.append("")
    for n in sizes:
        parts = [f"{p} {v:.2f}x" for p in ("compiled", "torch")
                 if (v := ratio(table, "snap1", "eprop", n, p)) is not None]
        if parts:
            lines.append(f"SnAp-1 / e-prop at N = {n}: {', '.join(parts)}.")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128", help="comma-separated N")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated rule names")
    ap.add_argument("--networks", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the configurations of one N")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per configuration and round")
    ap.add_argument("--target", type=float, default=1.0, help="seconds per timed run")
    ap.add_argument("--single", type=float, default=20.0, help="time a slower rule on its one warm-up iteration")
    ap.add_argument("--max-gib", type=float, default=4.0, help="skip a configuration estimated above this")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a check that the script runs)")
    ap.add_argument("--write", action="store_true", help="write the table into docs/rules.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, measured in this (fresh) process
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    m, batch, repeats, target, rounds = args.networks, args.batch, args.repeats, args.target, args.rounds
    if args.quick:
        m, batch, repeats, target, rounds = 2, 4, 1, 0.05, 1
    before = load()
    table = rows(sizes, rules, m, batch, repeats, target, args.single, args.max_gib, rounds,
                 log=lambda s: print(s, file=sys.stderr))
    lines = markdown(table, sizes, before, load(), m, batch, rounds)
    print("\n".join(lines))
    if args.write:
        path = ROOT / "docs" / "rules.md"
        text = path.read_text()
        if MARK not in text:
            raise SystemExit(f"docs/rules.md has no section {MARK!r} to replace")
        start = text.index(MARK)
        nxt = text.find("\n## ", start)
        end = nxt if nxt >= 0 else len(text)
        reading = text.find("\nReading", start, end)  # the hand-written reading below the table is kept
        rest = text[reading:] if reading >= 0 else text[end:]
        path.write_text(text[:start] + "\n".join(lines) + "\n" + rest)
        print("wrote docs/rules.md", file=sys.stderr)


if __name__ == "__main__":
    main()
