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

from neurorate.defaults import RUN_DEFAULTS
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


def spectrum_with_progress(spec, task, k, steps, units: str, streams: int, progress: bool | None):
    """:func:`~neurorate.analysis.lyapunov.lyapunov_spectrum` of one network over ``streams`` input streams, in
    chunks of streams with a progress bar (the exponents of each stream do not depend on the others; the mean and
    spread are taken over all streams at the end, as the one-call version does)."""
    from neurorate.analysis.lyapunov import LyapunovSpectrum, lyapunov_spectrum, resolve_inputs

    x, warmup, _ = resolve_inputs(task, streams, steps, None)
    n_steps = x.shape[0] - warmup
    chunk = max(1, streams // 8)
    bar = None
    if progress is not False:
        from tqdm.auto import tqdm

        bar = tqdm(total=streams, desc="lyapunov", unit="stream", disable=None if progress is None else not progress,
                   dynamic_ncols=True, leave=True)
    parts = []
    try:
        for lo in range(0, streams, chunk):
            part = lyapunov_spectrum(spec, x[:, lo:lo + chunk], k=k, steps=n_steps, warmup=warmup, units=units,
                                     return_stats=True)
            parts.append(part)
            if bar is not None:
                bar.update(part.n_streams)
    finally:
        if bar is not None:
            bar.close()
    per_stream = np.concatenate([p.per_stream for p in parts], axis=1)  # (1, S, k), unsorted, in units
    mean = per_stream.mean(axis=1)
    std = per_stream.std(axis=1, ddof=1) if per_stream.shape[1] > 1 else np.zeros_like(mean)
    order = np.argsort(-mean, axis=1, kind="stable")
    mean, std = np.take_along_axis(mean, order, 1)[0], np.take_along_axis(std, order, 1)[0]
    return LyapunovSpectrum(mean=mean, std=std, per_stream=per_stream, unit=units, k=parts[0].k,
                            steps=parts[0].steps, warmup=parts[0].warmup, n_streams=per_stream.shape[1])


def lyapunov_command(
    ctx: typer.Context,
    gain: float = typer.Option(RUN_DEFAULTS["gain"], help="initial recurrent gain g: W_rec ~ N(0, g^2/N)"),
    hidden: int = typer.Option(RUN_DEFAULTS["hidden"], help="hidden units N"),
    task: str = typer.Option(RUN_DEFAULTS["task"], help="romo | 2af | dms | neurogym:<env id>"),
    seed: int = typer.Option(RUN_DEFAULTS["seed"], help="seed of the network (the input streams use the task's "
                                                        "Lyapunov batches)"),
    k: int | None = typer.Option(None, help="number of exponents (default N: the full spectrum)"),
    steps: int | None = typer.Option(None, help="steps accumulated (default: 8 trials minus the warm-up)"),
    units: str = typer.Option("step", help="step | tau | second"),
    form: str = typer.Option(RUN_DEFAULTS["form"], help="network form A | B | C"),
    activation: str = typer.Option(RUN_DEFAULTS["activation"], help="relu | tanh | identity (as `neurorate run`)"),
    input_bias: bool = typer.Option(RUN_DEFAULTS["input_bias"], help="torch-default input bias (as `neurorate run`)"),
    streams: int = typer.Option(16, help="input streams averaged over"),
    out: str | None = typer.Option(None, help="output directory, new or empty (default: "
                                              "runs/lyapunov-<timestamp>-<task>-g<gain>-s<seed>-<unique suffix>)"),
    overwrite: bool = typer.Option(False, help="replace an existing output directory given as --out (whole)"),
    allow_large: bool = typer.Option(False, help="lift the size ceiling on --hidden (docs/cli.md)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of text"),
    progress: bool | None = typer.Option(None, help="progress bar over the input streams (default: on a terminal)"),
    spec_path: str | None = typer.Option(None, "--spec", help="the spectrum of a saved network: a spec file (.npz) "
                                         "or a finished run directory (its spec_final.npz); --gain, --hidden, "
                                         "--form, --activation and --input-bias then come from it"),
) -> None:
    """Lyapunov spectrum (QR method) of a random network driven by a task: print, plot (PNG) and save (JSON).

    The network is the one `neurorate run` trains with the same options (same defaults)."""
    from neurorate.analysis.lyapunov import UNITS
    from neurorate.cli.app import check_number
    from neurorate.io.dirs import FORMAT_VERSION, LYAPUNOV_FORMAT
    from neurorate.io.results import atomic_write, check_out_dir, open_out_dir, unique_run_dir
    from neurorate.model.spec import NetworkSpec
    from neurorate.tasks.base import make_task
    from neurorate.training import check_memory, check_sizes

    if out is not None and not out.strip():
        raise NeurorateError("--out must name a directory, got an empty path")
    spec = None
    if spec_path is not None:  # the network of a file: its size and options, checked against the task
        from neurorate.cli.app import _start_network

        spec = _start_network(ctx, spec_path, make_task(task, seed=seed), option="--spec")
        gain, hidden, form, activation = spec.init.get("gain", float("nan")), spec.n_hidden, spec.form, spec.activation
    if hidden < 1:
        raise NeurorateError(f"--hidden must be >= 1, got {hidden}")
    if spec is None:
        check_number("gain", gain, strict=False)
    for name, value in (("k", k), ("steps", steps), ("streams", streams)):
        if value is not None and value < 1:
            raise NeurorateError(f"--{name} must be >= 1, got {value}")
    if k is not None and k > hidden:
        raise NeurorateError(f"--k must be <= --hidden ({hidden}), got {k}")
    if units not in UNITS:
        raise NeurorateError(f"--units must be one of {', '.join(UNITS)}, got {units!r}")
    check_sizes(allow_large, hidden=hidden, streams=streams)
    if out is not None:
        check_out_dir(out, overwrite, kinds=("lyapunov",))
    t = make_task(task, seed=seed)
    n_k = hidden if k is None else k
    n_t = (steps + 2 * t.n_steps) if steps is not None else 8 * t.n_steps
    check_memory(8 * (4 * hidden * hidden + n_t * streams * (hidden + t.n_in) + 6 * streams * hidden * n_k),
                 "this spectrum")
    if spec is None:
        spec = NetworkSpec.random(n_in=t.n_in, n_hidden=hidden, n_out=t.n_out, gain=gain, seed=seed, form=form,
                                  activation=activation, alpha=t.alpha, dt=t.dt_seconds, input_bias=input_bias)
    started = time.perf_counter()
    try:
        result = spectrum_with_progress(spec, t, k, steps, units, streams, progress)
    except KeyboardInterrupt as exc:
        from neurorate.signals import exit_code

        typer.echo("interrupted while computing the Lyapunov spectrum; nothing was written", err=True)
        raise typer.Exit(code=exit_code(exc)) from None
    wall = time.perf_counter() - started

    if out is None:
        out_dir = unique_run_dir(Path("runs"), f"lyapunov-{time.strftime('%Y%m%d-%H%M%S')}-"
                                               f"{task.replace(':', '_')}-"
                                               f"{'g' + format(gain, 'g') if spec_path is None else 'init'}-s{seed}")
    else:
        out_dir = open_out_dir(out, overwrite, kinds=("lyapunov",))
    config = {"gain": gain, "spec": spec_path, "hidden": hidden, "task": task, "seed": seed, "k": result.k,
              "steps": result.steps,
              "warmup": result.warmup, "units": units, "form": form, "activation": activation,
              "input_bias": input_bias, "alpha": spec.alpha, "n_streams": result.n_streams}
    network = f"g={gain:g}" if spec_path is None else f"network from {spec_path}"
    title = f"{task}, N={hidden}, {network}, form {form}, {activation}, alpha={spec.alpha:g}"
    record = {"format": LYAPUNOV_FORMAT, "format_version": FORMAT_VERSION, "config": config,
              "spectrum": result.to_dict(), "wall_time_s": wall}
    png = out_dir / "spectrum.png"
    try:
        atomic_write(png, lambda tmp: _plot(result, tmp, title))
        atomic_write(out_dir / "lyapunov.json", lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    except KeyboardInterrupt as exc:
        from neurorate.signals import exit_code

        typer.echo(f"interrupted while writing {out_dir}; the spectrum was not saved completely", err=True)
        raise typer.Exit(code=exit_code(exc)) from None

    if as_json:
        typer.echo(json.dumps({"lambda_max": result.lambda_max, "unit": result.unit, "k": result.k,
                               "spectrum": result.mean.tolist(), "std": result.std.tolist(), "out": str(out_dir),
                               "json": str(out_dir / "lyapunov.json"), "plot": str(png)}))
        return
    first = ", ".join(f"{v:+.4f}" for v in result.mean[:6])
    more = ", ..." if result.k > 6 else ""
    typer.echo(f"Lyapunov spectrum ({title}; {result.k} exponents, {result.steps} steps after "
               f"{result.warmup} warm-up, {result.n_streams} streams)")
    typer.echo(f"  lambda_i = [{first}{more}] per {result.unit}")
    typer.echo(f"  lambda_max = {result.lambda_max:+.4f} ± {result.std[0]:.4f} per {result.unit}")
    typer.echo(f"wrote {out_dir / 'lyapunov.json'} and {png}")


def register(app: typer.Typer) -> None:
    """Add the ``lyapunov`` command to a typer app."""
    app.command("lyapunov")(lyapunov_command)
