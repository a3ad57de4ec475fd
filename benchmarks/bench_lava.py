"""Lava backend speed: trial-steps per second (network steps x batch) with on-line e-prop + SGD on, and start-up.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lava.py [--seconds 3] [--markdown]

For each (N, B, model) the Romo task (T = 56) trains with ``eprop`` and SGD inside Lava. ``start-up`` is
the wall time from building the process graph to the end of the first tick (compile + runtime creation
+ first step, after lava is imported); ``import`` is the one-time ``import lava`` plus the shim.
Throughput is measured over whole trials after the first one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import platform
import subprocess
import time

import numpy as np


def bench_one(n: int, batch: int, tag: str, seconds: float) -> dict:
    """Start-up time and trial-steps/s of one configuration."""
    from neurorate.backends.lava._io import Mailbox, TaskFeed
    from neurorate.backends.lava.backend import LavaBackend, _Graph
    from neurorate.model.spec import NetworkSpec
    from neurorate.tasks.romo import RomoTask

    spec = NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=1.0, seed=0)
    task = RomoTask(batch_size=batch, seed=0)
    t_steps = task.n_steps
    trials = 10_000
    box = Mailbox({"loss": (trials,), "accuracy": (trials,), "done": (1,), "diverged_at": (1,)})
    quantizers, real_tag = LavaBackend()._quantizers("loihi2" if tag == "fixed_pt" else None, [spec], training=True)
    t0 = time.perf_counter()
    graph = _Graph([spec], [TaskFeed(task)], batch=batch, n_steps=t_steps, loss_kind="mse", learning="symmetric",
                   lrs=[1e-3], boxes=[box], quantizers=quantizers, tag=real_tag)
    try:
        graph.run(1)
        startup = time.perf_counter() - t0
        graph.run(t_steps - 1)
        done, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            graph.run(t_steps)
            done += 1
        wall = time.perf_counter() - t1
    finally:
        graph.stop()
    assert np.isfinite(box["loss"][:done]).all()
    ticks = done * t_steps
    return dict(n=n, batch=batch, tag=real_tag, startup=startup, ticks_per_s=ticks / wall,
                trial_steps_per_s=ticks * batch / wall)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration")
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--tags", default="floating_pt,fixed_pt")
    parser.add_argument("--markdown", action="store_true", help="print a markdown section for docs/benchmarks.md")
    args = parser.parse_args()

    t0 = time.perf_counter()
    from neurorate.backends.lava import ensure_lava_importable

    ensure_lava_importable()
    import lava.magma.core.process.process  # noqa: F401

    t_import = time.perf_counter() - t0
    rows = []
    for tag in args.tags.split(","):
        for n in map(int, args.sizes.split(",")):
            for b in map(int, args.batches.split(",")):
                try:
                    row = bench_one(n, b, tag, args.seconds)
                except Exception as exc:  # noqa: BLE001 - a model that is not available is reported, not fatal
                    print(f"{tag} N={n} B={b}: skipped ({exc})")
                    continue
                rows.append(row)
                print(f"{row['tag']:12s} N={n:4d} B={b:3d}  start-up {row['startup']:.2f} s  "
                      f"{row['ticks_per_s']:8.0f} ticks/s  {row['trial_steps_per_s']:9.0f} trial-steps/s", flush=True)
    if args.markdown:
        import importlib.metadata as md

        print("\n## Lava backend\n")
        print(f"Machine: {machine()}; {datetime.date.today()}; Python {platform.python_version()}, "
              f"lava-nc {md.version('lava-nc')}, numpy {np.__version__}; OPENBLAS_NUM_THREADS=1.")
        print(f"Romo (T = 56), e-prop + SGD inside Lava, one RateRNN process + one trial source; "
              f"`import lava` + shim {t_import:.2f} s.\n")
        print("| model | N | B | start-up (s) | ticks/s | trial-steps/s |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['tag']} | {r['n']} | {r['batch']} | {r['startup']:.2f} | {r['ticks_per_s']:.0f} | "
                  f"{r['trial_steps_per_s']:.0f} |")


if __name__ == "__main__":
    main()
