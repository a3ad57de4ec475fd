"""The backend abstraction: the same network and the same rules on different engines.

A backend is any class with ``name``, ``capabilities`` (a :class:`BackendCapabilities`), ``simulate``, ``train``
and ``jacobian_vector`` (the :class:`Backend` protocol) registered under the ``neurorate.backends`` entry-point
group; a third party adds one without touching the core. Every backend must pass the conformance suite
(``tests/conformance/test_conformance.py``): same trajectories, same weight updates, same losses.

The core never branches on a backend's name: it reads the class's declared capabilities
(:func:`backend_capabilities`, without instantiating the backend or importing its heavy dependencies) and refuses
what a backend cannot do with one line (:func:`check_compatible`) before anything is written. ``train`` of a
backend does only the training itself; :func:`neurorate.train` wraps it with the backend-neutral parts
(validation, flossing pre-training and Lyapunov spectra from the shared modules). The helpers the backends share
(:func:`check_ensemble`, :func:`task_list`, :func:`progress_bar`, :func:`make_profile_quantizer`) live here.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np

from neurorate.defaults import DEFAULT_LR
from neurorate.errors import NeurorateError
from neurorate.learning.registry import BUILTIN_RULES

_BUILTIN_BACKENDS = {
    "torch": "neurorate.backends.torch:TorchBackend",
    "lava": "neurorate.backends.lava:LavaBackend",
}

RULES = tuple(r.name for r in BUILTIN_RULES)
"""Names of the built-in learning rules (derived from :data:`neurorate.learning.BUILTIN_RULES`; their properties
and the rules of plugins: :func:`neurorate.learning.rules`, docs/rules.md)."""

OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class SimResult:
    """Trajectories of M networks: ``states``/``rates`` ``(M, T, B, N)``, ``outputs`` ``(M, T, B, n_out)``,
    ``preacts`` ``(M, T, B, N)`` (a in form A, u in forms B/C)."""

    states: np.ndarray
    rates: np.ndarray
    outputs: np.ndarray
    preacts: np.ndarray


@dataclasses.dataclass
class BackendRun:
    """What a backend's ``train`` returns for one network."""

    spec: Any  # trained NetworkSpec
    losses: np.ndarray  # (iterations,)
    accuracy: np.ndarray  # (iterations,)
    diverged: bool = False
    diverged_at: int | None = None
    wall_time: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


NEURONS = ("rate", "lif", "alif")
FORMS = ("A", "B", "C")
ACTIVATIONS = ("tanh", "relu", "identity")


