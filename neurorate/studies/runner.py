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

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.io.dirs import FORMAT_VERSION, STUDY_FORMAT, DirLock, OutputError, classify
from neurorate.studies.config import StudyConfig, load_config
from neurorate.studies.ensemble import (  # noqa: F401  (the unit of work; names kept importable from here)
    EnsembleJob,
    _atomic_write,
    _rows,
    _write_part,
    ensemble_job_main,
    plan,
    progress_units,
    run_ensemble,
)
from neurorate.studies.executor import (
    check_executor,
    check_workers,
    default_workers,
    env_workers,
    run_parallel,
    run_submitit,
)

EXECUTORS = ("local", "submitit", "submitit:local", "submitit:debug", "submitit:slurm")


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
          run_dirs: bool = False, workers: int | None = None, allow_large: bool = False):
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
    allow_large : lift the size ceilings (:data:`neurorate.training.LIMITS`: networks per ensemble, runs in all,
        hidden, batch, iterations), as ``--allow-large`` or ``NEURORATE_ALLOW_LARGE=1``; the memory check stays.

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
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise NeurorateError(f"unknown executor {executor!r:.60}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None:  # checked before the study directory is created
        if executor != "local":
            raise NeurorateError(f"workers applies to the local executor; {executor} schedules its own jobs")

        check_workers(workers, 1)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise NeurorateError(f"out must be a path (str or pathlib.Path), got {out!r:.60}")
    if out is None or str(out).strip() == "":
        raise NeurorateError("out must name a study directory, got an empty path")
    for name, value in (("resume", resume), ("run_dirs", run_dirs), ("allow_large", allow_large)):
        if not isinstance(value, bool):
            raise NeurorateError(f"{name} must be True or False, got {value!r:.60}")
    if progress is not None and not isinstance(progress, bool):
        raise NeurorateError(f"progress must be True, False or None, got {progress!r:.60}")
    preflight(cfg, allow_large=allow_large, executor=executor)
    out = check_study_dir(out)
    with StudyLock(out), _allowing_large(allow_large):
        try:
            return _study(cfg, out, resume, progress, executor, run_dirs, workers)
        except OutputError as exc:
            raise OutputError(f"{exc}; {_kept(out)}") from None
        except OSError as exc:  # a write outside the package's own helpers (a log, results/): the same line
            where = exc.filename or out
            raise OutputError(f"cannot write {where}: {exc.strerror or exc}; {_kept(out)}") from None


@contextlib.contextmanager
def _allowing_large(allow_large: bool):
    """While a study runs with ``allow_large``: ``NEURORATE_ALLOW_LARGE=1`` in this process's environment, so that
    the ensembles' :func:`neurorate.train` calls and the worker processes and submitit jobs they start (which
    inherit the environment) lift the same ceilings the study's preflight lifted."""
    if not allow_large or os.environ.get("NEURORATE_ALLOW_LARGE", "").strip() not in ("", "0"):
        yield
        return
    before = os.environ.get("NEURORATE_ALLOW_LARGE")
    os.environ["NEURORATE_ALLOW_LARGE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("NEURORATE_ALLOW_LARGE", None)
        else:
            os.environ["NEURORATE_ALLOW_LARGE"] = before


def _kept(out: Path) -> str:
    """What a study stopped by an I/O failure keeps, for its one line."""
    try:
        done = len(read_manifest(out)["finished"])
    except NeurorateError:
        done = 0
    return (f"the {done} finished ensembles are kept in {out}; free space (or fix the permission) and continue "
            "with --resume")


def _study(cfg: StudyConfig, out: Path, resume: bool, progress, executor: str, run_dirs: bool, workers):
    _prepare(out, cfg, resume)
    manifest = read_manifest(out)
    manifest["config_digest"] = cfg.digest()
    todo = [j for j in plan(cfg) if j.key not in manifest["finished"]]
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    n_workers = 1
    if executor == "local":
        n_workers = default_workers(cfg, len(todo)) if workers is None else check_workers(workers, len(todo))
        if n_workers > 1:
            run_parallel(cfg, todo, out, n_workers, progress, run_dirs,
                         lambda job, rows, wall: _record(out, manifest, job, rows, wall))
        else:
            _run_local(cfg, todo, out, manifest, progress, run_dirs)
    else:
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


def preflight(cfg: StudyConfig, allow_large: bool = False, executor: str = "local") -> None:
    """Check what the study will ask of each backend and profile before anything is written: first the size
    ceilings (networks per ensemble and runs in all, without drawing a network; ``allow_large`` lifts them), the
    thread and worker variables (``NEURORATE_THREADS``, ``NEURORATE_WORKERS``) and the executor
    (:func:`~neurorate.studies.executor.check_executor`: submitit installed, SLURM reachable); then every backend
    is known and importable, the study's device exists for the backends that run on it, every profile loads and
    accepts the study's networks, and each (backend, rule, optimizer) can run (e.g. Lava runs neither BPTT nor
    Adam). One line (:class:`NeurorateError`) otherwise."""
    import neurorate as nr
    from neurorate.backends.base import (
        available_backends,
        backend_capabilities,
        check_available,
        check_compatible,
        check_device,
        env_threads,
        get_backend,
    )
    from neurorate.hardware.profiles import load_profile
    from neurorate.training import check_resources, check_sizes

    check_sizes(allow_large, networks=cfg.n_networks(), runs=n_runs(cfg), hidden=cfg.hidden, batch=cfg.batch,
                iterations=cfg.iterations)
    env_threads()
    env_workers()
    check_executor(executor)
    for name in cfg.backends:
        if name not in available_backends():
            raise NeurorateError(f"unknown backend {name!r}; choose one of {', '.join(available_backends())}")
    profiles = {p: load_profile(p) for p in cfg.profiles if p is not None}
    placed = any(backend_capabilities(name).devices for name in cfg.backends)  # a backend that runs on cfg.device
    for name in cfg.backends:  # the device exists on this machine (a CUDA index, a GPU at all) before any work
        if backend_capabilities(name).devices or not placed:
            check_device(backend_capabilities(name), cfg.device, option="device")
    for task in cfg.tasks:
        t = cfg.make_task(task, batch_size=1, seed=0)
        # the size ceilings and the memory of one ensemble (the largest unit of work), before any spec is drawn
        check_resources(cfg.hidden, t.n_in, t.n_out, cfg.batch, t.n_steps, cfg.iterations, cfg.n_networks(),
                        dtype=cfg.dtype, device=cfg.device if placed else None, allow_large=allow_large)
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


def n_runs(cfg: StudyConfig) -> int:
    """The networks a study trains in all (its ensembles, as :func:`~neurorate.studies.ensemble.plan` lists them,
    times the networks of each), counted without listing them."""
    rules = sum(sum(1 for floss in cfg.flossing if not floss or rule in cfg.floss_rules) for rule in cfg.rules)
    ensembles = len(cfg.tasks) * len(cfg.neurons) * rules * len(cfg.ranks) * len(cfg.backends) * len(cfg.profiles)
    return ensembles * cfg.n_networks()


class StudyLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``DIR/.lock`` while a study runs in ``DIR``
    (:class:`neurorate.io.dirs.DirLock`).

    The lock file holds the holder's pid, host and start time; a second study (or a ``--resume``) of the same
    directory fails at once with one line naming them. The kernel releases the lock when the holder exits,
    however it exits (SIGKILL included), so a stale lock file never blocks a resume. Creates ``DIR`` (a one-line
    error when it cannot be written to).
    """

    def __init__(self, out: str | Path):
        self.path = Path(out) / ".lock"
        self._lock = None

    def __enter__(self) -> StudyLock:
        from neurorate.io.results import prepare_out_dir

        prepare_out_dir(self.path.parent)
        self._lock = DirLock(self.path.parent, "another study", "choose another --out").acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def check_study_dir(out: str | Path) -> Path:
    """A study writes only into a new directory, an empty one or a study directory of its own (its
    ``config.json`` marked ``neurorate-study``; :func:`neurorate.io.dirs.classify`): anything else (a run
    directory, a folder of the user's files) is a one-line error, before anything is written. A missing ``out``
    must be creatable (checked by making and removing a directory beside it)."""
    from neurorate.io.results import _check_creatable

    path = Path(out).expanduser()
    if not path.exists() and not path.is_symlink():
        _check_creatable(path, "out")
        return path
    if not path.is_dir():
        raise NeurorateError(f"--out {path} exists and is not a directory")
    try:
        kind, detail = classify(path)
    except OSError as exc:
        raise NeurorateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if kind not in ("empty", "study"):
        what = f"a {kind} directory" if kind != "foreign" else f"not empty: {detail}"
        raise NeurorateError(f"--out {path} is {what}; a study writes only into a new, empty or study directory "
                             "(choose another --out)")
    return path


def _prepare(out: Path, cfg: StudyConfig, resume: bool) -> None:
    check_study_dir(out)  # again, under the lock: nothing else moved in since the first check
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
    _atomic_write(cfg_path, json.dumps({"format": STUDY_FORMAT, "format_version": FORMAT_VERSION,
                                        "digest": cfg.digest(), "config": cfg.model_dump(mode="json")},
                                       indent=1).encode())


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

