"""``neurorate.train``: validate, floss (optional), measure Lyapunov spectra, train on a backend, record.

The backend-neutral wrapper around a backend's ``train``: the same flossing and Lyapunov code serves every
backend (flossing runs on torch and hands the flossed weights over through the NetworkSpec).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.backends.base import OPTIMIZERS, get_backend
from neurorate.errors import NeurorateError
from neurorate.io.results import RunDirectory, RunInterrupted, TrainResult, check_out_dir, open_out_dir, write_final
from neurorate.learning.registry import get_rule, rule_names
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.base import Task

FLOSS_MODES = ("state", "onestep", "full")
LYAPUNOV_UNITS = ("step", "tau", "second")

DIVERGENCE_FACTOR = 1000.0
"""A run diverges at the first iteration whose loss is NaN/inf or more than this many times its reference loss:
the smaller of its first iteration's loss and the loss of a network whose output is zero (:func:`baseline_loss`)."""


def baseline_loss(task: Task) -> float:
    """The loss of a network whose output is zero on the task's first batch (for "mse" half the masked mean square
    target, for "ce" ``ln(n_out)``): the scale a loss that has blown up is measured against."""
    import torch

    from neurorate.model import losses

    _, target, mask = task.batch(0)
    target_t = torch.as_tensor(np.asarray(target))
    target_t = target_t.long() if task.loss_kind == "ce" else target_t.double()
    y = torch.zeros(tuple(target_t.shape[:2]) + (int(task.n_out),), dtype=torch.float64)
    return float(losses.loss(task.loss_kind, y, target_t, torch.as_tensor(np.asarray(mask), dtype=torch.float64)))


def divergence_iteration(losses, factor: float = DIVERGENCE_FACTOR, reference: float | None = None) -> int | None:
    """The first iteration at which a run diverged, or None: the loss is not finite, or it is more than ``factor``
    times the reference, the smaller of the first loss and ``reference`` (:func:`baseline_loss` in
    :func:`train`). A network that blows up within its first trial (e.g. ReLU rates at N = 1) starts huge: the
    zero-output reference catches it. The same rule for every backend; the non-finite part is what the backends
    detect themselves (they freeze a network whose loss is NaN/inf)."""
    a = np.asarray(losses, dtype=float).reshape(-1)
    if a.size == 0:
        return None
    bad = ~np.isfinite(a)
    refs = [v for v in (a[0], reference) if v is not None and math.isfinite(v) and v > 0]
    if refs:
        with np.errstate(invalid="ignore"):
            bad |= a > factor * min(refs)
    return int(np.argmax(bad)) if bad.any() else None


LIMITS = {"iterations": 1_000_000, "hidden": 8192, "batch": 16384, "networks": 4096, "streams": 4096}
"""Size ceilings checked before anything is allocated or written; ``allow_large=True`` (``--allow-large``, or the
environment variable ``NEURORATE_ALLOW_LARGE=1``) lifts them. The memory estimate (:func:`estimate_bytes`) is
checked against the available memory in any case."""


def _allow_large(allow_large: bool) -> bool:
    return bool(allow_large) or os.environ.get("NEURORATE_ALLOW_LARGE", "").strip() not in ("", "0")


def check_sizes(allow_large: bool = False, **sizes: int) -> None:
    """Refuse sizes above :data:`LIMITS` (one line naming the option and how to lift the ceiling)."""
    if _allow_large(allow_large):
        return
    for name, value in sizes.items():
        if value is not None and name in LIMITS and value > LIMITS[name]:
            raise NeurorateError(f"{name} = {value} is above the ceiling {LIMITS[name]}; pass --allow-large "
                                 "(allow_large=True, or NEURORATE_ALLOW_LARGE=1) to run it anyway")


