"""``neurorate.train`` as a pipeline of named steps, the same for rate and spiking neurons (docs/architecture.md):

:func:`validate` -> :func:`build` -> :func:`record_start` -> :func:`measure` ("before") -> :func:`floss_step` ->
:func:`measure` ("flossed") -> :func:`train_step` -> :func:`measure` ("after") -> :func:`record`.

The steps share one :class:`Plan`. The backend-neutral parts (validation, flossing, Lyapunov spectra, run
directories) serve every backend; a backend is asked only through its declared capabilities
(:class:`~neurorate.backends.base.BackendCapabilities`), and its ``train`` does only the training (flossing runs
on torch and hands the flossed weights over through the NetworkSpec).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.backends.base import (
    NEURONS,
    OPTIMIZERS,
    BackendCapabilities,
    BackendRun,
    backend_capabilities,
    backend_class,
    check_available,
    check_compatible,
    check_ensemble,
    env_threads,
    get_backend,
    task_list,
)
from neurorate.defaults import DEFAULT_LR, RUN_DEFAULTS
from neurorate.errors import NeurorateError, as_int, as_real
from neurorate.io.dirs import OutputError
from neurorate.io.results import RunDirectory, RunInterrupted, TrainResult, check_out_dir, claim_out_dir, write_final
from neurorate.learning.registry import get_rule, rule_names
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.base import Task

FLOSS_MODES = ("state", "onestep", "full")
LYAPUNOV_UNITS = ("step", "tau", "second")

DIVERGENCE_FACTOR = 1000.0
"""A run diverges at the first iteration whose loss is NaN/inf, or grew to more than this many times its reference
level (:func:`divergence_iteration`): the run's best loss so far, never taken below its floor (the smaller of the
median of its first :data:`DIVERGENCE_WINDOW` losses and the loss of a network whose output is zero,
:func:`baseline_loss`)."""

DIVERGENCE_WINDOW = 10
"""k: the run's starting level is the median of its first k losses (robust to one large first loss)."""


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


def divergence_iteration(losses, factor: float = DIVERGENCE_FACTOR, reference: float | None = None,
                         window: int = DIVERGENCE_WINDOW) -> int | None:
    """The first iteration at which a run diverged, or None, judged on the run's own trajectory.

    Iteration ``t`` diverged when its loss is not finite, or (``t >= 1``) when it is more than ``factor`` times
    the reference level ``R_t = max(min(losses[:t]), floor)``: the best loss the run reached before ``t``, never
    taken below the floor ``min(median(losses[:window]), reference)`` (the median of the first ``window`` finite
    losses, the run's starting level, and ``reference``, the zero-output loss of :func:`baseline_loss` in
    :func:`train`). So a loss is never judged against its own first value alone, and no run is flagged at
    iteration 0 for a large starting loss (a ReLU network at g = 1.5 may start at 1000x the zero-output loss and
    then learn); a run that reached a tiny loss (1e-6) and has an Adam spike is not flagged either, because the
    floor keeps the reference at the task's own scale. The same rule for every backend; the non-finite part is what
    the backends detect themselves (they freeze a network whose loss is NaN/inf)."""
    a = np.asarray(losses, dtype=float).reshape(-1)
    if a.size == 0:
        return None
    bad = ~np.isfinite(a)
    head = a[: max(1, int(window))]
    head = head[np.isfinite(head)]
    floors = [v for v in ((float(np.median(head)) if head.size else None), reference)
              if v is not None and math.isfinite(v) and v > 0]
    if floors and a.size > 1:
        best = np.minimum.accumulate(np.where(np.isfinite(a), a, np.inf))  # best[t]: min of losses[: t + 1]
        ref = np.maximum(best[:-1], min(floors))  # R_t for t >= 1
        with np.errstate(invalid="ignore"):
            bad[1:] |= a[1:] > factor * ref
    return int(np.argmax(bad)) if bad.any() else None


LIMITS = {"iterations": 1_000_000, "hidden": 8192, "batch": 16384, "networks": 4096, "streams": 4096,
          "runs": 100_000}
"""Size ceilings checked before anything is allocated or written; ``allow_large=True`` (``--allow-large``, or the
environment variable ``NEURORATE_ALLOW_LARGE=1``) lifts them. The memory estimate (:func:`estimate_bytes`) is
checked against the available memory in any case. ``networks`` counts the networks of one call (a study's
ensemble), ``runs`` the networks a study trains in all (the paper study: 1,920)."""


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
    and accuracy histories, the Lyapunov run (8 trials of 16 streams, states and the ``k`` tangent vectors), and
    what the rule's estimator keeps (``Rule.state_floats``: RTRL's influence matrix is ``B N^3`` per network).
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
    total += _rule_state_bytes(rule, n, int(n_in), int(batch), m, d)
    return int(total)


def _rule_state_bytes(rule, n: int, n_in: int, batch: int, networks: int, dsize: int) -> int:
    """Bytes the rule's estimator keeps for ``networks`` networks (0 for a rule without one)."""
    return dsize * networks * get_rule(rule).state_floats(n, n_in, batch)


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


def gpu_free_bytes(device) -> int | None:
    """Free memory of the CUDA device ``device`` ("auto", "cuda", "cuda:1" or a ``torch.device``) in bytes, from
    ``torch.cuda.mem_get_info``; None for the CPU, without a GPU, or when the driver says nothing."""
    if device is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    if isinstance(device, str) and device == "auto":
        device = "cuda"
    try:
        dev = torch.device(device)
        if dev.type != "cuda":
            return None
        return int(torch.cuda.mem_get_info(dev)[0])
    except (RuntimeError, AssertionError, ValueError):  # an unknown device or index: the backend says so later
        return None


