"""Loihi 2's learning engine, Dense synapses and the rate neuron in integer numpy, as Lava computes them.

The arithmetic follows lava-nc 0.10.0's bit-approximate learning model (``LearningDense`` with tag
``fixed_pt``: ``magma/core/model/py/connection.py``, ``magma/core/learning/learning_rule_applier.py``) and its
bit-accurate ``Dense``; ``tests/conformance/test_engine_model.py`` checks it bit for bit against a bare Lava
``LearningDense``. Every function takes integer numpy arrays of any leading shape (a leading network axis
``M`` broadcasts through), holds them in ``int64`` and returns ``int64``. The same functions serve the
``fixed_pt`` models of the Lava loihi graph and the torch backend's engine profile
(:mod:`neurorate.backends.torch.engine_profile`), so both compute the same integers. docs/hardware_profiles.md
("The engine view") describes the model and its widths.

The learning engine, one *epoch* (``t_epoch`` ticks) at a time, per synapse ``(post i, pre j)``:

* presynaptic trace ``x1``: a graded spike with payload ``p`` overwrites it with ``round(p / 2)`` (half to
  even) cast to ``trace_bits + 1`` unsigned bits (uint8 on chip: payload 600 gives 44);
* postsynaptic traces ``y1..y3``: sent by the neuron, ``trace_bits``-bit unsigned values (here the third
  factor ``y2 = [L psi]+``, ``y3 = [L psi]-``);
* traces decay once per tick, ``v <- floor(v e^(-1/tau)) + (u < frac)``, with one random number ``u`` per
  tick shared by all traces of a stream (:func:`decay_trace`);
* a rule is a sum of products ``D * S * F1 * F2 ...`` (dependency ``D`` in {x0, y0, u_k}, scale
  ``S = mantissa * 2^exponent``); each factor is saturated to its width (traces 7 bits, tag/weight 9 bits
  signed), the product times the 4-bit mantissa is right-shifted (floor) by
  ``max(0, sum of widths + 4 - 15)``, left-shifted by ``exponent + 7`` and saturated to 16 bits signed
  (:func:`product`); the products add into the synaptic variable held with 7 fractional bits
  (``var << 7``), saturating after each addition (:func:`accumulate`);
* the sum is rounded onto the variable's grid stochastically, with *one* random number per epoch shared by all
  synapses (:func:`stochastic_round`, stream :func:`synaptic_randoms`), then saturated: tag to
  ``[-257, 255]``, weight to ``[-256, 255]`` (:func:`saturate_tag`, :func:`saturate_weight`);
* a weight given at construction is truncated to an even value (:func:`initial_weights`).

:class:`EngineWidths` holds these widths; the chip's are the defaults and wider ones model a what-if engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DECAY_SHIFT", "EngineSpec", "EngineWidths", "SYN_RANDOM_SEED", "accumulate", "decay_trace", "dense",
    "eprop_epoch", "initial_weights", "tag_epoch", "leaky_step", "payload_to_trace", "product", "rate_payload",
    "saturate", "saturate_tag", "saturate_weight", "stochastic_round", "synaptic_randoms", "third_factor",
    "trace_payload", "trace_randoms", "weight_update",
]

DECAY_SHIFT = 12
"""Leaks and decays are ``d / 2^12`` with ``d`` a 12-bit integer (Lava's ``decay_shift``)."""
SYN_RANDOM_SEED = 2
"""Lava's ``ConnVarRandom`` seed: every learning connection draws the same stream (lava-nc 0.10.0)."""


@dataclass(frozen=True)
class EngineWidths:
    """Widths of the learning engine (magnitude bits; Lava ``constants.py``: the defaults are the chip's).

    ``trace_bits``: x1, x2, y1..y3 (7); ``tag_bits``/``weight_bits``: magnitude of tag and weight (8; signed
    9-bit values); ``frac_bits``: fractional bits of the accumulator below the variable's LSB (7);
    ``mantissa_bits``: the scale mantissa (4); ``exponent_min``: the smallest scale exponent (-7; a what-if
    engine may go lower, a product then shifts right by the difference, floor); ``accumulator_bits``: magnitude
    of the product accumulator (``max(tag_bits, weight_bits) + frac_bits``, 15 on chip).
    """

    trace_bits: int = 7
    tag_bits: int = 8
    weight_bits: int = 8
    frac_bits: int = 7
    mantissa_bits: int = 4
    exponent_min: int = -7

    @property
    def accumulator_bits(self) -> int:
        return max(self.tag_bits, self.weight_bits) + self.frac_bits

    def width(self, factor: str) -> int:
        """Width of a factor in the product shift: ``x0``/``y0`` 1, traces ``trace_bits``, ``t``/``w`` signed."""
        if factor in ("x0", "y0"):
            return 1
        if factor in ("x1", "x2", "y1", "y2", "y3"):
            return self.trace_bits
        if factor == "t":
            return self.tag_bits + 1
        if factor == "w":
            return self.weight_bits + 1
        if factor == "c":
            return 8
        raise ValueError(f"unknown factor {factor!r}")


CHIP = EngineWidths()


def _i64(a) -> np.ndarray:
    return np.asarray(a).astype(np.int64)


def saturate(v, bits: int, signed: bool = True) -> np.ndarray:
    """Clip to ``bits`` magnitude bits: ``[-2^bits, 2^bits - 1]`` (signed) or ``[0, 2^bits - 1]``."""
    lo = -(2 ** bits) if signed else 0
    return np.clip(_i64(v), lo, 2 ** bits - 1)


# ---------------------------------------------------------------------------------------------- traces
def payload_to_trace(payload, widths: EngineWidths = CHIP) -> np.ndarray:
    """x1 written by a graded spike (OVERWRITE): ``round(p / 2)`` (half to even) as a ``trace_bits + 1``-bit
    unsigned integer (it wraps: 600 -> 44 on chip). Saturation to ``trace_bits`` happens in the product."""
    half = np.round(np.asarray(payload, dtype=np.float64) / 2)
    return np.mod(half.astype(np.int64), 2 ** (widths.trace_bits + 1))


def trace_randoms(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` draws of one trace stream (Lava ``TraceRandom(seed, seed + 1)``): ``(decay, impulse)``.

    Index 0 is drawn at construction; a learning connection advances each stream twice per tick, so the decay
    random of tick ``k`` (1-based) is index ``2 k``. x traces use ``seed = rng_seed``, y traces
    ``rng_seed + 2`` (``rng_seed`` of the learning rule).
    """
    decay = np.random.default_rng(seed).random(n)
    impulse = np.random.default_rng(seed + 1).integers(0, 2 ** CHIP.trace_bits, size=n, dtype=int)
    return decay, impulse


def decay_trace(v, tau: float, u: float, steps: int = 1, widths: EngineWidths = CHIP) -> np.ndarray:
    """``steps`` decays of a trace with time constant ``tau`` and one shared random ``u``:
    ``v <- floor(v e^(-1/tau)) + (u < frac)`` each (Lava's stochastic decay; ``tau = 0`` clears the trace)."""
    v = _i64(v)
    if tau == 0:
        return np.zeros_like(v)
    for _ in range(steps):
        scaled = np.exp(-1 / np.asarray([[float(tau)]]))[0, 0] * v
        v = (np.floor(scaled) + (u < scaled % 1)).astype(np.int64)
    return v


# ---------------------------------------------------------------------------------------------- products
def product(factors, *, dependency=1, mantissa: int = 1, exponent: int = 0, widths: EngineWidths = CHIP,
            names: tuple[str, ...] | None = None) -> np.ndarray:
    """One product ``D * S * F1 * F2 ...`` in accumulator units (``2^-frac_bits`` of the variable's LSB).

    ``factors``: a sequence of ``(value, width)`` pairs, or values with ``names`` (``"x1"``, ``"y2"``, ``"t"``,
    ...) giving the widths; each value is saturated to ``[-2^width, 2^width - 1]``. ``mantissa`` and
    ``exponent`` may be arrays that broadcast (one scale per network). The product times
    ``mantissa`` (``[-8, 7]``) is shifted right (floor) by ``max(0, sum of widths + mantissa_bits -
    accumulator_bits)``, left by ``exponent + frac_bits`` (``exponent`` in ``[exponent_min, 8]``) and saturated to
    ``[-2^acc - 1, 2^acc - 1]``.
    """
    if names is not None:
        factors = [(f, widths.width(n)) for f, n in zip(factors, names)]
    mantissa, exponent = _i64(mantissa), _i64(exponent)
    top = 2 ** (widths.mantissa_bits - 1)
    if np.any(mantissa < -top) or np.any(mantissa >= top):
        raise ValueError(f"scale mantissa {mantissa.tolist()} outside [-{top}, {top - 1}]")
    if np.any(exponent < widths.exponent_min) or np.any(exponent > 8):
        raise ValueError(f"scale exponent {exponent.tolist()} outside [{widths.exponent_min}, 8]")
    acc = widths.accumulator_bits
    out = _i64(dependency)
    total = 0
    for value, width in factors:
        out = out * saturate(value, width)
        total += width
    out = out * mantissa
    out = np.right_shift(out, max(0, total + widths.mantissa_bits - acc))
    up = exponent + widths.frac_bits
    out = np.where(up >= 0, np.left_shift(out, np.maximum(up, 0)), np.right_shift(out, np.maximum(-up, 0)))
    return np.clip(out, -(2 ** acc) - 1, 2 ** acc - 1)


def accumulate(var, products, widths: EngineWidths = CHIP) -> np.ndarray:
    """``var << frac_bits`` plus the products in order, saturated to the accumulator after each addition."""
    acc = widths.accumulator_bits
    out = np.left_shift(_i64(var), widths.frac_bits)
    for p in products:
        out = np.clip(out + p, -(2 ** acc) - 1, 2 ** acc - 1)
    return out


def stochastic_round(acc, u: float, widths: EngineWidths = CHIP) -> np.ndarray:
    """Accumulator -> variable: ``floor(acc / 2^frac) + (u < frac part)`` with one random ``u`` for all."""
    # u < rem / 2^frac  <=>  u 2^frac < rem: both sides exact, the same decision as Lava's float test
    acc = _i64(acc)
    rem = np.bitwise_and(acc, 2 ** widths.frac_bits - 1)
    return np.right_shift(acc, widths.frac_bits) + (rem > u * 2.0 ** widths.frac_bits)


def saturate_tag(t, widths: EngineWidths = CHIP) -> np.ndarray:
    """The tag's range ``[-2^tag_bits - 1, 2^tag_bits - 1]`` (``[-257, 255]`` on chip, as Lava clips it)."""
    return np.clip(_i64(t), -(2 ** widths.tag_bits) - 1, 2 ** widths.tag_bits - 1)


def saturate_weight(w, widths: EngineWidths = CHIP) -> np.ndarray:
    """A learned weight's range ``[-2^weight_bits, 2^weight_bits - 1]`` (mixed sign, ``[-256, 255]``)."""
    return saturate(w, widths.weight_bits)


def initial_weights(w) -> np.ndarray:
    """A mixed-sign weight given at construction loses its LSB (8-bit mantissa at 2x step): even values."""
    return np.left_shift(np.right_shift(_i64(w), 1), 1)


def synaptic_randoms(n: int, start: int = 0, seed: int = SYN_RANDOM_SEED) -> np.ndarray:
    """Random numbers ``start .. start + n - 1`` of the synaptic-variable stream (Lava ``ConnVarRandom``).

    Index 0 is drawn at construction and the stream advances before every epoch's update, so epoch ``k``
    (1-based, counted from the start of the run) rounds with index ``k``.
    """
    return np.random.default_rng(seed).random(start + n)[start:]


# ---------------------------------------------------------------------------------------------- the e-prop rule
def eprop_epoch(tag, weights, x1, y2, y3, u: float, *, y0=1, apply: bool = False, tag_mantissa: int = 1,
                tag_exponent: int = 0, w_mantissa: int = -1, w_exponent: int = 0,
                widths: EngineWidths = CHIP) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of ``dt = S_t y0 x1 y2 - S_t y0 x1 y3 - u_k t``, ``dw = S_w u_k t``: the trial gradient in the tag.

    ``tag``, ``weights (..., post, pre)``; ``x1 (..., 1, pre)``; ``y2``, ``y3 (..., post, 1)``; ``u`` the
    epoch's synaptic random; ``apply`` whether the dependency ``u_k`` fires this epoch (the trial's end: the
    weight takes ``S_w t`` and the tag is cleared). ``S_t = tag_mantissa 2^tag_exponent``,
    ``S_w = w_mantissa 2^w_exponent``. The weight is updated first from the old tag, as in Lava (the rule's
    targets all read the epoch's starting values). Returns ``(tag, weights)``.
    """
    tag, weights = _i64(tag), _i64(weights)
    if apply:
        weights = weight_update(weights, tag, u, w_mantissa=w_mantissa, w_exponent=w_exponent, widths=widths)
    else:  # no product: the accumulator holds the weight exactly and rounding leaves it
        weights = saturate_weight(weights, widths)
    return tag_epoch(tag, x1, y2, y3, u, y0=y0, clear=apply, tag_mantissa=tag_mantissa, tag_exponent=tag_exponent,
                     widths=widths), weights


def tag_epoch(tag, x1, y2, y3, u: float, *, y0=1, clear: bool = False, tag_mantissa=1, tag_exponent=0,
              widths: EngineWidths = CHIP) -> np.ndarray:
    """The tag half of :func:`eprop_epoch`: ``t + S_t y0 x1 y2 - S_t y0 x1 y3 (- t if clear)``, rounded with ``u``."""
    tag = _i64(tag)
    names = ("x1", "y2")
    mant = _i64(tag_mantissa)
    y2, y3 = _i64(y2), _i64(y3)
    if np.all((y2 == 0) | (y3 == 0)):  # one of the two products is 0: one signed product gives the same sum
        prods = [product((x1, y2 - y3), dependency=y0, mantissa=mant, exponent=tag_exponent, widths=widths,
                         names=names)]
    else:
        prods = [product((x1, y2), dependency=y0, mantissa=mant, exponent=tag_exponent, widths=widths, names=names),
                 product((x1, y3), dependency=y0, mantissa=-mant, exponent=tag_exponent, widths=widths,
                         names=names)]
    if clear:
        prods.append(product((tag,), mantissa=-1, exponent=0, widths=widths, names=("t",)))
    return saturate_tag(stochastic_round(accumulate(tag, prods, widths), u, widths), widths)


def weight_update(weights, tag, u: float, *, w_mantissa: int, w_exponent: int,
                  widths: EngineWidths = CHIP) -> np.ndarray:
    """The weight after ``dw = S_w u_k t`` with the epoch's random ``u`` (the update half of :func:`eprop_epoch`)."""
    dw = product((tag,), mantissa=w_mantissa, exponent=w_exponent, widths=widths, names=("t",))
    return saturate_weight(stochastic_round(accumulate(weights, [dw], widths), u, widths), widths)


# ---------------------------------------------------------------------------------------------- Dense, neuron
def dense(weights, s, weight_exp: int = 0) -> np.ndarray:
    """Lava's bit-accurate ``Dense`` with graded input: ``(W s) << weight_exp`` (``>> -weight_exp``, floor).

    ``weights (..., post, pre)`` integers (the learned 9-bit values), ``s (..., pre)``; ``weight_exp`` a
    scalar or one per leading index (shape ``(..., 1)``). Lava sums in int32
    (it wraps at 2^31; the engine profile keeps every sum below 2^30) and declares a 16-bit ``a_out`` it does
    not enforce, so neither is modelled.
    """
    acc = np.matmul(_i64(weights), _i64(s)[..., None])[..., 0]
    if np.ndim(weight_exp) == 0:
        return np.left_shift(acc, weight_exp) if weight_exp > 0 else np.right_shift(acc, -weight_exp)
    we = _i64(weight_exp)
    return np.where(we > 0, np.left_shift(acc, np.maximum(we, 0)), np.right_shift(acc, np.maximum(-we, 0)))


def leaky_step(a, drive, decay: int, bits: int = 24) -> np.ndarray:
    """The leaky state ``a <- a + floor(d (drive - a) / 2^12)`` (``alpha = d / 4096``), saturated to ``bits``
    signed bits: form A's ``a_t = (1 - alpha) a_{t-1} + alpha drive_t`` on the integer grid (``decay`` a
    scalar or one per leading index)."""
    a = _i64(a)
    return saturate(a + np.right_shift(_i64(decay) * (_i64(drive) - a), DECAY_SHIFT), bits - 1)


def rate_payload(a, shift: int, bits: int = 24) -> np.ndarray:
    """The ReLU rate sent as a graded payload: ``clip(a >> shift, 0, 2^bits - 1)``."""
    return np.clip(np.right_shift(_i64(a), shift) if shift >= 0 else np.left_shift(_i64(a), -shift),
                   0, 2 ** bits - 1)


def trace_payload(rbar, shift: int, widths: EngineWidths = CHIP) -> np.ndarray:
    """A filtered rate sent to overwrite x1: ``clip(rbar >> shift, 0, 2^(trace_bits + 1) - 2)``, the largest
    payload whose ``round(p / 2)`` still fits the trace (no wrap)."""
    return np.clip(np.right_shift(_i64(rbar), shift), 0, 2 ** (widths.trace_bits + 1) - 2)


def third_factor(learning_signal, psi, shift: int, widths: EngineWidths = CHIP) -> tuple[np.ndarray, np.ndarray]:
    """``y2 = [L psi]+``, ``y3 = [L psi]-`` as ``trace_bits``-bit unsigned values: ``clip(|L psi| >> shift)``.

    ``psi`` is 0/1 (ReLU's derivative); the shift (a scalar or one per leading index) floors the magnitude
    (toward zero for both signs)."""
    e = _i64(learning_signal) * _i64(psi)
    top = 2 ** widths.trace_bits - 1
    sh = _i64(shift)
    mag = np.where(sh >= 0, np.right_shift(np.abs(e), np.maximum(sh, 0)), np.left_shift(np.abs(e), np.maximum(-sh, 0)))
    mag = np.minimum(mag, top)
    return np.where(e > 0, mag, 0), np.where(e < 0, mag, 0)


# ---------------------------------------------------------------------------------------------- profile section
class EngineSpec(BaseModel):
    """The ``[engine]`` table of a hardware profile: e-prop computed the way Loihi 2's learning engine does.

    A profile with this table switches the torch backend to the engine view
    (:mod:`neurorate.backends.torch.engine_profile`): form A, ReLU, ``eprop``/``eprop_random``, SGD, batch 1.
    Widths are magnitude bits (:class:`EngineWidths`); the rest fixes how the float network maps onto
    integers (docs/hardware_profiles.md, "The engine view"):

    ``state_frac``: fractional bits of the neuron state (24-bit signed); ``message_frac``: of the graded rate
    payload; ``trace_frac``: x1 = rbar 2^trace_frac (so rbar < 2^(trace_bits - trace_frac) before it
    saturates); ``weight_frac``: ``"auto"`` (one shared exponent per matrix from the initial weights, the
    largest filling the 8-bit mantissa) or fixed bits; ``third_factor_frac`` / ``tag_exponent``: ``"auto"``
    (calibrated on the first trial from the initial network so that the largest ``|L psi|`` fills the third
    factor and the largest trial gradient half the tag) or fixed values; ``epochs``: epochs per trial (a
    power of two > T, the dependency ``u_k``; 0 = the next power of two above the trial length); ``rounding``:
    ``"shared"`` (Lava: one random number per epoch for all synapses) or ``"independent"`` (a what-if: one per
    synapse and epoch). Fixed values are range-checked: ``weight_frac`` in [-32, 32], ``third_factor_frac`` in
    [0, 22] (at most the state's fractional bits, as "auto" chooses), ``tag_exponent`` in [-24, 8] (the range
    "auto" chooses from) and ``epochs`` at most 2^16.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    trace_bits: int = Field(default=7, ge=1, le=24)
    exponent_min: int = Field(default=-7, ge=-24, le=-7)
    tag_bits: int = Field(default=8, ge=1, le=30)
    weight_bits: int = Field(default=8, ge=1, le=24)
    frac_bits: int = Field(default=7, ge=0, le=24)
    state_frac: int = Field(default=16, ge=0, le=22)
    message_frac: int = Field(default=12, ge=0, le=22)
    trace_frac: int = Field(default=6, ge=0, le=24)
    weight_frac: Annotated[int, Field(ge=-32, le=32)] | Literal["auto"] = "auto"
    third_factor_frac: Annotated[int, Field(ge=0, le=22)] | Literal["auto"] = "auto"
    tag_exponent: Annotated[int, Field(ge=-24, le=8)] | Literal["auto"] = "auto"
    epochs: int = Field(default=0, ge=0, le=2**16)
    rounding: Literal["shared", "independent"] = "shared"

    @model_validator(mode="after")
    def _check(self):
        if self.epochs and self.epochs & (self.epochs - 1):
            raise ValueError(f"engine.epochs = {self.epochs} must be a power of two (the dependency u_k)")
        if self.message_frac > self.state_frac:
            raise ValueError("engine.message_frac must be <= engine.state_frac (the payload is the state shifted)")
        if self.trace_frac + 1 > self.state_frac:
            raise ValueError("engine.trace_frac + 1 must be <= engine.state_frac")
        return self

    @property
    def widths(self) -> EngineWidths:
        """The engine's widths as :class:`EngineWidths`."""
        return EngineWidths(trace_bits=self.trace_bits, tag_bits=self.tag_bits, weight_bits=self.weight_bits,
                            frac_bits=self.frac_bits, exponent_min=self.exponent_min)
