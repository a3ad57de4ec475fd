"""``neurorate study`` and ``neurorate report``: thin CLI wrappers over :func:`neurorate.studies.runner.study` and
:func:`neurorate.studies.report.report` (registered by ``neurorate.cli.app`` when this module exists)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from neurorate.errors import NeurorateError
from neurorate.studies.config import embedded_configs


def summary(name: str, table, path: Path) -> str:
    """The line ``neurorate study`` prints at the end: runs (networks) and ensembles, then the table's rows."""
    runs = len(set(table.column("run_id").to_pylist()))
    ensembles = len(set(table.column("ensemble").to_pylist()))
    return (f"study {name}: {runs} runs in {ensembles} ensemble{'s' if ensembles != 1 else ''} "
            f"({table.num_rows} logged rows) in {path}")


def register(app: typer.Typer) -> None:
    """Add the ``study`` and ``report`` commands to the main CLI."""

    @app.command()
    def study(
        config: str = typer.Option("paper", help=f"embedded config ({' | '.join(embedded_configs())}) or a TOML "
                                                 "file (fields under its study table)"),
        out: Optional[str] = typer.Option(None, help="study directory (default: results/<config name>)"),
        resume: bool = typer.Option(False, "--resume", help="skip the ensembles already finished in --out"),
        executor: str = typer.Option("local", help="local | submitit | submitit:local | submitit:debug | "
                                                   "submitit:slurm"),
        workers: Optional[int] = typer.Option(None, help="local executor: ensembles run in this many processes at "
                                                         "once (default: the CPU cores; 1: in-process)"),
        backend: Optional[str] = typer.Option(None, help="override the config's backends (comma-separated)"),
        profile: Optional[str] = typer.Option(None, help="override the config's profiles (comma-separated)"),
        neurons: Optional[str] = typer.Option(None, help="override the config's neurons (comma-separated: rate, lif, "
                                                         "alif; docs/spiking.md)"),
        iterations: Optional[int] = typer.Option(None, help="override the config's iterations"),
        report: bool = typer.Option(True, help="write the report (figures + report.md) at the end"),
        progress: Optional[bool] = typer.Option(None, help="progress bar (default: on a terminal)"),
        allow_large: bool = typer.Option(False, help="lift the size ceilings (networks per ensemble, runs in all, "
                                                     "hidden, batch, iterations; docs/cli.md); the memory check "
                                                     "stays"),
    ):
        """Run the initial-gain study (ensemble-batched, resumable) and write its parquet table and report."""
        from neurorate.studies.config import load_config
        from neurorate.studies.report import report as write_report
        from neurorate.studies.runner import study as run_study

        target = None
        try:
            cfg = load_config(config)
            overrides = {}
            if backend:
                overrides["backends"] = backend.split(",")
            if profile:
                overrides["profiles"] = profile.split(",")
            if neurons:
                overrides["neurons"] = neurons.split(",")
            if iterations is not None:
                overrides["iterations"] = iterations
            if overrides:
                cfg = load_config({**cfg.model_dump(), **overrides})
            if out is not None and not out.strip():
                raise NeurorateError("--out must name a study directory, got an empty path")
            target = Path(out) if out is not None else Path("results") / cfg.name
            table = run_study(cfg, out=target, resume=resume, progress=progress, executor=executor,
                              workers=workers, allow_large=allow_large)
            typer.echo(summary(cfg.name, table, target / "results.parquet"))
            if report:
                typer.echo(f"report: {write_report(target)}")
        except NeurorateError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt as exc:
            from neurorate.cli.app import echo_err
            from neurorate.signals import cause, exit_code
            from neurorate.studies.runner import read_manifest

            what = "interrupted" if cause(exc) == "Ctrl-C" else f"stopped by {cause(exc)}"
            if target is None or not (target / "config.json").exists():
                echo_err(f"{what} before the study started; nothing was written")
                raise typer.Exit(code=exit_code(exc)) from None
            try:
                done = len(read_manifest(target)["finished"])
            except NeurorateError:  # interrupted while the manifest could not be read: say so, keep the one line
                done = "no readable"
            echo_err(f"{what}: {done} finished ensembles are kept in {target}; continue with "
                     f"`neurorate study --config {config} --out {target} --resume`")
            raise typer.Exit(code=exit_code(exc)) from None

    @app.command()
    def report(directory: Path = typer.Argument(..., help="a study directory (neurorate study --out)")):
        """Figures and a markdown report (claims C1-C6 with statistics) of a study directory."""
        from neurorate.studies.report import report as write_report

        try:
            _not_a_run(directory)
            notes: list[str] = []
            path = write_report(directory, notes=notes)
            for note in notes:
                typer.echo(note)
            typer.echo(f"report: {path}")
        except NeurorateError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None


def _not_a_run(directory: Path) -> None:
    """``neurorate report`` on a run directory: one line saying what it is and where its results are."""
    from neurorate.io.dirs import classify, run_state

    if not directory.is_dir():
        return
    try:
        kind, _ = classify(directory)
    except OSError:
        return
    if kind == "run":
        status = run_state(directory).get("status", "?")
        raise NeurorateError(f"{directory} is a run directory (status {status}), not a study: its results are "
                             "result.json, metrics.jsonl and learning_curve.png there; `neurorate runs` lists runs")
    if kind == "ensemble":
        raise NeurorateError(f"{directory} is the directory of an ensemble of runs (net-XXX/), not a study; "
                             f"`neurorate runs {directory}` lists them")
