"""Running study ensembles beside each other: worker processes on this machine, or submitit jobs (SLURM).

Each ensemble is one unit of work running :func:`neurorate.studies.ensemble.ensemble_job_main`, which writes the
ensemble's parquet part itself; the submitting process records a job in the manifest only once its result has come back,
so a study killed while jobs are running resumes exactly as a sequential one does.

* :func:`run_parallel` (the local executor with ``workers > 1``): one ``python -m neurorate.studies.worker``
  process per ensemble, up to ``workers`` at once, one torch thread each, the longest ensembles first. Every
  ensemble draws its own seeded weights and batches, so the results are identical to a sequential run. A worker
  whose parent has died (SIGKILL) exits within a second, so a killed study leaves no orphaned computation.
* :func:`run_submitit`: SLURM on a cluster; ``local``/``debug`` executors on one machine.
"""

from __future__ import annotations

import dataclasses
import os
import queue as queue_module
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from neurorate.backends.base import MAX_THREADS, backend_capabilities, env_count
from neurorate.errors import NeurorateError, require
from neurorate.signals import Stopped
from neurorate.studies.ensemble import EnsembleJob, ensemble_job_main, progress_units

# cost of one flossing iteration (4 trials, k = 8, with its backward pass) in training iterations; measured on
# Romo, N = 64, 40 networks: 100 flossing iterations 40 s, 300 training iterations 9 s
_FLOSS_COST = 13.0
SMALL_STUDY = 5000  # network-iterations per ensemble below which the default runs in-process


def default_workers(cfg, n_jobs: int) -> int:
    """Worker processes for the local executor when none are asked for.

    ``NEURORATE_WORKERS`` if set; otherwise the usable CPU cores, except that a study runs in-process when it is
    small (fewer than ``SMALL_STUDY`` network-iterations per ensemble: a worker's start-up, importing torch, about
    3 s, would cost more than it saves) or has ensembles on a backend that declares ``own_processes`` (Lava already
    runs one OS process per network; two Lava ensembles side by side on 2 cores took 226 s against 181 s one after
    another). Never more than ``n_jobs``.
    """
    env = env_workers()
    if env is not None:
        wanted = env
    elif (any(backend_capabilities(b).own_processes for b in cfg.backends)
          or cfg.iterations * cfg.n_networks() < SMALL_STUDY):
        wanted = 1
    else:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return check_workers(wanted, n_jobs)


def env_workers() -> int | None:
    """The worker count of the environment variable ``NEURORATE_WORKERS`` (None when unset or empty); a value that
    is not an integer in 1..:data:`~neurorate.backends.base.MAX_THREADS` is a one-line error."""
    return env_count("NEURORATE_WORKERS", "one worker per CPU core")


def check_workers(workers, n_jobs: int) -> int:
    """Validate a worker count (an integer from 1 to :data:`~neurorate.backends.base.MAX_THREADS`; not a bool or a
    string) and cap it at the number of ensembles to run."""
    try:
        ok = not isinstance(workers, (bool, str)) and int(workers) == workers and 1 <= workers <= MAX_THREADS
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NeurorateError(f"workers must be an integer from 1 to {MAX_THREADS}, got {workers!r:.60}")
    return max(1, min(int(workers), n_jobs))


def check_executor(executor: str) -> None:
    """What a submitit executor needs, before the study directory exists: submitit installed (the ``cluster``
    extra) and, for ``submitit:slurm``, a SLURM cluster that submitit can reach (its own test: ``srun`` on the
    PATH). One line otherwise; the local executor needs nothing."""
    if not isinstance(executor, str) or not executor.startswith("submitit"):
        return
    require("submitit", "cluster", "executor='submitit'")
    if executor.partition(":")[2] == "slurm":
        from submitit.slurm.slurm import SlurmExecutor

        if SlurmExecutor.affinity() < 0:
            raise NeurorateError(f"executor {executor}: SLURM is not reachable from this machine (no srun on the "
                                 "PATH); run on a SLURM login node, or use --executor local or submitit:local")


def estimated_cost(cfg, job) -> float:
    """Relative cost of one ensemble (steps x iterations, BPTT twice e-prop, flossing included): orders the queue."""
    steps = cfg.make_task(job.task, batch_size=1, seed=0).n_steps
    its = cfg.iterations * (2.0 if job.rule == "bptt" else 1.0)
    if job.flossing:
        its += _FLOSS_COST * cfg.floss_iterations
    return float(steps) * its * backend_capabilities(job.backend).cost


