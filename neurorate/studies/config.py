"""The initial-gain study's configuration: a validated schema (pydantic v2), TOML loading, embedded configs.

A study is the grid ``tasks x rules x flossing x ranks x backends x profiles`` (one *ensemble* each) times
``gains x lrs x seeds`` (the networks inside one ensemble, trained as one program on the torch backend).
Embedded configs live in ``neurorate/studies/configs/*.toml`` (``paper`` is the default, ``quick`` a 30 s check;
``paper-n64`` the previous protocol, ``paper-n256``, ``fig5`` and ``alpha-sweep``; each file's header says what it
tests and what it costs, docs/benchmarks.md).

TOML has no null: write ``0`` or ``"full"`` in ``ranks`` for a full-rank initialisation and ``"none"`` in
``profiles`` for full precision.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neurorate.backends.base import backend_capabilities
from neurorate.errors import NeurorateError
from neurorate.learning.registry import BUILTIN_RULES, rule_names
from neurorate.model.spec import MAX_GAIN

BEST_LR_CRITERIA = ("final_loss", "best_loss", "auc")
NEURONS = ("rate", "lif", "alif")
SPIKING_RULES = tuple(r.name for r in BUILTIN_RULES if "lif" in r.neurons)  # built-in rules for LIF/ALIF


class SpikingConfig(BaseModel):
    """Constants of the spiking networks of a study (:class:`neurorate.model.spiking.LIFNetwork`; docs/spiking.md).

    ``beta_a``, ``rho`` and ``adaptive_fraction`` apply to ``"alif"`` networks only (``"lif"`` has ``beta_a = 0``);
    ``alpha`` (None: the task's ``dt / tau``) sets the membrane decay ``1 - alpha`` of both.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.5, gt=0)
    kappa: float = Field(0.5, ge=0, lt=1)
    gamma: float = Field(0.3, gt=0)
    alpha: float | None = Field(None, gt=0, le=1)
    beta_a: float = Field(1.0, ge=0)
    rho: float = Field(0.95, ge=0, lt=1)
    adaptive_fraction: float = Field(1.0, ge=0, le=1)


class StudyConfig(BaseModel):
    """One study. Every field has a default; ``neurorate/studies/configs/paper.toml`` documents the paper's choices.

    ``variants`` names labelled task variants usable in ``tasks``: ``{label: {"task": base, **options}}`` (e.g.
    ``{"2af-tau200": {"task": "2af", "tau": 200.0}}``), each a new name with its base task's ``task_options`` and
    ``tau`` overridden by its own options; its runs carry the label as ``task`` and the base as ``base_task``.
    ``solved_loss`` (1e-3) and ``best_window`` (50 iterations) define the per-run metrics ``best_loss`` (minimum of
    the running mean), ``time_to_solve`` and ``unlearned`` (:mod:`neurorate.studies.claims`; docs/study.md).
    ``selection_seeds`` (default none) holds seeds out: the best lr of each setting and gain is chosen on these
    seeds and the claims, tables and figures use the other ``seeds``. ``accuracy_criterion`` (0.9) is the fraction
    of the way from chance to a task's Bayes-optimal accuracy that counts as learned (C3's iterations to
    criterion, :func:`neurorate.tasks.bayes.accuracy_criterion`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "study"
    tasks: list[str] = Field(default_factory=lambda: ["romo"], min_length=1)
    rules: list[str] = Field(default_factory=lambda: ["bptt", "eprop"], min_length=1)
    gains: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5], min_length=1)
    lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    flossing: list[bool] = Field(default_factory=lambda: [False])
    floss_rules: list[str] = Field(default_factory=lambda: ["eprop"])
    floss_iterations: int = 100
    floss_mode: Literal["state", "onestep", "full"] = "state"
    floss_k: int = 8
    floss_lr: float = 1e-3
    ranks: list[int | None] = Field(default_factory=lambda: [None])
    backends: list[str] = Field(default_factory=lambda: ["torch"])
    profiles: list[str | None] = Field(default_factory=lambda: [None])
    iterations: int = 1500
    hidden: int = 64
    batch: int = 32
    tau: dict[str, float] = Field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    form: Literal["A", "B", "C"] = "A"
    activation: str | dict[str, str] | None = None
    input_bias: bool = True
    recurrent_bias: bool = True
    optimizer: Literal["adam", "sgd"] = "adam"
    lyapunov: bool = True
    lyapunov_k: int = 4
    best_lr: Literal["final_loss", "best_loss", "auc"] = "final_loss"
    final_fraction: float = 0.1
    solved_loss: float = 1e-3
    best_window: int = 50
    selection_seeds: list[int] = Field(default_factory=list)
    accuracy_criterion: float = 0.9
    log_every: int = 10
    grad_alignment_every: int | None = None
    richlazy: bool = True
    probe_batch: int = 64
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    neurons: list[str] = Field(default_factory=lambda: ["rate"], min_length=1)
    lif: SpikingConfig = Field(default_factory=SpikingConfig)

    # ------------------------------------------------------------------ field checks
    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_study_name(v)

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        return _unique(v, "tasks")  # names are checked with the variants (model validator)

    @field_validator("rules", "floss_rules")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        return _members(v, rule_names(), "rule")

    @field_validator("neurons")
    @classmethod
    def _neurons(cls, v: list[str]) -> list[str]:
        return _members(v, NEURONS, "neuron")

    @field_validator("gains")
    @classmethod
    def _gains(cls, v: list[float]) -> list[float]:
        bad = next((g for g in v if not (0 <= g <= MAX_GAIN)), None)
        if bad is not None:
            raise ValueError(f"gains must be finite, >= 0 and at most {MAX_GAIN:g}, got {bad}")
        return sorted(_unique(v, "gains"))

    @field_validator("lrs")
    @classmethod
    def _lrs(cls, v: list[float]) -> list[float]:
        bad = next((lr for lr in v if not (lr > 0 and lr < 1e3)), None)
        if bad is not None:
            raise ValueError(f"learning rates must be finite, > 0 and below 1000, got {bad}")
        return sorted(_unique(v, "lrs"))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        bad = next((s for s in v if s < 0 or s >= 2**63), None)
        if bad is not None:
            raise ValueError(f"seeds must be >= 0 and < 2**63 (they are stored as 64-bit integers), got {bad}")
        return _unique(v, "seeds")

    @field_validator("ranks", mode="before")
    @classmethod
    def _ranks(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError("ranks must be a non-empty list (0 or 'full' = full rank)")
        out = [None if r in (0, None, "full", "none") else r for r in v]
        if any(r is not None and (not isinstance(r, int) or r < 1) for r in out):
            raise ValueError(f"ranks must be positive integers, 0 or 'full', got {v}")
        return _unique(out, "ranks")

    @field_validator("profiles", mode="before")
    @classmethod
    def _profiles(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError("profiles must be a non-empty list ('none' = full precision)")
        return _unique([None if p in (None, "none", "") else p for p in v], "profiles")

    @field_validator("flossing", "backends")
    @classmethod
    def _nonempty(cls, v: list) -> list:
        if not v:
            raise ValueError("must be a non-empty list")
        return _unique(v, "list")

    @model_validator(mode="after")
    def _task_names(self) -> StudyConfig:
        from neurorate.tasks.base import available_tasks

        known = available_tasks()
        for label, opts in self.variants.items():
            if ":" in label or label.lower() in known or not label.strip() or "|" in label:
                raise ValueError(f"variants: {label!r} must be a new plain name (not a task name, no ':' or '|')")
            base = opts.get("task")
            if not isinstance(base, str) or base.partition(":")[0].lower() not in known:
                raise ValueError(f"variants: {label!r} needs task = one of {', '.join(known)}, got {base!r}")
        for t in self.tasks:
            if t not in self.variants and t.partition(":")[0].lower() not in known:
                raise ValueError(f"tasks: unknown task {t!r}; choose from {', '.join(known)} (or a label of variants)")
        for label in self.variants:
            if label not in self.tasks:
                raise ValueError(f"variants: {label!r} is not in tasks {self.tasks}")
            try:
                self.make_task(label, batch_size=1, seed=0)
            except NeurorateError as exc:
                raise ValueError(f"variants: {label!r}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _ranges(self) -> StudyConfig:
        for name in ("iterations", "hidden", "batch", "floss_k", "lyapunov_k", "log_every", "probe_batch",
                     "best_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.floss_iterations < 0 or (True in self.flossing and self.floss_iterations < 1):
            raise ValueError(f"floss_iterations: must be >= 1 when flossing is on, got {self.floss_iterations}")
        if not (0 < self.final_fraction <= 1):
            raise ValueError(f"final_fraction: must be in (0, 1], got {self.final_fraction}")
        if not (0 < self.solved_loss < 1e6):
            raise ValueError(f"solved_loss: must be finite and > 0, got {self.solved_loss}")
        if not self.floss_lr > 0:
            raise ValueError(f"floss_lr: must be > 0, got {self.floss_lr}")
        if self.grad_alignment_every is not None and self.grad_alignment_every < 1:
            raise ValueError(f"grad_alignment_every: must be >= 1, got {self.grad_alignment_every}")
        for r in self.ranks:
            if r is not None and r > self.hidden:
                raise ValueError(f"ranks: rank {r} exceeds hidden={self.hidden}")
        for t in self.tau:
            if t not in self.tasks:
                raise ValueError(f"tau: task {t!r} is not in tasks {self.tasks}")
        for t, val in self.tau.items():
            if not val > 0:
                raise ValueError(f"tau: {t} must be > 0, got {val}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: choose cpu, cuda or auto, got {self.device!r}")
        spiking = [n for n in self.neurons if n != "rate"]
        if spiking:
            bad = [r for r in self.rules if any(r not in rule_names(neuron=n) for n in spiking)]
            if bad:
                raise ValueError(f"rules: {', '.join(bad)} cannot train {spiking[0]} networks; spiking networks "
                                 f"support {', '.join(rule_names(neuron=spiking[0]))}")
            if True in self.flossing:
                raise ValueError(f"flossing: gradient flossing is not defined for {spiking[0]} networks; "
                                 "use flossing = [false]")
            for name in self.backends:
                try:
                    neurons = backend_capabilities(name).neurons
                except NeurorateError:
                    continue  # an unknown backend is named by the study's preflight
                if spiking[0] not in neurons:
                    raise ValueError(f"backends: {name} does not train {spiking[0]} networks (it trains "
                                     f"{', '.join(neurons)})")
            if self.profiles != [None]:
                raise ValueError(f"profiles: {spiking[0]} networks train at full precision only (profiles = ['none'])")
        return self

    @model_validator(mode="after")
    def _held_out(self) -> StudyConfig:
        chosen = list(self.selection_seeds)
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"selection_seeds: a seed appears twice in {chosen}")
        unknown = [s for s in chosen if s not in set(self.seeds)]
        if unknown:
            raise ValueError(f"selection_seeds: {unknown} are not in seeds {self.seeds}")
        if chosen and len(self.seeds) - len(chosen) < 2:
            raise ValueError(f"selection_seeds: leave at least 2 of the {len(self.seeds)} seeds to test the claims "
                             f"on, got {len(chosen)} for selection")
        if not (0 < self.accuracy_criterion <= 1):
            raise ValueError(f"accuracy_criterion: must be in (0, 1], got {self.accuracy_criterion}")
        return self

    def held_out_seeds(self) -> list[int]:
        """The seeds the claims are tested on: every seed, or those not in ``selection_seeds``."""
        return [s for s in self.seeds if s not in set(self.selection_seeds)]

    # ------------------------------------------------------------------ helpers
    def activation_for(self, task: str, loss_kind: str) -> str:
        """The activation used for ``task`` (default: tanh for regression tasks, relu for classification)."""
        if isinstance(self.activation, dict) and task in self.activation:
            return self.activation[task]
        if isinstance(self.activation, str):
            return self.activation
        return "tanh" if loss_kind == "mse" else "relu"

    def base_task(self, task: str) -> str:
        """The task name :func:`neurorate.make_task` knows for ``task`` (a variant label's ``task``)."""
        return self.variants[task]["task"] if task in self.variants else task

    def task_kwargs(self, task: str) -> dict[str, Any]:
        """Extra keyword arguments of :func:`neurorate.make_task` for ``task`` (a task name or a variant label).

        A variant inherits its base task's ``task_options`` and ``tau``; its own options (e.g. ``tau``) override
        them."""
        base = self.base_task(task)
        kw = dict(self.task_options.get(base, {}))
        if base in self.tau:
            kw["tau"] = self.tau[base]
        if task != base:
            kw.update(self.task_options.get(task, {}))
            if task in self.tau:
                kw["tau"] = self.tau[task]
            kw.update({k: v for k, v in self.variants[task].items() if k != "task"})
        return kw

    def make_task(self, task: str, batch_size: int | None = None, seed: int = 0):
        """The :class:`~neurorate.tasks.base.Task` of ``task`` (a task name or a variant label) with this config's
        options."""
        from neurorate.tasks.base import make_task

        return make_task(self.base_task(task), batch_size=batch_size, seed=seed, **self.task_kwargs(task))

    def n_networks(self) -> int:
        """Networks per ensemble (gains x lrs x seeds)."""
        return len(self.gains) * len(self.lrs) * len(self.seeds)

    def spiking(self, neuron: str) -> dict[str, float]:
        """Keyword arguments of :class:`neurorate.model.spiking.LIFNetwork` for ``neuron`` ("lif" or "alif")."""
        kw = self.lif.model_dump(exclude={"alpha"})
        if neuron == "lif":
            kw["beta_a"] = 0.0
        return kw

    def digest(self) -> str:
        """A short hash of the configuration (a resumed study must have the same one).

        Fields added after the first studies (the neuron axis) enter only when they differ from their defaults,
        so the digests of existing configs (and of their results directories) do not change.
        """
        data = self.model_dump(mode="json")
        defaults = StudyConfig.model_construct().model_dump(mode="json")
        for key in _LATE_FIELDS:
            if data[key] == defaults[key]:
                del data[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_LATE_FIELDS = ("neurons", "lif", "dtype", "variants", "solved_loss", "best_window", "selection_seeds",
                "accuracy_criterion", "grad_alignment_every")


def _members(v: list[str], known, what: str) -> list[str]:
    """``v`` if every value is one of ``known`` and none repeats (else a one-line ValueError)."""
    for x in v:
        if x not in known:
            raise ValueError(f"unknown {what} {x!r}; choose from {', '.join(known)}")
    return _unique(v, what + "s")


def _unique(v: list, name: str) -> list:
    """``v`` if no value repeats (in one pass: a set of what was seen, so 10^6 seeds take milliseconds)."""
    seen: set = set()
    unhashable: list = []  # a value of the wrong type (a list in a list) is left to the type check
    for x in v:
        try:
            dup = x in seen
            seen.add(x)
        except TypeError:
            dup = x in unhashable
            unhashable.append(x)
        if dup:
            raise ValueError(f"duplicate value {x!r:.60}")
    return list(v)


def check_study_name(name: str) -> str:
    """``name`` if it is a plain name: the default study directory is ``results/<name>``, so a name must not be
    empty, contain a path separator or a control character, be ``.``/``..`` or start with ``~`` (a ValueError
    otherwise)."""
    if not name.strip():
        raise ValueError("must be a plain name (the study directory is results/<name>), got an empty name")
    if any(sep in name for sep in ("/", "\\")) or name in (".", "..") or name.startswith("~") \
            or any(ord(c) < 32 for c in name):
        raise ValueError(f"must be a plain name without path separators or '..' (the study directory is "
                         f"results/<name>), got {name!r}")
    return name


def embedded_configs() -> list[str]:
    """Names of the configs shipped in ``neurorate/studies/configs``."""
    files = resources.files("neurorate.studies").joinpath("configs").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".toml"))


def _study_table(data: dict, source: str) -> dict:
    """The ``[study]`` table of a parsed TOML config: a file without one (an empty file included), with an empty
    one or with other top-level keys is an error, never a silent default study."""
    if "study" not in data:
        found = f" (found {', '.join(repr(k) for k in data)})" if data else " (the file is empty)"
        raise NeurorateError(f"{source}: no [study] table{found}; a study config puts its fields under [study], "
                             f"see the embedded configs ({', '.join(embedded_configs())}) and docs/study.md")
    study = data["study"]
    if not isinstance(study, dict):
        raise NeurorateError(f"{source}: 'study' must be a table ([study]), got {type(study).__name__}")
    others = [k for k in data if k != "study"]
    if others:
        raise NeurorateError(f"{source}: unknown top-level key {others[0]!r}; every field goes under [study]")
    if not study:
        raise NeurorateError(f"{source}: the [study] table is empty; set at least a name (see docs/study.md)")
    return study


def load_config(config: StudyConfig | dict | str | Path | None = None) -> StudyConfig:
    """A :class:`StudyConfig` from None (the ``paper`` config), an embedded name, a TOML path, or a dict.

    Raises
    ------
    NeurorateError
        One line naming the offending field, for a missing/malformed file or an invalid value.
    """
    if isinstance(config, StudyConfig):
        return config
    if config is None:
        config = "paper"
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.suffix and str(config) in embedded_configs():
            text = resources.files("neurorate.studies").joinpath("configs", f"{config}.toml").read_text()
            source = f"embedded config {config!r}"
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise NeurorateError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
            except OSError as exc:
                raise NeurorateError(f"cannot read study config {path}: {exc.strerror or exc}; embedded configs: "
                                     f"{', '.join(embedded_configs())}") from None
            source = str(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise NeurorateError(f"{source}: malformed TOML ({exc})") from None
        data = _study_table(data, source)
    elif isinstance(config, dict):
        data, source = config, "study config"
    else:
        raise NeurorateError(f"config must be None, a path, an embedded name, a dict or a StudyConfig, "
                             f"got {type(config).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"] and ":" in msg:
            field, msg = (part.strip() for part in msg.split(":", 1))
        elif msg.startswith(field + ":"):
            msg = msg[len(field) + 1:].strip()
        raise NeurorateError(f"{source}: field {field!r}: {msg}") from None