def check_resources(n_hidden: int, n_in: int, n_out: int, batch: int, n_steps: int, iterations: int,
                    networks: int = 1, rule: str = "eprop", dtype: str = "float32", lyapunov_k: int | None = 8,
                    allow_large: bool = False, device=None) -> int:
    """Size ceilings (:func:`check_sizes`) and the memory estimate (:func:`estimate_bytes`) against the
    available memory, before anything is allocated; returns the estimate in bytes. With a CUDA ``device`` the
    estimate is also checked against the GPU's free memory (:func:`gpu_free_bytes`): the ensemble's tensors live
    there."""
    check_sizes(allow_large, iterations=iterations, hidden=n_hidden, batch=batch, networks=networks)
    needed = estimate_bytes(n_hidden, n_in, n_out, batch, n_steps, iterations, networks, rule, dtype, lyapunov_k)
    kept = _rule_state_bytes(rule, int(n_hidden), int(n_in), int(batch), int(networks),
                             8 if str(dtype) in ("float64", "torch.float64") else 4)
    check_memory(needed, f"this run (rule {get_rule(rule).name!r} keeps {_gib(kept)} of influence estimates)"
                 if kept > needed // 2 else "this run")
    free = gpu_free_bytes(device)
    if free is not None and needed > free:
        raise NeurorateError(f"this run needs about {_gib(needed)} of GPU memory but only {_gib(free)} is free on "
                             f"{device}; use a smaller --hidden, --batch or fewer networks, or --device cpu")
    return needed


def check_backend(be, rule: str, optimizer: str, profile: Any, specs: Sequence[NetworkSpec], neuron: str = "rate"):
    """What the backend ``be`` (a name, class or instance) cannot do, as one line, before anything is written:
    its optional dependencies (:func:`~neurorate.backends.base.check_available`), then the rule, optimizer,
    profile (loaded and checked against every spec) and networks against its declared capabilities
    (:func:`~neurorate.backends.base.check_compatible`). Returns the loaded profile (None without one)."""
    caps = backend_capabilities(be)
    check_available(be)  # a missing extra is named now, not after the run directory exists
    check_compatible(caps, rule, optimizer, profile, specs, neuron=neuron)
    if profile is None:
        return None
    from neurorate.hardware.profiles import load_profile

    return load_profile(profile)


def _check_positive(name: str, value, integer: bool = False, allow_zero: bool = False):
    """``value`` as a positive (or, ``allow_zero``, non-negative) finite int or float; a wrong type (a bool, a
    string, None) or value is one line naming ``name``."""
    if integer:
        return as_int(value, name, minimum=0 if allow_zero else 1)
    v = as_real(value, name)
    if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
        raise NeurorateError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, "
                             f"got {v}")
    return v


def _check_flag(name: str, value, none: bool = False) -> None:
    """``value`` is True or False (or None where ``none``): a string such as ``"no"`` is not a switch."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_" or (none and value is None)):
        raise NeurorateError(f"{name} must be True or False{' or None' if none else ''}, got {value!r:.60}")


def _check_types(spec, backend, lyapunov, device, backend_options, out, overwrite, allow_large) -> list[NetworkSpec]:
    """The types of :func:`train`'s arguments that the later checks take for granted; returns the specs as a list."""
    if isinstance(spec, NetworkSpec):
        specs = [spec]
    elif isinstance(spec, (str, bytes, dict)) or spec is None:
        specs = None
    else:
        try:
            specs = list(spec)
        except TypeError:
            specs = None
    if not specs or not all(isinstance(s, NetworkSpec) for s in specs):
        raise NeurorateError(f"spec must be a NetworkSpec or a non-empty list of NetworkSpecs (see "
                             f"neurorate.NetworkSpec.random), got {type(spec).__name__}")
    if not isinstance(backend, str) and getattr(backend, "capabilities", None) is None:
        raise NeurorateError(f"backend must be a backend name (torch, lava or a plugin's) or a backend instance, "
                             f"got {backend!r:.60}")
    for name, value in (("lyapunov", lyapunov), ("overwrite", overwrite), ("allow_large", allow_large)):
        _check_flag(name, value)
    if backend_options is not None and not (isinstance(backend_options, dict)
                                            and all(isinstance(k, str) for k in backend_options)):
        raise NeurorateError(f"backend_options must be a dict of option names to values, such as "
                             f"{{'compiled': False}}, got {backend_options!r:.60}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise NeurorateError(f"out must be a path (str or pathlib.Path) or None, got {out!r:.60}")
    if not (isinstance(device, str) or type(device).__module__.startswith("torch")):
        raise NeurorateError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r:.60}")
    return specs


@dataclasses.dataclass
class Plan:
    """One call of :func:`train` as the steps of its pipeline see it: what :func:`validate` resolved, what
    :func:`build` made, and what the later steps add (run directories, spectra, the backend's runs)."""

    single: bool
    specs: list[NetworkSpec]
    tasks: list[Task]
    rule: str
    neuron: str
    iterations: int
    lrs: list[float]
    optimizer: str
    profile: Any
    backend: Any  # what the caller asked for: a name or a backend instance
    caps: BackendCapabilities
    options: dict
    floss_iterations: int
    floss_mode: str
    floss_k: int
    floss_lr: float
    floss_every: int | None
    lyapunov: bool
    lyapunov_k: int
    lyapunov_units: str
    device: str
    dtype: str
    progress: bool | None = None
    callback: Callable | None = None
    floss_callback: Callable | None = None
    be: Any = None  # the backend instance (build)
    label: str = ""  # TrainResult.backend
    dirs: list = dataclasses.field(default_factory=list)
    history: list = dataclasses.field(default_factory=list)
    config: dict = dataclasses.field(default_factory=dict)
    start_specs: list = dataclasses.field(default_factory=list)
    floss_losses: Any = None
    spectra: dict = dataclasses.field(default_factory=lambda: {"before": None, "flossed": None, "after": None})
    runs: list = dataclasses.field(default_factory=list)
    t_start: float = 0.0
    grad_alignment_every: int | None = None
    alignment: dict = dataclasses.field(default_factory=dict)  # global iteration -> {field: (M,)}

    @property
    def measures(self) -> bool:
        """Lyapunov spectra are measured (rate networks only; docs/lyapunov.md)."""
        return self.lyapunov and self.neuron == "rate"

    def task_of(self, j: int) -> Task:
        """The task of network ``j`` (the shared task when there is one)."""
        return self.tasks[j] if len(self.tasks) > 1 else self.tasks[0]