def run_parallel(cfg, todo: list, out: Path, workers: int, progress: bool | None, run_dirs: bool,
                 record: Callable) -> None:
    """Run the ensembles of ``todo`` in up to ``workers`` worker processes, longest first; record each as it finishes.

    Each ensemble runs in a fresh ``python -m neurorate.studies.worker`` process (no re-import of the caller's
    ``__main__``, so a script without a ``__name__ == "__main__"`` guard is safe). Its stderr goes to
    ``out/logs/<part>.log``. ``record(job, rows, wall)`` runs in this process. An error in one ensemble stops
    the study: the finished ensembles stay recorded, the running ones are stopped (``resume`` reruns them) and
    the error is raised here with the path of its log.
    """
    import json
    import subprocess
    import sys

    from tqdm.auto import tqdm

    order = sorted(todo, key=lambda j: -estimated_cost(cfg, j))
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    events: queue_module.Queue = queue_module.Queue()
    bar = tqdm(total=sum(progress_units(cfg, job) for job in todo), unit="it", dynamic_ncols=True,
               desc=f"study {cfg.name}: {len(todo)} ensembles x {cfg.n_networks()} networks, {workers} workers",
               disable=None if progress is None else not progress)
    running: dict = {}
    env = {**os.environ, "NEURORATE_THREADS": os.environ.get("NEURORATE_THREADS", "1"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

    def read(proc, job) -> None:  # one thread per worker: its stdout lines become events
        result = None
        try:
            for line in proc.stdout:
                tag, _, payload = line.strip().partition(" ")
                try:
                    if tag == "P":
                        events.put(("progress", float(payload)))
                    elif tag == "R":
                        result = json.loads(payload)
                except ValueError:  # a line some library printed, not the protocol's
                    continue
        finally:
            events.put(("exit", job, proc.wait(), result))

    def start(job) -> None:
        log = open(logs / f"{job.part_name[:-8]}.log", "w")  # noqa: SIM115 (closed when the worker exits)
        cmd = [sys.executable, "-m", "neurorate.studies.worker", str(out), json.dumps(dataclasses.asdict(job)),
               "1" if run_dirs else "0", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        running[job.key] = (proc, log)
        threading.Thread(target=read, args=(proc, job), daemon=True).start()

    queued, done, carry = list(order), 0, 0.0
    try:
        while queued or running:
            while queued and len(running) < workers:
                start(queued.pop(0))
            kind, *rest = events.get()
            if kind == "progress":  # whole iterations on the bar; spiking ensembles report fractions
                carry += rest[0]
                bar.update(int(carry))
                carry -= int(carry)
                continue
            job, code, result = rest
            running.pop(job.key)[1].close()
            if code in (-signal.SIGTERM, -signal.SIGHUP):  # the signal reached the workers too (a SLURM time
                raise Stopped(-code)  # limit signals the whole job): the study stops as if it had received it
            if code != 0 or result is None:
                log = logs / f"{job.part_name[:-8]}.log"
                tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
                raise NeurorateError(f"ensemble {job.key} failed (exit {code}): {tail[0].removeprefix('error: ')} "
                                     f"(log: {log}); the {done} finished ensembles are kept, rerun with resume")
            record(EnsembleJob(**result["job"]), result["rows"], result["wall"])
            done += 1
            bar.set_postfix_str(f"{done}/{len(todo)} done")
    finally:
        for proc, log in running.values():  # an error or Ctrl-C: stop the others (resume reruns them)
            proc.kill()
            proc.wait()
            log.close()
        bar.close()


def run_submitit(cfg, todo: list, out: Path, manifest: dict, cluster: str | None, progress: bool | None,
                 record: Callable) -> None:
    """Submit every ensemble of ``todo`` and record each as it finishes.

    Parameters
    ----------
    cfg : the StudyConfig.
    todo : the :class:`~neurorate.studies.ensemble.EnsembleJob` list still to run.
    cluster : None (submitit decides: SLURM if present, else local), "local", "debug" (in-process) or "slurm".
    record : ``record(job, rows, wall)`` called in the submitting process after each finished job.
    """
    submitit = require("submitit", "cluster", "executor='submitit'")
    from tqdm.auto import tqdm

    executor = submitit.AutoExecutor(folder=str(out / "submitit"), cluster=cluster)
    executor.update_parameters(timeout_min=max(10, cfg.iterations // 10), name=f"neurorate-{cfg.name}")
    config = cfg.model_dump(mode="json")
    jobs = [(job, executor.submit(ensemble_job_main, config, dataclasses.asdict(job), str(out))) for job in todo]
    bar = tqdm(total=len(jobs), desc=f"study {cfg.name} (submitit)", unit="ensemble",
               disable=None if progress is None else not progress)
    try:
        for _job, handle in jobs:
            done, rows, wall = handle.result()
            record(EnsembleJob(**done), rows, wall)
            bar.update(1)
    finally:
        bar.close()
