"""One ensemble of a study, the unit of work of every executor: its job description (:class:`EnsembleJob`), the
plan of a study's ensembles (:func:`plan`), training one ensemble into a results table (:func:`run_ensemble`) and
writing its parquet part (:func:`ensemble_job_main`).

The study itself (directories, manifest, lock, resume, executors) is :mod:`neurorate.studies.runner`; the
executors that run ensembles beside each other are :mod:`neurorate.studies.executor`. Both import this module,
which imports neither.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.backends.base import env_threads
from neurorate.io.dirs import atomic_write_bytes
from neurorate.studies.config import StudyConfig


@dataclasses.dataclass(frozen=True)
class EnsembleJob:
    """One ensemble of the study: every network of it trains in one program."""

    index: int
    task: str
    rule: str
    flossing: bool
    rank: int | None
    backend: str
    profile: str | None
    neuron: str = "rate"

    @property
    def key(self) -> str:
        """A stable, human-readable identifier (used in the manifest; rate networks keep the original form)."""
        rank = "full" if self.rank is None else str(self.rank)
        neuron = "" if self.neuron == "rate" else f"|{self.neuron}"
        return (f"{self.task}|{self.rule}|floss={int(self.flossing)}|rank={rank}|{self.backend}|"
                f"{self.profile or 'none'}{neuron}")

    @property
    def part_name(self) -> str:
        """File name of this ensemble's parquet part."""
        slug = self.key.replace("|", "_").replace("=", "").replace(":", "-")
        return f"part-{self.index:04d}-{slug}.parquet"


def progress_units(config: StudyConfig, job: EnsembleJob) -> int:
    """Iterations one ensemble reports to the progress bar: training plus flossing (pre-training) iterations."""
    return config.iterations + (config.floss_iterations if job.flossing else 0)


def plan(config: StudyConfig) -> list[EnsembleJob]:
    """The study's ensembles in a fixed order (flossing only for ``floss_rules``)."""
    jobs: list[EnsembleJob] = []
    for task in config.tasks:
        for neuron in config.neurons:
            for rule in config.rules:
                for floss in config.flossing:
                    if floss and rule not in config.floss_rules:
                        continue
                    for rank in config.ranks:
                        for backend in config.backends:
                            for profile in config.profiles:
                                jobs.append(EnsembleJob(len(jobs), task, rule, floss, rank, backend, profile, neuron))
    return jobs


def run_ensemble(config: StudyConfig, job: EnsembleJob, progress: Callable[[int], None] | None = None,
                 run_dirs: Path | None = None):
    """Train one ensemble and return its rows as a pyarrow Table (see :func:`study` for the columns)."""
    import torch

    import neurorate as nr

    torch.set_num_threads(max(1, min(torch.get_num_threads(), env_threads() or 1)))
    grid = [(g, lr, s) for g in config.gains for lr in config.lrs for s in config.seeds]
    tasks = [config.make_task(job.task, batch_size=config.batch, seed=s) for _, _, s in grid]
    t0 = tasks[0]
    act = config.activation_for(job.task, t0.loss_kind)
    specs = [nr.NetworkSpec.random(n_in=t0.n_in, n_hidden=config.hidden, n_out=t0.n_out, gain=g, seed=s,
                                   form=config.form, activation=act, alpha=t0.alpha, dt=t0.dt_seconds,
                                   input_bias=config.input_bias, recurrent_bias=config.recurrent_bias,
                                   rank=job.rank) for g, _, s in grid]
    callback = None if progress is None else (lambda i, losses, acc: progress(1))
    if job.neuron != "rate":
        return _run_spiking(config, job, grid, tasks, specs, progress)
    backend = job.backend
    if os.environ.get("NEURORATE_THREADS"):  # a worker process: its own thread budget, where the backend takes one
        from neurorate.backends.base import backend_capabilities, get_backend

        caps = backend_capabilities(job.backend)
        if caps.threads:
            placement = {k: v for k, v, declared in (("device", config.device, caps.devices),
                                                     ("dtype", config.dtype, caps.dtypes)) if declared}
            backend = get_backend(job.backend, threads=env_threads(), **placement)
    start = time.perf_counter()
    results = nr.train(specs, tasks, rule=job.rule, backend=backend, iterations=config.iterations,
                       lr=[lr for _, lr, _ in grid], optimizer=config.optimizer, profile=job.profile,
                       floss_iterations=config.floss_iterations if job.flossing else 0,
                       floss_mode=config.floss_mode, floss_k=config.floss_k, floss_lr=config.floss_lr,
                       lyapunov=config.lyapunov, lyapunov_k=config.lyapunov_k, device=config.device,
                       dtype=config.dtype, grad_alignment_every=config.grad_alignment_every,
                       progress=False, callback=callback, out=run_dirs,
                       floss_callback=None if progress is None else (lambda i, losses: progress(1)))
    wall = time.perf_counter() - start
    metrics = [{} for _ in grid]
    if config.richlazy:
        from neurorate.analysis.richlazy import richlazy_metrics

        probe = config.make_task(job.task, batch_size=config.probe_batch, seed=10_000_019)
        x, _, mask = probe.batch(0)
        metrics = richlazy_metrics(specs, [r.spec for r in results], x, mask, device=config.device)
    return _rows(config, job, grid, results, metrics, wall)