def train(
    spec: NetworkSpec | Sequence[NetworkSpec],
    task: Task | Sequence[Task],
    rule: str = "eprop",
    backend: str = "torch",
    iterations: int = RUN_DEFAULTS["iterations"],
    lr: float | Sequence[float] | None = None,
    optimizer: str | None = None,
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
    grad_alignment_every: int | None = None,
) -> TrainResult | list[TrainResult]:
    """Train one network, or a list of networks as one ensemble program.

    Parameters
    ----------
    spec : a :class:`NetworkSpec` or a list of them (sharing N, form and activation); a finished
        :class:`TrainResult` (e.g. :func:`neurorate.load_run` of a run directory) continues from its trained network.
    task : a :class:`~neurorate.tasks.base.Task` (shared data) or one per network.
    rule : a rule name of ``nr.rules()`` (the built-ins ``bptt``, ``eprop``, ``eprop_online``, ``eprop_random``,
        ``rflo``, ``trunc1``, or a plugin's; docs/rules.md).
    backend : "torch", "lava", a plugin name or a backend instance; what it runs is read from its declared
        capabilities (:class:`~neurorate.backends.base.BackendCapabilities`).
    iterations : training iterations (one batch and one update each); the default is ``neurorate run``'s
        (:data:`neurorate.defaults.RUN_DEFAULTS`).
    lr : learning rate, or one per network; None: the backend's default for the optimizer (``default_lr`` of its
        capabilities; 1.5e-4 for Adam and 0.05 for SGD on the built-in backends, as ``neurorate run``).
    optimizer : "adam" or "sgd"; None: the backend's default (Adam on torch, SGD on Lava), as ``neurorate run``.
    profile : hardware profile name or :class:`~neurorate.hardware.profiles.HardwareProfile` (None: full precision).
    floss_iterations : local gradient-flossing pre-training iterations (0: none; the paper uses 100).
    floss_mode : "state" (the paper's detach reading), "onestep" (strictly local in time) or "full".
    floss_k, floss_lr : exponents flossed and flossing learning rate.
    floss_every : also floss (``floss_iterations`` each time) after every ``floss_every`` training iterations
        ("inter-flossing", Engelken 2023); the optimizer state carries over: a backend whose capabilities are
        ``resumable`` (the torch backend).
    lyapunov : measure the top ``lyapunov_k`` exponents before and after (and after flossing).
    lyapunov_units : "step", "tau" or "second".
    device, dtype : placement ("auto" = CUDA if present) and precision, passed to a backend whose capabilities
        declare them (the torch backend; the Lava backend fixes its own).
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
    grad_alignment_every : every K-th iteration, record the alignment of the rule's update (one draw) with the exact
        gradient of that batch, at the cost of one exact gradient (:func:`neurorate.analysis.alignment.
        alignment_fields`): extra fields of those lines of ``metrics.jsonl`` and ``TrainResult.alignment``
        (rate networks, a backend whose ``train`` takes it: the torch backend). None: not recorded.

    Everything (options, profile, backend capabilities, sizes and memory, ``out``) is checked before anything is
    written. A run whose loss becomes non-finite or grows past :data:`DIVERGENCE_FACTOR` times its reference level
    is ``diverged`` (:func:`divergence_iteration`). Ctrl-C writes the partial result (``status`` "interrupted") and
    raises :class:`~neurorate.io.results.RunInterrupted` (a ``KeyboardInterrupt``) saying what was kept; any other
    error marks the run directory "failed" and is raised again.

    Returns
    -------
    A :class:`TrainResult` for one spec, a list of them for a list of specs.
    """
    spec = start_specs(spec)
    _check_hooks(progress=progress, callback=callback, floss_callback=floss_callback)
    plan = validate(spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode,
                    floss_k, floss_lr, floss_every, lyapunov, lyapunov_k, lyapunov_units, device, dtype,
                    backend_options, neuron, out, overwrite, allow_large, grad_alignment_every)
    plan.progress, plan.callback, plan.floss_callback = progress, callback, floss_callback
    build(plan)
    out_root, lock = claim_out_dir(out, overwrite, ensemble=len(plan.specs) > 1) if out is not None else (None, None)
    try:
        plan.dirs = _open_run_dirs(out_root, len(plan.specs), plan.iterations)
        results = _run_pipeline(plan, out_root)
    finally:
        if lock is not None:
            lock.release()
    return results[0] if plan.single else results


