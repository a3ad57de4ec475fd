"""``neurorate lyapunov``: the Lyapunov spectrum of a freshly drawn network on a task, printed and plotted.

The main CLI calls :func:`register` to add the command. Bad input raises :class:`NeurorateError`, which the
main CLI turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from neurorate.errors import NeurorateError


def _plot(spectrum, path: Path, title: str) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std = np.asarray(spectrum.mean), np.asarray(spectrum.std)
    idx = np.arange(1, mean.size + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(idx, mean, ".-", color="C0", label="mean over streams")
    if np.any(std > 0):
        ax.fill_between(idx, mean - std, mean + std, color="C0", alpha=0.25, label="± s.d.")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("index i")
    ax.set_ylabel(f"λ_i (per {spectrum.unit})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def lyapunov_command(
    gain: float = typer.Option(1.0, help="initial recurrent gain g: W_rec ~ N(0, g^2/N)"),
    hidden: int = typer.Option(64, help="hidden units N"),
    task: str = typer.Option("romo", help="romo | 2af | dms | neurogym:<env id>"),
    seed: int = typer.Option(0, help="seed of the network (the input streams use the task's Lyapunov batches)"),
    k: int | None = typer.Option(None, help="number of exponents (default N: the full spectrum)"),
    steps: int | None = typer.Option(None, help="steps accumulated (default: 8 trials minus the warm-up)"),
    units: str = typer.Option("step", help="step | tau | second"),
    form: str = typer.Option("A", help="network form A | B | C"),
    activation: str | None = typer.Option(None, help="tanh | relu | identity (default: tanh for romo, relu otherwise)"),
    streams: int = typer.Option(16, help="input streams averaged over"),
    out: Path | None = typer.Option(None, help="output directory (default: runs/lyapunov-<timestamp>)"),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
) -> None:
    """Lyapunov spectrum (QR method) of a random network driven by a task: print, plot (PNG) and save (JSON)."""
    from neurorate.analysis.lyapunov import UNITS, lyapunov_spectrum
    from neurorate.model.spec import NetworkSpec
    from neurorate.tasks.base import make_task

    if hidden < 1:
        raise NeurorateError(f"--hidden must be >= 1, got {hidden}")
    if gain < 0:
        raise NeurorateError(f"--gain must be >= 0, got {gain}")
    if units not in UNITS:
        raise NeurorateError(f"--units must be one of {', '.join(UNITS)}, got {units!r}")
    t = make_task(task, seed=seed)
    act = activation or ("tanh" if t.loss_kind == "mse" else "relu")
    spec = NetworkSpec.random(n_in=t.n_in, n_hidden=hidden, n_out=t.n_out, gain=gain, seed=seed, form=form,
                              activation=act, alpha=t.alpha, dt=t.dt_seconds)
    started = time.perf_counter()
    result = lyapunov_spectrum(spec, t, k=k, steps=steps, units=units, n_streams=streams, return_stats=True)
    wall = time.perf_counter() - started

    out = Path("runs") / f"lyapunov-{time.strftime('%Y%m%d-%H%M%S')}" if out is None else Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeurorateError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    config = {"gain": gain, "hidden": hidden, "task": task, "seed": seed, "k": result.k, "steps": result.steps,
              "warmup": result.warmup, "units": units, "form": form, "activation": act, "alpha": spec.alpha,
              "n_streams": result.n_streams}
    title = f"{task}, N={hidden}, g={gain:g}, form {form}, {act}, alpha={spec.alpha:g}"
    png = _plot(result, out / "spectrum.png", title)
    record = {"config": config, "spectrum": result.to_dict(), "wall_time_s": wall}
    (out / "lyapunov.json").write_text(json.dumps(record, indent=1))

    if as_json:
        typer.echo(json.dumps({"lambda_max": result.lambda_max, "unit": result.unit, "k": result.k,
                               "spectrum": result.mean.tolist(), "std": result.std.tolist(), "out": str(out),
                               "json": str(out / "lyapunov.json"), "plot": str(png)}))
        return
    first = ", ".join(f"{v:+.4f}" for v in result.mean[:6])
    more = ", ..." if result.k > 6 else ""
    typer.echo(f"Lyapunov spectrum ({title}; {result.k} exponents, {result.steps} steps after "
               f"{result.warmup} warm-up, {result.n_streams} streams)")
    typer.echo(f"  lambda_i = [{first}{more}] per {result.unit}")
    typer.echo(f"  lambda_max = {result.lambda_max:+.4f} ± {result.std[0]:.4f} per {result.unit}")
    typer.echo(f"wrote {out / 'lyapunov.json'} and {png}")


def register(app: typer.Typer) -> None:
    """Add the ``lyapunov`` command to a typer app."""
    app.command("lyapunov")(lyapunov_command)
