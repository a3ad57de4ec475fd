"""One study ensemble in its own process: ``python -m neurorate.studies.worker OUT JOB_JSON RUN_DIRS PARENT_PID``.

Started by :func:`neurorate.studies.executor.run_parallel`. Reads the study's config from ``OUT/config.json``, runs
:func:`neurorate.studies.ensemble.ensemble_job_main` (which writes the ensemble's parquet part) and talks to the parent
on stdout: ``P n`` after ``n`` more training iterations (at most one line per 0.5 s), then ``R {json}`` with the
job, its row count and wall time. A user error ends the process with one ``error:`` line on stderr and exit
status 2. A watchdog thread exits at once when the parent process is gone (a killed study leaves no orphans).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def _watchdog(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    """Run one ensemble; the exit status (0 done, 2 user error)."""
    out, job, run_dirs, parent = Path(argv[0]), json.loads(argv[1]), argv[2] == "1", int(argv[3])
    _watchdog(parent)
    from neurorate.errors import NeurorateError
    from neurorate.studies.ensemble import ensemble_job_main

    pending, last = [0], [time.monotonic()]

    def progress(n: int) -> None:
        pending[0] += n
        if time.monotonic() - last[0] > 0.5:
            print(f"P {pending[0]}", flush=True)
            pending[0], last[0] = 0, time.monotonic()

    try:
        config = json.loads((out / "config.json").read_text())["config"]
        done, rows, wall = ensemble_job_main(config, job, str(out), run_dirs, progress=progress)
    except NeurorateError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if pending[0]:
        print(f"P {pending[0]}", flush=True)
    print("R " + json.dumps({"job": done, "rows": rows, "wall": wall}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