def _run_pipeline(plan: Plan, out_root: Path | None) -> list[TrainResult]:
    """Steps 3-9 of :func:`train` with the run directories open: an interrupt (Ctrl-C, SIGTERM, SIGHUP) keeps the
    partial result, an I/O failure or any other error marks the directories ``failed``."""
    where = out_root if len(plan.dirs) > 1 else (plan.dirs[0].path if plan.dirs else None)
    try:
        record_start(plan)
        measure(plan, "before")
        floss_step(plan)
        measure(plan, "flossed")
        train_step(plan)
        measure(plan, "after")
        return record(plan)
    except KeyboardInterrupt as exc:
        if not plan.dirs:
            raise
        from neurorate.signals import cause

        stopped_by = cause(exc)
        n = len(plan.history)
        try:
            _write_partial(plan, stopped_by)
        except OutputError as err:
            raise RunInterrupted(f"{_stopped(stopped_by)} after {n} of {plan.iterations} iterations, and the partial "
                                 f"result could not be written ({err}); {_kept(plan)}",
                                 getattr(exc, "signum", None)) from None
        curve = "learning_curve.png, " if plan.history else ""
        raise RunInterrupted(f"{_stopped(stopped_by)} after {n} of {plan.iterations} iterations; kept in {where}: "
                             f"metrics.jsonl ({n} iterations), {curve}config.json, "
                             "spec_initial.npz and result.json with status \"interrupted\" (no final spec)",
                             getattr(exc, "signum", None)) from None
    except Exception as exc:
        reason = str(exc) if isinstance(exc, OutputError) else f"{type(exc).__name__}: {exc}"
        recorded = True
        for rd in plan.dirs:
            try:
                rd.close()
            except OutputError:
                pass
            try:
                rd.set_status("failed", error=reason, iterations_done=len(plan.history))
            except OSError:
                recorded = False
        if isinstance(exc, OutputError):
            state = 'result.json says "failed"' if recorded else "result.json could not be updated either"
            raise OutputError(f"{exc}; the run stopped at iteration {len(plan.history)} of {plan.iterations} "
                              f"({state}); {_kept(plan)}") from None
        raise


def start_specs(spec):
    """What :func:`train` starts from: a :class:`TrainResult` (a finished run, e.g. :func:`neurorate.load_run`)
    stands for its trained network ``spec``, also inside a list; anything else is passed on as it is. A run that
    did not finish has no trained network: a one-line error says so and what to start from instead."""
    def one(s):
        if not isinstance(s, TrainResult):
            return s
        if not s.finished:
            where = f" ({s.run_dir})" if s.run_dir is not None else ""
            raise NeurorateError(f"the run{where} did not finish (status {s.status}): it has no trained network; "
                                 "start from its spec_initial (result.spec_initial) or from a finished run")
        return s.spec

    return [one(s) for s in spec] if isinstance(spec, (list, tuple)) else one(spec)


def _check_hooks(progress, callback, floss_callback) -> None:
    """``progress`` is None or a bool; the callbacks are None or callable (one line otherwise)."""
    if progress is not None and not isinstance(progress, bool):
        raise NeurorateError(f"progress must be True, False or None (a bar only on a terminal), got {progress!r}")
    for name, value in (("callback", callback), ("floss_callback", floss_callback)):
        if value is not None and not callable(value):
            raise NeurorateError(f"{name} must be a function called after every iteration (or None), got "
                                 f"{type(value).__name__} {value!r}")


def rule_name(rule) -> str:
    """A rule as ``config.json`` records it: its name (a :class:`~neurorate.learning.registry.Rule` value passed
    to :func:`train` is recorded by its ``name``, never as an object)."""
    return rule if isinstance(rule, str) else str(getattr(rule, "name", rule))


def _stopped(cause: str) -> str:
    return "interrupted" if cause == "Ctrl-C" else f"stopped by {cause}"


def _kept(plan: Plan) -> str:
    """What the first run directory still holds, for a message: "kept in DIR: a, b, c"."""
    if not plan.dirs:
        return "nothing was kept"
    path = plan.dirs[0].path
    try:
        names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    except OSError:
        return f"see {path}"
    lines = plan.dirs[0].lines
    names = [f"metrics.jsonl ({lines} whole lines)" if n == "metrics.jsonl" else n for n in names]
    where = path.parent if len(plan.dirs) > 1 else path
    return f"kept in {where}: {', '.join(names) or 'nothing'}"


def check_train(spec, task, rule: str = "eprop", backend: str = "torch", iterations: int = RUN_DEFAULTS["iterations"],
                lr=None,
                optimizer: str | None = None, profile: Any = None, floss_iterations: int = 0, floss_mode: str = "state",
                floss_every: int | None = None, lyapunov: bool = True, lyapunov_k: int = 8,
                lyapunov_units: str = "step", device: str = "auto", dtype: str = "float32",
                backend_options: dict | None = None, neuron: str = "rate", out: str | Path | None = None,
                overwrite: bool = False, allow_large: bool = False, grad_alignment_every: int | None = None) -> None:
    """Every check :func:`train` makes before it writes anything, without training or writing: a
    :class:`NeurorateError` (one line) for the first problem found (:func:`validate`, then :func:`build`). The
    arguments are those of :func:`train`."""
    spec = start_specs(spec)
    build(validate(spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode, 8,
                   1e-3, floss_every, lyapunov, lyapunov_k, lyapunov_units, device, dtype, backend_options, neuron,
                   out, overwrite, allow_large, grad_alignment_every))


