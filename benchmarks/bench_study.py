"""Wall time of a whole study against the naive estimate (issue 5, design.md §8).

Naive estimate: every network trained alone by a per-step loop in the paper's style, measured on this machine at
about 13 ms per iteration (Romo, N = 64, B = 32, 1 thread; science.md §8), plus nothing for Lyapunov spectra,
flossing or rich/lazy metrics (so the estimate flatters the naive loop). neurorate: the same study run by
``neurorate.study`` (all gains x lrs x seeds of an ensemble as one program), everything included.

Writes (replaces) the section "## Study (issue 5)" of docs/benchmarks.md.
Usage: ``python benchmarks/bench_study.py [--config quick] [--existing DIR]`` (``--existing`` reads the wall
time of an already finished study from its manifest instead of running it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAIVE_MS_PER_ITERATION = 13.0
HEAD = "## Study (issue 5)"


def naive_seconds(cfg) -> float:
    """Runs x naive ms/iteration x iterations (flossing iterations counted as training iterations)."""
    from neurorate.study import plan

    total = 0
    for job in plan(cfg):
        its = cfg.iterations + (cfg.floss_iterations if job.flossing else 0)
        total += cfg.n_networks() * its
    return total * NAIVE_MS_PER_ITERATION / 1000.0


def write_section(lines: list[str]) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (other sections are left untouched)."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    parts = text.split("\n## ")
    kept = [p for p in parts if not p.startswith(HEAD[3:])]
    path.write_text("\n## ".join(kept).rstrip() + "\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    """Run (or read) the study, compare with the naive estimate, write the section."""
    import torch

    import neurorate as nr
    from neurorate.study import read_manifest
    from neurorate.study_config import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="quick")
    parser.add_argument("--existing", default=None, help="a finished study directory to read instead of running")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    if args.existing:  # the study's own config, not --config
        saved = json.loads((Path(args.existing) / "config.json").read_text())
        cfg = load_config(saved.get("config", saved))
        manifest = read_manifest(args.existing)
        done = len(manifest["finished"])
        if manifest.get("sessions"):  # wall-clock time of every (resumed) session
            wall = sum(e["wall_time"] for e in manifest["sessions"])
            workers = ", ".join(sorted({str(e["workers"]) for e in manifest["sessions"]}))
        else:  # older studies: the ensembles ran one after another
            wall, workers = sum(e["wall_time"] for e in manifest["finished"].values()), 1
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
        start = time.perf_counter()
        nr.study(cfg, out=tmp / "study", progress=False)
        wall = time.perf_counter() - start
        workers = max(e["workers"] for e in read_manifest(tmp / "study")["sessions"])
        done = len(read_manifest(tmp / "study")["finished"])
        shutil.rmtree(tmp)
    from neurorate.study import plan

    n_ens = len(plan(cfg))
    naive = naive_seconds(cfg) * done / n_ens
    runs = done * cfg.n_networks()
    lines = [HEAD, "",
             (f"{datetime.date.today()}, {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores "
             f"(shared with other jobs), torch {torch.__version__}, 1 thread."), "",
             "| study | ensembles | runs | iterations | worker processes | measured wall | naive estimate "
             "(runs x 13 ms x it.) | speed-up |",
             "|---|---|---|---|---|---|---|---|",
             (f"| {cfg.name} (N={cfg.hidden}, B={cfg.batch}) | {done}/{n_ens} | {runs} | {cfg.iterations} "
             f"(+{cfg.floss_iterations} floss) | {workers} | {wall:.0f} s | {naive:.0f} s | {naive / wall:.1f}x |"), "",
             ("The measured time includes flossing, Lyapunov spectra before/after and rich/lazy metrics; the naive "
             "estimate counts training iterations only, at N = 64 (smaller N is not faster for the naive loop, whose "
             "time is per-op overhead). Targets (design.md §8): paper study < 10 min on 2 cores, < 1 min on an H100.")]
    write_section(lines)
    print(json.dumps({"config": cfg.name, "wall_s": wall, "naive_s": naive, "ensembles": done}))


if __name__ == "__main__":
    main()