@dataclasses.dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do, declared by its class (``capabilities``) and read without instantiating it.

    The core asks these instead of branching on the backend's name (:func:`check_compatible`), so a backend's
    limits are refused with one line before anything is written, and the CLI's defaults come from them.

    Parameters
    ----------
    name : the backend's registry name (as in ``Rule.backends``, ``backend=``, ``--backend``).
    title : the name in messages (default: ``name``).
    rules : the rules it runs; None (default): every rule whose ``Rule.backends`` lists ``name``
        (:func:`neurorate.learning.rules`, built-ins and plugins).
    online_only : it runs only rules computable forward in time (``Rule.detach == "presynaptic rates"``): no
        BPTT, which needs the whole trajectory backwards in time, no one-step truncation.
    optimizers : the optimizers it runs; the first one is its default.
    default_lr : the default learning rate of each optimizer (``neurorate run`` without ``--lr``).
    refusals : why an optimizer of :data:`OPTIMIZERS` is not run, one phrase each (e.g. ``{"adam": "is not
        local"}``), for the one-line error.
    forms, activations : the network forms and activations it simulates and trains.
    profiles : True if it accepts a hardware profile (:mod:`neurorate.hardware.profiles`).
    dtypes, devices : the ``dtype=`` and ``device=`` values its constructor accepts (the first is the default;
        ``device="cuda:K"`` counts as ``"cuda"``); empty: the backend fixes its own precision and placement and
        :func:`neurorate.train` passes neither.
    max_batch, max_networks : the largest batch and the most networks of one training call (None: no limit).
    neurons : the neuron models it trains (``"rate"``; ``"lif"``/``"alif"``: the spiking variant of
        :mod:`neurorate.model.spiking_learning`).
    options : the keyword options of its ``train`` (``backend_options`` of :func:`neurorate.train`).
    resumable : its ``train`` takes ``start_iteration`` and ``optimizer_state`` and returns the state in
        ``BackendRun.extra["optimizer_state"]`` (needed by periodic flossing, ``floss_every``).
    extra : the optional-dependency extra it needs (``pip install 'neurorate[<extra>]'``; None: none).
    threads : its constructor takes ``threads=`` (CPU threads of a training call; a study's worker passes its
        budget).
    own_processes : it runs its networks in OS processes of its own (a study then runs its ensembles in-process
        instead of in worker processes).
    cost : the relative cost of one network-iteration, torch's = 1 (orders a study's queue, longest first).
    """

    name: str
    title: str = ""
    rules: tuple[str, ...] | None = None
    online_only: bool = False
    optimizers: tuple[str, ...] = ("adam", "sgd")
    default_lr: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LR))
    refusals: Mapping[str, str] = dataclasses.field(default_factory=dict)
    forms: tuple[str, ...] = FORMS
    activations: tuple[str, ...] = ACTIVATIONS
    profiles: bool = False
    dtypes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    max_batch: int | None = None
    max_networks: int | None = None
    neurons: tuple[str, ...] = ("rate",)
    options: tuple[str, ...] = ()
    resumable: bool = False
    extra: str | None = None
    threads: bool = False
    own_processes: bool = False
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise NeurorateError(f"backend capabilities need a name, got {self.name!r}")
        if not self.title:
            object.__setattr__(self, "title", self.name)
        for field, allowed in (("optimizers", OPTIMIZERS), ("forms", FORMS), ("activations", ACTIVATIONS),
                               ("neurons", NEURONS)):
            values = tuple(getattr(self, field))
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise NeurorateError(f"backend {self.name!r}: capabilities.{field} must be a non-empty subset of "
                                     f"{', '.join(allowed)}, got {values!r}")
            object.__setattr__(self, field, values)
        missing = [o for o in self.optimizers if o not in self.default_lr]
        if missing:
            raise NeurorateError(f"backend {self.name!r}: capabilities.default_lr has no learning rate for "
                                 f"{', '.join(missing)}")
        for field in ("dtypes", "devices", "options"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.rules is not None:
            object.__setattr__(self, "rules", tuple(self.rules))

    @property
    def default_optimizer(self) -> str:
        """The optimizer used when none is given (the first of ``optimizers``)."""
        return self.optimizers[0]

    def runs(self, rule: Any) -> bool:
        """True if the backend runs ``rule`` (a :class:`neurorate.learning.Rule`)."""
        listed = rule.name in self.rules if self.rules is not None else self.name in rule.backends
        return listed and (not self.online_only or rule.detach_pre)

    def rule_names(self, neuron: str = "rate") -> tuple[str, ...]:
        """Names of the known rules it runs for ``neuron`` networks."""
        from neurorate.learning.registry import rules

        if neuron not in self.neurons:
            return ()
        return tuple(name for name, r in rules().items() if neuron in r.neurons and self.runs(r))


@runtime_checkable
class Backend(Protocol):
    """What a backend provides (see the module docstring)."""

    name: str
    capabilities: BackendCapabilities

    def simulate(self, specs: list, inputs: np.ndarray, profile: Any = None) -> SimResult:
        """Run the networks on ``inputs (T, B, n_in)`` from the zero state."""

    def train(self, specs: list, task: Any, rule: str, *, iterations: int, lr: list[float], optimizer: str,
              profile: Any = None, progress: bool | None = None,
              callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
              **options: Any) -> list[BackendRun]:
        """Train the networks on ``task`` and return one :class:`BackendRun` per spec."""

    def jacobian_vector(self, spec: Any, state: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The tangent map ``D(state) q`` of one step (docs/theory.md §4.1)."""


def available_backends() -> list[str]:
    """Names accepted by ``backend=`` (built-ins plus entry points)."""
    names = set(_BUILTIN_BACKENDS)
    names.update(ep.name for ep in metadata.entry_points(group="neurorate.backends"))
    return sorted(names)


def _target(name: str) -> str:
    eps = {ep.name: ep for ep in metadata.entry_points(group="neurorate.backends")}
    if name in eps:
        return eps[name].value
    if name in _BUILTIN_BACKENDS:
        return _BUILTIN_BACKENDS[name]
    raise NeurorateError(f"unknown backend {name!r}; choose one of {', '.join(available_backends())}")


def backend_class(name: str) -> type:
    """The class registered as backend ``name`` (built-in or entry point), not instantiated.

    Importing it imports only its module: the Lava backend's module imports no lava, so its capabilities
    can be read (and a missing extra reported in one line) on a machine without lava.
    """
    module, _, attr = _target(name).partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except NeurorateError:
        raise
    except Exception as exc:  # a broken plugin is a one-line error, not a traceback
        msg = " ".join(str(exc).split())
        raise NeurorateError(f"backend {name!r} = {module}:{attr} cannot be loaded: {type(exc).__name__}: "
                             f"{msg}") from exc
    return obj


def backend_capabilities(backend: str | Backend | type) -> BackendCapabilities:
    """The :class:`BackendCapabilities` of a backend given by name, class or instance.

    A backend without a ``capabilities`` attribute is a one-line error (it cannot say what it runs).
    """
    obj = backend_class(backend) if isinstance(backend, str) else backend
    caps = getattr(obj, "capabilities", None)
    if not isinstance(caps, BackendCapabilities):
        name = backend if isinstance(backend, str) else getattr(obj, "name", repr(obj))
        raise NeurorateError(f"backend {name!r} declares no capabilities (a BackendCapabilities value as the "
                             "class attribute `capabilities`, backends/base.py)")
    return caps


def check_available(backend: str | Backend | type) -> None:
    """A one-line :class:`~neurorate.errors.MissingExtraError` when the backend's optional dependencies are
    missing: the class's ``check_available()`` if it has one (the Lava backend's imports lava with its
    compatibility shim), nothing otherwise."""
    obj = backend_class(backend) if isinstance(backend, str) else backend
    hook = getattr(obj, "check_available", None)
    if callable(hook):
        hook()


def check_compatible(caps: BackendCapabilities, rule: Any = None, optimizer: str | None = None,
                     profile: Any = None, specs: Sequence[Any] = (), neuron: str = "rate",
                     dtype: str | None = None, device: str | None = None, batch: int | None = None,
                     options: Mapping[str, Any] | Sequence[str] | None = None) -> Any:
    """What the backend of ``caps`` cannot do, as one :class:`NeurorateError` line, in this order: the neuron
    model, the rule (and its forms), the optimizer, the profile (loaded and checked against every spec), the
    networks (form, activation, how many), the batch size, the dtype and device, the ``train`` options.

    Every argument left at None (``specs`` empty) is not checked. Returns the :class:`~neurorate.learning.Rule`
    (None when no rule is given); the backends' ``train`` and :func:`neurorate.train` both call it.
    """
    from neurorate.learning.registry import get_rule

    where = f"the {caps.title} backend"
    if neuron not in caps.neurons:
        raise NeurorateError(f"{where} does not train {neuron} networks (it trains {', '.join(caps.neurons)})")
    r = None
    if rule is not None:
        r = get_rule(rule)
        if neuron not in r.neurons:
            from neurorate.learning.registry import rule_names

            raise NeurorateError(f"rule {r.name!r} does not train {neuron} networks; for {neuron} choose one of "
                                 f"{', '.join(rule_names(neuron=neuron)) or 'none'}")
        if not caps.runs(r):
            others = [b for b in r.backends if b != caps.name]
            elsewhere = f" or --backend {' | '.join(others)}" if others else ""
            if caps.online_only and not r.detach_pre and r.detach == "nothing" and not r.online:
                raise NeurorateError(f"rule {r.name!r} cannot run on {where}: it needs the whole trajectory "
                                     f"backwards in time; use an on-line rule "
                                     f"({', '.join(caps.rule_names(neuron))}){elsewhere}")
            raise NeurorateError(f"rule {r.name!r} is not available on {where} (it runs on "
                                 f"{', '.join(others) or 'no backend'}); on {caps.name} choose one of "
                                 f"{', '.join(caps.rule_names(neuron)) or 'none'}")
        for s in specs:
            if s.form not in r.forms:
                raise NeurorateError(f"rule {r.name!r} supports the forms {', '.join(r.forms)}, not form "
                                     f"{s.form!r}")
    if optimizer is not None:
        if optimizer not in OPTIMIZERS:
            raise NeurorateError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if optimizer not in caps.optimizers:
            why = caps.refusals.get(optimizer)
            raise NeurorateError(f"optimizer {optimizer!r} {why + ' and ' if why else ''}is not run on {where}; "
                                 f"use --optimizer {' | '.join(caps.optimizers)} or another backend")
    prof = None
    if profile is not None:
        if not caps.profiles:
            raise NeurorateError(f"{where} runs at full precision only; it takes no hardware profile")
        from neurorate.hardware.profiles import load_profile

        prof = load_profile(profile)
        for s in specs:
            prof.check(s)
    for s in specs:
        if s.form not in caps.forms:
            raise NeurorateError(f"{where} runs the forms {', '.join(caps.forms)}, not form {s.form!r}")
        if s.activation not in caps.activations:
            raise NeurorateError(f"{where} runs the activations {', '.join(caps.activations)}, not "
                                 f"{s.activation!r}")
    if caps.max_networks is not None and len(specs) > caps.max_networks:
        raise NeurorateError(f"{where} trains at most {caps.max_networks} networks at once, got {len(specs)}")
    if batch is not None and caps.max_batch is not None and batch > caps.max_batch:
        raise NeurorateError(f"{where} takes batches of at most {caps.max_batch} trials, got {batch}")
    if dtype is not None and caps.dtypes and str(dtype) not in caps.dtypes:
        raise NeurorateError(f"unknown dtype {dtype!r} for {where}; choose {' or '.join(caps.dtypes)}")
    if device is not None:
        check_device(caps, device)
    if options:
        unknown = sorted(set(options) - set(caps.options))
        if unknown:
            raise NeurorateError(f"{caps.name} backend: unknown option(s) {', '.join(unknown)}"
                                 + (f"; it takes {', '.join(caps.options)}" if caps.options else ""))
    return r


CPU_DEVICES = ("auto", "cpu")
"""The ``device=`` values every backend accepts: a backend that declares no devices runs on the CPU."""


def check_device(caps: BackendCapabilities, device: Any, option: str = "--device") -> None:
    """One line when the backend of ``caps`` cannot run on ``device`` on this machine, before anything is written.

    A backend that declares no ``devices`` takes only :data:`CPU_DEVICES`. Otherwise the kind (``"cuda"`` of
    ``"cuda:1"``) must be declared, and the device must exist: ``cuda``/``cuda:K`` needs a CUDA device that torch
    sees (``K < torch.cuda.device_count()``), ``mps`` needs ``torch.backends.mps.is_available()``. torch is imported
    only to answer those two questions. ``option`` names the setting in the message (``"--device"``, or a config
    field such as ``"device"``)."""
    if type(device).__name__ == "device" and type(device).__module__.startswith("torch"):
        device = str(device)  # a torch.device: checked as its name
    if not isinstance(device, str):
        raise NeurorateError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r:.60}")
    flag = option.startswith("--")
    what = f"{option} {device}" if flag else f"{option} = {device!r}"

    def use(*values: str) -> str:
        return f"use {option} {' or '.join(values)}" if flag else \
            f"set {option} = {' or '.join(repr(v) for v in values)}"

    if not caps.devices:
        if device in CPU_DEVICES:
            return
        raise NeurorateError(f"{what}: the {caps.title} backend runs on the CPU and takes no device; "
                             f"{use('auto', 'cpu')} (or a backend that runs on GPUs, such as torch)")
    kind, colon, index = device.partition(":")
    if kind not in caps.devices or (colon and kind == "auto"):
        hint = " (cuda:K for the K-th GPU)" if "cuda" in caps.devices else ""
        raise NeurorateError(f"{what}: unknown device for the {caps.title} backend; choose "
                             f"{', '.join(caps.devices)}{hint}")
    if colon and not (index.isdigit() and index.isascii()):
        raise NeurorateError(f"{what}: the device index must be a non-negative integer, as in {kind}:0")
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise NeurorateError(f"{what}: no CUDA device is available on this machine (torch sees 0 GPUs); "
                                 f"{use('cpu', 'auto')}")
        if colon and int(index) >= count:
            raise NeurorateError(f"{what}: this machine has {count} CUDA device{'s' * (count > 1)} (cuda:0 to "
                                 f"cuda:{count - 1}); {use('cuda:0', 'auto')}")
    elif kind == "mps":
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise NeurorateError(f"{what}: torch says no MPS (Apple GPU) device is available on this machine; "
                                 f"{use('cpu', 'auto')}")
        if colon and int(index) != 0:
            raise NeurorateError(f"{what}: there is one MPS device (mps or mps:0)")


