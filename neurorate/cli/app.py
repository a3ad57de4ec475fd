"""The ``neurorate`` command line: a thin layer over the Python API.

Every user mistake (unknown task/rule/backend, bad sizes, unwritable --out, missing extra, malformed file)
ends with one line on stderr and exit code 2; results are always written before anything is printed.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from neurorate.errors import NeurorateError
from neurorate.rules.registry import rule_names

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="neurorate: initial connectivity and biologically plausible learning in rate RNNs "
                       "(torch and Lava backends, hardware precision profiles).")

# Default of `neurorate run` with no options: small, fast, and it learns (see docs/cli.md).
# ReLU rates without the torch-default input bias: with tanh, e-prop stays on Romo's 0.017 "no memory" plateau at
# every gain and learning rate tried (docs/study.md); with these settings it leaves it at g >= 1.
RUN_DEFAULTS = dict(task="romo", rule="eprop", gain=1.5, lr=1e-3, lr_sgd=0.05, iterations=1500, hidden=64, batch=32,
                    activation="relu", input_bias=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    backend: str = typer.Option("torch", help="torch | lava (or an installed plugin)"),
    task: str = typer.Option(RUN_DEFAULTS["task"], help="romo | 2af | dms | neurogym:<env id>"),
    rule: str = typer.Option(RUN_DEFAULTS["rule"], help=" | ".join(rule_names())),
    gain: float = typer.Option(RUN_DEFAULTS["gain"], help="initial recurrent gain g: W_rec ~ N(0, g^2/N)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: 3e-3 with adam, 0.05 with sgd)"),
    iterations: int = typer.Option(RUN_DEFAULTS["iterations"], help="training iterations"),
    seed: int = typer.Option(0, help="seed of the network and of the task's batches"),
    optimizer: Optional[str] = typer.Option(None, help="adam | sgd (default: adam on torch, sgd on lava, where "
                                                    "updates are applied inside the Lava process)"),
    profile: Optional[str] = typer.Option(None, help="hardware profile (see `neurorate profiles list`)"),
    floss_iterations: int = typer.Option(0, help="local gradient-flossing pre-training iterations (paper: 100)"),
    floss_mode: str = typer.Option("state", help="state | onestep | full"),
    floss_every: Optional[int] = typer.Option(None, help="also floss after every N training iterations (torch)"),
    hidden: int = typer.Option(RUN_DEFAULTS["hidden"], help="hidden units N"),
    batch: int = typer.Option(RUN_DEFAULTS["batch"], help="trials per batch"),
    form: str = typer.Option("A", help="network form A | B | C (docs/model.md)"),
    activation: str = typer.Option(RUN_DEFAULTS["activation"], help="relu | tanh | identity"),
    input_bias: bool = typer.Option(RUN_DEFAULTS["input_bias"], help="torch-default input bias (saturates tanh units)"),
    tau: Optional[float] = typer.Option(None, help="unit time constant in the task's time unit (alpha = dt/tau)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (torch backend)"),
    lyapunov: bool = typer.Option(True, help="measure Lyapunov spectra before/after training"),
    out: Optional[Path] = typer.Option(None, help="run directory (default: runs/<timestamp>-<task>-<rule>)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    progress: Optional[bool] = typer.Option(None, help="progress bar (default: on a terminal)"),
    neuron: str = typer.Option("rate", help="rate | lif | alif (spiking variant, docs/spiking.md; torch, "
                               "eprop/eprop_random/bptt)"),
):
    """Train one network and write a run directory (config, metrics, specs, Lyapunov, plot)."""
    import neurorate as nr

    for name, value in (("iterations", iterations), ("hidden", hidden), ("batch", batch)):
        if value <= 0:
            _fail(f"--{name} must be > 0, got {value}")
    if gain < 0:
        _fail(f"--gain must be >= 0, got {gain}")
    if optimizer is None:
        optimizer = "sgd" if backend == "lava" else "adam"
    if lr is None:
        lr = RUN_DEFAULTS["lr"] if optimizer == "adam" else RUN_DEFAULTS["lr_sgd"]
    if lr <= 0:
        _fail(f"--lr must be > 0, got {lr}")
    if floss_iterations < 0:
        _fail(f"--floss-iterations must be >= 0, got {floss_iterations}")
    task_kwargs = {} if tau is None else {"tau": tau}
    t = nr.make_task(task, batch_size=batch, seed=seed, **task_kwargs)
    spec = nr.NetworkSpec.random(n_in=t.n_in, n_hidden=hidden, n_out=t.n_out, gain=gain, seed=seed, form=form,
                                 activation=activation, alpha=t.alpha, dt=t.dt_seconds, input_bias=input_bias)
    if neuron not in ("rate", "lif", "alif"):
        _fail(f"unknown neuron {neuron!r}; choose rate, lif or alif")
    if out is None:
        out = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{task.replace(':', '_')}-{rule}-g{gain:g}"
    if neuron != "rate":
        if backend != "torch" or profile is not None or floss_iterations:
            _fail(f"--neuron {neuron} runs on the torch backend without --profile or flossing")
        if optimizer != "adam":
            _fail(f"--neuron {neuron} trains with adam")
        result = nr.train(spec, t, rule=rule, iterations=iterations, lr=lr, neuron=neuron, out=out, lyapunov=False)
        _report(result, as_json, lyapunov=False)
        return
    if not as_json:
        typer.echo(f"neurorate run: {backend} backend, task {task}, rule {rule}, N={hidden}, gain={gain:g}, "
                   f"lr={lr:g}, {iterations} iterations -> {out}", err=True)
    result = nr.train(spec, t, rule=rule, backend=backend, iterations=iterations, lr=lr, optimizer=optimizer,
                      profile=profile, floss_iterations=floss_iterations, floss_mode=floss_mode,
                      floss_every=floss_every,
                      lyapunov=lyapunov, device=device, progress=progress, out=out)
    _report(result, as_json, lyapunov)


def _report(result, as_json: bool, lyapunov: bool) -> None:
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
        status += f" at iteration {result.diverged_at} (loss became NaN/inf; try a smaller --lr)"
    typer.echo(f"final loss {num(summary['final_loss'], '.5f')} (mean of last 10%), decision accuracy "
               f"{num(summary['final_accuracy'], '.3f')}, status {status}")
    if lyapunov:
        line = f"lambda_max per {result.lyapunov_unit}: before {lam(result.lambda_max_before)}"
        if result.lambda_max_flossed is not None:
            line += f", after flossing {lam(result.lambda_max_flossed)}"
        typer.echo(line + f", after training {lam(result.lambda_max_after)}")
    typer.echo(f"results written to {result.run_dir} (learning_curve.png, metrics.jsonl, spec_final.npz, result.json)")


@app.command()
def cite(methods: list[str] = typer.Argument(
        None, help="paper eprop rflo flossing lyapunov romo neurogym lava richlazy")):
    """Print the BibTeX of the paper and the methods neurorate implements."""
    from neurorate.provenance import citation

    typer.echo(citation(*(methods or ())))


# Commands contributed by the other modules of this package (each exposes register(app)); a module that fails
# to import is a broken install and must say so, never silently drop its commands.
for _module in ("neurorate.cli.lyapunov", "neurorate.cli.profiles", "neurorate.cli.study", "neurorate.cli.nir"):
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``neurorate`` script."""
    try:
        app(args=argv, standalone_mode=True)
    except NeurorateError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; results written so far are kept", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
