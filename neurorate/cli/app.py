"""The ``neurorate`` command line: a thin layer over the Python API.

Every user mistake (unknown task/rule/backend, bad sizes, unwritable --out, missing extra, malformed file)
ends with one line on stderr and exit code 2; results are always written before anything is printed.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from neurorate.defaults import RUN_DEFAULTS
from neurorate.errors import NeurorateError
from neurorate.learning.registry import rule_help

HELP_MAX_WIDTH = 1000
"""Help is as wide as the terminal: click's plain formatter (without rich, or with TYPER_USE_RICH=0) stops at 80
columns unless told otherwise; with this cap it takes ``shutil.get_terminal_size()`` when it renders (COLUMNS first,
else the terminal's size, else 80 columns), as rich's help does by itself."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"max_content_width": HELP_MAX_WIDTH},
                  help="neurorate: initial connectivity and biologically plausible learning in rate RNNs "
                       "(torch and Lava backends, hardware precision profiles).")

_FMT = lambda v: format(v, "g")  # noqa: E731


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def check_number(name: str, value: float | None, minimum: float = 0.0, strict: bool = True) -> None:
    """One line for a value that is not finite (named as such) or not above ``minimum``."""
    if value is None:
        return
    if not math.isfinite(value):
        raise NeurorateError(f"--{name} must be finite, got {value}")
    if (value <= minimum) if strict else (value < minimum):
        raise NeurorateError(f"--{name} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")


