"""Spiking (LIF and adaptive ALIF) variant of the rate network, with e-prop (Bellec et al. 2020).

Same arrays as a :class:`~neurorate.model.spec.NetworkSpec` (``W = w_rec``, ``U = w_in``, ``V = w_out``, biases,
feedback ``B``); ``alpha = dt / tau_m`` gives the membrane decay ``beta = 1 - alpha`` (explicit Euler, as NIR's
LIF with ``r = tau/dt``). Shapes carry a leading ensemble dimension M: weights ``(M, N, N)``, states ``(M, B, N)``::

    v_t = beta v_{t-1} + W z_{t-1} + U x_t + b - theta z_{t-1}       (reset by subtraction, one step later)
    a_t = rho a_{t-1} + z_{t-1}                                      (adaptation, rho = exp(-dt / tau_a))
    z_t = H(v_t - A_t),   A_t = theta + beta_a a_t                  (spike; adaptive threshold)
    y_t = kappa y_{t-1} + V z_t + c                                  (leaky readout)
    psi_t = (gamma / theta) max(0, 1 - |v_t - A_t| / theta)         (triangle pseudo-derivative, dz/dv)

``beta_a`` is a vector: ``beta_a`` on the first ``round(adaptive_fraction N)`` units (ALIF), 0 on the rest (LIF);
``beta_a = 0`` everywhere is the plain LIF network, bit for bit.

e-prop (docs/theory.md §3 for the rate case): the eligibility trace keeps only the leak path ``dv_t/dv_{t-1} = beta``
(the recurrent *and* reset inputs of ``z_{t-1}`` are treated as presynaptic constants)::

    zbar_t = beta zbar_{t-1} + z_{t-1};   xbar_t = beta xbar_{t-1} + x_t;   bbar_t = beta bbar_{t-1} + 1
    eps_t = psi_{t-1} zbar_{t-1} + (rho - psi_{t-1} beta_a) eps_{t-1}      (adaptation trace, da_t/dW)
    e_t = psi_t (zbar_t - beta_a eps_t)^T                 (eligibility of W_ji; LIF: psi_{t,j} zbar_{t,i})
    ebar_t = kappa ebar_{t-1} + e_t                       (filtered by the readout's leak)
    L_t = B dl_t/dy_t                                    (learning signal; B = V^T gives autograd+detach)
    dW = sum_t L_t * ebar_t;   dV = sum_t dl_t/dy_t (kappa-filtered z_t)^T

(a) :func:`autograd_gradients` with ``rule="eprop"`` detaches ``z_{t-1}`` where it enters ``W z`` and the
reset, but keeps it in ``a_t = rho a_{t-1} + z_{t-1}`` (a neuron-internal path, like the leak);
(b) :func:`online_gradients` runs the traces above forward in time. Both give the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from neurorate.errors import FileFormatError, NeurorateError
from neurorate.learning.feedback import feedback_matrix
from neurorate.learning.registry import Rule, check_rule
from neurorate.model.spec import NetworkSpec, check_npz

_LIF_KEYS = ("threshold", "kappa", "gamma", "beta_a", "rho", "adaptive_fraction")
_PARAMS = ("w_in", "w_rec", "w_out", "b", "b_out")
TRAINED = ("w_in", "w_rec", "b", "w_out", "b_out")
"""The trained arrays of a LIF network, in the order of the gradient dicts."""


@dataclasses.dataclass(eq=False)
class LIFNetwork:
    """A recurrent LIF network: the arrays and ``alpha`` of ``spec`` plus the spiking constants.

    Parameters
    ----------
    spec : weights, biases, feedback and ``alpha = dt / tau_m`` (its form/activation are ignored).
    threshold : firing threshold theta (also the size of the subtractive reset).
    kappa : decay of the leaky readout ``y_t = kappa y_{t-1} + V z_t + c`` (0: memoryless readout).
    gamma : dampening of the pseudo-derivative (Bellec et al. 2020 use 0.3).
    beta_a : threshold adaptation strength of the adaptive units (0: LIF; > 0: ALIF).
    rho : decay of the adaptation variable per step, ``exp(-dt / tau_a)``.
    adaptive_fraction : fraction of units that adapt (the first ``round(adaptive_fraction N)``).
    """

    spec: NetworkSpec
    threshold: float = 1.0
    kappa: float = 0.5
    gamma: float = 0.3
    beta_a: float = 0.0
    rho: float = 0.95
    adaptive_fraction: float = 1.0

    def __post_init__(self):
        for key in _LIF_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise NeurorateError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise NeurorateError(f"{key} must be finite, got {value}")
        if not self.threshold > 0:
            raise NeurorateError(f"threshold must be > 0, got {self.threshold}")
        if not 0 <= self.kappa < 1:
            raise NeurorateError(f"kappa (readout decay) must be in [0, 1), got {self.kappa}")
        if not self.gamma > 0:
            raise NeurorateError(f"gamma must be > 0, got {self.gamma}")
        if not self.beta_a >= 0:
            raise NeurorateError(f"beta_a (threshold adaptation) must be >= 0, got {self.beta_a}")
        if not 0 <= self.rho < 1:
            raise NeurorateError(f"rho (adaptation decay exp(-dt/tau_a)) must be in [0, 1), got {self.rho}")
        if not 0 <= self.adaptive_fraction <= 1:
            raise NeurorateError(f"adaptive_fraction must be in [0, 1], got {self.adaptive_fraction}")

    @property
    def beta(self) -> float:
        """Membrane decay ``1 - alpha``."""
        return 1.0 - self.spec.alpha

    @property
    def adaptation(self) -> np.ndarray:
        """Per-unit adaptation strength ``(N,)``: ``beta_a`` on the adaptive units, 0 on the others."""
        n = self.spec.n_hidden
        out = np.zeros(n)
        out[: int(round(self.adaptive_fraction * n))] = self.beta_a
        return out

    @property
    def adaptive(self) -> bool:
        """Whether any unit adapts (an ALIF network)."""
        return bool(np.any(self.adaptation > 0))

    def save(self, path: str | Path) -> Path:
        """A spec ``.npz`` whose header also holds ``neurorate_lif`` (threshold, kappa, gamma)."""
        path = Path(path)
        self.spec.save(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["__meta__"]).decode())
        meta["neurorate_lif"] = {k: float(getattr(self, k)) for k in _LIF_KEYS}  # older files lack the ALIF keys
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LIFNetwork:
        """Inverse of :meth:`save`."""
        lif = _lif_header(Path(path))
        if lif is None:
            raise FileFormatError(f"{path}: not a spiking (LIF) network file")
        if not isinstance(lif, dict) or not set(lif) <= set(_LIF_KEYS):
            raise FileFormatError(f"{path}: header 'neurorate_lif' must be a table of {', '.join(_LIF_KEYS)}, "
                                  f"got {lif!r}")
        spec = _load_spec(Path(path))
        try:
            return cls(spec, **lif)
        except NeurorateError as exc:
            raise FileFormatError(f"{path}: {exc}") from None


def _lif_header(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(bytes(z["__meta__"]).decode()).get("neurorate_lif")
    except Exception:  # noqa: BLE001 - any unreadable file is "not a LIF file"; NetworkSpec.load reports it
        return None


def _load_spec(path: Path) -> NetworkSpec:
    """The rate part of a LIF file (arrays and header without ``neurorate_lif``), validated like a spec."""
    check_npz(path)  # array sizes from the headers, before anything is allocated
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    for key in ("neurorate_lif", "neurorate_spec_version"):
        meta.pop(key, None)
    try:
        return NetworkSpec(**arrays, **meta)
    except TypeError as exc:
        raise FileFormatError(f"{path}: not a neurorate LIF network file ({exc})") from None


def is_lif_file(path: str | Path) -> bool:
    """Whether ``path`` is a spec ``.npz`` written by :meth:`LIFNetwork.save`."""
    return _lif_header(Path(path)) is not None


# ---------------------------------------------------------------------------------------------------- math
def pseudo_derivative(v: torch.Tensor, threshold: float, gamma: float) -> torch.Tensor:
    """``psi = (gamma / theta) max(0, 1 - |v - theta| / theta)`` (Bellec et al. 2020, triangle)."""
    return (gamma / threshold) * torch.clamp(1.0 - torch.abs(v - threshold) / threshold, min=0.0)


class _Spike(torch.autograd.Function):
    """Heaviside spike ``H(v - theta)`` whose derivative is the pseudo-derivative."""

    @staticmethod
    def forward(ctx, v, threshold, gamma):
        ctx.save_for_backward(v)
        ctx.threshold, ctx.gamma = threshold, gamma
        return (v >= threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_z):
        (v,) = ctx.saved_tensors
        return grad_z * pseudo_derivative(v, ctx.threshold, ctx.gamma), None, None


def spike(v: torch.Tensor, threshold: float, gamma: float) -> torch.Tensor:
    """``z = H(v - theta)`` (``v >= theta`` spikes) with the triangle surrogate gradient."""
    return _Spike.apply(v, threshold, gamma)


def lif_step(v, z, drive_t, w_rec, beta, threshold, gamma, detach_pre: bool = False):
    """One LIF step: ``v_t = beta v_{t-1} + W z_{t-1} + drive_t - theta z_{t-1}``, ``z_t = H(v_t - theta)``.

    ``detach_pre`` treats ``z_{t-1}`` (recurrent input and reset) as a constant: the e-prop truncation.
    Returns ``(v_t, z_t)``.
    """
    pre = z.detach() if detach_pre else z
    v = beta * v + torch.matmul(pre, w_rec.transpose(-1, -2)) + drive_t - threshold * pre
    return v, spike(v, threshold, gamma)


def alif_step(v, z, a, drive_t, w_rec, beta, threshold, gamma, rho, beta_a, detach_pre: bool = False):
    """One ALIF step: the LIF membrane update, ``a_t = rho a_{t-1} + z_{t-1}``, ``z_t = H(v_t - beta_a a_t - theta)``.

    ``beta_a`` is a tensor broadcast over units (0 on LIF units). ``detach_pre`` cuts ``z_{t-1}`` in ``W z`` and
    the reset only: the adaptation keeps its own spike (neuron-internal, part of the e-prop eligibility trace).
    Returns ``(v_t, z_t, a_t)``.
    """
    pre = z.detach() if detach_pre else z
    v = beta * v + torch.matmul(pre, w_rec.transpose(-1, -2)) + drive_t - threshold * pre
    a = rho * a + z
    return v, spike(v - beta_a * a, threshold, gamma), a


def lif_rule(rule: str | Rule, nets: list[LIFNetwork] | None = None) -> Rule:
    """The :class:`~neurorate.learning.registry.Rule` of ``rule`` if it trains these networks (LIF, or ALIF when any
    unit adapts), else a one-line :class:`NeurorateError`."""
    neuron = "alif" if nets and any(n.adaptive for n in nets) else "lif"
    r = check_rule(rule, neuron=neuron)
    if r.detach_state:  # the spiking step cuts z_{t-1} (detach_pre) or nothing
        raise NeurorateError(f"rule {r.name!r}: spiking networks implement detach 'nothing' or 'presynaptic "
                             f"rates', not {r.detach!r}")
    return r


def _tensors(nets: list[LIFNetwork], dtype=torch.float64, device=None) -> dict[str, torch.Tensor]:
    out = {k: torch.as_tensor(np.stack([getattr(n.spec, k) for n in nets]), dtype=dtype, device=device)
           for k in _PARAMS}
    out["b"], out["b_out"] = out["b"].unsqueeze(1), out["b_out"].unsqueeze(1)
    fb = [feedback_matrix(n.spec) for n in nets]  # the one recipe of every backend (docs/rules.md)
    out["feedback"] = torch.as_tensor(np.stack(fb), dtype=dtype, device=device)
    return out


def _constants(nets: list[LIFNetwork]):
    first = nets[0]
    keys = lambda n: (n.beta, n.threshold, n.kappa, n.gamma, n.rho, tuple(n.adaptation))
    if any(keys(n) != keys(first) for n in nets[1:]):
        raise NeurorateError("an ensemble of LIF networks must share alpha, threshold, kappa, gamma and the "
                             "adaptation (beta_a, rho, adaptive_fraction)")
    return first.beta, first.threshold, first.kappa, first.gamma


def _adaptation(nets: list[LIFNetwork], like: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``rho`` and the per-unit ``beta_a`` tensor ``(N,)`` of an ensemble (validated by :func:`_constants`)."""
    return nets[0].rho, torch.as_tensor(nets[0].adaptation, dtype=like.dtype, device=like.device)