# ------------------------------------------------------------------------------------------ the pipeline's steps
def validate(spec, task, rule, backend, iterations, lr, optimizer, profile, floss_iterations, floss_mode, floss_k,
             floss_lr, floss_every, lyapunov, lyapunov_k, lyapunov_units, device, dtype, backend_options, neuron,
             out, overwrite, allow_large, grad_alignment_every=None) -> Plan:
    """Step 1: check every argument of :func:`train` (same names) before anything is allocated or written, and
    return the :class:`Plan`. The backend is asked through its declared capabilities
    (:func:`~neurorate.backends.base.backend_capabilities`, :func:`check_backend`), never by its name; the
    size ceilings and the memory estimate (:func:`check_resources`) and ``out`` are checked last."""
    single = isinstance(spec, NetworkSpec)
    specs = _check_types(spec, backend, lyapunov, device, backend_options, out, overwrite, allow_large)
    tasks = list(task) if isinstance(task, (list, tuple)) else [task]
    if not all(isinstance(t, Task) for t in tasks):
        raise NeurorateError("task must be a neurorate Task (see neurorate.make_task) or a list of them")
    get_rule(rule)  # unknown -> one-line error listing the rules (built-ins and plugins)
    check_ensemble(specs)  # the networks of one call share N, n_in, n_out, form and activation
    tasks = task_list(tasks, len(specs))  # one shared task or one per network
    env_threads()  # a bad NEURORATE_THREADS is a one-line error before anything is written
    if optimizer is None:
        optimizer = backend_capabilities(backend).default_optimizer
    if optimizer not in OPTIMIZERS:
        raise NeurorateError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    iterations = _check_positive("iterations", iterations, integer=True, allow_zero=True)
    floss_iterations = _check_positive("floss_iterations", floss_iterations, integer=True, allow_zero=True)
    if lr is None:
        lr = backend_capabilities(backend).default_lr.get(optimizer, DEFAULT_LR[optimizer])
    if isinstance(lr, (str, bytes)) or np.ndim(lr) == 0:
        lrs = [as_real(lr, "lr")] * len(specs)
    else:
        try:
            lrs = [as_real(v, "lr") for v in lr]
        except TypeError:
            raise NeurorateError(f"lr must be a positive number or one per network, got {lr!r:.60}") from None
    if len(lrs) != len(specs):
        raise NeurorateError(f"give one learning rate or one per network ({len(specs)}), got {len(lrs)}")
    for v in lrs:
        _check_positive("lr", v)
    if floss_mode not in FLOSS_MODES:
        raise NeurorateError(f"unknown floss mode {floss_mode!r}; choose one of {', '.join(FLOSS_MODES)}")
    if lyapunov:
        _check_positive("lyapunov_k", lyapunov_k, integer=True)
    if floss_iterations:
        _check_positive("floss_k", floss_k, integer=True)  # (more than N is clipped to N by the flossing)
        _check_positive("floss_lr", floss_lr)
    if lyapunov_units not in LYAPUNOV_UNITS:
        raise NeurorateError(f"unknown Lyapunov unit {lyapunov_units!r}; choose one of {', '.join(LYAPUNOV_UNITS)}")
    for s in specs:
        for t in tasks:
            if (s.n_in, s.n_out) != (t.n_in, t.n_out):
                raise NeurorateError(f"network has n_in={s.n_in}, n_out={s.n_out} but task {t.name!r} needs "
                                     f"n_in={t.n_in}, n_out={t.n_out}")
    if neuron not in NEURONS:
        raise NeurorateError(f"unknown neuron {neuron!r}; choose rate, lif or alif")
    caps = backend_capabilities(backend)
    if floss_every is not None:
        _check_positive("floss_every", floss_every, integer=True)
        if not caps.resumable:
            raise NeurorateError(f"periodic flossing (floss_every) needs a backend whose training resumes with its "
                                 f"optimizer state; the {caps.title} backend's does not")
        if floss_iterations <= 0:
            raise NeurorateError("floss_every needs floss_iterations > 0 (the length of each flossing phase)")
    options = dict(backend_options or {})
    if neuron == "rate":
        check_backend(backend, rule, optimizer, profile, specs)
        check_compatible(caps, dtype=dtype, device=device, batch=tasks[0].batch_size, options=options)
        hook = getattr(backend_class(backend) if isinstance(backend, str) else backend, "check_options", None)
        if callable(hook):  # limits that depend on the backend's options (e.g. the Lava loihi graph's)
            hook(options, specs=specs, batch=tasks[0].batch_size, profile=profile, rule=rule, optimizer=optimizer,
                 loss=tasks[0].loss_kind)
    else:
        _check_spiking(neuron, rule, optimizer, profile, floss_iterations, tasks, options)
        check_compatible(caps, rule, neuron=neuron, device=device)
        if dtype not in ("float32", "float64"):
            raise NeurorateError(f"neuron={neuron!r} trains in float32 or float64, not dtype={dtype!r}")
    if grad_alignment_every is not None:
        _check_positive("grad_alignment_every", grad_alignment_every, integer=True)
        grad_alignment_every = int(grad_alignment_every)
        _check_alignment(backend, neuron)
    t0 = tasks[0]
    check_resources(specs[0].n_hidden, specs[0].n_in, specs[0].n_out, t0.batch_size, t0.n_steps, int(iterations),
                    networks=len(specs), rule=rule, dtype=dtype, lyapunov_k=lyapunov_k if lyapunov else None,
                    allow_large=allow_large, device=device if neuron != "rate" or caps.devices else None)
    if out is not None:
        check_out_dir(out, overwrite)
    return Plan(single=single, specs=specs, tasks=tasks, rule=rule, neuron=neuron, iterations=int(iterations),
                lrs=lrs, optimizer=optimizer, profile=profile, backend=backend, caps=caps, options=options,
                floss_iterations=int(floss_iterations), floss_mode=floss_mode, floss_k=floss_k, floss_lr=floss_lr,
                floss_every=None if floss_every is None else int(floss_every), lyapunov=bool(lyapunov),
                lyapunov_k=lyapunov_k, lyapunov_units=lyapunov_units, device=device, dtype=dtype,
                grad_alignment_every=grad_alignment_every)