def _version(value: bool) -> None:
    if value:
        from neurorate import __version__

        typer.echo(f"neurorate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """neurorate: initial connectivity and biologically plausible learning in rate RNNs."""


def default_run_dir(task: str, rule: str, gain: float, seed: int) -> tuple[Path, str]:
    """``runs/`` and the stem ``<timestamp>-<task>-<rule>-g<gain>-s<seed>`` of a default run directory (a unique
    suffix is added when it is created, see :func:`neurorate.io.results.unique_run_dir`)."""
    return Path("runs"), f"{time.strftime('%Y%m%d-%H%M%S')}-{task.replace(':', '_')}-{rule}-g{gain:g}-s{seed}"


NETWORK_OPTIONS = ("hidden", "gain", "form", "activation", "input_bias")
"""The options of ``neurorate run`` that draw the network: ``--init`` takes the network from a file instead."""


def given(ctx, name: str) -> bool:
    """Was the option ``name`` given on the command line (not its default)?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command()
def run(
    ctx: typer.Context,
    backend: str = typer.Option("torch", help="torch | lava (or an installed plugin)"),
    task: str = typer.Option(RUN_DEFAULTS["task"], help="romo | 2af | dms | neurogym:<env id>"),
    rule: str = typer.Option(RUN_DEFAULTS["rule"], help=rule_help()),
    gain: float = typer.Option(RUN_DEFAULTS["gain"], help="initial recurrent gain g: W_rec ~ N(0, g^2/N)"),
    lr: Optional[float] = typer.Option(None, help=f"learning rate (default: {_FMT(RUN_DEFAULTS['lr'])} with adam, "
                                                  f"{_FMT(RUN_DEFAULTS['lr_sgd'])} with sgd)"),
    iterations: int = typer.Option(RUN_DEFAULTS["iterations"], help="training iterations"),
    seed: int = typer.Option(RUN_DEFAULTS["seed"], help="seed of the network and of the task's batches"),
    optimizer: Optional[str] = typer.Option(None, help="adam | sgd (default: the backend's first, adam on torch, "
                                                    "sgd on lava, where updates are applied inside the Lava "
                                                    "process)"),
    profile: Optional[str] = typer.Option(None, help="hardware profile (see `neurorate profiles list`)"),
    floss_iterations: int = typer.Option(0, help="local gradient-flossing pre-training iterations (paper: 100)"),
    floss_mode: str = typer.Option("state", help="state | onestep | full"),
    floss_every: Optional[int] = typer.Option(None, help="also floss after every N training iterations (torch)"),
    grad_alignment_every: Optional[int] = typer.Option(None, help="every K iterations, record the cosine, relative "
                                                       "error and sign agreement of the rule's update with the "
                                                       "exact gradient in metrics.jsonl (one exact gradient each; "
                                                       "torch, rate neurons)"),
    hidden: int = typer.Option(RUN_DEFAULTS["hidden"], help="hidden units N"),
    batch: Optional[int] = typer.Option(None, help=f"trials per batch (default {RUN_DEFAULTS['batch']}; 1 with "
                                                   "--lava-graph loihi, which runs one trial at a time)"),
    form: str = typer.Option(RUN_DEFAULTS["form"], help="network form A | B | C (docs/model.md)"),
    activation: str = typer.Option(RUN_DEFAULTS["activation"], help="relu | tanh | identity"),
    input_bias: bool = typer.Option(RUN_DEFAULTS["input_bias"], help="torch-default input bias (saturates tanh units)"),
    tau: Optional[float] = typer.Option(None, help="unit time constant in the task's time unit (alpha = dt/tau)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (torch backend)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads of the training (torch backend; sets "
                                          "NEURORATE_THREADS; default: NEURORATE_THREADS, else 1)"),
    lyapunov: bool = typer.Option(True, help="measure Lyapunov spectra before/after training"),
    out: Optional[str] = typer.Option(None, help="run directory, new or empty (default: "
                                                 "runs/<timestamp>-<task>-<rule>-g<gain>-s<seed>-<unique suffix>)"),
    overwrite: bool = typer.Option(False, help="replace an existing run directory given as --out (whole)"),
    allow_large: bool = typer.Option(False, help="lift the size ceilings (iterations, hidden, batch; docs/cli.md); "
                                                 "the memory check stays"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    progress: Optional[bool] = typer.Option(None, help="progress bar (default: on a terminal)"),
    neuron: str = typer.Option("rate", help="rate | lif | alif (spiking variant, docs/spiking.md; torch, "
                               "eprop/eprop_random/bptt)"),
    lava_graph: Optional[str] = typer.Option(None, "--lava-graph", help="fused | loihi: the Lava graph (lava "
                                             "backend; default fused; loihi = Lava's learning engine, form A, "
                                             "relu, --batch 1, docs/lava.md)"),
    init: Optional[str] = typer.Option(None, "--init", help="start from a saved network: a spec file (.npz) or a "
                                       "finished run directory (its spec_final.npz); --hidden, --gain, --form, "
                                       "--activation and --input-bias then come from it"),
):
    """Train one network and write a run directory (config, metrics, specs, Lyapunov, plot)."""
    import neurorate as nr
    from neurorate.backends.base import backend_capabilities, check_compatible, check_threads
    from neurorate.io.results import unique_run_dir
    from neurorate.training import check_resources, check_sizes, check_train

    made: Path | None = None
    try:
        if out is not None and not out.strip():
            raise NeurorateError("--out must name a directory, got an empty path")
        if batch is None:  # Loihi has no batch dimension: the loihi graph trains on one trial at a time
            batch = 1 if lava_graph == "loihi" else RUN_DEFAULTS["batch"]
        for name, value in (("iterations", iterations), ("hidden", hidden), ("batch", batch)):
            if value <= 0:
                raise NeurorateError(f"--{name} must be > 0, got {value}")
        check_number("gain", gain, strict=False)
        check_number("lr", lr)
        check_number("tau", tau)
        if floss_iterations < 0:
            raise NeurorateError(f"--floss-iterations must be >= 0, got {floss_iterations}")
        if neuron not in ("rate", "lif", "alif"):
            raise NeurorateError(f"unknown neuron {neuron!r}; choose rate, lif or alif")
        caps = backend_capabilities(backend)  # the backend's declared defaults and limits (backends/base.py)
        check_compatible(caps, neuron=neuron)
        if lava_graph is not None and "graph" not in caps.options:
            raise NeurorateError(f"--lava-graph is an option of the lava backend, not of {backend!r}")
        backend_options = {} if lava_graph is None else {"graph": lava_graph}
        if threads is not None:
            check_threads(threads, "--threads")  # 1 to MAX_THREADS (docs/cli.md)
            if not caps.threads:
                raise NeurorateError(f"--threads is an option of backends that take a thread count, not of "
                                     f"{backend!r}")
            os.environ["NEURORATE_THREADS"] = str(threads)  # the backend's and the compiled kernel's threads
        if optimizer is None:
            optimizer = caps.default_optimizer
        if lr is None:
            lr = caps.default_lr.get(optimizer, RUN_DEFAULTS["lr"] if optimizer == "adam" else RUN_DEFAULTS["lr_sgd"])
        if neuron != "rate":
            if profile is not None or floss_iterations or grad_alignment_every is not None:
                raise NeurorateError(f"--neuron {neuron} runs without --profile, flossing or --grad-alignment-every")
            if optimizer != "adam":
                raise NeurorateError(f"--neuron {neuron} trains with adam")
            if form != RUN_DEFAULTS["form"] or activation != RUN_DEFAULTS["activation"]:
                raise NeurorateError(f"--neuron {neuron} has spiking units: --form and --activation apply to rate "
                                     "networks only (docs/spiking.md)")
        check_sizes(allow_large, iterations=iterations, hidden=hidden, batch=batch)
        task_kwargs = {} if tau is None else {"tau": tau}
        t = nr.make_task(task, batch_size=batch, seed=seed, **task_kwargs)
        check_resources(hidden, t.n_in, t.n_out, batch, t.n_steps, iterations, rule=rule,
                        lyapunov_k=8 if lyapunov and neuron == "rate" else None, allow_large=allow_large)
        if init is not None:
            spec = _start_network(ctx, init, t)
            hidden, gain = spec.n_hidden, spec.init.get("gain", gain)
        else:
            spec = nr.NetworkSpec.random(n_in=t.n_in, n_hidden=hidden, n_out=t.n_out, gain=gain, seed=seed,
                                         form=form, activation=activation, alpha=t.alpha, dt=t.dt_seconds,
                                         input_bias=input_bias)
        if neuron != "rate":
            kwargs = dict(rule=rule, backend=backend, iterations=iterations, lr=lr, neuron=neuron, lyapunov=False,
                          device=device)
        else:
            kwargs = dict(rule=rule, backend=backend, iterations=iterations, lr=lr, optimizer=optimizer,
                          profile=profile, floss_iterations=floss_iterations, floss_mode=floss_mode,
                          floss_every=floss_every, lyapunov=lyapunov, device=device, progress=progress,
                          backend_options=backend_options or None, grad_alignment_every=grad_alignment_every)
        check_train(spec, t, out=out, overwrite=overwrite, allow_large=allow_large,
                    **{k: v for k, v in kwargs.items() if k != "progress"})
        if out is None:
            made = unique_run_dir(*default_run_dir(task, rule, gain, seed))
            out = str(made)
        if not as_json:
            graph = f" ({lava_graph} graph)" if lava_graph else ""
            network = f"N={hidden}, gain={gain:g}" if init is None else f"N={hidden}, network from {init}"
            typer.echo(f"neurorate run: {backend} backend{graph}, task {task}, rule {rule}, {network}, "
                       f"lr={lr:g}, {iterations} iterations -> {out}", err=True)
    except KeyboardInterrupt as exc:
        _remove_if_empty(made)
        _interrupted("interrupted before training started; nothing was written", exc)
    except NeurorateError:
        _remove_if_empty(made)
        raise
    try:
        result = nr.train(spec, t, out=out, overwrite=overwrite and made is None, allow_large=allow_large, **kwargs)
    except KeyboardInterrupt as exc:  # RunInterrupted says what was kept
        _interrupted(str(exc) or f"interrupted; what was written so far is in {out}", exc)
    _report(result, as_json, lyapunov=lyapunov and neuron == "rate")


def _start_network(ctx, init: str, task, option: str = "--init"):
    """The network of ``--init`` (``neurorate lyapunov --spec``: ``option``; :func:`neurorate.io.results.
    load_start`), checked against the task, with the file it came from recorded in its ``init`` metadata
    (``config.json``, ``spec_initial.npz``)."""
    import dataclasses

    from neurorate.io.results import load_start

    clash = [f"--{n.replace('_', '-')}" for n in NETWORK_OPTIONS if given(ctx, n)]
    if clash:
        one = len(clash) == 1
        raise NeurorateError(f"{option} takes the network from {init}; {', '.join(clash)} {'does' if one else 'do'} "
                             f"not apply to it (leave {'it' if one else 'them'} out)")
    spec = load_start(init)
    if (spec.n_in, spec.n_out) != (task.n_in, task.n_out):
        raise NeurorateError(f"{option} {init}: the network has n_in={spec.n_in}, n_out={spec.n_out} but task "
                             f"{task.name!r} needs n_in={task.n_in}, n_out={task.n_out}")
    return dataclasses.replace(spec, init={**spec.init, "init_from": str(init)})


def _interrupted(message: str, exc: BaseException | None = None) -> None:
    """Ctrl-C, SIGTERM or SIGHUP inside a command: one line on stderr (when stderr is still there), exit code
    130, 143 or 129 (:func:`neurorate.signals.exit_code`; typer would exit silently)."""
    from neurorate.signals import exit_code

    echo_err(message)
    raise typer.Exit(code=exit_code(exc))


def echo_err(message: str) -> None:
    """One line on stderr; nothing when stderr is gone (a closed terminal after SIGHUP, a closed pipe)."""
    try:
        typer.echo(message, err=True)
    except (OSError, ValueError):
        pass


def _remove_if_empty(path: Path | None) -> None:
    """Remove a default run directory that a failed start left empty (or holding only its lock file)."""
    if path is None or not path.is_dir():
        return
    left = list(path.iterdir())
    if all(p.name == ".lock" for p in left):
        for p in left:
            p.unlink()
        path.rmdir()


def _report(result, as_json: bool, lyapunov: bool) -> None:
    from neurorate.training import DIVERGENCE_FACTOR

    summary = result.summary()
    paths = {"run_dir": str(result.run_dir), "metrics": str(result.run_dir / "metrics.jsonl"),
             "spec_final": str(result.run_dir / "spec_final.npz"),
             "learning_curve": str(result.run_dir / "learning_curve.png")}
    if as_json:
        summary["paths"] = paths
        typer.echo(json.dumps(summary))
        return
    lam = lambda v: "n/a" if v is None else f"{v:+.4f}"  # noqa: E731
    num = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    status = summary["status"]
    if result.diverged:
        status += (f" at iteration {result.diverged_at} (the loss became NaN/inf or more than "
                   f"{DIVERGENCE_FACTOR:g}x its reference, docs/cli.md; try a smaller --lr)")
    typer.echo(f"final loss {num(summary['final_loss'], '.5f')} (mean of last 10%), decision accuracy "
               f"{num(summary['final_accuracy'], '.3f')}")
    if lyapunov:
        line = f"lambda_max per {result.lyapunov_unit}: before {lam(result.lambda_max_before)}"
        if result.lambda_max_flossed is not None:
            line += f", after flossing {lam(result.lambda_max_flossed)}"
        typer.echo(line + f", after training {lam(result.lambda_max_after)}")
    typer.echo(f"results written to {result.run_dir} (learning_curve.png, metrics.jsonl, spec_final.npz, "
               f"result.json); status {status}")


@app.command()
def cite(methods: list[str] = typer.Argument(
        None, help="paper eprop rflo flossing lyapunov romo neurogym lava richlazy")):
    """Print the BibTeX of the paper and the methods neurorate implements."""
    from neurorate.provenance import citation

    typer.echo(citation(*(methods or ())))


# Commands contributed by the other modules of this package (each exposes register(app)); a module that fails
# to import is a broken install and must say so, never silently drop its commands.
for _module in ("neurorate.cli.lyapunov", "neurorate.cli.profiles", "neurorate.cli.study", "neurorate.cli.nir",
                "neurorate.cli.runs", "neurorate.cli.tasks"):
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``neurorate`` script: a user mistake (a :class:`NeurorateError` or a malformed command
    line) is one ``error:`` line on stderr and exit code 2; Ctrl-C is one line and exit code 130, SIGTERM 143 and
    SIGHUP 129 (:mod:`neurorate.signals`)."""
    # typer raises click's exceptions (its own vendored click or the click package): the base class of all
    # command-line errors is found from typer.BadParameter, whichever it is
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    from neurorate.signals import exit_code, install

    install()  # SIGTERM and SIGHUP end a command like Ctrl-C (a partial result, one line, exit 143 / 129)
    try:
        rc = app(args=argv, standalone_mode=False)
    except NeurorateError as exc:
        echo_err(f"error: {exc}")
        sys.exit(2)
    except click_exception as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `neurorate` or a group without its command: typer has
            sys.exit(2)  # printed the help already
        hint = "" if ctx is None else f" (see `{ctx.command_path} --help`)"
        typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort) as exc:
        echo_err(str(exc) or "interrupted; results written so far are kept")
        sys.exit(exit_code(exc))
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    main()
