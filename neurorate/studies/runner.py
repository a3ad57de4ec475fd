"""The initial-gain study: ensemble-batched sweeps with a resumable, long-format parquet results store.

The grid ``tasks x rules x flossing x ranks x backends x profiles`` gives the *ensembles*; inside one ensemble
all ``gains x lrs x seeds`` networks train as one :func:`neurorate.train` call (one program on the torch
backend). Network ``(gain, lr, seed)`` is drawn with ``NetworkSpec.random(gain=gain, seed=seed, ...)`` and
trained on its own task stream ``make_task(task, seed=seed)``, so the same seed sees the same weights (up to
the gain) and the same batches at every gain and learning rate.

Results directory ``DIR``::

    config.json       the resolved StudyConfig (a resumed study must match it)
    .lock             held (``fcntl.flock``) while a study runs in DIR: pid, host and start time of the holder
    results/          one parquet part per finished ensemble (written to a temporary name, then renamed)
    manifest.json     finished ensemble keys -> part file, rewritten atomically after each part; ``sessions``:
                      start, wall-clock time, ensembles run and workers of each (resumed) run
    logs/             one stderr log per ensemble run in a worker process
    results.parquet   all parts concatenated (written at the end; ``load_results`` reads the parts)

A study killed at any point (SIGKILL included) resumes with ``resume=True``: finished ensembles (those in the
manifest) are skipped, an unfinished one is run again from scratch and its part replaced. Everything the study
is asked to do (config, backends, profiles, the rules each backend can run) is checked before DIR is created;
a directory in which no ensemble finished holds nothing to keep, so a corrected rerun starts afresh in it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.backends.base import env_threads
from neurorate.errors import NeurorateError
from neurorate.studies.config import StudyConfig, load_config

EXECUTORS = ("local", "submitit", "submitit:local", "submitit:debug", "submitit:slurm")


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
                       dtype=config.dtype,
                       progress=False, callback=callback, out=run_dirs,
                       floss_callback=None if progress is None else (lambda i, losses: progress(1)))
    wall = time.perf_counter() - start
    metrics = [{} for _ in grid]
    if config.richlazy:
        from neurorate.analysis.richlazy import richlazy_metrics

        probe = config.make_task(job.task, batch_size=config.probe_batch, seed=10_000_019)
        x, _, mask = probe.batch(0)
        metrics = richlazy_metrics(specs, [r.spec for r in results], x, mask)
    return _rows(config, job, grid, results, metrics, wall)


def _run_spiking(config: StudyConfig, job: EnsembleJob, grid, tasks, specs, progress):
    """A LIF/ALIF ensemble: :func:`neurorate.model.spiking_learning.train_lif`, one call per learning rate (Adam has
    one lr per call), every network on its own task stream. No Lyapunov spectra or flossing (n/a for spiking
    networks); the rich/lazy columns keep the weight-only metrics (weight change, effective rank)."""
    from neurorate.analysis.richlazy import effective_rank, relative_weight_change
    from neurorate.io.results import TrainResult
    from neurorate.model.spiking_learning import train_lif

    if config.lif.alpha is not None:
        specs = [s.replace(alpha=config.lif.alpha) for s in specs]
    results: list = [None] * len(grid)
    steps = np.zeros(len(grid))
    start = time.perf_counter()
    for lr in config.lrs:
        idx = [j for j, (_, v, _) in enumerate(grid) if v == lr]
        res = train_lif([specs[j] for j in idx], [tasks[j] for j in idx], rule=job.rule,
                        iterations=config.iterations, lr=lr, dtype=config.dtype,
                        callback=None if progress is None else (lambda i, losses, acc: progress(1 / len(config.lrs))),
                        **config.spiking(job.neuron))
        for col, j in enumerate(idx):
            losses = np.asarray(res["losses"][:, col], dtype=float)
            bad = ~np.isfinite(losses)
            results[j] = TrainResult(losses=losses, accuracy=np.asarray(res["accuracy"][:, col], dtype=float),
                                     spec=res["networks"][col].spec, spec_initial=specs[j], rule=job.rule,
                                     backend=f"torch ({job.neuron})", lr=lr, optimizer=config.optimizer,
                                     iterations=config.iterations, diverged=bool(bad.any()),
                                     diverged_at=int(np.argmax(bad)) if bad.any() else None,
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
        best = best_so_far(losses, config.best_window)
        solved_at = time_to_solve(losses, config.solved_loss, config.best_window)
        acc = np.asarray(res.accuracy, dtype=float)
        n_blocks = math.ceil(len(losses) / every)
        final = res.final_loss(config.final_fraction)
        auc = math.nan if res.diverged else float(np.mean(losses))
        tail = acc[-max(1, round(len(acc) * config.final_fraction)):]
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
        }
        for b in range(n_blocks):
            block = losses[b * every:(b + 1) * every]
            ablock = acc[b * every:(b + 1) * every]
            for k, v in run.items():
                cols[k].append(v)
            cols["iteration"].append(min((b + 1) * every, len(losses)))
            cols["loss"].append(float(np.mean(block)) if np.isfinite(block).all() else math.nan)
            cols["accuracy"].append(float(np.nanmean(ablock)) if np.isfinite(ablock).any() else math.nan)
    return pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})


def _num(v) -> float:
    return math.nan if v is None else float(v)


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
        "spike_rate": f,
    }


# ---------------------------------------------------------------------- results store
def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` through a uniquely named temporary file in the same directory, then rename it (two
    writers never share a temporary name; a reader sees the old or the new file, never a half-written one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_part(out: Path, job: EnsembleJob, table) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    target = out / "results" / job.part_name
    _atomic_write(target, sink.getvalue().to_pybytes())
    return target


def read_manifest(out: str | Path) -> dict:
    """The manifest of a study directory (empty if none)."""
    path = Path(out) / "manifest.json"
    if not path.exists():
        return {"finished": {}}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeurorateError(f"{path}: malformed manifest ({exc})") from None
    except OSError as exc:
        raise NeurorateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("finished"), dict) or not all(
            isinstance(e, dict) and isinstance(e.get("part"), str) and isinstance(e.get("index"), int)
            for e in manifest["finished"].values()):
        raise NeurorateError(f"{path}: malformed manifest (expected 'finished': {{ensemble: {{part, index, ...}}}})")
    return manifest


def read_study_config(out: str | Path) -> dict:
    """The ``config`` stored in ``DIR/config.json`` (a dict of :class:`StudyConfig` fields); one line naming the
    file when it is missing or corrupt."""
    path = Path(out) / "config.json"
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise NeurorateError(f"{path}: no such file ({Path(out)} is not a study directory)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeurorateError(f"{path}: malformed study config ({exc})") from None
    except OSError as exc:
        raise NeurorateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise NeurorateError(f"{path}: malformed study config (expected {{'digest': ..., 'config': {{...}}}})")
    try:
        return StudyConfig.model_validate(stored["config"]).model_dump(mode="json")
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        field = ".".join(str(p) for p in first["loc"]) or "config"
        raise NeurorateError(f"{path}: malformed study config (field {field!r}: "
                             f"{str(first['msg']).removeprefix('Value error, ')})") from None


def _record(out: Path, manifest: dict, job: EnsembleJob, rows: int, wall: float) -> None:
    manifest["finished"][job.key] = {"part": job.part_name, "rows": rows, "wall_time": wall, "index": job.index}
    _save_manifest(out, manifest)


def _save_manifest(out: Path, manifest: dict) -> None:
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def load_results(out: str | Path):
    """All finished ensembles of a study directory as one pyarrow Table (parts in plan order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    manifest = read_manifest(out)
    entries = sorted(manifest["finished"].values(), key=lambda e: e["index"])
    if not entries:
        raise NeurorateError(f"{out}: no finished ensembles (not a study directory, or nothing finished yet)")
    parts = []
    for e in entries:
        path = out / "results" / e["part"]
        try:
            parts.append(pq.read_table(path))
        except FileNotFoundError:
            raise NeurorateError(f"{path}: part of a finished ensemble is missing; rerun the study with --resume "
                                 "after removing its entry from the manifest, or rerun it in a new directory") from None
        except (pa.ArrowException, OSError) as exc:
            raise NeurorateError(f"{path}: corrupt parquet part ({str(exc).splitlines()[0]})") from None
    # parts written by older versions may lack newer metric columns: those read as null
    try:
        return pa.concat_tables(parts, promote_options="default")
    except pa.ArrowException as exc:
        raise NeurorateError(f"{out / 'results'}: parts do not form one table ({str(exc).splitlines()[0]})") from None


def _same_table(a, b) -> bool:
    """Same columns and values (NaN equal to NaN, unlike ``pyarrow.Table.equals``)."""
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = (t.column(name).to_numpy(zero_copy_only=False) for t in (a, b))
        nan_ok = x.dtype.kind == "f" and y.dtype.kind == "f"
        if not np.array_equal(x, y, equal_nan=nan_ok):
            return False
    return True


def ensure_results_table(out: str | Path, table=None) -> str | None:
    """Rewrite ``DIR/results.parquet`` from the parts when it is missing, unreadable or does not hold exactly
    the parts' rows; returns why it was rebuilt (None: it was already right). ``table``: the parts' table if
    already loaded (:func:`load_results`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    table = load_results(out) if table is None else table
    path = out / "results.parquet"
    if not path.exists():
        reason = "missing"
    else:
        try:
            reason = None if _same_table(pq.read_table(path), table) else "out of date"
        except (pa.ArrowException, OSError):
            reason = "corrupt"
    if reason is None:
        return None
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _atomic_write(path, sink.getvalue().to_pybytes())
    return f"{path} was {reason}: rebuilt from {len(read_manifest(out)['finished'])} parts"


# ---------------------------------------------------------------------- the study
def study(config: StudyConfig | dict | str | Path | None = None, out: str | Path = "results/study",
          resume: bool = False, progress: bool | None = None, executor: str = "local",
          run_dirs: bool = False, workers: int | None = None):
    """Run the initial-gain study and return its long-format results table.

    Parameters
    ----------
    config : a :class:`~neurorate.studies.config.StudyConfig`, a dict of its fields, a TOML path, an embedded
        config name ("paper", "quick") or None (the ``paper`` config).
    out : the study directory (see the module docstring).
    resume : skip the ensembles recorded in ``out/manifest.json``; without it, a directory in which an ensemble
        finished is an error (one in which none did starts afresh).
    progress : a progress bar with ETA over network-iterations (None: only on a terminal).
    executor : "local" (in-process), or "submitit[:local|:debug|:slurm]" (each ensemble as a submitit job).
    run_dirs : also write a run directory per network under ``out/runs/`` (slow: a plot per network).
    workers : local executor: ensembles run beside each other in this many worker processes (one torch thread
        each; default ``NEURORATE_WORKERS`` or the usable CPU cores, at most the number of ensembles; a small study
        runs in-process, see :func:`neurorate.studies.executor.default_workers`). 1 runs them one after another
        in this process. The results do not depend on it.

    Returns
    -------
    pyarrow.Table
        One row per (run, logged iteration): ``run_id``, the axes (task, rule, flossing, rank, backend, profile,
        gain, lr, seed), ``iteration`` (updates done; ``loss``/``accuracy`` are means over the ``log_every``
        iterations ending there), run-level ``final_loss`` (mean of the last ``final_fraction`` of iterations),
        ``auc``, ``best_loss`` (minimum of the ``best_window`` running mean), ``time_to_solve`` (NaN: never below
        ``solved_loss``), ``unlearned``, ``alpha`` (the network's leak), ``base_task`` (a variant's task),
        ``lambda_max_before/flossed/after`` (per step), rich/lazy metrics, ``wall_time``, ``status``
        ("ok" or "diverged"). The same table is in ``out/results.parquet``.

    Raises
    ------
    NeurorateError
        One line, before ``out`` is created, for a bad config, executor, worker count, backend or profile
        (:func:`preflight`); at once when another study holds ``out`` (:class:`StudyLock`).
    """
    cfg = load_config(config)
    if executor not in EXECUTORS:
        raise NeurorateError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None:  # checked before the study directory is created
        if executor != "local":
            raise NeurorateError(f"workers applies to the local executor; {executor} schedules its own jobs")
        from neurorate.studies.executor import check_workers

        check_workers(workers, 1)
    if out is None or str(out).strip() == "":
        raise NeurorateError("out must name a study directory, got an empty path")
    preflight(cfg)
    out = Path(out)
    with StudyLock(out):
        return _study(cfg, out, resume, progress, executor, run_dirs, workers)


def _study(cfg: StudyConfig, out: Path, resume: bool, progress, executor: str, run_dirs: bool, workers):
    _prepare(out, cfg, resume)
    manifest = read_manifest(out)
    manifest["config_digest"] = cfg.digest()
    todo = [j for j in plan(cfg) if j.key not in manifest["finished"]]
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    n_workers = 1
    if executor == "local":
        from neurorate.studies.executor import check_workers, default_workers, run_parallel

        n_workers = default_workers(cfg, len(todo)) if workers is None else check_workers(workers, len(todo))
        if n_workers > 1:
            run_parallel(cfg, todo, out, n_workers, progress, run_dirs,
                         lambda job, rows, wall: _record(out, manifest, job, rows, wall))
        else:
            _run_local(cfg, todo, out, manifest, progress, run_dirs)
    else:
        from neurorate.studies.executor import run_submitit

        run_submitit(cfg, todo, out, manifest, executor.partition(":")[2] or None, progress,
                     lambda job, rows, wall: _record(out, manifest, job, rows, wall))
    if todo:  # one entry per (resumed) session that ran something: what the study cost in wall-clock time
        parallel = n_workers if executor == "local" else executor
        manifest.setdefault("sessions", []).append({"started": started, "wall_time": time.perf_counter() - clock,
                                                    "ensembles": len(todo), "workers": parallel})
        _save_manifest(out, manifest)
    table = load_results(out)
    ensure_results_table(out, table)
    return table


def preflight(cfg: StudyConfig) -> None:
    """Check what the study will ask of each backend and profile before anything is written: every backend is
    known and importable, every profile loads and accepts the study's networks, and each (backend, rule,
    optimizer) can run (e.g. Lava runs neither BPTT nor Adam). One line (:class:`NeurorateError`) otherwise."""
    import neurorate as nr
    from neurorate.backends.base import (
        available_backends,
        backend_capabilities,
        check_available,
        check_compatible,
        get_backend,
    )
    from neurorate.hardware.profiles import load_profile
    from neurorate.training import check_resources

    for name in cfg.backends:
        if name not in available_backends():
            raise NeurorateError(f"unknown backend {name!r}; choose one of {', '.join(available_backends())}")
    profiles = {p: load_profile(p) for p in cfg.profiles if p is not None}
    for task in cfg.tasks:
        t = cfg.make_task(task, batch_size=1, seed=0)
        # the size ceilings and the memory of one ensemble (the largest unit of work), before any spec is drawn
        check_resources(cfg.hidden, t.n_in, t.n_out, cfg.batch, t.n_steps, cfg.iterations, cfg.n_networks(),
                        dtype=cfg.dtype)
        # one network of the study's shape: its options (activation, form, ...) and every profile's capacity
        spec = nr.NetworkSpec.random(n_in=t.n_in, n_hidden=cfg.hidden, n_out=t.n_out, gain=1.0, seed=0,
                                     form=cfg.form, activation=cfg.activation_for(task, t.loss_kind),
                                     alpha=t.alpha, dt=t.dt_seconds, input_bias=cfg.input_bias,
                                     recurrent_bias=cfg.recurrent_bias)
        for profile in profiles.values():
            profile.check(spec)
    first_profile = next(iter(profiles.values()), None)
    for name in cfg.backends:  # what each backend declares it runs (backends/base.py), then its install
        caps = backend_capabilities(name)
        for neuron in cfg.neurons:
            for rule in cfg.rules:
                check_compatible(caps, rule, cfg.optimizer if neuron == "rate" else None,
                                 first_profile if neuron == "rate" else None, neuron=neuron)
        check_available(name)
        get_backend(name)  # constructible


class StudyLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``DIR/.lock`` while a study runs in ``DIR``.

    The lock file holds the holder's pid, host and start time; a second study (or a ``--resume``) of the same
    directory fails at once with one line naming them. The kernel releases the lock when the holder exits,
    however it exits (SIGKILL included), so a stale lock file never blocks a resume. Creates ``DIR`` (a one-line
    error when it cannot be written to).
    """

    def __init__(self, out: str | Path):
        self.path = Path(out) / ".lock"
        self._fh = None

    def __enter__(self) -> StudyLock:
        import fcntl

        from neurorate.io.results import prepare_out_dir

        prepare_out_dir(self.path.parent)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise NeurorateError(f"{self.path.parent} is in use by another study ({holder}); wait for it to end "
                                 "or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None


def _prepare(out: Path, cfg: StudyConfig, resume: bool) -> None:
    (out / "results").mkdir(exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists() and not read_manifest(out)["finished"]:
        cfg_path.unlink()  # nothing finished here (e.g. a failed start): nothing to keep, start afresh
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NeurorateError(f"{cfg_path}: malformed study config ({exc})") from None
        if not isinstance(old, dict):
            raise NeurorateError(f"{cfg_path}: malformed study config (expected a JSON object)")
        if not resume:
            raise NeurorateError(f"{out} already holds a study; pass resume=True (--resume) or choose another --out")
        if old.get("digest") != cfg.digest():
            raise NeurorateError(f"{out} holds a study with a different config; resume it with the same config "
                                 "or choose another --out")
        return
    _atomic_write(cfg_path, json.dumps({"digest": cfg.digest(), "config": cfg.model_dump(mode="json")},
                                       indent=1).encode())


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


def _run_local(cfg: StudyConfig, todo: list[EnsembleJob], out: Path, manifest: dict, progress, run_dirs) -> None:
    from tqdm.auto import tqdm

    total = sum(progress_units(cfg, job) for job in todo)
    bar = tqdm(total=total, desc=f"study {cfg.name}: {len(todo)} ensembles x {cfg.n_networks()} networks",
               unit="it", disable=None if progress is None else not progress, dynamic_ncols=True)
    try:
        for k, job in enumerate(todo):
            bar.set_postfix_str(f"{k + 1}/{len(todo)} {job.key}")
            start = time.perf_counter()
            table = run_ensemble(cfg, job, progress=bar.update,
                                 run_dirs=out / "runs" / job.part_name[:-8] if run_dirs else None)
            _write_part(out, job, table)
            _record(out, manifest, job, table.num_rows, time.perf_counter() - start)
    finally:
        bar.close()

