"""The one GPU check: correctness, speed, kernels and host syncs of the torch backend on CUDA, in one run.

For a machine with a GPU (about 8 minutes on one H200)::

    python benchmarks/gpu_check.py                 # prints a markdown block for docs/benchmarks.md ("GPU")
    python benchmarks/gpu_check.py --out gpu.md    # and writes it to a file

Steps, each timed and reported (a failing step is reported and the others still run; the exit code is 1 then):

1. ``tests/integration/test_gpu.py`` (pytest): every part of a run and of a study on CUDA equals the CPU in
   float64 to 1e-10.
2. Ensemble speed, CUDA against the CPU (ms per training iteration, Romo, B = 32, float32, one task per network):
   e-prop, BPTT and RFLO at N = 64/128 and M = 16/64 networks. The CPU runs the path ``neurorate run`` takes
   there (the compiled kernel where it applies) with every core.
3. Kernels and host syncs per iteration (torch.profiler on CUDA: kernel launches, ``cudaStreamSynchronize`` /
   ``cudaDeviceSynchronize`` and device-to-host copies), with the default blocked read-back and with one read
   per iteration (the loop before blocks).
4. A timed slice of the ``paper`` study on CUDA: its first ensemble (Romo, 60 networks, N = 128) for
   ``--study-iterations`` iterations with Lyapunov spectra and rich/lazy metrics, and the study's time
   extrapolated from it.

``--dry-run`` runs the same code on the CPU with tiny sizes (the reference is then the CPU too, step 1 runs one
test, step 3 counts aten operations and sync operations with a dispatch counter): it checks the script, not the
GPU (tests/unit/test_gpu_check.py runs it).
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend

ROOT = Path(__file__).resolve().parent.parent
SYNC_OPS = ("nonzero", "_local_scalar_dense", "is_nonzero", "item", "equal")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ensemble(n: int, m: int, batch: int):
    tasks = [nr.make_task("romo", batch_size=batch, seed=s) for s in range(m)]
    t0 = tasks[0]
    specs = [nr.NetworkSpec.random(n_in=t0.n_in, n_hidden=n, n_out=t0.n_out, gain=0.5 + j / max(m, 1), seed=j,
                                   alpha=t0.alpha) for j in range(m)]
    return specs, tasks


def ms_per_iteration(device: str, rule: str, n: int, m: int, iterations: int, batch: int, compiled: bool | None,
                     threads: int | None) -> float:
    """Wall ms of one training iteration (after two warm-up iterations; the device synchronised around)."""
    specs, tasks = _ensemble(n, m, batch)
    be = TorchBackend(device=device, dtype="float32", compiled=compiled, threads=threads)
    be.train(specs, tasks, rule, iterations=2, lr=1e-3, progress=False)
    _sync(be.device)
    t = time.perf_counter()
    be.train(specs, tasks, rule, iterations=iterations, lr=1e-3, progress=False)
    _sync(be.device)
    return 1e3 * (time.perf_counter() - t) / iterations


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def kernels_and_syncs(device: str, rule: str, n: int, m: int, iterations: int, batch: int,
                      readback_every: int | None, prefetch: int | None) -> dict[str, float]:
    """Per iteration: kernels (CUDA launches, or aten ops on the CPU) and host syncs (CUDA sync calls and
    device-to-host copies, or aten ops that would sync on a GPU)."""
    specs, tasks = _ensemble(n, m, batch)
    be = TorchBackend(device=device, dtype="float32", compiled=False)
    be.readback_every, be.prefetch = readback_every, prefetch
    be.train(specs, tasks, rule, iterations=2, lr=1e-3, progress=False)
    if be.device.type != "cuda":
        with _OpCounter() as probe:
            be.train(specs, tasks, rule, iterations=iterations, lr=1e-3, progress=False)
        return {"kernels": sum(probe.ops.values()) / iterations,
                "syncs": sum(probe.ops[k] for k in SYNC_OPS) / iterations}
    from torch.profiler import ProfilerActivity, profile

    _sync(be.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        be.train(specs, tasks, rule, iterations=iterations, lr=1e-3, progress=False)
        _sync(be.device)
    kernels = syncs = d2h = 0
    for ev in prof.events():
        name = ev.name
        if ev.device_type == torch.autograd.DeviceType.CUDA and "Memcpy" not in name and "Memset" not in name:
            kernels += 1
        elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            syncs += 1
        if "Memcpy DtoH" in name:
            d2h += 1
    return {"kernels": kernels / iterations, "syncs": syncs / iterations, "d2h": d2h / iterations}


def study_slice(device: str, iterations: int, dry_run: bool) -> dict[str, float]:
    """The paper study's first ensemble on ``device`` for ``iterations`` iterations (Lyapunov and rich/lazy on)."""
    from neurorate.studies.config import load_config
    from neurorate.studies.ensemble import plan, run_ensemble

    base = load_config("paper")
    update = dict(iterations=iterations, device=device)
    if dry_run:
        update.update(gains=[0.5, 1.5], lrs=[1e-3], seeds=[0], hidden=8, batch=4, probe_batch=4, lyapunov_k=2)
    cfg = base.model_copy(update=update)
    jobs = plan(cfg)
    t = time.perf_counter()
    table = run_ensemble(cfg, jobs[0])
    wall = time.perf_counter() - t
    per_it = wall / iterations
    full = per_it * base.iterations * len(plan(base))
    return {"networks": table.num_rows, "wall": wall, "per_iteration": per_it, "study_estimate_h": full / 3600,
            "rule": jobs[0].rule, "task": jobs[0].task, "hidden": cfg.hidden}