def get_backend(name: str | Backend, **options: Any) -> Backend:
    """Instantiate a backend by name ("torch", "lava" or a plugin), passing ``options`` to its constructor."""
    if not isinstance(name, str):
        return name
    return backend_class(name)(**options)


MAX_THREADS = 1024
"""The most CPU threads (``NEURORATE_THREADS``, ``--threads``, ``threads=``) and study workers
(``NEURORATE_WORKERS``, ``--workers``) neurorate accepts: a fixed ceiling, so that a value that works on one
machine works on every machine, set above the hardware threads of the largest machines (a few hundred) and below
what a typing slip gives (``99999``)."""


def check_threads(value: Any, name: str = "threads") -> int:
    """``value`` as a thread count, an integer from 1 to :data:`MAX_THREADS` (not a bool or a string); one line
    naming ``name`` otherwise."""
    try:
        ok = not isinstance(value, (bool, str)) and int(value) == value and 1 <= value <= MAX_THREADS
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise NeurorateError(f"{name} must be an integer from 1 to {MAX_THREADS}, got {value!r:.60}")
    return int(value)


def env_count(variable: str, default: str) -> int | None:
    """The count in the environment variable ``variable`` (None when unset or empty); a value that is not an
    integer from 1 to :data:`MAX_THREADS` is a one-line error, which says what unsetting it gives (``default``)."""
    env = os.environ.get(variable, "").strip()
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise NeurorateError(f"{variable} must be an integer from 1 to {MAX_THREADS}, got {env!r}; unset it for "
                             f"{default}")
    return value