def estimate_bytes(n_hidden: int, n_in: int, n_out: int, batch: int, n_steps: int, iterations: int,
                   networks: int = 1, rule: str = "eprop", dtype: str = "float32", lyapunov_k: int | None = 8,
                   lyapunov_streams: int = 16) -> int:
    """A deliberately generous estimate of the peak memory of :func:`train` in bytes.

    Counted: the specs in float64 (initial, flossed, final: 3 copies), the backend's parameters, gradients,
    optimizer moments and feedback (6 copies in ``dtype``), one batch of inputs/targets/mask (float64 and its
    tensor copy), the per-step trajectories kept for the gradient (10 tensors of ``(M, B, N)`` per step), the loss
    and accuracy histories, and the Lyapunov run (8 trials of 16 streams, states and the ``k`` tangent vectors).
    """
    d = 8 if str(dtype) in ("float64", "torch.float64") else 4
    m, n = int(networks), int(n_hidden)
    params = n * n + n * (int(n_in) + int(n_out)) + n + int(n_out)
    total = 8 * m * params * 3 + d * m * params * 6
    total += (8 + d) * int(n_steps) * int(batch) * (int(n_in) + int(n_out) + 1)
    total += d * 10 * m * int(n_steps) * int(batch) * n
    total += 8 * 4 * m * int(iterations)
    if lyapunov_k:
        t_ly = 8 * int(n_steps)
        total += 8 * m * t_ly * lyapunov_streams * n + 8 * 4 * m * lyapunov_streams * n * min(int(lyapunov_k), n)
    return int(total)


def available_bytes() -> int | None:
    """Memory this process can still use: ``MemAvailable`` of /proc/meminfo (or the physical pages free), capped
    by a cgroup v2 memory limit when there is one; None when the platform says nothing."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read().strip())
            room = max(0, int(limit) - used)
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**28 else f"{b / 2**20:.0f} MiB"


def check_memory(needed: int, what: str = "this run") -> None:
    """One-line error if ``needed`` bytes exceed the available memory (:func:`available_bytes`)."""
    avail = available_bytes()
    if avail is not None and needed > avail:
        raise NeurorateError(f"{what} needs about {_gib(needed)} of memory but only {_gib(avail)} is available; "
                             "use a smaller --hidden, --batch or --iterations")


def check_resources(n_hidden: int, n_in: int, n_out: int, batch: int, n_steps: int, iterations: int,
                    networks: int = 1, rule: str = "eprop", dtype: str = "float32", lyapunov_k: int | None = 8,
                    allow_large: bool = False) -> int:
    """Size ceilings (:func:`check_sizes`) and the memory estimate (:func:`estimate_bytes`) against the
    available memory, before anything is allocated; returns the estimate in bytes."""
    check_sizes(allow_large, iterations=iterations, hidden=n_hidden, batch=batch, networks=networks)
    needed = estimate_bytes(n_hidden, n_in, n_out, batch, n_steps, iterations, networks, rule, dtype, lyapunov_k)
    check_memory(needed)
    return needed


def check_backend(be, rule: str, optimizer: str, profile: Any, specs: Sequence[NetworkSpec]):
    """What the backend cannot do, as one line, before anything is written: the profile (loaded and checked
    against every spec), and for the Lava backend a missing ``lava`` extra and the rule/optimizer pairs it
    cannot run. Returns the loaded profile."""
    prof = None
    if profile is not None:
        from neurorate.hardware.profiles import load_profile

        prof = load_profile(profile)
        for s in specs:
            prof.check(s)
    if getattr(be, "name", None) == "lava":
        from neurorate.backends.lava._compat import ensure_lava_importable
        from neurorate.backends.lava.backend import check_rule

        ensure_lava_importable()  # a missing extra is named now, not after the run directory exists
        check_rule(rule, optimizer)
    return prof


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
    overwrite: bool = False,
    allow_large: bool = False,
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
    overwrite : ``out`` must be new or an empty directory; with ``overwrite=True`` an existing run directory there
        is replaced whole (never appended to).
    allow_large : lift the size ceilings of :data:`LIMITS` (the memory check against the available memory stays).

    Everything (options, profile, backend capabilities, sizes and memory, ``out``) is checked before anything is
    written. A run whose loss becomes non-finite or exceeds :data:`DIVERGENCE_FACTOR` times its first loss is
    ``diverged`` (:func:`divergence_iteration`). Ctrl-C writes the partial result (``status`` "interrupted") and
    raises :class:`~neurorate.io.results.RunInterrupted` (a ``KeyboardInterrupt``) saying what was kept; any other
    error marks the run directory "failed" and is raised again.

    Returns
    -------
    A :class:`TrainResult` for one spec, a list of them for a list of specs.
    """
    single, specs, tasks, lrs, be = _validate(
        spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode, floss_every,
        lyapunov, lyapunov_k, lyapunov_units, device, dtype, backend_options, neuron, out, overwrite, allow_large)
    out_root = open_out_dir(out, overwrite) if out is not None else None
    runs_dirs = _open_run_dirs(out_root, len(specs), int(iterations))
    history: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        if neuron != "rate":
            results = _train_lif(specs, tasks, rule, int(iterations), lrs, runs_dirs, callback, neuron,
                                 dict(backend_options or {}))
        else:
            results = _train_rate(be, specs, tasks, rule, backend, iterations, lrs, optimizer, profile,
                                  floss_iterations, floss_mode, floss_k, floss_lr, floss_every, lyapunov, lyapunov_k,
                                  lyapunov_units, device, dtype, progress, callback, backend_options, floss_callback,
                                  runs_dirs, history)
    except KeyboardInterrupt:
        if not runs_dirs:
            raise
        _write_partial(runs_dirs, specs, history, rule, be, lrs, optimizer, int(iterations))
        where = out_root if len(runs_dirs) > 1 else runs_dirs[0].path
        curve = "learning_curve.png, " if history else ""
        raise RunInterrupted(f"interrupted after {len(history)} of {int(iterations)} iterations; kept in {where}: "
                             f"metrics.jsonl ({len(history)} iterations), {curve}config.json, "
                             "spec_initial.npz and result.json with status \"interrupted\" (no final spec)") from None
    except Exception as exc:
        for rd in runs_dirs:
            rd.close()
            rd.set_status("failed", error=f"{type(exc).__name__}: {exc}", iterations_done=len(history))
        raise
    return results[0] if single else results