def _check_alignment(backend, neuron: str) -> None:
    """``grad_alignment_every`` needs rate networks and a backend whose ``train`` takes it (the torch backend's)."""
    import inspect

    cls = backend_class(backend) if isinstance(backend, str) else backend
    takes = "grad_alignment_every" in inspect.signature(cls.train).parameters
    if neuron != "rate" or not takes:
        raise NeurorateError("grad_alignment_every needs rate networks on a backend that measures it (torch); "
                             f"got neuron={neuron!r} on {getattr(cls, 'name', backend)!s}")


def _alignment_kwargs(plan: Plan, on_alignment) -> dict:
    """The backend's ``train`` keywords of ``grad_alignment_every`` (none when it is off)."""
    if plan.grad_alignment_every is None:
        return {}
    return {"grad_alignment_every": plan.grad_alignment_every, "alignment_callback": on_alignment}


def build(plan: Plan) -> Plan:
    """Step 2: the backend instance (a name is instantiated with ``device``/``dtype`` when its capabilities
    declare them; an instance is used as given), its label for :class:`TrainResult` and the run's configuration.
    Spiking neurons train with :mod:`neurorate.model.spiking_learning` and need no instance. Writes nothing."""
    caps = plan.caps
    if plan.neuron == "rate":
        kwargs = {}
        if caps.devices:
            kwargs["device"] = plan.device
        if caps.dtypes:
            kwargs["dtype"] = plan.dtype
        plan.be = get_backend(plan.backend, **kwargs) if isinstance(plan.backend, str) else plan.backend
        plan.label = plan.be.name
        plan.config = _config(plan.specs, plan.tasks, plan.rule, plan.backend, plan.iterations, plan.lrs,
                              plan.optimizer, plan.profile, plan.floss_iterations, plan.floss_mode, plan.floss_k,
                              plan.floss_lr, plan.lyapunov, plan.lyapunov_k, plan.lyapunov_units, plan.device,
                              plan.dtype)
        plan.config["backend_options"] = {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
                                          for k, v in plan.options.items()}
    else:
        plan.label = f"{caps.name} ({plan.neuron})"
        analysis_device(plan)  # "cuda" without a GPU is a one-line error before anything is written
        plan.config = {"neuron": plan.neuron, "task": plan.tasks[0].config(), "rule": rule_name(plan.rule),
                       "iterations": plan.iterations, "optimizer": plan.optimizer,
                       "spiking": _spiking_constants(plan.neuron, plan.options)}
    return plan


def record_start(plan: Plan) -> None:
    """Step 3: each run directory's ``config.json`` (the run's configuration, its network's index, learning rate
    and metadata), ``environment.json`` and ``spec_initial.npz``, before any training."""
    from neurorate.provenance import environment

    for j, rd in enumerate(plan.dirs):
        extra = {"network_index": j} if plan.neuron == "rate" else {}
        rd.write_json("config.json", {**plan.config, **extra, "lr": float(plan.lrs[j]),
                                      "network": plan.specs[j].meta()})
        rd.write_json("environment.json", environment())
        rd.save_spec("spec_initial.npz", plan.specs[j])
    plan.start_specs = list(plan.specs)
    plan.t_start = time.perf_counter()


def measure(plan: Plan, when: str) -> None:
    """Steps 4, 6 and 8: the top ``lyapunov_k`` Lyapunov exponents of every network (docs/lyapunov.md) ``"before"``
    training, ``"flossed"`` (after flossing, if it ran) and ``"after"`` training, on the first task. Nothing when
    ``lyapunov`` is off or the networks are spiking."""
    if not plan.measures or (when == "flossed" and plan.floss_iterations <= 0):
        return
    specs = {"before": plan.specs, "flossed": plan.start_specs, "after": [r.spec for r in plan.runs]}[when]
    bar = _PhaseBar(f"lyapunov {when}", plan.progress)
    try:
        plan.spectra[when] = _spectrum(specs, plan.tasks[0], plan.lyapunov_k, plan.lyapunov_units,
                                       device=analysis_device(plan), progress=bar)
    finally:
        bar.close()


class _PhaseBar:
    """A progress bar over the steps of a phase that reports ``(total, done)`` (the Lyapunov spectra of
    :func:`measure`): shown as :func:`train`'s ``progress`` says (None: on a terminal), with tqdm's estimate of
    the time left, so no phase of a run is silent."""

    def __init__(self, desc: str, progress: bool | None):
        self.desc, self.progress, self.bar, self.done = desc, progress, None, 0

    def __call__(self, total: int, done: int) -> None:
        if self.progress is False:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit="step", dynamic_ncols=True, leave=False,
                            disable=None if self.progress is None else not self.progress)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def floss_step(plan: Plan) -> None:
    """Step 5: gradient-flossing pre-training (``floss_iterations`` > 0; docs/theory.md), on torch for every
    backend: the flossed weights reach the backend through the NetworkSpecs."""
    if plan.floss_iterations <= 0:
        return
    from neurorate.analysis.flossing import floss

    plan.start_specs, plan.floss_losses = floss(plan.specs, plan.tasks[0], iterations=plan.floss_iterations,
                                                mode=plan.floss_mode, k=plan.floss_k, lr=plan.floss_lr,
                                                progress=_floss_progress(plan), device=analysis_device(plan))