def env_threads() -> int | None:
    """The CPU threads asked for by the environment variable ``NEURORATE_THREADS`` (None when unset); a value that
    is not an integer from 1 to :data:`MAX_THREADS` is a one-line error."""
    return env_count("NEURORATE_THREADS", "the default (1)")


def trained_spec(template: Any, arrays: Mapping[str, np.ndarray]) -> tuple[Any, bool]:
    """``(spec, finite)``: ``template`` (a NetworkSpec) carrying the trained ``arrays``, or, when one of them holds
    NaN or inf (the training blew up, e.g. at a huge learning rate), ``template`` itself and False. The backends
    then report the network as diverged (its weights are not numbers) instead of failing on them."""
    if all(np.all(np.isfinite(a)) for a in arrays.values()):
        return template.replace(**arrays), True
    return template, False


def check_ensemble(specs: Sequence[Any]) -> None:
    """The networks of one call share N, n_in, n_out, form and activation (one-line error naming the first
    difference); an empty list is an error."""
    if not specs:
        raise NeurorateError("no networks given")
    for i, s in enumerate(specs[1:], start=1):
        for attr in ("n_hidden", "n_in", "n_out", "form", "activation"):
            if getattr(s, attr) != getattr(specs[0], attr):
                raise NeurorateError(f"networks run together must share {attr}: network 0 has "
                                     f"{getattr(specs[0], attr)!r}, network {i} has {getattr(s, attr)!r}")