def run_tests(device: str, dry_run: bool) -> tuple[bool, str]:
    env = dict(os.environ, NEURORATE_GPU_CHECK_DEVICE=device)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/integration/test_gpu.py")]
    if dry_run:
        cmd += ["-k", "lyapunov_spectrum"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, f"{tail} ({time.perf_counter() - t:.0f} s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes (a script check)")
    ap.add_argument("--device", default=None, help="device to check (default: cuda; cpu with --dry-run)")
    ap.add_argument("--study-iterations", type=int, default=None, help="iterations of the study slice (default 100)")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: tests,speed,profile,study")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown block to this file")
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = args.device or ("cpu" if dry else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run for the CPU check of this script", file=sys.stderr)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    cores = os.cpu_count() or 1
    if dry:
        sizes, rules, gpu_its, cpu_its, batch = [(8, 2)], ["eprop", "bptt", "rflo"], 2, 1, 4
        cpu_compiled, prof_its, study_its = False, 2, args.study_iterations or 2
    else:
        sizes, rules = [(64, 16), (64, 64), (128, 16), (128, 64)], ["eprop", "bptt", "rflo"]
        gpu_its, cpu_its, batch = 20, 3, 32
        cpu_compiled, prof_its, study_its = None, 16, args.study_iterations or 100
    gpu_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    lines = [f"GPU check on {gpu_name} (torch {torch.__version__}, {cores} CPU cores, "
             f"{time.strftime('%Y-%m-%d')}{', dry run: CPU, tiny sizes' if dry else ''}).", ""]
    ok = True
    t_all = time.perf_counter()

    def step(name, fn):
        nonlocal ok
        if name in skip:
            lines.append(f"- {name}: skipped")
            return
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # report and go on: one failing step must not hide the others
            ok = False
            lines.append(f"- {name}: FAILED ({type(exc).__name__}: {exc})")
            traceback.print_exc()
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)

    def tests():
        nonlocal ok
        passed, summary = run_tests(device, dry)
        ok &= passed
        lines.append(f"**tests/integration/test_gpu.py** on {device}: {summary}{'' if passed else ' FAILED'}")
        lines.append("")

    def speed():
        cpu_path = "torch path" if cpu_compiled is False else "default path (compiled where it applies)"
        lines.extend([f"**Ensemble training** (Romo, B = {batch}, float32, ms per iteration; CPU: {cpu_path}, "
                      f"{cores} threads)", "",
                      f"| rule | N | M | {device} | cpu | cpu / {device} |", "|---|---|---|---|---|---|"])
        for rule in rules:
            for n, m in sizes:
                g = ms_per_iteration(device, rule, n, m, gpu_its, batch, False, None)
                c = ms_per_iteration("cpu", rule, n, m, cpu_its, batch, cpu_compiled, cores)
                lines.append(f"| {rule} | {n} | {m} | {g:.2f} | {c:.1f} | {c / g:.1f}x |")
                print(lines[-1], file=sys.stderr, flush=True)
        lines.append("")

    def prof():
        n, m = sizes[0]
        what = "CUDA kernels" if device.startswith("cuda") else "aten ops"
        lines.extend([f"**Per iteration** (e-prop, N = {n}, M = {m}, {prof_its} iterations): {what} and host syncs",
                      "", "| loop | kernels | syncs | device-to-host copies |", "|---|---|---|---|"])
        for label, every, block in (("blocked read-back (default)", None, None), ("one read per iteration", 1, 1)):
            r = kernels_and_syncs(device, "eprop", n, m, prof_its, batch, every, block)
            d2h = f"{r['d2h']:.2f}" if "d2h" in r else "-"
            lines.append(f"| {label} | {r['kernels']:.0f} | {r['syncs']:.2f} | {d2h} |")
        lines.append("")

    def study():
        r = study_slice(device, study_its, dry)
        lines.append(f"**Study slice** (paper, first ensemble: {r['task']} {r['rule']}, {r['networks']} networks, "
                     f"N = {r['hidden']}, {study_its} iterations, Lyapunov and rich/lazy on {device}): "
                     f"{r['wall']:.1f} s, {1e3 * r['per_iteration']:.0f} ms per ensemble iteration; the whole study "
                     f"at that rate (spectra and metrics counted per iteration: an upper bound): at most about "
                     f"{r['study_estimate_h']:.1f} h on one device")
        lines.append("")

    step("tests", tests)
    step("speed", speed)
    step("profile", prof)
    step("study", study)
    lines.append(f"Check finished in {time.perf_counter() - t_all:.0f} s{'' if ok else ' with failures'}.")
    block = "\n".join(lines)
    print(block)
    if args.out is not None:
        args.out.write_text(block + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
