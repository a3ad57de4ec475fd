"""The one quantizer: applies a :class:`~neurorate.hardware.profiles.HardwareProfile` identically on both backends.

Every method takes a torch tensor *or* a numpy array and computes the same float64 arithmetic with
exact operations only (floor, compare, power-of-two scaling built from exponent bits, IEEE division), so
the torch backend and the Lava ``fixed_pt`` models get bit-identical values for the same input. In torch
*training* mode a quantised value is a fake-quant with a straight-through estimator
(``x - x.detach() + q(x)``: forward value exactly ``q(x)``, gradient the identity); in evaluation mode and
for numpy it is the hard value ``q(x)``.

Integer grids (``value = m * step``, ``m`` a ``bits``-bit integer)::

    y = x / step;  nearest: m = floor(y) + (y - floor(y) >= 1/2)   (ties toward +inf, = floor(y + 1/2))
                   floor:   m = floor(y);   trunc: m = trunc(y)    (toward zero)
                   stochastic: m = floor(y) + (u < y - floor(y)),   u = hash(seed, step, stream, index) / 2^32
    saturate: m = clip(m, lo, hi);   wrap: m = lo + (m - lo) mod 2^bits   (two's complement)

The shared exponent of a matrix (``scale = "shared_exponent"``) comes from ``max |x| = f 2^k`` with
``f in [1/2, 1)``: ``step = 2^(k - b)`` where ``b`` is the number of magnitude bits (``bits - 1`` if signed),
so the largest magnitude fills the mantissa (it may round up to ``2^b`` and then saturates to ``2^b - 1``).
Hardware fixes that exponent when the weights are mapped; :meth:`Quantizer.calibrate` freezes it likewise,
after which :meth:`~Quantizer.weight` saturates and :meth:`~Quantizer.update` rounds onto the same grid.

Stochastic rounding draws ``u`` from a counter-based integer hash of ``(seed, step, stream, element
index)`` (C-order flat index), computed with int64 operations that never overflow, so numpy and torch
(CPU or GPU) give the same bits and a run is reproducible without any random generator state.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.hardware.profiles import WEIGHT_NAMES, HardwareProfile, NumberFormat, load_profile

_M32 = 0xFFFFFFFF
_STREAM = {name: i + 1 for i, name in enumerate(WEIGHT_NAMES)}  # update streams 1..6
_STATE, _RATE, _TRACE0, _WEIGHT0 = 7, 8, 32, 16
_SQRT_HALF = 0.7071067811865476


def mix32(h):
    """A 32-bit integer hash (xorshift-multiply rounds) of ints, int64 numpy arrays or int64 tensors.

    Values stay in ``[0, 2^32)``; each product is ``< 2^32 * 2^31`` and so never overflows int64.
    """
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _M32
    h = h ^ (h >> 12)
    h = (h * 0x297A2D39) & _M32
    return h ^ (h >> 15)


def stream_keys(seed: int, step: int, stream: int) -> tuple[int, int]:
    """The two 32-bit keys of one ``(seed, step, stream)`` counter (plain Python ints)."""
    if seed < 0 or step < 0:
        raise NeurorateError(f"seed and step must be non-negative integers, got seed={seed}, step={step}")
    k = mix32((int(seed) & _M32) ^ 0x9E3779B9)
    k = mix32(k ^ (int(seed) >> 32 & _M32))
    k = mix32(k ^ (int(step) & _M32))
    k = mix32(k ^ (int(step) >> 32 & _M32))
    k = mix32(k ^ int(stream))
    return k, mix32(k ^ 0x85EBCA6B)


# ---------------------------------------------------------------------------------------------- array ops
class _NumpyOps:
    """The handful of exact operations the quantizer needs, on numpy arrays."""

    @staticmethod
    def f64(x):
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def back(q, like):
        dtype = np.asarray(like).dtype
        return np.asarray(q).astype(dtype if dtype.kind == "f" else np.float64)

    @staticmethod
    def amax(a, dims):
        return np.max(a, axis=dims, keepdims=True) if a.size else np.zeros([1] * a.ndim)

    @staticmethod
    def exponent(a):
        """``k`` with ``a = f 2^k``, ``f in [1/2, 1)`` for positive normal float64 ``a``."""
        a = a if a.flags.c_contiguous else a.copy()
        return ((a.view(np.int64) >> 52) & 0x7FF) - 1022

    @staticmethod
    def pow2(e):
        return ((np.clip(e, -1022, 1023).astype(np.int64) + 1023) << 52).view(np.float64)

    @staticmethod
    def uniform(like, key1, key2, batch_dims: int = 0):
        inner = like.shape[batch_dims:]
        idx = np.broadcast_to(np.arange(int(np.prod(inner)), dtype=np.int64).reshape(inner), like.shape)
        h = mix32(mix32((idx + key1) & _M32) ^ key2)
        return h.astype(np.float64) * 2.0**-32

    @staticmethod
    def float_round(x64, dtype: str):
        with np.errstate(over="ignore"):
            x32 = x64.astype(np.float32)
        if dtype == "float32":
            return x32.astype(np.float64)
        if dtype == "float16":
            with np.errstate(over="ignore"):  # overflow to inf, as torch does
                return x32.astype(np.float16).astype(np.float64)
        # bfloat16: round the float32 bit pattern to nearest even on bit 16
        bits = np.ascontiguousarray(x32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        out = bits.astype(np.uint32).view(np.float32).astype(np.float64)
        return np.where(np.isnan(x32), x32.astype(np.float64), out)

    floor, trunc, where = staticmethod(np.floor), staticmethod(np.trunc), staticmethod(np.where)
    clip, abs, sign = staticmethod(np.clip), staticmethod(np.abs), staticmethod(np.sign)


class _TorchOps:
    """The same operations on torch tensors (any device with float64 support)."""

    def __init__(self):
        import torch

        self.torch = torch
        self.floor, self.trunc, self.clip, self.abs, self.sign = (torch.floor, torch.trunc, torch.clamp,
                                                                  torch.abs, torch.sign)
        # constants made once per device: 0-dim float64 scalars of `where` and the element indices of `uniform`
        # (no upload of a Python float or fresh index tensor on every call)
        self._scalars: dict[tuple, Any] = {}
        self._indices: dict[tuple, Any] = {}

    def scalar(self, value: float, device):
        """The 0-dim float64 tensor ``value`` on ``device`` (cached)."""
        key = (float(value), str(device))
        t = self._scalars.get(key)
        if t is None:
            t = self._scalars[key] = self.torch.tensor(float(value), dtype=self.torch.float64, device=device)
        return t

    def f64(self, x):
        return x.detach().to(self.torch.float64)

    def back(self, q, like):
        return q.to(like.dtype if like.is_floating_point() else self.torch.float64)

    def amax(self, a, dims):
        return self.torch.amax(a, dim=dims, keepdim=True) if a.numel() else a.new_zeros([1] * a.dim())

    def exponent(self, a):
        return ((a.contiguous().view(self.torch.int64) >> 52) & 0x7FF) - 1022

    def pow2(self, e):
        e = self.torch.as_tensor(e).clamp(-1022, 1023).to(self.torch.int64)
        return ((e + 1023) << 52).view(self.torch.float64)

    def uniform(self, like, key1, key2, batch_dims: int = 0):
        inner = tuple(like.shape[batch_dims:])
        key = (inner, str(like.device))
        idx = self._indices.get(key)
        if idx is None:
            idx = self._indices[key] = self.torch.arange(int(np.prod(inner)), dtype=self.torch.int64,
                                                         device=like.device).reshape(inner)
        idx = idx.expand(like.shape)
        return mix32(mix32((idx + key1) & _M32) ^ key2).to(self.torch.float64) * 2.0**-32

    def float_round(self, x64, dtype: str):
        return x64.to(self.torch.float32).to(getattr(self.torch, dtype)).to(self.torch.float64)

    def where(self, c, a, b):
        return self.torch.where(c, self._f64_like(a, c.device), self._f64_like(b, c.device))

    def _f64_like(self, v, device):
        if isinstance(v, (int, float)):
            return self.scalar(v, device)
        return self.torch.as_tensor(v, dtype=self.torch.float64, device=device)


_NP = _NumpyOps()
_TORCH: _TorchOps | None = None


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _ops(x):
    global _TORCH
    if _is_torch(x):
        if _TORCH is None:
            _TORCH = _TorchOps()
        return _TORCH
    return _NP


# ---------------------------------------------------------------------------------------------- the grid
def integer_range(fmt: NumberFormat) -> tuple[float, float]:
    """``(lo, hi)`` of the integer ``m`` of an integer/fixed format."""
    bits = int(fmt.bits)
    return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if fmt.signed else (0.0, 2.0**bits - 1)


def _magnitude_bits(fmt: NumberFormat) -> int:
    return int(fmt.bits) - 1 if fmt.signed else int(fmt.bits)


def _dims(ndim: int, vector: bool) -> tuple[int, ...]:
    if ndim == 0:
        return ()
    if vector or ndim == 1:
        return (ndim - 1,)
    return (ndim - 2, ndim - 1)


def grid_step(ops, x64, fmt: NumberFormat, vector: bool = False):
    """The grid step of ``x`` under ``fmt``: a float, or an array broadcastable to ``x`` for data scales."""
    if fmt.scale == "none":
        return 2.0 ** -(fmt.frac_bits or 0)
    dims = (x64.ndim - 1,) if fmt.scale == "per_row" and x64.ndim else _dims(x64.ndim, vector)
    amax = ops.amax(ops.abs(x64), dims) if dims else ops.abs(x64)
    if fmt.scale == "per_tensor":
        return ops.where(amax > 0, amax / integer_range(fmt)[1], 1.0)
    step = ops.pow2(ops.exponent(amax) - _magnitude_bits(fmt))
    return ops.where(amax > 0, step, 1.0)


def round_to_integer(ops, y, rounding: str, u=None):
    """Round ``y`` (float64) with ``rounding``; ``u`` (uniform in [0, 1)) is needed for ``stochastic``."""
    if rounding == "trunc":
        return ops.trunc(y)
    fl = ops.floor(y)
    if rounding == "floor":
        return fl
    if rounding == "nearest":
        return fl + ((y - fl) >= 0.5)
    return fl + (u < (y - fl))


def overflow(ops, m, fmt: NumberFormat):
    """Saturate or wrap (two's complement) the integer ``m`` into the range of ``fmt``."""
    lo, hi = integer_range(fmt)
    if fmt.overflow == "saturate":
        return ops.clip(m, lo, hi)
    span = 2.0 ** int(fmt.bits)
    return m - ops.floor((m - lo) / span) * span


def _pow2_values(ops, x64, fmt: NumberFormat, u, vector: bool):
    """Each value 0 or +-2^p with p within ``2^(bits-1) - 1`` exponents of the largest magnitude."""
    a = ops.abs(x64)
    dims = _dims(x64.ndim, vector)
    top = ops.exponent(ops.amax(a, dims) if dims else a)
    k = ops.exponent(a)
    frac = a / ops.pow2(k - 1) - 1.0  # in [0, 1): position between 2^(k-1) and 2^k
    if fmt.rounding == "stochastic":
        up = u < frac
    elif fmt.rounding == "nearest":
        up = frac >= 0.5
    else:
        up = frac < 0
    p = k - 1 + up
    keep = (a > 0) & (p > top - (2 ** (int(fmt.bits) - 1) - 1))
    return ops.where(keep, ops.sign(x64) * ops.pow2(p), 0.0)


def quantize_value(x, fmt: NumberFormat, *, seed: int = 0, step: int = 0, stream: int = 0, grid=None,
                   vector: bool = False, batch_dims: int = 0):
    """Hard-quantise ``x`` (numpy or torch) to ``fmt``; returns float64 values of the input's framework.

    ``grid`` fixes the step (a frozen shared exponent); ``vector`` marks a bias (scale over the last axis).
    """
    ops = _ops(x)
    x64 = ops.f64(x)
    if fmt.format == "float":
        return ops.float_round(x64, fmt.dtype) if fmt.dtype != "float64" else x64
    u = None
    if fmt.rounding == "stochastic":
        k1, k2 = stream_keys(seed, step, stream)
        u = ops.uniform(x64, k1, k2, batch_dims)
    if fmt.scale == "pow2":
        return _pow2_values(ops, x64, fmt, u, vector)
    s = grid_step(ops, x64, fmt, vector) if grid is None else grid
    m = overflow(ops, round_to_integer(ops, x64 / s, fmt.rounding, u), fmt)
    return m * s


# ---------------------------------------------------------------------------------------------- quantizer
class Quantizer:
    """Applies one profile (see the module docstring); build it with :func:`make_quantizer`.

    Attributes
    ----------
    enabled : False for ``profile=None`` (every method returns its input unchanged).
    profile : the :class:`HardwareProfile` or None.
    training : torch tensors get straight-through fake-quant if True, hard values if False.
    seed : seeds the stochastic-rounding hash.
    """

    def __init__(self, profile: HardwareProfile | None, training: bool, seed: int = 0, batch_dims: int = 0):
        self.profile = profile
        self.enabled = profile is not None
        # leading (ensemble) axes excluded from the stochastic-rounding element index, so network m of an
        # ensemble draws exactly the bits a lone network (e.g. one Lava process) draws
        self.batch_dims = int(batch_dims)
        self.training = bool(training)
        self.seed = int(seed)
        if self.seed < 0:
            raise NeurorateError(f"seed must be a non-negative integer, got {seed}")
        self._frozen: dict[str, np.ndarray | float] = {}
        self._frozen_on: dict[tuple[str, str], Any] = {}  # the frozen grids as float64 tensors, once per device

    # ------------------------------------------------------------------ helpers
    def _out(self, x, q64):
        ops = _ops(x)
        q = ops.back(q64, x)
        if ops is _NP or not self.training:
            return q
        return x - x.detach() + q  # forward exactly q, gradient the identity

    def _frozen_grid(self, name: str, x):
        g = self._frozen.get(name)
        if g is None or isinstance(g, float) or not _is_torch(x):
            return g
        key = (name, str(x.device))
        t = self._frozen_on.get(key)
        if t is None:
            t = self._frozen_on[key] = _ops(x).torch.as_tensor(g, dtype=_ops(x).torch.float64, device=x.device)
        return t

    # ------------------------------------------------------------------ quantities
    def weight(self, w, name: str, *, step: int = 0):
        """Quantise matrix ``name`` (``w_in, w_rec, w_out, b, b_out, feedback``) to its weight format.

        With a frozen grid (:meth:`calibrate`) values saturate on that grid; otherwise the step comes from
        this ``w`` (per network of a leading ensemble axis). ``step`` only matters for stochastic rounding.
        """
        if not self.enabled:
            return w
        fmt = self.profile.weights.for_matrix(name)
        q = quantize_value(w, fmt, seed=self.seed, step=step, stream=_WEIGHT0 + _STREAM[name],
                           batch_dims=self.batch_dims, grid=self._frozen_grid(name, w), vector=name in ("b", "b_out"))
        return self._out(w, q)

    def weight_step(self, w, name: str):
        """The grid step of matrix ``name`` (frozen if calibrated, else from ``w``): float or array."""
        fmt = self.profile.weights.for_matrix(name) if self.enabled else None
        if fmt is None or fmt.format == "float":
            return None
        g = self._frozen_grid(name, w)
        if g is not None:
            return g
        ops = _ops(w)
        return grid_step(ops, ops.f64(w), fmt, vector=name in ("b", "b_out"))

    def calibrate(self, weights: Mapping[str, Any]) -> dict[str, Any]:
        """Freeze the grid of each named matrix from its (initial) values, as hardware fixes weight_exp.

        Returns the frozen steps (numpy float64 arrays or floats) by name.
        """
        if not self.enabled:
            return {}
        for name, w in weights.items():
            fmt = self.profile.weights.for_matrix(name)
            if fmt.format == "float":
                continue
            ops = _ops(w)
            g = grid_step(ops, ops.f64(w), fmt, vector=name in ("b", "b_out"))
            self._frozen[name] = g if isinstance(g, float) else np.asarray(
                g.cpu().numpy() if _is_torch(g) else g, dtype=np.float64)
            self._frozen_on = {k: v for k, v in self._frozen_on.items() if k[0] != name}
        return dict(self._frozen)

    def state(self, s, *, step: int = 0):
        """Quantise a neuron state (``a`` in form A, ``h`` in forms B/C) to the state format."""
        if not self.enabled:
            return s
        return self._out(s, quantize_value(s, self.profile.state, seed=self.seed, step=step, stream=_STATE,
                                           batch_dims=self.batch_dims))

    def rate(self, r, *, step: int = 0):
        """Quantise the message a neuron sends (its rate) to the message format."""
        if not self.enabled:
            return r
        return self._out(r, quantize_value(r, self.profile.messages, seed=self.seed, step=step, stream=_RATE,
                                           batch_dims=self.batch_dims))

    def trace(self, e, *, name: str = "w_rec", step: int = 0):
        """Quantise an eligibility trace (of matrix ``name``) to the trace format."""
        if not self.enabled:
            return e
        return self._out(e, quantize_value(e, self.profile.traces, seed=self.seed, step=step,
                                           stream=_TRACE0 + _STREAM[name], batch_dims=self.batch_dims))

    def update(self, dw, name: str, step: int, *, scale=None):
        """Quantise a weight update onto the grid of matrix ``name`` (never straight-through).

        The update, in units of the weight LSB, is first held in the learning accumulator
        (``accumulator_bits`` with ``accumulator_frac_bits`` below the LSB, rounded to nearest and
        saturated) and then rounded with ``learning.rounding``; stochastic rounding is keyed by
        ``(seed, step, name)``. The grid is ``scale`` or the frozen one (:meth:`calibrate`). The new
        weight is ``weight(w + update(dw), name)``, which saturates it. Float weight formats keep a float
        master copy: the update is returned unchanged.
        """
        if not self.enabled:
            return dw
        fmt = self.profile.weights.for_matrix(name)
        ops = _ops(dw)
        if fmt.format == "float":
            return ops.back(ops.f64(dw), dw)
        grid = scale if scale is not None else self._frozen_grid(name, dw)
        if grid is None:
            raise NeurorateError(f"the weight grid of {name!r} is not frozen: call calibrate() with the initial "
                                 "weights or pass scale=")
        y = ops.f64(dw) / grid
        learn = self.profile.learning
        if learn.accumulator_bits is not None:
            acc = NumberFormat(format="int", bits=learn.accumulator_bits, signed=True,
                               frac_bits=learn.accumulator_frac_bits or 0)
            y = quantize_value(y, acc)
        u = None
        if learn.rounding == "stochastic":
            k1, k2 = stream_keys(self.seed, step, _STREAM[name])
            u = ops.uniform(y, k1, k2, self.batch_dims)
        return ops.back(round_to_integer(ops, y, learn.rounding, u) * grid, dw)

    # ------------------------------------------------------------------ leak
    def decay_integer(self, alpha):
        """The integer that holds ``alpha``: ``n`` of ``alpha = n / 2^decay_bits`` (linear, Loihi ``du + 1``)
        or the shift of ``alpha = 2^-shift`` (pow2, Xylo ``dash``); None for exact (float) decays."""
        st = self.profile.state if self.enabled else None
        if st is None or st.decay == "float":
            return None
        ops = _ops(alpha)
        a = ops.f64(alpha)
        if st.decay == "linear":
            unity = 2.0 ** int(st.decay_bits)
            return ops.clip(round_to_integer(ops, a * unity, "nearest"), 1.0, unity)
        k = ops.exponent(a)  # alpha = f 2^k, nearest power of two in the log domain
        up = (a / ops.pow2(k)) >= _SQRT_HALF
        return ops.clip(-(k - 1 + up) * 1.0, 0.0, 1022.0)

    def decay(self, alpha):
        """The effective leak ``alpha`` after quantising it as the device holds it (same type as given).

        linear (Loihi): ``round(alpha 2^12) / 2^12`` clipped to ``[1, 2^12] / 2^12`` (0.5 -> 2048/4096);
        pow2 (Xylo): the power of two nearest in the log domain; float: unchanged.
        """
        n = self.decay_integer(alpha)
        if n is None:
            return alpha
        ops = _ops(alpha)
        st = self.profile.state
        eff = n / 2.0 ** int(st.decay_bits) if st.decay == "linear" else ops.pow2(-n)
        if isinstance(alpha, (float, int)):
            return float(eff)
        return ops.back(eff, alpha)


def make_quantizer(profile: HardwareProfile | str | None, *, training: bool, seed: int = 0,
                   batch_dims: int = 0) -> Quantizer:
    """A :class:`Quantizer` for ``profile`` (a profile, a shipped name, a ``.toml`` path, or None = off).

    ``batch_dims``: leading ensemble axes of the tensors it will see (the torch backend passes 1), excluded
    from the stochastic-rounding index so every network draws the same bits as when run alone.
    """
    if profile is not None and not isinstance(profile, HardwareProfile):
        profile = load_profile(profile)
    return Quantizer(profile, training=training, seed=seed, batch_dims=batch_dims)
