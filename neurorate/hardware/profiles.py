"""Hardware profiles: what precision, capacity and learning a target device offers, as validated data.

A profile is one TOML file ``hardware_profiles/<name>.toml`` (installed as the package
``neurorate.hardware_profiles``) validated by the pydantic v2 schema :class:`HardwareProfile`
(``extra="forbid"`` everywhere, so a typo is an error, not a silently ignored key). The numbers in each
file cite their sources and carry a confidence level (``verified`` | ``partial`` | ``reported``).

Every number format (weights, neuron state, traces, messages) is a :class:`NumberFormat`: an integer grid
``value = m * step`` with ``m`` a ``bits``-bit (signed or unsigned) integer, the step fixed
(``scale = "none"``: ``step = 2**-frac_bits``) or chosen from the data (shared power-of-two exponent per
matrix, per row, a float scale per tensor, or power-of-two values), or a float dtype. The one quantizer
that applies a profile to both backends lives in :mod:`neurorate.hardware.quantize`; ``docs/hardware_profiles.md``
describes the schema and every shipped profile.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any, Literal

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from neurorate.errors import FileFormatError, NeurorateError
from neurorate.hardware.engine import EngineSpec

Rounding = Literal["nearest", "stochastic", "floor", "trunc"]
Scale = Literal["shared_exponent", "per_tensor", "per_row", "pow2", "none"]
FloatDtype = Literal["float64", "float32", "bfloat16", "float16"]
WeightName = Literal["w_in", "w_rec", "w_out", "b", "b_out", "feedback"]
WEIGHT_NAMES: tuple[str, ...] = ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")
_PROFILE_PACKAGE = "neurorate.hardware_profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberFormat(_Strict):
    """How one kind of quantity is represented on the device.

    ``format = "int" | "fixed"``: ``value = m * step`` with ``m`` in ``[-2**(bits-1), 2**(bits-1) - 1]``
    (``signed``) or ``[0, 2**bits - 1]``; the step comes from ``scale``:

    - ``"none"``: fixed point, ``step = 2**-frac_bits`` (``frac_bits`` defaults to 0, i.e. plain integers);
    - ``"shared_exponent"``: one power of two per matrix (per leading index of a batch of matrices) chosen
      from ``max |x|`` so that the largest magnitude fills the mantissa (Loihi ``weight_exp``, Xylo bit shifts);
    - ``"per_row"``: the same, one exponent per row (per postsynaptic neuron);
    - ``"per_tensor"``: a float scale ``max |x| / (2**(bits-1) - 1)`` (symmetric int8 as in ``torch.ao``);
    - ``"pow2"``: every value is 0 or a signed power of two, within ``2**(bits-1) - 1`` exponents below the top.

    ``format = "float"``: values are rounded to ``dtype`` (round to nearest even).

    Cross-field checks (each a one-line error naming the field): ``frac_bits >= 0``; a signed integer needs
    ``bits >= 2`` (a sign and at least one magnitude bit) and ``frac_bits <= bits - 1``, an unsigned one
    ``frac_bits <= bits`` (every bit
    may be fractional: ``[0, 1)``); ``pow2`` needs ``bits >= 2``; ``exponent_bits`` applies only to the scales with an
    exponent (``shared_exponent``, ``per_row``, ``pow2``, at most 11 bits: a float64 exponent) and, on a float
    format, must equal its dtype's exponent width (as ``bits`` must equal its total width).
    """

    format: Literal["int", "fixed", "float"] = "float"
    bits: PositiveInt | None = None
    signed: bool = True
    scale: Scale = "none"
    frac_bits: int | None = None
    exponent_bits: PositiveInt | None = None
    rounding: Rounding = "nearest"
    overflow: Literal["saturate", "wrap"] = "saturate"
    dtype: FloatDtype | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.format == "float":
            if self.dtype is None:
                raise ValueError("format 'float' needs a dtype (float64, float32, bfloat16 or float16)")
            if self.rounding != "nearest":
                raise ValueError("float formats round to nearest (the dtype cast); set rounding = 'nearest'")
            exp, width = _FLOAT_BITS[self.dtype]
            if self.exponent_bits is not None and self.exponent_bits != exp:
                raise ValueError(f"exponent_bits = {self.exponent_bits} does not match dtype {self.dtype} "
                                 f"({exp} exponent bits)")
            if self.bits is not None and self.bits != width:
                raise ValueError(f"bits = {self.bits} does not match dtype {self.dtype} ({width} bits)")
        else:
            if self.bits is None:
                raise ValueError(f"format {self.format!r} needs 'bits'")
            if self.bits > 48:
                raise ValueError("bits > 48 is not supported (integers are held exactly in float64)")
            if self.dtype is not None:
                raise ValueError(f"dtype only applies to format 'float', not {self.format!r}")
            if self.scale != "none" and self.frac_bits is not None:
                raise ValueError(f"frac_bits only applies to scale 'none' (a fixed grid), not {self.scale!r}")
            _check_int_widths(self)
        return self

    @property
    def quantizes(self) -> bool:
        """False for float64, which changes nothing in a float64 computation."""
        return not (self.format == "float" and self.dtype == "float64")


_FLOAT_BITS = {"float64": (11, 64), "float32": (8, 32), "bfloat16": (8, 16), "float16": (5, 16)}


def _check_int_widths(fmt: NumberFormat) -> None:
    """The cross-field checks of an ``int``/``fixed`` format (see :class:`NumberFormat`); a ValueError naming
    the field."""
    if fmt.signed and fmt.bits < 2:
        raise ValueError(f"bits = {fmt.bits}: a signed format needs bits >= 2 (a sign and a magnitude bit); "
                         "use signed = false for a 1-bit format")
    if fmt.scale == "pow2" and fmt.bits < 2:
        raise ValueError(f"bits = {fmt.bits}: scale 'pow2' needs bits >= 2 (a sign and an exponent range)")
    if fmt.frac_bits is not None:
        top = fmt.bits - 1 if fmt.signed else fmt.bits
        if fmt.frac_bits > top:
            raise ValueError(f"frac_bits = {fmt.frac_bits} must be <= {top} for a {fmt.bits}-bit "
                             f"{'signed' if fmt.signed else 'unsigned'} format (fractional bits < bits"
                             f"{', the sign excluded' if fmt.signed else ''})")
        if fmt.frac_bits < 0:
            raise ValueError(f"frac_bits = {fmt.frac_bits} must be >= 0 (the step 2**-frac_bits is at most 1: "
                             "fractional bits below the integer LSB; use fewer bits for a coarser grid)")
    if fmt.exponent_bits is not None:
        if fmt.scale in ("none", "per_tensor"):
            raise ValueError(f"exponent_bits only applies to the scales shared_exponent, per_row and pow2, "
                             f"not {fmt.scale!r}")
        if fmt.exponent_bits > 11:
            raise ValueError(f"exponent_bits = {fmt.exponent_bits} must be <= 11 (a float64 exponent)")


class WeightOverride(_Strict):
    """Per-matrix changes to :class:`WeightFormat` (any field of :class:`NumberFormat`)."""

    format: Literal["int", "fixed", "float"] | None = None
    bits: PositiveInt | None = None
    signed: bool | None = None
    scale: Scale | None = None
    frac_bits: int | None = None
    exponent_bits: PositiveInt | None = None
    rounding: Rounding | None = None
    overflow: Literal["saturate", "wrap"] | None = None
    dtype: FloatDtype | None = None


class WeightFormat(NumberFormat):
    """Synaptic weights (W_in, W_rec, W_out, biases, feedback) with optional per-matrix overrides."""

    overrides: dict[WeightName, WeightOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_valid(self):
        for name in self.overrides:  # each merged format must pass the same checks as the base one
            try:
                self.for_matrix(name)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                raise ValueError(f"overrides.{name}{'.' + where if where else ''}: {msg}") from None
        return self

    def for_matrix(self, name: str) -> NumberFormat:
        """The effective format of matrix ``name`` (one of ``w_in, w_rec, w_out, b, b_out, feedback``)."""
        if name not in WEIGHT_NAMES:
            raise NeurorateError(f"unknown weight name {name!r}; choose one of {', '.join(WEIGHT_NAMES)}")
        base = self.model_dump(exclude={"overrides"})
        if name in self.overrides:
            base.update(self.overrides[name].model_dump(exclude_none=True))
        return NumberFormat.model_validate(base)


class StateFormat(NumberFormat):
    """Neuron state (the leaky integrator), plus the resolution of its leak.

    ``decay = "linear"``: ``alpha`` is held as an integer ``n / 2**decay_bits``, ``n`` in ``[1, 2**decay_bits]``
    (Loihi du/dv, 12 bits); ``"pow2"``: ``alpha = 2**-shift`` (Xylo bit-shift decay); ``"float"``: exact.
    """

    decay: Literal["linear", "pow2", "float"] = "float"
    decay_bits: PositiveInt | None = Field(default=None, le=32)

    @model_validator(mode="after")
    def _decay_resolution(self):
        if self.decay == "linear" and self.decay_bits is None:
            raise ValueError("decay 'linear' needs decay_bits")
        return self


class MessageFormat(NumberFormat):
    """What a neuron sends: ``graded`` payloads, ``binary`` spikes (a rate is a spike count per step,
    unsigned) or ``analog`` values."""

    kind: Literal["binary", "graded", "analog"] = "graded"

    @model_validator(mode="after")
    def _binary_unsigned(self):
        if self.kind == "binary" and (self.format == "float" or self.signed):
            raise ValueError("binary messages are spike counts: use format 'int' with signed = false")
        return self


class ActivationSpec(_Strict):
    """Rate nonlinearities the device can compute; ``microcode`` lists those that need custom neuron code."""

    allowed: list[str] = Field(min_length=1)
    microcode: list[str] = Field(default_factory=list)
    notes: str = ""

    @model_validator(mode="after")
    def _subset(self):
        extra = sorted(set(self.microcode) - set(self.allowed))
        if extra:
            raise ValueError(f"microcode activations {extra} are not in allowed")
        return self


class CapacitySpec(_Strict):
    """Size limits; ``None`` means unlimited (or not a constraint for a rate network)."""

    cores: PositiveInt | None = None
    neurons_per_core: PositiveInt | None = None
    neurons_per_chip: PositiveInt | None = None
    synapses_per_chip: PositiveInt | None = None
    max_fan_in: PositiveInt | None = None
    max_fan_out: PositiveInt | None = None
    max_inputs: PositiveInt | None = None
    max_outputs: PositiveInt | None = None


class LearningSpec(_Strict):
    """On-chip learning. ``accumulator_bits``/``accumulator_frac_bits``: a weight update is first held in a
    signed accumulator with that many fractional bits below the weight LSB (Loihi: 16 and 7), then rounded
    to the weight grid with ``rounding``."""

    on_chip: bool = False
    rules: list[str] = Field(default_factory=list)
    trace_bits: PositiveInt | None = Field(default=None, le=48)
    third_factor: str | None = None
    accumulator_bits: PositiveInt | None = Field(default=None, le=48)
    accumulator_frac_bits: int | None = Field(default=None, ge=0)
    rounding: Rounding = "nearest"

    @model_validator(mode="after")
    def _accumulator(self):
        if self.accumulator_frac_bits is not None:
            if self.accumulator_bits is None:
                raise ValueError("accumulator_frac_bits needs accumulator_bits")
            if self.accumulator_frac_bits > self.accumulator_bits - 1:
                raise ValueError(f"accumulator_frac_bits = {self.accumulator_frac_bits} must be <= "
                                 f"accumulator_bits - 1 = {self.accumulator_bits - 1} (a signed accumulator)")
        if self.accumulator_bits is not None and self.accumulator_bits < 2:
            raise ValueError(f"accumulator_bits = {self.accumulator_bits}: a signed accumulator needs >= 2 bits")
        return self


class TimeSpec(_Strict):
    """Time base: discrete steps of ``dt_ms`` or continuous time run ``acceleration`` x faster than biology."""

    discrete: bool = True
    dt_ms: PositiveFloat | None = Field(default=None, allow_inf_nan=False)
    acceleration: PositiveFloat = Field(default=1.0, allow_inf_nan=False)


class NoiseSpec(_Strict):
    """Device noise; ``mismatch_rel_std`` is the relative std of fixed parameter mismatch (analog devices)."""

    mismatch_rel_std: NonNegativeFloat = Field(default=0.0, le=1.0, allow_inf_nan=False)


class HardwareProfile(_Strict):
    """A validated hardware profile (schema of ``hardware_profiles/*.toml``, see the module docstring)."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    display_name: str
    kind: Literal["digital-neuromorphic", "analog-neuromorphic", "mixed-signal-neuromorphic", "gpu", "cpu"]
    confidence: Literal["verified", "partial", "reported"]
    sources: list[str] = Field(min_length=1)
    notes: str = ""
    time: TimeSpec = Field(default_factory=TimeSpec)
    weights: WeightFormat
    state: StateFormat
    traces: NumberFormat = Field(default_factory=lambda: NumberFormat(format="float", dtype="float32"))
    messages: MessageFormat
    activation: ActivationSpec
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    learning: LearningSpec = Field(default_factory=LearningSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    engine: EngineSpec | None = None
    """The ``[engine]`` table: e-prop computed as Loihi 2's learning engine does (torch backend; see
    :mod:`neurorate.hardware.engine` and docs/hardware_profiles.md, "The engine view"). None: the grid view."""

    def violations(self, spec: Any) -> list[str]:
        """Why ``spec`` (a :class:`~neurorate.model.spec.NetworkSpec`) cannot run on this device (empty: it can)."""
        n, n_in, n_out = int(spec.n_hidden), int(spec.n_in), int(spec.n_out)
        cap, out = self.capacity, []
        if spec.activation not in self.activation.allowed:
            out.append(f"activation {spec.activation!r} is not available (allowed: "
                       f"{', '.join(self.activation.allowed)})")
        per_chip = cap.neurons_per_chip
        if per_chip is None and cap.cores is not None and cap.neurons_per_core is not None:
            per_chip = cap.cores * cap.neurons_per_core
        limits = (
            (n, per_chip, "hidden neurons", "neurons per chip"),
            (n + n_in, cap.max_fan_in, "fan-in N + n_in", "max fan-in"),
            (n + n_out, cap.max_fan_out, "fan-out N + n_out", "max fan-out"),
            (n * (n + n_in) + n_out * n, cap.synapses_per_chip, "synapses", "synapses per chip"),
            (n_in, cap.max_inputs, "inputs", "input channels"),
            (n_out, cap.max_outputs, "outputs", "output channels"),
        )
        for value, limit, what, limit_name in limits:
            if limit is not None and value > limit:
                out.append(f"{what} = {value} exceeds {limit_name} = {limit}")
        return out

    def check(self, spec: Any) -> None:
        """Raise :class:`NeurorateError` (one line, every reason) if ``spec`` violates the profile."""
        reasons = self.violations(spec)
        if reasons:
            raise NeurorateError(f"profile {self.name!r} ({self.display_name}) cannot run this network: "
                                 + "; ".join(reasons))


def available_profiles() -> list[str]:
    """Names of the shipped profiles (``hardware_profiles/*.toml``), sorted."""
    root = importlib.resources.files(_PROFILE_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def profile_text(name_or_path: str | Path) -> tuple[str, str]:
    """``(file label, TOML text)`` of a shipped profile name or a path to a ``.toml`` file."""
    text_name = str(name_or_path)
    if isinstance(name_or_path, Path) or text_name.endswith(".toml") or "/" in text_name or "\\" in text_name:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileFormatError(f"{path}: no such profile file")
        try:
            return path.name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise FileFormatError(f"{path.name}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
        except OSError as exc:
            raise FileFormatError(f"{path}: cannot read the profile ({exc.strerror or exc})") from None
    resource = importlib.resources.files(_PROFILE_PACKAGE) / f"{text_name}.toml"
    if not resource.is_file():
        raise NeurorateError(f"unknown hardware profile {text_name!r}; available: "
                             f"{', '.join(available_profiles())} (or give a path to a .toml file)")
    return f"{text_name}.toml", resource.read_text(encoding="utf-8")


def load_profile(name_or_path: str | Path | HardwareProfile) -> HardwareProfile:
    """Load and validate a profile by shipped name (``"loihi2"``) or from a ``.toml`` path.

    Raises
    ------
    FileFormatError
        One line naming the file and the offending field, e.g.
        ``loihi2.toml: weights.bits: Input should be greater than 0``.
    NeurorateError
        For an unknown profile name (the message lists the available ones).
    """
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    label, text = profile_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileFormatError(f"{label}: invalid TOML: {exc}") from None
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise FileFormatError(f"{label}: {_first_error(exc)}") from None
    stem = label.removesuffix(".toml")
    if profile.name != stem:
        raise FileFormatError(f"{label}: name: {profile.name!r} does not match the file name {stem!r}")
    return profile


_UNION_BRANCH = re.compile(r"^(constrained-\w+|int|float|str|bool|literal\[.*\]|function-\w+\[.*\])$")


def _first_error(exc: ValidationError) -> str:
    def field(error) -> list[str]:  # pydantic also names the union branch it tried (``constrained-int``): drop it
        return [str(p) for p in error["loc"] if not _UNION_BRANCH.match(str(p))]

    errors = exc.errors()
    err = errors[0]
    loc = ".".join(field(err)) or "(top level)"
    others = [e for e in errors[1:] if field(e) != field(err)]  # the other branches of one field are not more errors
    msg = str(err["msg"]).removeprefix("Value error, ")
    more = f" (and {len(others)} more error{'s' if len(others) > 1 else ''})" if others else ""
    return f"{loc}: {msg}{more}"
