"""Running study ensembles as submitit jobs (SLURM on a cluster; ``local``/``debug`` executors on one machine).

Each ensemble is one job running :func:`neurorate.study.ensemble_job_main`, which writes the ensemble's parquet
part itself; this process records a job in the manifest only once its result has come back, so a study killed
while jobs are running resumes exactly as a local one does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from neurorate.errors import require


def run_submitit(cfg, todo: list, out: Path, manifest: dict, cluster: str | None, progress: bool | None,
                 record: Callable) -> None:
    """Submit every ensemble of ``todo`` and record each as it finishes.

    Parameters
    ----------
    cfg : the StudyConfig.
    todo : the :class:`~neurorate.study.EnsembleJob` list still to run.
    cluster : None (submitit decides: SLURM if present, else local), "local", "debug" (in-process) or "slurm".
    record : ``record(job, rows, wall)`` called in the submitting process after each finished job.
    """
    submitit = require("submitit", "cluster", "executor='submitit'")
    from tqdm.auto import tqdm

    from neurorate.study import EnsembleJob, ensemble_job_main

    executor = submitit.AutoExecutor(folder=str(out / "submitit"), cluster=cluster)
    executor.update_parameters(timeout_min=max(10, cfg.iterations // 10), name=f"neurorate-{cfg.name}")
    config = cfg.model_dump(mode="json")
    jobs = [(job, executor.submit(ensemble_job_main, config, dataclasses.asdict(job), str(out))) for job in todo]
    bar = tqdm(total=len(jobs), desc=f"study {cfg.name} (submitit)", unit="ensemble",
               disable=None if progress is None else not progress)
    try:
        for job, handle in jobs:
            done, rows, wall = handle.result()
            record(EnsembleJob(**done), rows, wall)
            bar.update(1)
    finally:
        bar.close()
