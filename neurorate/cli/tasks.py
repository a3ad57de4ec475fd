"""``neurorate tasks``: the tasks ``--task`` accepts, one line each, and the neurogym environments usable as
``neurogym:<env id>`` when neurogym is installed (docs/tasks.md).

The main CLI calls :func:`register`. Bad input raises :class:`~neurorate.errors.NeurorateError`, which the
main CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import warnings
from typing import Any

import typer

SUMMARIES = {
    "romo": "Romo delayed frequency comparison: two stimuli f1, f2 separated by a delay of 2-8 tau; report "
            "the larger one (working memory)",
    "2af": "perceptual decision (neurogym PerceptualDecisionMaking-v0): integrate a noisy stimulus, "
           "report its direction",
    "dms": "delayed match-to-sample (neurogym DelayMatchSample-v0): hold a sample over a delay, report "
           "match or non-match",
}
"""What each built-in task is, in one line (a plugin task's line is the first line of its class docstring)."""

NEUROGYM_SUMMARY = "any trial-based neurogym environment with discrete actions (reference adapter, slow)"
FIELDS = ("name", "loss", "n_in", "n_out", "n_steps", "dt", "time_unit", "summary")
"""The keys of each task of ``neurorate tasks --json``."""


def _summary(task) -> str:
    line = SUMMARIES.get(task.name) or next(iter((type(task).__doc__ or "").strip().splitlines()), "")
    return line.strip()


def task_rows() -> list[dict[str, Any]]:
    """One row per task ``make_task`` knows (built-ins and plugins; keys :data:`FIELDS`, plus ``error`` for a
    plugin task that cannot be built with its defaults), and the row of the neurogym adapter last."""
    from neurorate.tasks.base import available_tasks, make_task

    rows = []
    builtin = [n for n in SUMMARIES if n in available_tasks()]
    for name in builtin + [n for n in available_tasks() if n not in builtin and n != "neurogym"]:
        try:
            t = make_task(name, batch_size=1)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed with its reason, not a traceback
            rows.append({**dict.fromkeys(FIELDS), "name": name, "error": " ".join(str(exc).split())})
            continue
        rows.append({"name": name, "loss": t.loss_kind, "n_in": t.n_in, "n_out": t.n_out, "n_steps": t.n_steps,
                     "dt": t.dt, "time_unit": t.time_unit, "summary": _summary(t)})
    rows.append({**dict.fromkeys(FIELDS), "name": "neurogym:<env id>", "loss": "ce", "summary": NEUROGYM_SUMMARY})
    return rows


def neurogym_envs() -> dict[str, Any] | None:
    """``{"version", "usable", "not_usable"}``: the environments registered by neurogym that the adapter takes
    (a trial-based environment with a discrete action space, built with its default arguments) and the others
    with the reason; None when neurogym is not installed."""
    try:
        with warnings.catch_warnings():  # neurogym warns about gymnasium metadata on import
            warnings.simplefilter("ignore")
            import gymnasium
            import neurogym
            from neurogym.envs.registration import all_envs
    except ImportError:
        return None
    from importlib import metadata

    usable, not_usable = [], {}
    for env_id in all_envs():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = neurogym.make(env_id)
        except Exception as exc:  # noqa: BLE001 - e.g. an environment with required arguments
            reason = " ".join(str(exc).split(" was raised")[0].split())
            not_usable[env_id] = f"needs env_kwargs: {reason}"
            continue
        if not isinstance(env.action_space, gymnasium.spaces.Discrete):
            not_usable[env_id] = f"{type(env.action_space).__name__} action space (the adapter needs Discrete)"
        elif not hasattr(env.unwrapped, "new_trial"):
            not_usable[env_id] = "not a trial-based environment"
        else:
            usable.append(env_id)
    try:
        version = metadata.version("neurogym")
    except metadata.PackageNotFoundError:  # pragma: no cover - imported but not installed as a distribution
        version = None
    return {"version": version, "usable": usable, "not_usable": not_usable}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The task rows as an aligned text table."""
    titles = {"name": "TASK", "loss": "LOSS", "n_in": "IN", "n_out": "OUT", "n_steps": "STEPS", "dt": "DT",
              "summary": "WHAT IT IS"}

    def cell(r, k):
        if k == "summary" and r.get("error"):
            return f"cannot be built: {r['error']}"
        if k == "dt" and r.get("dt") is not None:
            return f"{r['dt']:g} {r['time_unit']}"
        return "-" if r.get(k) is None else str(r[k])

    cells = [list(titles.values())] + [[cell(r, k) for k in titles] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(titles) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]).rstrip() for line in cells)


def register(app: typer.Typer) -> None:
    """Add the ``tasks`` command to the main CLI."""

    @app.command()
    def tasks(as_json: bool = typer.Option(False, "--json", help="print one JSON object: tasks, neurogym")):
        """List the tasks --task accepts (loss, inputs/outputs, steps, what it is) and the neurogym environments
        usable as neurogym:<env id>."""
        rows, envs = task_rows(), neurogym_envs()
        if as_json:
            typer.echo(json.dumps({"tasks": rows, "neurogym": envs}))
            return
        typer.echo(format_table(rows))
        typer.echo("")
        if envs is None:
            typer.echo("neurogym is not installed: neurogym:<env id> needs it (pip install neurogym)")
            return
        width = max(40, shutil.get_terminal_size().columns - 1)
        typer.echo(f"neurogym {envs['version'] or ''} environments usable as --task neurogym:<env id> "
                   f"({len(envs['usable'])}):")
        typer.echo(textwrap.fill(", ".join(envs["usable"]), width, initial_indent="  ", subsequent_indent="  ",
                                 break_on_hyphens=False, break_long_words=False))
        if envs["not_usable"]:
            typer.echo("not usable with their default arguments:")
            for env_id, reason in envs["not_usable"].items():
                typer.echo(f"  {env_id}: {reason}")