def task_list(task: Any, m: int) -> list:
    """``task`` as a list: one shared task, or one per network (``m`` of them); any other count is a one-line
    error."""
    tasks = list(task) if isinstance(task, (list, tuple)) else [task]
    if len(tasks) not in (1, m):
        raise NeurorateError(f"give one task or one per network ({m}), got {len(tasks)}")
    return tasks


def progress_bar(total: int, progress: bool | None, desc: str):
    """A tqdm bar of ``total`` iterations that stays on screen (None when ``progress`` is False; ``progress``
    None: shown only on a terminal)."""
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=None if progress is None else not progress,
                dynamic_ncols=True, leave=True)


def make_profile_quantizer(profile: Any, specs: Sequence[Any], training: bool, **options: Any):
    """The quantizer of a hardware profile for ``specs`` (None for ``profile=None``): the profile loaded and
    checked against every spec, its stochastic rounding seeded from the first network's seed (one stream for
    the run, the same on every backend); ``options`` go to :func:`neurorate.hardware.quantize.make_quantizer`."""
    if profile is None:
        return None
    from neurorate.hardware.profiles import load_profile
    from neurorate.hardware.quantize import make_quantizer

    prof = load_profile(profile)
    for s in specs:
        prof.check(s)
    return make_quantizer(prof, training=training, seed=int(specs[0].init.get("seed", 0)), **options)
