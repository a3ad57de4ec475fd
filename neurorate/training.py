"""``neurorate.train``: validate, floss (optional), measure Lyapunov spectra, train on a backend, record.

The backend-neutral wrapper around a backend's ``train``: the same flossing and Lyapunov code serves every
backend (flossing runs on torch and hands the flossed weights over through the NetworkSpec).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.backends.base import OPTIMIZERS, get_backend
from neurorate.errors import NeurorateError
from neurorate.io.results import RunDirectory, TrainResult, prepare_out_dir, write_final
from neurorate.model.spec import NetworkSpec
from neurorate.rules.registry import get_rule, rule_names
from neurorate.tasks.base import Task

FLOSS_MODES = ("state", "onestep", "full")
LYAPUNOV_UNITS = ("step", "tau", "second")


def _check_positive(name: str, value, integer: bool = False, allow_zero: bool = False):
    ok = value is not None and math.isfinite(float(value)) and (value >= 0 if allow_zero else value > 0)
    if integer:
        ok = ok and int(value) == value
    if not ok:
        kind = "integer" if integer else "number"
        raise NeurorateError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value}")


def train(
    spec: NetworkSpec | Sequence[NetworkSpec],
    task: Task | Sequence[Task],
    rule: str = "eprop",
    backend: str = "torch",
    iterations: int = 2000,
    lr: float | Sequence[float] = 1e-3,
    optimizer: str = "adam",
    profile: Any = None,
    floss_iterations: int = 0,
    floss_mode: str = "state",
    floss_k: int = 8,
    floss_lr: float = 1e-3,
    floss_every: int | None = None,
    lyapunov: bool = True,
    lyapunov_k: int = 8,
    lyapunov_units: str = "step",
    device: str = "auto",
    dtype: str = "float32",
    progress: bool | None = None,
    out: str | Path | None = None,
    callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    backend_options: dict | None = None,
    neuron: str = "rate",
    floss_callback: Callable[[int, np.ndarray], None] | None = None,
) -> TrainResult | list[TrainResult]:
    """Train one network, or a list of networks as one ensemble program.

    Parameters
    ----------
    spec : a :class:`NetworkSpec` or a list of them (sharing N, form and activation).
    task : a :class:`~neurorate.tasks.base.Task` (shared data) or one per network.
    rule : one of :data:`neurorate.backends.base.RULES` (``bptt``, ``eprop``, ``eprop_online``, ``eprop_random``,
        ``rflo``, ``trunc1``).
    backend : "torch", "lava" or a plugin name.
    iterations : training iterations (one batch and one update each).
    lr : learning rate, or one per network.
    optimizer : "adam" or "sgd".
    profile : hardware profile name or :class:`~neurorate.hardware.profiles.HardwareProfile` (None: full precision).
    floss_iterations : local gradient-flossing pre-training iterations (0: none; the paper uses 100).
    floss_mode : "state" (the paper's detach reading), "onestep" (strictly local in time) or "full".
    floss_k, floss_lr : exponents flossed and flossing learning rate.
    floss_every : also floss (``floss_iterations`` each time) after every ``floss_every`` training iterations
        ("inter-flossing", Engelken 2023); the optimizer state carries over. torch backend only.
    lyapunov : measure the top ``lyapunov_k`` exponents before and after (and after flossing).
    lyapunov_units : "step", "tau" or "second".
    device, dtype : torch backend placement ("auto" = CUDA if present) and precision.
    progress : show progress bars (None: only on a terminal).
    out : write a run directory (per network ``net-XXX/`` for an ensemble); None writes nothing.
    callback : called as ``callback(iteration, losses (M,), accuracy (M,))`` after every iteration.
    backend_options : extra keyword arguments for the backend's ``train``.
    neuron : "rate" (default), "lif" or "alif": the spiking variant of the same arrays (docs/spiking.md; torch,
        Adam, rules eprop / eprop_random / bptt, one shared task, no profile, flossing or Lyapunov spectra).
        "alif" has adaptive thresholds (``beta_a = 1``, ``rho = 0.95`` unless given); ``backend_options`` may set
        the spiking constants ``threshold``, ``kappa``, ``gamma``, ``beta_a``, ``rho``, ``adaptive_fraction``.
    floss_callback : called as ``floss_callback(iteration, losses (M,))`` after every flossing iteration (the
        pre-training and every periodic phase); given, it replaces the flossing progress bar.

    Returns
    -------
    A :class:`TrainResult` for one spec, a list of them for a list of specs.
    """
    single = isinstance(spec, NetworkSpec)
    specs = [spec] if single else list(spec)
    if not specs or not all(isinstance(s, NetworkSpec) for s in specs):
        raise NeurorateError("spec must be a NetworkSpec or a non-empty list of NetworkSpecs")
    tasks = list(task) if isinstance(task, (list, tuple)) else [task]
    if not all(isinstance(t, Task) for t in tasks):
        raise NeurorateError("task must be a neurorate Task (see neurorate.make_task) or a list of them")
    get_rule(rule)  # unknown -> one-line error listing the rules (built-ins and plugins)
    if optimizer not in OPTIMIZERS:
        raise NeurorateError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    _check_positive("iterations", iterations, integer=True, allow_zero=True)
    _check_positive("floss_iterations", floss_iterations, integer=True, allow_zero=True)
    lrs = list(np.broadcast_to(np.asarray(lr, dtype=float), (len(specs),))) if np.ndim(lr) == 0 else list(lr)
    if len(lrs) != len(specs):
        raise NeurorateError(f"give one learning rate or one per network ({len(specs)}), got {len(lrs)}")
    for v in lrs:
        _check_positive("lr", v)
    if floss_mode not in FLOSS_MODES:
        raise NeurorateError(f"unknown floss mode {floss_mode!r}; choose one of {', '.join(FLOSS_MODES)}")
    if lyapunov_units not in LYAPUNOV_UNITS:
        raise NeurorateError(f"unknown Lyapunov unit {lyapunov_units!r}; choose one of {', '.join(LYAPUNOV_UNITS)}")
    for s in specs:
        for t in tasks:
            if (s.n_in, s.n_out) != (t.n_in, t.n_out):
                raise NeurorateError(f"network has n_in={s.n_in}, n_out={s.n_out} but task {t.name!r} needs "
                                     f"n_in={t.n_in}, n_out={t.n_out}")
    if neuron not in ("rate", "lif", "alif"):
        raise NeurorateError(f"unknown neuron {neuron!r}; choose rate, lif or alif")
    if floss_every is not None:
        _check_positive("floss_every", floss_every, integer=True)
        if backend != "torch":
            raise NeurorateError("periodic flossing (floss_every) runs on the torch backend only")
        if floss_iterations <= 0:
            raise NeurorateError("floss_every needs floss_iterations > 0 (the length of each flossing phase)")
    if neuron != "rate":
        out_root = prepare_out_dir(out) if out is not None else None
        results = _train_lif(specs, tasks, rule, backend, int(iterations), lrs, optimizer, profile,
                             floss_iterations, out_root, callback, neuron, dict(backend_options or {}))
        return results[0] if single else results
    be_opts = dict(backend_options or {})
    if backend == "torch":
        be = get_backend("torch", device=device, dtype=dtype)
    else:
        be = get_backend(backend)

    out_root = prepare_out_dir(out) if out is not None else None
    runs_dirs = _open_run_dirs(out_root, len(specs))
    config = _config(specs, tasks, rule, backend, iterations, lrs, optimizer, profile, floss_iterations, floss_mode,
                     floss_k, floss_lr, lyapunov, lyapunov_k, lyapunov_units, device, dtype)
    for j, rd in enumerate(runs_dirs):
        from neurorate.provenance import environment

        rd.write_json("config.json", {**config, "network_index": j, "lr": lrs[j],
                                      "network": specs[j].meta()})
        rd.write_json("environment.json", environment())
        specs[j].save(rd.path / "spec_initial.npz")

    lyap_task = tasks[0]
    floss_progress = floss_callback if floss_callback is not None else progress
    t_start = time.perf_counter()
    spectra: dict[str, np.ndarray | None] = {"before": None, "flossed": None, "after": None}
    if lyapunov:
        spectra["before"] = _spectrum(specs, lyap_task, lyapunov_k, lyapunov_units)
    start_specs = specs
    floss_losses = None
    if floss_iterations > 0:
        from neurorate.analysis.flossing import floss

        start_specs, floss_losses = floss(specs, lyap_task, iterations=int(floss_iterations), mode=floss_mode,
                                          k=floss_k, lr=floss_lr, progress=floss_progress)
        if lyapunov:
            spectra["flossed"] = _spectrum(start_specs, lyap_task, lyapunov_k, lyapunov_units)

    def on_iteration(i, losses, acc):
        for j, rd in enumerate(runs_dirs):
            rd.append_metrics(i, losses[j], acc[j])
        if callback is not None:
            callback(i, losses, acc)

    task_arg = tasks if len(tasks) > 1 else tasks[0]
    try:
        if floss_every is None:
            runs = be.train(start_specs, task_arg, rule, iterations=int(iterations), lr=lrs, optimizer=optimizer,
                            profile=profile, progress=progress, callback=on_iteration, **be_opts)
        else:
            runs = _train_with_periodic_flossing(be, start_specs, task_arg, lyap_task, rule, int(iterations), lrs,
                                                 optimizer, profile, progress, floss_progress, on_iteration, be_opts,
                                                 int(floss_every), int(floss_iterations), floss_mode, floss_k, floss_lr)
    finally:
        for rd in runs_dirs:
            rd.close()
    if lyapunov:
        spectra["after"] = _spectrum([r.spec for r in runs], lyap_task, lyapunov_k, lyapunov_units)
    wall = time.perf_counter() - t_start

    results = []
    for j, run in enumerate(runs):
        sp = {k: (None if v is None else np.asarray(v[j])) for k, v in spectra.items()}
        res = TrainResult(
            losses=run.losses, accuracy=run.accuracy, spec=run.spec, spec_initial=specs[j], rule=rule,
            backend=be.name, lr=float(lrs[j]), optimizer=optimizer, iterations=int(iterations),
            diverged=run.diverged, diverged_at=run.diverged_at, wall_time=wall / len(runs),
            spec_flossed=start_specs[j] if floss_iterations > 0 else None,
            floss_losses=None if floss_losses is None else np.asarray(floss_losses[j]),
            lambda_max_before=_first(sp["before"]), lambda_max_flossed=_first(sp["flossed"]),
            lambda_max_after=_first(sp["after"]), spectrum_before=sp["before"], spectrum_flossed=sp["flossed"],
            spectrum_after=sp["after"], lyapunov_unit=lyapunov_units if lyapunov else None,
            config={**config, "lr": float(lrs[j])}, run_dir=runs_dirs[j].path if runs_dirs else None,
        )
        if runs_dirs:
            write_final(runs_dirs[j], res)
        results.append(res)
    return results[0] if single else results


def _train_with_periodic_flossing(be, specs, task, floss_task, rule, iterations, lrs, optimizer, profile, progress,
                                  floss_progress, callback, be_opts, every, floss_iterations, floss_mode, floss_k,
                                  floss_lr):
    """Train in chunks of ``every`` iterations with a flossing phase between chunks (optimizer state kept)."""
    from neurorate.analysis.flossing import floss
    from neurorate.backends.base import BackendRun

    done, state, current, chunks = 0, None, list(specs), []
    while done < iterations:
        n = min(every, iterations - done)
        offset = done

        def cb(i, losses, acc, offset=offset):
            callback(offset + i, losses, acc)

        runs = be.train(current, task, rule, iterations=n, lr=lrs, optimizer=optimizer, profile=profile,
                        progress=progress, callback=cb, start_iteration=done, optimizer_state=state, **be_opts)
        state = runs[0].extra.get("optimizer_state")
        chunks.append(runs)
        done += n
        current = [r.spec for r in runs]
        if done < iterations:
            current, _ = floss(current, floss_task, iterations=floss_iterations, mode=floss_mode, k=floss_k,
                               lr=floss_lr, progress=floss_progress)
    out = []
    for j in range(len(specs)):
        parts = [c[j] for c in chunks]
        div = [k for k, p in enumerate(parts) if p.diverged]
        at = None if not div else sum(len(p.losses) for p in parts[:div[0]]) + parts[div[0]].diverged_at
        out.append(BackendRun(spec=parts[-1].spec, losses=np.concatenate([p.losses for p in parts]),
                              accuracy=np.concatenate([p.accuracy for p in parts]), diverged=at is not None,
                              diverged_at=at, wall_time=sum(p.wall_time for p in parts)))
    return out


def _train_lif(specs, tasks, rule, backend, iterations, lrs, optimizer, profile, floss_iterations, out_root,
               callback, neuron: str = "lif", constants: dict | None = None) -> list[TrainResult]:
    """The spiking variant: :func:`neurorate.model.spiking_learning.train_lif`, one ensemble per distinct lr."""
    from neurorate.model.spiking_learning import train_lif
    from neurorate.provenance import environment

    if backend != "torch" or optimizer != "adam" or profile is not None or floss_iterations:
        raise NeurorateError(f"neuron={neuron!r} trains on the torch backend with adam, without a profile or flossing")
    if rule not in rule_names(neuron=neuron):
        raise NeurorateError(f"neuron={neuron!r} supports the rules {', '.join(rule_names(neuron=neuron))}, "
                             f"not {rule!r}")
    if len(tasks) != 1:
        raise NeurorateError(f"neuron={neuron!r} trains every network on one shared task")
    constants = dict(constants or {})
    unknown = set(constants) - {"threshold", "kappa", "gamma", "beta_a", "rho", "adaptive_fraction"}
    if unknown:
        raise NeurorateError(f"unknown spiking option(s) {', '.join(sorted(unknown))}; choose threshold, kappa, "
                             "gamma, beta_a, rho, adaptive_fraction")
    if neuron == "alif":
        constants.setdefault("beta_a", 1.0)
    elif constants.get("beta_a", 0.0) != 0.0:
        raise NeurorateError("neuron='lif' has no threshold adaptation; use neuron='alif' for beta_a > 0")
    dirs = _open_run_dirs(out_root, len(specs))
    for j, rd in enumerate(dirs):
        rd.write_json("config.json", {"neuron": neuron, "task": tasks[0].config(), "rule": rule,
                                      "iterations": iterations, "lr": float(lrs[j]), "optimizer": "adam",
                                      "network": specs[j].meta(), "spiking": constants})
        rd.write_json("environment.json", environment())
    results: list[TrainResult | None] = [None] * len(specs)
    for lr in sorted(set(float(v) for v in lrs)):
        idx = [j for j, v in enumerate(lrs) if float(v) == lr]
        res = train_lif([specs[j] for j in idx], tasks[0], rule=rule, iterations=iterations, lr=lr, **constants)
        for col, j in enumerate(idx):
            losses = np.asarray(res["losses"][:, col], dtype=float)
            acc = np.asarray(res["accuracy"][:, col], dtype=float)
            bad = ~np.isfinite(losses)
            net = res["networks"][col]
            results[j] = TrainResult(losses=losses, accuracy=acc, spec=net.spec, spec_initial=specs[j], rule=rule,
                                     backend=f"torch ({neuron})", lr=lr, optimizer="adam", iterations=iterations,
                                     diverged=bool(bad.any()), diverged_at=int(np.argmax(bad)) if bad.any() else None,
                                     wall_time=float(res["wall_time"]) / len(idx), config={"neuron": neuron},
                                     run_dir=dirs[j].path if dirs else None)
            if dirs:
                for i in range(iterations):
                    dirs[j].append_metrics(i, losses[i], acc[i])
                dirs[j].close()
                write_final(dirs[j], results[j])
                net.save(dirs[j].path / "spec_final.npz")  # with the LIF constants in its header
    if callback is not None:
        for i in range(iterations):
            callback(i, np.array([r.losses[i] for r in results]), np.array([r.accuracy[i] for r in results]))
    return results


def _first(spectrum):
    if spectrum is None:
        return None
    v = float(np.asarray(spectrum).reshape(-1)[0])
    return v if math.isfinite(v) else None


def _spectrum(specs, task, k, units):
    from neurorate.analysis.lyapunov import lyapunov_spectrum

    k = min(int(k), specs[0].n_hidden)
    return np.atleast_2d(lyapunov_spectrum(specs, task, k=k, units=units))


def _open_run_dirs(out_root: Path | None, m: int) -> list[RunDirectory]:
    if out_root is None:
        return []
    if m == 1:
        return [RunDirectory(out_root)]
    return [RunDirectory(out_root / f"net-{j:03d}") for j in range(m)]


def _config(specs, tasks, rule, backend, iterations, lrs, optimizer, profile, floss_iterations, floss_mode, floss_k,
            floss_lr, lyapunov, lyapunov_k, lyapunov_units, device, dtype) -> dict:
    prof = profile if (profile is None or isinstance(profile, str)) else getattr(profile, "name", str(profile))
    return {
        "task": tasks[0].config(), "rule": rule, "backend": backend, "iterations": int(iterations),
        "optimizer": optimizer, "lrs": [float(v) for v in lrs], "profile": prof,
        "floss": {"iterations": int(floss_iterations), "mode": floss_mode, "k": int(floss_k), "lr": float(floss_lr)},
        "lyapunov": {"on": bool(lyapunov), "k": int(lyapunov_k), "units": lyapunov_units},
        "device": device, "dtype": dtype, "n_networks": len(specs),
        "inits": [s.init for s in specs],
    }