def check_train(spec, task, rule: str = "eprop", backend: str = "torch", iterations: int = 2000, lr=1e-3,
                optimizer: str = "adam", profile: Any = None, floss_iterations: int = 0, floss_mode: str = "state",
                floss_every: int | None = None, lyapunov: bool = True, lyapunov_k: int = 8,
                lyapunov_units: str = "step", device: str = "auto", dtype: str = "float32",
                backend_options: dict | None = None, neuron: str = "rate", out: str | Path | None = None,
                overwrite: bool = False, allow_large: bool = False) -> None:
    """Every check :func:`train` makes before it writes anything, without training or writing: a
    :class:`NeurorateError` (one line) for the first problem found. The arguments are those of :func:`train`."""
    _validate(spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode, floss_every,
              lyapunov, lyapunov_k, lyapunov_units, device, dtype, backend_options, neuron, out, overwrite, allow_large)


def _validate(spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode,
              floss_every, lyapunov, lyapunov_k, lyapunov_units, device, dtype, backend_options, neuron, out,
              overwrite, allow_large):
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
    if neuron == "rate":
        be = get_backend("torch", device=device, dtype=dtype) if backend == "torch" else get_backend(backend)
        check_backend(be, rule, optimizer, profile, specs)
    else:
        be = None
        _check_lif(neuron, rule, backend, optimizer, profile, floss_iterations, tasks, backend_options)
    t0 = tasks[0]
    check_resources(specs[0].n_hidden, specs[0].n_in, specs[0].n_out, t0.batch_size, t0.n_steps, int(iterations),
                    networks=len(specs), rule=rule, dtype=dtype, lyapunov_k=lyapunov_k if lyapunov else None,
                    allow_large=allow_large)
    unknown_options = sorted(set(backend_options or ()) - set(getattr(be, "options", ())))
    if unknown_options and getattr(be, "name", None) in ("torch", "lava"):
        raise NeurorateError(f"{be.name} backend: unknown option(s) {', '.join(unknown_options)}")
    if out is not None:
        check_out_dir(out, overwrite)
    return single, specs, tasks, lrs, be