def _device(device: str):
    """The study's ``device`` as the torch backend resolves it (``"auto"``: CUDA when present)."""
    from neurorate.backends.torch import resolve_device

    return resolve_device(device)


def _run_spiking(config: StudyConfig, job: EnsembleJob, grid, tasks, specs, progress):
    """A LIF/ALIF ensemble: :func:`neurorate.model.spiking_learning.train_lif`, one call per learning rate (Adam has
    one lr per call), every network on its own task stream. No Lyapunov spectra or flossing (n/a for spiking
    networks); the rich/lazy columns keep the weight-only metrics (weight change, effective rank)."""
    from neurorate.analysis.richlazy import effective_rank, relative_weight_change
    from neurorate.io.results import TrainResult
    from neurorate.model.spiking_learning import train_lif
    from neurorate.training import _diverged_at, baseline_loss

    if config.lif.alpha is not None:
        specs = [s.replace(alpha=config.lif.alpha) for s in specs]
    results: list = [None] * len(grid)
    steps = np.zeros(len(grid))
    start = time.perf_counter()
    for lr in config.lrs:
        idx = [j for j, (_, v, _) in enumerate(grid) if v == lr]
        res = train_lif([specs[j] for j in idx], [tasks[j] for j in idx], rule=job.rule,
                        iterations=config.iterations, lr=lr, dtype=config.dtype, device=_device(config.device),
                        callback=None if progress is None else (lambda i, losses, acc: progress(1 / len(config.lrs))),
                        **config.spiking(job.neuron))
        for col, j in enumerate(idx):
            losses = np.asarray(res["losses"][:, col], dtype=float)
            at = _diverged_at(losses, None, baseline_loss(tasks[j]))  # the rule of neurorate.train, for every run
            results[j] = TrainResult(losses=losses, accuracy=np.asarray(res["accuracy"][:, col], dtype=float),
                                     spec=res["networks"][col].spec, spec_initial=specs[j], rule=job.rule,
                                     backend=f"torch ({job.neuron})", lr=lr, optimizer=config.optimizer,
                                     iterations=config.iterations, diverged=at is not None, diverged_at=at,
                                     wall_time=float(res["wall_time"]) / len(idx), config={"neuron": job.neuron})
            steps[j] = float(np.mean(res["rate"][-max(1, len(losses) // 10):, col]))
    wall = time.perf_counter() - start
    metrics = [{"weight_change": relative_weight_change(a, r.spec) if not r.diverged else math.nan,
                "erank_before": effective_rank(a.w_rec),
                "erank_after": effective_rank(r.spec.w_rec) if not r.diverged else math.nan,
                "spike_rate": steps[j]} for j, (a, r) in enumerate(zip(specs, results))]
    return _rows(config, job, grid, results, metrics, wall)


def _rows(config: StudyConfig, job: EnsembleJob, grid, results, metrics, wall: float):
    import pyarrow as pa

    from neurorate.studies.claims import best_so_far, time_to_solve, unlearned

    types = _columns()
    cols: dict[str, list] = {name: [] for name in types}
    every = config.log_every
    for (gain, lr, seed), res, met in zip(grid, results, metrics):
        losses = np.asarray(res.losses, dtype=float)
        acc = np.asarray(res.accuracy, dtype=float)
        # a diverged run keeps its metrics up to its divergence (best-so-far loss, time to solve, area under the
        # loss curve, accuracy); its final loss is NaN and the claims rank it worst (neurorate.studies.claims)
        upto = len(losses) if not res.diverged or res.diverged_at is None else int(res.diverged_at)
        before, acc_before = losses[:upto], acc[:upto]
        best = best_so_far(before, config.best_window)
        solved_at = time_to_solve(before, config.solved_loss, config.best_window)
        n_blocks = math.ceil(len(losses) / every)
        final = res.final_loss(config.final_fraction)
        auc = float(np.mean(before)) if upto > 0 and np.isfinite(before).all() else math.nan
        tail = acc_before[-max(1, round(len(acc_before) * config.final_fraction)):]
        align_at, align = _alignment(res)
        run = {
            "run_id": f"{job.key}|g={gain:g}|lr={lr:g}|seed={seed}", "ensemble": job.key, "task": job.task,
            "rule": job.rule, "neuron": job.neuron, "flossing": job.flossing, "rank": job.rank, "backend": job.backend,
            "profile": job.profile or "none", "gain": float(gain), "lr": float(lr), "seed": int(seed),
            "hidden": config.hidden, "final_loss": final, "auc": auc, "best_loss": best,
            "time_to_solve": solved_at, "unlearned": unlearned(best, final, config.solved_loss),
            "alpha": float(res.spec_initial.alpha), "base_task": config.base_task(job.task),
            "final_accuracy": float(np.nanmean(tail)) if np.isfinite(tail).any() else math.nan,
            "lambda_max_before": _num(res.lambda_max_before), "lambda_max_flossed": _num(res.lambda_max_flossed),
            "lambda_max_after": _num(res.lambda_max_after), "wall_time": float(res.wall_time),
            "ensemble_wall_time": float(wall), "status": res.status,
            "diverged_at": -1 if res.diverged_at is None else int(res.diverged_at),
            "weight_change": _num(met.get("weight_change")), "erank_before": _num(met.get("erank_before")),
            "erank_after": _num(met.get("erank_after")), "repr_alignment": _num(met.get("repr_alignment")),
            "kernel_alignment": _num(met.get("kernel_alignment")),
            "kernel_alignment_eprop": _num(met.get("kernel_alignment_eprop")),
            "spike_rate": _num(met.get("spike_rate")),
            "grad_alignment": float(np.nanmean(align)) if np.isfinite(align).any() else math.nan,
        }
        for b in range(n_blocks):
            block = losses[b * every:(b + 1) * every]
            ablock = acc[b * every:(b + 1) * every]
            for k, v in run.items():
                cols[k].append(v)
            cols["iteration"].append(min((b + 1) * every, len(losses)))
            cols["loss"].append(float(np.mean(block)) if np.isfinite(block).all() else math.nan)
            cols["accuracy"].append(float(np.nanmean(ablock)) if np.isfinite(ablock).any() else math.nan)
            inside = align[(align_at >= b * every) & (align_at < (b + 1) * every)]
            cols["alignment"].append(float(np.nanmean(inside)) if np.isfinite(inside).any() else math.nan)
    return pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _alignment(res) -> tuple[np.ndarray, np.ndarray]:
    """``(iterations, cosines)`` of a run's ``grad_alignment_every`` records (the recurrent weights' cosine between
    the rule's update and the exact gradient; docs/rules.md), empty without them."""
    rec = getattr(res, "alignment", None)
    if not rec:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.asarray(rec["iteration"], dtype=int), np.asarray(rec["align_cos_w_rec"], dtype=float)


def _columns() -> dict[str, Any]:
    """The results table's columns and their arrow types (built lazily: no pyarrow import at module load)."""
    import pyarrow as pa

    f, s, i, b = pa.float64(), pa.string(), pa.int64(), pa.bool_()
    return {
        "run_id": s, "ensemble": s, "task": s, "rule": s, "neuron": s, "flossing": b, "rank": i, "backend": s,
        "profile": s,
        "gain": f, "lr": f, "seed": i, "hidden": i, "iteration": i, "loss": f, "accuracy": f, "final_loss": f,
        "auc": f, "best_loss": f, "time_to_solve": f, "unlearned": b, "alpha": f, "base_task": s,
        "final_accuracy": f, "lambda_max_before": f, "lambda_max_flossed": f, "lambda_max_after": f,
        "wall_time": f, "ensemble_wall_time": f, "status": s, "diverged_at": i, "weight_change": f,
        "erank_before": f, "erank_after": f, "repr_alignment": f, "kernel_alignment": f, "kernel_alignment_eprop": f,
        "spike_rate": f, "grad_alignment": f, "alignment": f,
    }


# ---------------------------------------------------------------------- results store
def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole (:func:`neurorate.io.dirs.atomic_write_bytes`: a unique temporary name, fsync, rename,
    group-readable; a reader sees the old or the new file, never a half-written one)."""
    atomic_write_bytes(path, data)


def _write_part(out: Path, job: EnsembleJob, table) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    target = out / "results" / job.part_name
    _atomic_write(target, sink.getvalue().to_pybytes())
    return target


def ensemble_job_main(config: dict, job: dict, out: str, run_dirs: bool = False,
                      progress: Callable[[int], None] | None = None) -> tuple[dict, int, float]:
    """Run one ensemble and write its part (the unit of work of every executor); returns (job, rows, wall).

    ``progress(n)`` is called as training iterations complete (n of them since the last call).
    """
    cfg, ej = StudyConfig.model_validate(config), EnsembleJob(**job)
    start = time.perf_counter()
    table = run_ensemble(cfg, ej, progress=progress,
                         run_dirs=Path(out) / "runs" / ej.part_name[:-8] if run_dirs else None)
    _write_part(Path(out), ej, table)
    return job, table.num_rows, time.perf_counter() - start
