"""``neurorate runs [DIR]``: the run directories below DIR as a table (or JSON) a user can scan: status (with
``stale`` for a run whose process is gone), task, rule, gain, seed, learning rate, progress and final loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from neurorate.errors import NeurorateError

COLUMNS = (("run", "RUN"), ("status", "STATUS"), ("task", "TASK"), ("rule", "RULE"), ("gain", "GAIN"),
           ("seed", "SEED"), ("lr", "LR"), ("progress", "ITERATIONS"), ("final_loss", "FINAL LOSS"),
           ("final_accuracy", "ACC"), ("started", "STARTED"))


def _cell(row: dict, key: str) -> str:
    if key == "progress":
        done, total = row.get("iterations_done"), row.get("iterations")
        if done is None and total is None:
            return "-"
        return f"{'?' if done is None else done}/{'?' if total is None else total}"
    v = row.get(key)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if key == "final_loss":
        return f"{v:.5f}"
    if key == "final_accuracy":
        return f"{v:.3f}"
    if key in ("gain", "lr"):
        return format(v, "g")
    if key == "started":
        return str(v)[:19].replace("T", " ")
    return str(v)


def table(rows: list[dict]) -> str:
    """The rows as an aligned text table (one header line, one line per run)."""
    cells = [[title for _, title in COLUMNS]] + [[_cell(r, k) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def register(app: typer.Typer) -> None:
    """Add the ``runs`` command to the main CLI."""

    @app.command()
    def runs(
        directory: Path = typer.Argument(Path("runs"), help="where to look (default: runs/, where `neurorate run` "
                                                           "writes); run directories below it are listed"),
        as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table"),
        status: str | None = typer.Option(None, help="only runs with this status (ok, diverged, interrupted, "
                                                     "failed, running, stale, unreadable)"),
    ):
        """List run directories: status (a run whose process is gone reads `stale`), task, rule, gain, seed, lr,
        iterations and final loss."""
        from neurorate.io.results import list_runs

        rows = list_runs(directory)
        if status is not None:
            wanted = {s.strip() for s in status.split(",")}
            known = {"ok", "diverged", "interrupted", "failed", "running", "stale", "unreadable"}
            if not wanted <= known:
                raise NeurorateError(f"--status: unknown status {', '.join(sorted(wanted - known))}; choose from "
                                     f"{', '.join(sorted(known))}")
            rows = [r for r in rows if r["status"] in wanted]
        if as_json:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo(f"no run directories in {directory}")
            return
        typer.echo(table(rows))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        typer.echo(f"{len(rows)} runs in {directory}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