def _train_rate(be, specs, tasks, rule, backend, iterations, lrs, optimizer, profile, floss_iterations, floss_mode,
                floss_k, floss_lr, floss_every, lyapunov, lyapunov_k, lyapunov_units, device, dtype, progress,
                callback, backend_options, floss_callback, runs_dirs, history) -> list[TrainResult]:
    be_opts = dict(backend_options or {})
    config = _config(specs, tasks, rule, backend, iterations, lrs, optimizer, profile, floss_iterations, floss_mode,
                     floss_k, floss_lr, lyapunov, lyapunov_k, lyapunov_units, device, dtype)
    for j, rd in enumerate(runs_dirs):
        from neurorate.provenance import environment

        rd.write_json("config.json", {**config, "network_index": j, "lr": lrs[j],
                                      "network": specs[j].meta()})
        rd.write_json("environment.json", environment())
        rd.save_spec("spec_initial.npz", specs[j])

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
        history.append((np.array(losses, dtype=float), np.array(acc, dtype=float)))
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
        diverged_at = _diverged_at(run.losses, run.diverged_at if run.diverged else None,
                                   baseline_loss(tasks[j] if len(tasks) > 1 else tasks[0]))
        res = TrainResult(
            losses=run.losses, accuracy=run.accuracy, spec=run.spec, spec_initial=specs[j], rule=rule,
            backend=be.name, lr=float(lrs[j]), optimizer=optimizer, iterations=int(iterations),
            diverged=diverged_at is not None, diverged_at=diverged_at, wall_time=wall / len(runs),
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
    return results


def _diverged_at(losses, backend_at: int | None, reference: float | None) -> int | None:
    """The earlier of the backend's own divergence iteration and :func:`divergence_iteration`."""
    ours = divergence_iteration(losses, reference=reference)
    found = [v for v in (backend_at, ours) if v is not None]
    return min(found) if found else None


def _write_partial(runs_dirs, specs, history, rule, be, lrs, optimizer, iterations) -> None:
    """After Ctrl-C: result.json marked "interrupted" with the losses so far, and their learning curve."""
    for j, rd in enumerate(runs_dirs):
        rd.close()
        losses = np.array([h[0][j] for h in history], dtype=float)
        acc = np.array([h[1][j] for h in history], dtype=float)
        res = TrainResult(losses=losses, accuracy=acc, spec=specs[j], spec_initial=specs[j], rule=rule,
                          backend=getattr(be, "name", "torch"), lr=float(lrs[j]), optimizer=optimizer,
                          iterations=iterations, run_dir=rd.path, interrupted=True)
        write_final(rd, res)


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


_SPIKING_OPTIONS = ("threshold", "kappa", "gamma", "beta_a", "rho", "adaptive_fraction")


def _check_lif(neuron, rule, backend, optimizer, profile, floss_iterations, tasks, constants) -> None:
    if backend != "torch" or optimizer != "adam" or profile is not None or floss_iterations:
        raise NeurorateError(f"neuron={neuron!r} trains on the torch backend with adam, without a profile or flossing")
    if rule not in rule_names(neuron=neuron):
        raise NeurorateError(f"neuron={neuron!r} supports the rules {', '.join(rule_names(neuron=neuron))}, "
                             f"not {rule!r}")
    if len(tasks) != 1:
        raise NeurorateError(f"neuron={neuron!r} trains every network on one shared task")
    constants = dict(constants or {})
    unknown = set(constants) - set(_SPIKING_OPTIONS)
    if unknown:
        raise NeurorateError(f"unknown spiking option(s) {', '.join(sorted(unknown))}; choose "
                             f"{', '.join(_SPIKING_OPTIONS)}")
    if neuron == "lif" and constants.get("beta_a", 0.0) != 0.0:
        raise NeurorateError("neuron='lif' has no threshold adaptation; use neuron='alif' for beta_a > 0")


def _train_lif(specs, tasks, rule, iterations, lrs, dirs, callback, neuron: str = "lif",
               constants: dict | None = None) -> list[TrainResult]:
    """The spiking variant: :func:`neurorate.model.spiking_learning.train_lif`, one ensemble per distinct lr
    (arguments checked by :func:`_check_lif`)."""
    from neurorate.model.spiking_learning import train_lif
    from neurorate.provenance import environment

    constants = dict(constants or {})
    if neuron == "alif":
        constants.setdefault("beta_a", 1.0)
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
            at = divergence_iteration(losses, reference=baseline_loss(tasks[0]))
            net = res["networks"][col]
            results[j] = TrainResult(losses=losses, accuracy=acc, spec=net.spec, spec_initial=specs[j], rule=rule,
                                     backend=f"torch ({neuron})", lr=lr, optimizer="adam", iterations=iterations,
                                     diverged=at is not None, diverged_at=at,
                                     wall_time=float(res["wall_time"]) / len(idx), config={"neuron": neuron},
                                     run_dir=dirs[j].path if dirs else None)
            if dirs:
                for i in range(iterations):
                    dirs[j].append_metrics(i, losses[i], acc[i])
                dirs[j].close()
                write_final(dirs[j], results[j])
                dirs[j].save_spec("spec_final.npz", net)  # with the LIF constants in its header
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


def _open_run_dirs(out_root: Path | None, m: int, iterations: int | None = None) -> list[RunDirectory]:
    if out_root is None:
        return []
    if m == 1:
        return [RunDirectory(out_root, iterations)]
    return [RunDirectory(out_root / f"net-{j:03d}", iterations) for j in range(m)]


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