def train_step(plan: Plan) -> None:
    """Step 7: train from the (flossed) specs, one :class:`~neurorate.backends.base.BackendRun` per network in
    ``plan.runs``. Rate networks: the backend's ``train`` (in chunks with flossing phases between them for
    ``floss_every``); spiking networks: :func:`neurorate.model.spiking_learning.train_lif`. Every iteration goes
    to the history, each run directory's ``metrics.jsonl`` and the user's callback; the metrics are closed after."""

    def on_iteration(i, losses, acc):
        plan.history.append((np.array(losses, dtype=float), np.array(acc, dtype=float)))
        fields = plan.alignment.get(i, {})
        for j, rd in enumerate(plan.dirs):
            rd.append_metrics(i, losses[j], acc[j], **{k: float(v[j]) for k, v in fields.items()})
        if plan.callback is not None:
            plan.callback(i, losses, acc)

    def on_alignment(i, fields):
        plan.alignment[i] = fields

    task_arg = plan.tasks if len(plan.tasks) > 1 else plan.tasks[0]
    try:
        if plan.neuron != "rate":
            plan.runs = _train_spiking(plan, on_iteration)
        elif plan.floss_every is None:
            plan.runs = plan.be.train(plan.start_specs, task_arg, plan.rule, iterations=plan.iterations, lr=plan.lrs,
                                      optimizer=plan.optimizer, profile=plan.profile, progress=plan.progress,
                                      callback=on_iteration, **_alignment_kwargs(plan, on_alignment), **plan.options)
        else:
            plan.runs = _train_with_periodic_flossing(plan, task_arg, on_iteration,
                                                      _alignment_kwargs(plan, on_alignment))
    finally:
        for rd in plan.dirs:
            rd.close()


def record(plan: Plan) -> list[TrainResult]:
    """Step 9: one :class:`TrainResult` per network (divergence by :func:`divergence_iteration` against the
    backend's own, the spectra, the wall time shared out) and, with run directories, their final files
    (:func:`~neurorate.io.results.write_final`; a spiking network's ``spec_final.npz`` keeps its constants)."""
    wall = time.perf_counter() - plan.t_start
    flossed = plan.floss_iterations > 0
    results = []
    for j, run in enumerate(plan.runs):
        sp = {k: (None if v is None else np.asarray(v[j])) for k, v in plan.spectra.items()}
        diverged_at = _diverged_at(run.losses, run.diverged_at if run.diverged else None,
                                   baseline_loss(plan.task_of(j)))
        res = TrainResult(
            losses=run.losses, accuracy=run.accuracy, spec=run.spec, spec_initial=plan.specs[j],
            rule=rule_name(plan.rule),
            backend=plan.label, lr=float(plan.lrs[j]), optimizer=plan.optimizer, iterations=plan.iterations,
            diverged=diverged_at is not None, diverged_at=diverged_at, wall_time=wall / len(plan.runs),
            spec_flossed=plan.start_specs[j] if flossed else None,
            floss_losses=None if plan.floss_losses is None else np.asarray(plan.floss_losses[j]),
            lambda_max_before=_first(sp["before"]), lambda_max_flossed=_first(sp["flossed"]),
            lambda_max_after=_first(sp["after"]), spectrum_before=sp["before"], spectrum_flossed=sp["flossed"],
            spectrum_after=sp["after"], lyapunov_unit=plan.lyapunov_units if plan.measures else None,
            config={**plan.config, "lr": float(plan.lrs[j])}, run_dir=plan.dirs[j].path if plan.dirs else None,
        )
        if plan.alignment:
            its = sorted(k for k in plan.alignment if k < len(run.losses))
            res.alignment = {"iteration": np.array(its, dtype=int),
                             **{f: np.array([plan.alignment[i][f][j] for i in its], dtype=float)
                                for f in plan.alignment[its[0]]}} if its else None
        if plan.dirs:
            write_final(plan.dirs[j], res)
            if "network" in run.extra:
                plan.dirs[j].save_spec("spec_final.npz", run.extra["network"])  # with the LIF constants
        results.append(res)
    return results


# ------------------------------------------------------------------------------------------ helpers of the steps
def _floss_progress(plan: Plan):
    return plan.floss_callback if plan.floss_callback is not None else plan.progress


def _diverged_at(losses, backend_at: int | None, reference: float | None) -> int | None:
    """The earlier of the backend's own divergence iteration and :func:`divergence_iteration`."""
    ours = divergence_iteration(losses, reference=reference)
    found = [v for v in (backend_at, ours) if v is not None]
    return min(found) if found else None


def _write_partial(plan: Plan, stopped_by: str = "Ctrl-C") -> None:
    """After an interrupt: result.json marked "interrupted" (``stopped_by``: Ctrl-C, SIGTERM or SIGHUP) with the
    losses so far, and their learning curve."""
    for j, rd in enumerate(plan.dirs):
        losses = np.array([h[0][j] for h in plan.history], dtype=float)
        acc = np.array([h[1][j] for h in plan.history], dtype=float)
        try:
            rd.catch_up(losses, acc)  # metrics.jsonl: exactly one whole line per iteration kept
        except OSError:
            pass
        res = TrainResult(losses=losses, accuracy=acc, spec=plan.specs[j], spec_initial=plan.specs[j],
                          rule=rule_name(plan.rule), backend=plan.label, lr=float(plan.lrs[j]),
                          optimizer=plan.optimizer, iterations=plan.iterations, run_dir=rd.path, interrupted=True)
        write_final(rd, res, stopped_by=stopped_by)