def forward(nets: list[LIFNetwork], params: dict, x: torch.Tensor, detach_pre: bool = False, states: bool = False):
    """Run the ensemble on ``x (T, B, n_in)`` (or one input per network, ``(M, T, B, n_in)``).

    Returns ``v, z (M, T, B, N)`` and ``y (M, T, B, n_out)`` (and the adaptation ``a (M, T, B, N)`` last when
    ``states``)."""
    beta, theta, kappa, gamma = _constants(nets)
    rho, beta_a = _adaptation(nets, x)
    m, n = params["w_rec"].shape[0], params["w_rec"].shape[-1]
    x = x if x.dim() == 4 else x.unsqueeze(0)  # (1 or M, T, B, n_in): shared or per-network inputs
    drive = torch.matmul(x, params["w_in"].transpose(-1, -2).unsqueeze(1)) + params["b"].unsqueeze(1)
    v = x.new_zeros(m, x.shape[2], n)
    z, a, y = torch.zeros_like(v), torch.zeros_like(v), x.new_zeros(m, x.shape[2], params["w_out"].shape[1])
    vs, zs, ys, as_ = [], [], [], []
    for t in range(x.shape[1]):
        v, z, a = alif_step(v, z, a, drive[:, t], params["w_rec"], beta, theta, gamma, rho, beta_a, detach_pre)
        y = kappa * y + torch.matmul(z, params["w_out"].transpose(-1, -2)) + params["b_out"]
        vs.append(v), zs.append(z), ys.append(y), as_.append(a)
    out = torch.stack(vs, 1), torch.stack(zs, 1), torch.stack(ys, 1)
    return (*out, torch.stack(as_, 1)) if states else out


def simulate(nets: LIFNetwork | list[LIFNetwork], x: np.ndarray) -> dict[str, np.ndarray]:
    """Membrane ``v``, spikes ``z``, adaptation ``a`` ``(M, T, B, N)`` and readout ``y`` ``(M, T, B, n_out)``
    in float64."""
    nets = [nets] if isinstance(nets, LIFNetwork) else list(nets)
    with torch.no_grad():
        v, z, y, a = forward(nets, _tensors(nets), torch.as_tensor(np.asarray(x), dtype=torch.float64), states=True)
    return {"v": v.numpy(), "z": z.numpy(), "a": a.numpy(), "y": y.numpy()}
