"""Lava backend speed: trial-steps per second (network steps x batch) with on-line e-prop + SGD on, and start-up.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_lava.py [--seconds 3] [--markdown]

For each (N, B, model) the Romo task (T = 56) trains with ``eprop`` and SGD inside Lava. ``start-up`` is
the wall time from building the process graph to the end of the first tick (compile + runtime creation
+ first step, after lava is imported); ``import`` is the one-time ``import lava`` plus the shim.
Throughput is measured over whole trials after the first one.

``--graphs fused,loihi`` also measures the loihi graph (``graph="loihi"``, e-prop on Lava's learning engine,
:mod:`neurorate.backends.lava.loihi`) on the same task at B = 1: four ticks per network step, each trial padded to
``2^K >= T + 1`` epochs (Romo: 56 steps in 64 epochs = 256 ticks), the host's readout update between trials
included; network steps/s counts the task's steps, not the padding. Its ``fixed_pt`` row is skipped until the
graph's neurons have fixed-point models.
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


def bench_loihi(n: int, tag: str, seconds: float) -> dict:
    """Start-up time and network steps/s of the loihi graph (B = 1, symmetric e-prop, SGD once per trial)."""
    from neurorate.backends.lava import loihi
    from neurorate.model.spec import NetworkSpec
    from neurorate.tasks.romo import RomoTask

    if tag != "floating_pt":
        loihi.check_loihi(profile="loihi2")  # refused (one line) until the neurons have fixed_pt models
    from lava.magma.core.run_conditions import RunSteps

    spec = NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=1.0, seed=0)
    task = RomoTask(batch_size=1, seed=0)
    t0 = time.perf_counter()
    graph = loihi.LoihiGraph(spec, n_steps=task.n_steps, loss_kind=task.loss_kind, lr=1e-3, feedback="symmetric")
    try:
        graph.load(*task.batch(0), task.loss_kind)
        graph.source.run(condition=RunSteps(num_steps=1), run_cfg=graph.run_cfg)
        graph.started = True
        startup = time.perf_counter() - t0
        graph.source.run(condition=RunSteps(num_steps=graph.ticks_per_trial - 1), run_cfg=graph.run_cfg)
        graph.update_readout()
        done, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds:
            graph.load(*task.batch(done + 1), task.loss_kind)
            graph.start(graph.ticks_per_trial - loihi.TICKS_PER_STEP)  # as loihi.train: the steps, the loss check,
            graph.wait()
            assert np.isfinite(graph.box["loss"][0])
            graph.start(loihi.TICKS_PER_STEP)  # then the update epoch
            graph.wait()
            graph.update_readout()
            done += 1
        wall = time.perf_counter() - t1
    finally:
        graph.stop()
    steps = done * task.n_steps
    return dict(n=n, batch=1, tag=f"{tag} (loihi graph)", startup=startup,
                ticks_per_s=done * graph.ticks_per_trial / wall, trial_steps_per_s=steps / wall)


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
    parser.add_argument("--graphs", default="fused", help="fused,loihi: also measure the loihi graph (B = 1)")
    parser.add_argument("--loihi-sizes", default="16,64", help="N of the loihi graph")
    parser.add_argument("--markdown", action="store_true", help="print a markdown section for docs/benchmarks.md")
    args = parser.parse_args()

    t0 = time.perf_counter()
    from neurorate.backends.lava import ensure_lava_importable

    ensure_lava_importable()
    import lava.magma.core.process.process  # noqa: F401

    t_import = time.perf_counter() - t0
    rows = []
    graphs = args.graphs.split(",")
    for tag in args.tags.split(","):
        jobs = [(bench_one, n, b) for n in map(int, args.sizes.split(",")) for b in map(int, args.batches.split(","))
                if "fused" in graphs]
        jobs += [(bench_loihi, n, 1) for n in map(int, args.loihi_sizes.split(",")) if "loihi" in graphs]
        for fn, n, b in jobs:
            try:
                row = fn(n, b, tag, args.seconds) if fn is bench_one else fn(n, tag, args.seconds)
            except Exception as exc:  # noqa: BLE001 - a model that is not available is reported, not fatal
                print(f"{tag} {fn.__name__} N={n} B={b}: skipped ({exc})")
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
        print("Loihi graph rows: B = 1, four ticks per network step, trial-steps/s = the task's network steps/s.\n")
        print("| model | N | B | start-up (s) | ticks/s | trial-steps/s |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['tag']} | {r['n']} | {r['batch']} | {r['startup']:.2f} | {r['ticks_per_s']:.0f} | "
                  f"{r['trial_steps_per_s']:.0f} |")


if __name__ == "__main__":
    main()