def _train_with_periodic_flossing(plan: Plan, task, callback, extra: dict | None = None) -> list[BackendRun]:
    """Train in chunks of ``floss_every`` iterations with a flossing phase between chunks (optimizer state kept:
    the backend is ``resumable``)."""
    from neurorate.analysis.flossing import floss

    every, iterations = plan.floss_every, plan.iterations
    done, state, current, chunks = 0, None, list(plan.start_specs), []
    while done < iterations:
        n = min(every, iterations - done)
        offset = done

        def cb(i, losses, acc, offset=offset):
            callback(offset + i, losses, acc)

        runs = plan.be.train(current, task, plan.rule, iterations=n, lr=plan.lrs, optimizer=plan.optimizer,
                             profile=plan.profile, progress=plan.progress, callback=cb, start_iteration=done,
                             optimizer_state=state, **(extra or {}), **plan.options)
        state = runs[0].extra.get("optimizer_state")
        chunks.append(runs)
        done += n
        current = [r.spec for r in runs]
        if done < iterations:
            current, _ = floss(current, plan.tasks[0], iterations=plan.floss_iterations, mode=plan.floss_mode,
                               k=plan.floss_k, lr=plan.floss_lr, progress=_floss_progress(plan),
                               device=analysis_device(plan))
    out = []
    for j in range(len(plan.specs)):
        parts = [c[j] for c in chunks]
        div = [k for k, p in enumerate(parts) if p.diverged]
        at = None if not div else sum(len(p.losses) for p in parts[:div[0]]) + parts[div[0]].diverged_at
        out.append(BackendRun(spec=parts[-1].spec, losses=np.concatenate([p.losses for p in parts]),
                              accuracy=np.concatenate([p.accuracy for p in parts]), diverged=at is not None,
                              diverged_at=at, wall_time=sum(p.wall_time for p in parts)))
    return out


_SPIKING_OPTIONS = ("threshold", "kappa", "gamma", "beta_a", "rho", "adaptive_fraction")


def _check_spiking(neuron, rule, optimizer, profile, floss_iterations, tasks, constants) -> None:
    """What the spiking model (:mod:`neurorate.model.spiking_learning`) trains: Adam, full precision, no flossing,
    its rules, one shared task and its constants (``backend_options``)."""
    if optimizer != "adam" or profile is not None or floss_iterations:
        raise NeurorateError(f"neuron={neuron!r} trains with adam, without a profile or flossing")
    if rule not in rule_names(neuron=neuron):
        raise NeurorateError(f"neuron={neuron!r} supports the rules {', '.join(rule_names(neuron=neuron))}, "
                             f"not {rule!r}")
    if len(tasks) != 1:
        raise NeurorateError(f"neuron={neuron!r} trains every network on one shared task")
    unknown = set(constants) - set(_SPIKING_OPTIONS)
    if unknown:
        raise NeurorateError(f"unknown spiking option(s) {', '.join(sorted(unknown))}; choose "
                             f"{', '.join(_SPIKING_OPTIONS)}")
    if neuron == "lif" and constants.get("beta_a", 0.0) != 0.0:
        raise NeurorateError("neuron='lif' has no threshold adaptation; use neuron='alif' for beta_a > 0")


def _spiking_constants(neuron: str, options: dict) -> dict:
    """The spiking constants of ``backend_options`` (``"alif"``: ``beta_a = 1`` unless given)."""
    constants = dict(options)
    if neuron == "alif":
        constants.setdefault("beta_a", 1.0)
    return constants


def _train_spiking(plan: Plan, callback) -> list[BackendRun]:
    """The spiking variant of step 7: :func:`neurorate.model.spiking_learning.train_lif`, the whole ensemble in one
    program (every network with its own learning rate)."""
    from neurorate.model.spiking_learning import train_lif

    res = train_lif(list(plan.start_specs), plan.tasks[0], rule=plan.rule, iterations=plan.iterations,
                    lr=[float(v) for v in plan.lrs], callback=callback, device=analysis_device(plan),
                    dtype=plan.dtype, **plan.config["spiking"])
    m = len(plan.specs)
    lost = set(res.get("lost", ()))  # weights that are no longer numbers: diverged by the last update at the latest
    return [BackendRun(spec=net.spec, losses=np.asarray(res["losses"][:, j], dtype=float),
                       accuracy=np.asarray(res["accuracy"][:, j], dtype=float), diverged=j in lost,
                       diverged_at=max(0, plan.iterations - 1) if j in lost else None,
                       wall_time=float(res["wall_time"]) / m, extra={"network": net})
            for j, net in enumerate(res["networks"])]


def _first(spectrum):
    if spectrum is None:
        return None
    v = float(np.asarray(spectrum).reshape(-1)[0])
    return v if math.isfinite(v) else None


def _spectrum(specs, task, k, units, device="cpu", progress=None):
    from neurorate.analysis.lyapunov import lyapunov_spectrum

    k = min(int(k), specs[0].n_hidden)
    return np.atleast_2d(lyapunov_spectrum(specs, task, k=k, units=units, device=device, progress=progress))


def analysis_device(plan: Plan):
    """Where the backend-neutral steps of ``plan`` compute (Lyapunov spectra, flossing, spiking training): the
    device of a backend that has one (the torch backend's resolved ``device``), for spiking neurons ``device``
    resolved as the torch backend resolves it (``"auto"``: CUDA when present), else the CPU. Their precision
    stays their own (spectra in float64, flossing in float32), so a CPU run gives the same numbers as ever."""
    dev = getattr(plan.be, "device", None)
    if dev is not None and type(dev).__module__.startswith("torch"):
        return dev
    if plan.neuron != "rate" and plan.caps.devices:
        from neurorate.backends.torch import resolve_device

        return resolve_device(plan.device)
    return "cpu"


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
        "task": tasks[0].config(), "rule": rule_name(rule), "iterations": int(iterations),
        "backend": backend if isinstance(backend, str) else getattr(backend, "name", type(backend).__name__),
        "optimizer": optimizer, "lrs": [float(v) for v in lrs], "profile": prof,
        "floss": {"iterations": int(floss_iterations), "mode": floss_mode, "k": int(floss_k), "lr": float(floss_lr)},
        "lyapunov": {"on": bool(lyapunov), "k": int(lyapunov_k), "units": lyapunov_units},
        "device": device, "dtype": dtype, "n_networks": len(specs),
        "inits": [s.init for s in specs],
    }
