"""The torch backend under an engine profile: e-prop computed the way Loihi 2's learning engine computes it.

A hardware profile with an ``[engine]`` table (:class:`neurorate.hardware.engine.EngineSpec`, e.g.
``loihi2-engine``) trains form-A ReLU networks with ``eprop`` / ``eprop_random``, SGD and one trial per
iteration as the Lava loihi graph does on the chip's learning engine, in integers, through the functions of
:mod:`neurorate.hardware.engine` (vectorised over the M networks of the ensemble):

* the network runs on the integer grid: state ``a`` with ``state_frac`` fractional bits (24-bit), the ReLU rate
  sent as a graded payload with ``message_frac`` bits, Dense synapses with a shared weight exponent per matrix
  (8-bit mantissas, initial weights even), the 12-bit leak ``d / 4096``; the readout ``V`` (Dense), its
  offset, the bias and the feedback ``B`` (``V^T`` for ``eprop``, the spec's random feedback for
  ``eprop_random``) are fixed: only ``W_rec`` and ``W_in`` learn, on ``LearningDense`` synapses;
* at every step: the error ``mask (y - y*)`` (no normaliser: it goes into the learning rate), the learning
  signal ``L = B e`` and the third factor ``y2/y3 = [L psi]+/-`` at ``trace_bits``; the presynaptic traces
  ``x1`` from the filtered rates ``rbar`` and inputs ``xbar`` as 8-bit payloads (``x1 = round(p / 2)``); one
  tag epoch ``t += S_t x1 y2 - S_t x1 y3`` with Lava's floor shifts, saturation and the epoch's shared
  stochastic rounding;
* at the trial's end (epoch ``2^k`` of a trial padded to ``epochs``): ``w += S_w t`` rounded with that
  epoch's shared random number, tag cleared.

The scale factors are frozen from the initial network and the first trial, as a programmer maps a network
onto the chip once: ``third_factor_frac`` so that the largest ``|L psi|`` fills the third factor,
``tag_exponent`` so that the largest trial gradient fills half the tag (lower if the weight scale would
otherwise fall below the engine's smallest, ``2^-7``), and ``S_w = lr / norm * 2^(...)`` (the first trial's
mask count ``norm``) rounded to a 4-bit mantissa times a power of two. ``BackendRun.extra["engine"]`` reports
them per network. docs/hardware_profiles.md ("The engine view") describes the choices.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from neurorate.backends.base import BackendRun, progress_bar
from neurorate.errors import NeurorateError
from neurorate.hardware import engine as E
from neurorate.hardware.profiles import HardwareProfile, load_profile
from neurorate.learning.registry import get_rule
from neurorate.model import losses

__all__ = ["applies", "check", "check_network", "engine_spec", "host_update", "train", "EngineNetworks"]


def engine_spec(profile: Any) -> E.EngineSpec | None:
    """The profile's ``[engine]`` table (None: not an engine profile, or no profile)."""
    if profile is None:
        return None
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    return prof.engine


def applies(profile: Any) -> bool:
    """Whether ``profile`` selects the engine view (it has an ``[engine]`` table)."""
    return engine_spec(profile) is not None


def engine_trains(rule) -> bool:
    """Whether the engine view trains ``rule`` (a name or a Rule), from its properties, never its name: the e-prop
    truncation (``detach="presynaptic rates"``) computed by the host's trial, not from forward traces or an
    estimator of its own, with either feedback (``eprop``, ``eprop_random`` and any rule value with their
    properties)."""
    r = get_rule(rule)
    return r.detach == "presynaptic rates" and not r.online and not r.estimator


def _rule_problem(rule) -> str | None:
    if rule is None or engine_trains(rule):
        return None
    name = getattr(rule, "name", rule)
    return f"rule {name} (the e-prop truncation only: eprop, eprop_random or a rule with their properties)"


def check(ens, rule, optimizer: str, kind: str, batch: int, profile_name: str) -> None:
    """One line naming what the engine view does not train (form A, ReLU, e-prop, SGD, MSE, batch 1)."""
    problems = []
    if ens.form != "A":
        problems.append(f"form {ens.form} (form A only)")
    if ens.activation != "relu":
        problems.append(f"activation {ens.activation} (relu only: x1 and y2/y3 are unsigned)")
    if _rule_problem(rule):
        problems.append(_rule_problem(rule))
    if optimizer != "sgd":
        problems.append(f"optimizer {optimizer} (sgd only: the engine adds S_w t to the weight)")
    if kind != "mse":
        problems.append(f"loss {kind} (mse only: the error neuron sends mask (y - y*))")
    if batch != 1:
        problems.append(f"batch {batch} (batch 1 only: one trial at a time on the synapses)")
    if problems:
        raise NeurorateError(f"profile {profile_name!r} (engine view) cannot train this: " + "; ".join(problems))


def check_network(specs, batch: int | None, profile: Any, rule: str | None = None, optimizer: str | None = None,
                  loss: str | None = None) -> None:
    """:func:`check` before training: every spec form A and ReLU, a batch of one trial, and (when given) the rule,
    the optimizer and the loss."""
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    problems = []
    for s in specs[:1]:
        if s.form != "A":
            problems.append(f"form {s.form} (form A only)")
        if s.activation != "relu":
            problems.append(f"activation {s.activation} (relu only: x1 and y2/y3 are unsigned)")
    if _rule_problem(rule):
        problems.append(_rule_problem(rule))
    if optimizer is not None and optimizer != "sgd":
        problems.append(f"optimizer {optimizer} (sgd only: the engine adds S_w t to the weight)")
    if loss is not None and loss != "mse":
        problems.append(f"loss {loss} (mse only: the error neuron sends mask (y - y*))")
    if batch is not None and int(batch) != 1:
        problems.append(f"batch {int(batch)} (batch 1 only: one trial at a time on the synapses)")
    if problems:
        raise NeurorateError(f"profile {prof.name!r} (engine view) cannot train this: " + "; ".join(problems))


def _exponent_for(maxabs: np.ndarray, top: float) -> np.ndarray:
    """Largest integer ``e`` with ``maxabs 2^e <= top`` (per network; 0 where maxabs is 0)."""
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(top / np.where(maxabs > 0, maxabs, 1.0)))
    return np.where(maxabs > 0, e, 0).astype(np.int64)


def _to_int(w: np.ndarray, exp: np.ndarray, widths: E.EngineWidths) -> np.ndarray:
    """Float matrices ``(M, ...)`` -> integers with exponent ``exp (M,)``: rounded, clipped, LSB dropped (Lava)."""
    scale = np.ldexp(1.0, exp).reshape((-1,) + (1,) * (w.ndim - 1))
    top = 2 ** widths.weight_bits
    return E.initial_weights(np.clip(np.round(w * scale), -top, top - 1))


def _scale_factor(s: np.ndarray, emin: int = -7) -> tuple[np.ndarray, np.ndarray]:
    """Positive reals -> (mantissa in 1..7, exponent in [emin, 8]) with m 2^e nearest (per network)."""
    m_out, e_out = np.zeros(s.shape, dtype=np.int64), np.zeros(s.shape, dtype=np.int64)
    for i, v in enumerate(s):
        best = (math.inf, 1, emin)
        for e in range(emin, 9):
            for m in range(1, 8):
                err = abs(math.log2(m * 2.0 ** e) - math.log2(v)) if v > 0 else m * 2.0 ** e
                if err < best[0]:
                    best = (err, m, e)
        m_out[i], e_out[i] = best[1], best[2]
    return m_out, e_out


class EngineNetworks:
    """M form-A ReLU networks on the engine's integer grid (see the module docstring), batch 1.

    Built from an :class:`~neurorate.backends.torch.ensemble.Ensemble`; :meth:`calibrate` freezes the scale
    factors from one trial, :meth:`trial` runs one trial and applies the engine's update,
    :meth:`float_params` returns the weights as floats.
    """

    def __init__(self, ens, spec: E.EngineSpec, rule):
        self.spec = spec
        self._symmetric = get_rule(rule).feedback == "symmetric"  # W_out^T (eprop) or the fixed random B
        self.widths = spec.widths
        p = {k: v.detach().cpu().double().numpy() for k, v in ens.params.items()}
        self.m, self.n = ens.m, ens.n
        self.S, self.R, self.X = spec.state_frac, spec.message_frac, spec.trace_frac
        alpha = ens.alpha.detach().cpu().double().numpy().reshape(self.m, -1)
        self.decay = np.clip(np.round(alpha * 2 ** E.DECAY_SHIFT), 1, 2 ** E.DECAY_SHIFT).astype(np.int64)
        if np.any(self.decay != self.decay[:, :1]):
            raise NeurorateError("engine view: one leak per network (per-unit alpha is not mapped)")
        self.decay = self.decay[:, 0]
        wb = 2 ** self.widths.weight_bits - 1

        def exps(w):
            if spec.weight_frac == "auto":
                return _exponent_for(np.abs(w).reshape(self.m, -1).max(axis=1), wb)
            return np.full(self.m, int(spec.weight_frac), dtype=np.int64)

        self.e_rec, self.e_in, self.e_out = exps(p["w_rec"]), exps(p["w_in"]), exps(p["w_out"])
        self.w_rec = _to_int(p["w_rec"], self.e_rec, self.widths)
        self.w_in = _to_int(p["w_in"], self.e_in, self.widths)
        self.w_out = _to_int(p["w_out"], self.e_out, self.widths)
        if self._symmetric:
            self.fb, self.e_fb = np.swapaxes(self.w_out, -1, -2).copy(), self.e_out.copy()
        else:
            fb = ens.feedback.detach().cpu().double().numpy()  # (M, N, n_out)
            self.e_fb = exps(fb)
            self.fb = _to_int(fb, self.e_fb, self.widths)
        self.b = np.round(p["b"].reshape(self.m, -1) * 2.0 ** self.S).astype(np.int64)
        self.b_out = np.round(p["b_out"].reshape(self.m, -1) * 2.0 ** self.S).astype(np.int64)
        col = lambda e: e[:, None]  # noqa: E731
        self.we_rec, self.we_in = col(self.S - self.R - self.e_rec), col(self.S - self.R - self.e_in)
        self.we_out, self.we_fb = col(self.S - self.R - self.e_out), col(-self.e_fb)
        self.tag_rec = np.zeros_like(self.w_rec)
        self.tag_in = np.zeros_like(self.w_in)
        self.calibrated = False
        self.compiled = True  # the numba trial (same integers as the numpy path through engine.py)
        self.epoch = 0  # epochs since the start of the run (the synaptic random stream's index)
        self._alpha = alpha[:, 0]
        self._float = p

    # ------------------------------------------------------------------ scales
    def calibrate(self, x: np.ndarray, target: np.ndarray, mask: np.ndarray, lr: np.ndarray, norm: np.ndarray):
        """Freeze the third-factor shift, the tag exponent and the weight scale from one float trial."""
        self._lr = np.asarray(lr, dtype=np.float64)
        p, al = self._float, self._alpha[:, None]
        relu = lambda v: np.maximum(v, 0)  # noqa: E731
        fb = (np.swapaxes(p["w_out"], -1, -2) if self._symmetric
              else self.fb * np.ldexp(1.0, -self.e_fb)[:, None, None])
        t_steps = x.shape[1]
        a = np.zeros((self.m, self.n))
        r = np.zeros_like(a)
        rbar, xbar = np.zeros_like(a), np.zeros((self.m, x.shape[-1]))
        g_rec, g_in = np.zeros_like(p["w_rec"]), np.zeros_like(p["w_in"])
        emax = np.zeros(self.m)
        for t in range(t_steps):
            rbar = (1 - al) * rbar + al * r
            xbar = (1 - al) * xbar + al * x[:, t]
            drive = np.einsum("mij,mj->mi", p["w_rec"], r) + np.einsum("mij,mj->mi", p["w_in"], x[:, t])
            a = (1 - al) * a + al * (drive + p["b"].reshape(self.m, -1))
            r = relu(a)
            y = np.einsum("mij,mj->mi", p["w_out"], r) + p["b_out"].reshape(self.m, -1)
            err = mask[:, t] * (y - target[:, t])
            e = np.einsum("mij,mj->mi", fb, err) * (a > 0)
            emax = np.maximum(emax, np.abs(e).max(axis=1))
            g_rec += e[:, :, None] * rbar[:, None, :]
            g_in += e[:, :, None] * xbar[:, None, :]
        spec, w = self.spec, self.widths
        top = 2 ** w.trace_bits - 1
        emin = w.exponent_min
        if spec.third_factor_frac == "auto":
            ef = np.clip(_exponent_for(emax, top), 0, self.S)
        else:
            ef = np.full(self.m, int(spec.third_factor_frac), dtype=np.int64)
        shift = max(0, 2 * w.trace_bits + w.mantissa_bits - w.accumulator_bits)
        mats = (("w_rec", g_rec, self.e_rec), ("w_in", g_in, self.e_in))
        te = {}
        for name, g, _ in mats:
            gmax = np.abs(g).reshape(self.m, -1).max(axis=1)
            tag_units = gmax * np.ldexp(1.0, self.X + ef - shift)  # the largest |t| with S_t = 1
            if spec.tag_exponent == "auto":
                te[name] = np.clip(_exponent_for(tag_units, 2.0 ** (w.tag_bits - 1)), emin, 8)
            else:
                te[name] = np.full(self.m, int(spec.tag_exponent), dtype=np.int64)

        # dW_float ~ t 2^(shift - X - ef - te) / norm, dW_int = -lr dW_float 2^ew: the weight scale S_w
        def s_w(name, ew):
            return lr / norm * np.ldexp(1.0, ew - te[name] + shift - self.X - ef)

        if spec.tag_exponent == "auto":  # too small an S_w: a less full tag first, then a coarser third factor
            deficit = np.zeros(self.m, dtype=np.int64)
            for name, _, ew in mats:
                # at least 4 2^emin, so that the 4-bit mantissa keeps 3 significant bits
                need = np.maximum(np.ceil(np.log2(4 * 2.0 ** emin / s_w(name, ew))), 0).astype(np.int64)
                down = np.minimum(need, te[name] - emin)
                te[name] = te[name] - down
                deficit = np.maximum(deficit, need - down)
            if spec.third_factor_frac == "auto":
                ef = np.maximum(ef - deficit, 0)
        self.ef = ef
        self.tag_e, self.w_m, self.w_e, self.lr_eff = te, {}, {}, {}
        for name, _, ew in mats:
            sw = s_w(name, ew)
            m, e = _scale_factor(sw, emin)
            self.w_m[name], self.w_e[name] = -m, e
            self.lr_eff[name] = lr * (m * np.ldexp(1.0, e)) / sw
        self.calibrated = True

    def report(self) -> list[dict]:
        """Per network: the weight exponents, third-factor shift, tag exponents, weight scales, effective lr."""
        out = []
        for j in range(self.m):
            out.append({
                "weight_frac": {"w_rec": int(self.e_rec[j]), "w_in": int(self.e_in[j]), "w_out": int(self.e_out[j])},
                "third_factor_frac": int(self.ef[j]),
                "tag_exponent": {k: int(v[j]) for k, v in self.tag_e.items()},
                "weight_scale": {k: f"{int(self.w_m[k][j])} * 2^{int(self.w_e[k][j])}" for k in self.w_m},
                "lr_effective": {k: float(v[j]) for k, v in self.lr_eff.items()},
            })
        return out

    # ------------------------------------------------------------------ one trial
    def epochs_per_trial(self, t_steps: int) -> int:
        """The trial padded to a power of two of epochs, at least one padding epoch (the update epoch)."""
        if self.spec.epochs:
            if self.spec.epochs <= t_steps:
                raise NeurorateError(f"engine.epochs = {self.spec.epochs} must exceed the trial's {t_steps} steps")
            return self.spec.epochs
        return 1 << int(t_steps).bit_length()

    def trial(self, x: np.ndarray, target: np.ndarray, mask: np.ndarray, learn: bool = True) -> np.ndarray:
        """One trial ``x (M, T, n_in)``, ``target``/``mask (M, T, n_out)``; returns the outputs ``y (M, T, n_out)``
        as floats and (``learn``) applies the engine's update."""
        w, S, R, X, d = self.widths, self.S, self.R, self.X, self.decay[:, None]
        m, t_steps = self.m, x.shape[1]
        n_epochs = self.epochs_per_trial(t_steps)
        u = E.synaptic_randoms(n_epochs, start=self.epoch + 1)
        a = np.zeros((m, self.n), dtype=np.int64)
        rbar = np.zeros_like(a)
        xbar = np.zeros((m, x.shape[-1]), dtype=np.int64)
        p_r = np.zeros_like(a)
        ys = np.zeros((m, t_steps, target.shape[-1]))
        y_star = np.round(target * 2.0 ** S).astype(np.int64)
        p_x_all = np.round(x * 2.0 ** R).astype(np.int64)
        x_all = np.round(x * 2.0 ** S).astype(np.int64)
        mask_i = (mask != 0).astype(np.int64)
        rec_r = np.zeros((m, t_steps, self.n))
        rec_err = np.zeros((m, t_steps, target.shape[-1]))
        rec_e = np.zeros((m, t_steps, self.n))
        indep = self.spec.rounding == "independent"
        if indep and not (self.compiled and HAVE_KERNEL):
            raise NeurorateError("engine.rounding = 'independent' needs the compiled trial (numba)")
        if self.compiled and HAVE_KERNEL:
            z = np.zeros(m, dtype=np.int64)
            g = (lambda d, k: d[k]) if learn else (lambda d, k: z)  # noqa: E731
            _trial_kernel(self.w_rec, self.w_in, self.w_out, self.fb, self.b, self.b_out, self.tag_rec, self.tag_in,
                          self.we_rec[:, 0], self.we_in[:, 0], self.we_out[:, 0], self.we_fb[:, 0], self.decay,
                          self.ef if learn else z, g(self.tag_e, "w_rec"), g(self.tag_e, "w_in"),
                          g(self.w_m, "w_rec"), g(self.w_e, "w_rec"), g(self.w_m, "w_in"), g(self.w_e, "w_in"),
                          np.ascontiguousarray(p_x_all), np.ascontiguousarray(x_all), np.ascontiguousarray(y_star),
                          np.ascontiguousarray(mask_i), u, ys, rec_r, rec_err, rec_e, learn, indep,
                          self.epoch + 1, S, R, X, w.trace_bits, w.tag_bits, w.weight_bits, w.frac_bits,
                          w.accumulator_bits, w.mantissa_bits)
            if learn:
                self.epoch += n_epochs
                self._host_update(rec_r, rec_err, rec_e, mask)
            return ys
        te_rec, te_in = (self.tag_e["w_rec"][:, None, None], self.tag_e["w_in"][:, None, None]) if learn else (0, 0)
        shift_e = (S - self.ef)[:, None] if learn else 0
        for k in range(t_steps):
            rbar = E.leaky_step(rbar, np.maximum(a, 0), d)  # r_{k-1}
            xbar = E.leaky_step(xbar, x_all[:, k], d)  # includes x_k
            drive = E.dense(self.w_rec, p_r, self.we_rec) + E.dense(self.w_in, p_x_all[:, k], self.we_in) + self.b
            a = E.leaky_step(a, drive, d)
            p_r = E.rate_payload(a, S - R)
            y = E.dense(self.w_out, p_r, self.we_out) + self.b_out
            ys[:, k] = y * 2.0 ** -S
            if not learn:
                continue
            err = mask_i[:, k] * (y - y_star[:, k])
            sig = E.dense(self.fb, err, self.we_fb)
            y2, y3 = E.third_factor(sig, (a > 0).astype(np.int64), shift_e, w)
            rec_r[:, k], rec_err[:, k] = p_r * 2.0 ** -R, err * 2.0 ** -S
            rec_e[:, k] = sig * (a > 0) * 2.0 ** -S
            x1_r = E.payload_to_trace(E.trace_payload(rbar, S - X - 1, w), w)
            x1_x = E.payload_to_trace(E.trace_payload(xbar, S - X - 1, w), w)
            y2c, y3c = y2[:, :, None], y3[:, :, None]
            self.tag_rec = E.tag_epoch(self.tag_rec, x1_r[:, None, :], y2c, y3c, u[k], tag_exponent=te_rec, widths=w)
            self.tag_in = E.tag_epoch(self.tag_in, x1_x[:, None, :], y2c, y3c, u[k], tag_exponent=te_in, widths=w)
        if learn:
            # padding epochs carry no error (zero products); the last one applies S_w t and clears the tag
            u_end = u[n_epochs - 1]
            col = lambda v: v[:, None, None]  # noqa: E731
            self.w_rec = E.weight_update(self.w_rec, self.tag_rec, u_end, w_mantissa=col(self.w_m["w_rec"]),
                                         w_exponent=col(self.w_e["w_rec"]), widths=w)
            self.w_in = E.weight_update(self.w_in, self.tag_in, u_end, w_mantissa=col(self.w_m["w_in"]),
                                        w_exponent=col(self.w_e["w_in"]), widths=w)
            self.tag_rec = np.zeros_like(self.tag_rec)
            self.tag_in = np.zeros_like(self.tag_in)
            self.epoch += n_epochs
            self._host_update(rec_r, rec_err, rec_e, mask)
        return ys

    def _host_update(self, rates, errors, signals, mask) -> None:
        """The host's step between trials (:func:`host_update`) for every network."""
        self.w_out, self.b, self.b_out = host_update(self.w_out, self.e_out, self.b, self.b_out, rates, errors,
                                                     signals, mask, self._lr, self._alpha, self.S, self.widths)
        if self._symmetric:
            self.fb = np.swapaxes(self.w_out, -1, -2).copy()

    def float_params(self) -> dict[str, np.ndarray]:
        """The networks' parameters as floats (integers times their steps; fixed ones as given)."""
        sc = lambda w, e: w * np.ldexp(1.0, -e)[:, None, None]  # noqa: E731
        out = dict(self._float)
        out["w_rec"], out["w_in"] = sc(self.w_rec, self.e_rec), sc(self.w_in, self.e_in)
        out["w_out"] = sc(self.w_out, self.e_out)
        out["b"] = (self.b * 2.0 ** -self.S).reshape(self._float["b"].shape)
        out["b_out"] = (self.b_out * 2.0 ** -self.S).reshape(self._float["b_out"].shape)
        return out


def host_update(w_out, e_out, b, b_out, rates, errors, signals, mask, lr, alpha, state_frac: int,
                widths: E.EngineWidths):
    """The host's SGD step between trials (float, as the Lava loihi graph's host does), for ``M`` networks.

    ``rates``, ``signals`` (``L psi``) ``(M, T, N)`` and ``errors`` ``(M, T, n_out)`` are the trial's records as
    floats; the readout ``V`` moves by ``-lr sum_t e_t r_t^T / norm`` and is rounded to its 8-bit grid (nearest),
    the biases ``b`` (with its trace ``bbar_t``) and ``c`` likewise on the state grid; ``norm`` is the trial's mask
    count. Returns the new ``(w_out, b, b_out)`` integers; ``B = V^T`` follows for symmetric feedback.
    """
    m, t_steps = rates.shape[0], rates.shape[1]
    norm = np.maximum((np.asarray(mask) != 0).reshape(m, -1).sum(axis=1), 1.0)[:, None]
    lr = np.asarray(lr, dtype=np.float64)[:, None]
    g_out = np.einsum("mto,mtn->mon", errors, rates) / norm[:, :, None]
    top = 2 ** widths.weight_bits
    scale = np.ldexp(1.0, np.asarray(e_out))[:, None, None]
    v = w_out / scale - lr[:, :, None] * g_out
    w_out = np.clip(np.round(v * scale), -top, top - 1).astype(np.int64)
    al = np.asarray(alpha, dtype=np.float64)[:, None]
    bbar = 1.0 - (1.0 - al) ** np.arange(1, t_steps + 1)[None, :]  # the bias's trace, (M, T)
    g_b = np.einsum("mtn,mt->mn", signals, bbar) / norm
    g_c = errors.sum(axis=1) / norm
    b = np.round((b * 2.0 ** -state_frac - lr * g_b) * 2.0 ** state_frac).astype(np.int64)
    b_out = np.round((b_out * 2.0 ** -state_frac - lr * g_c) * 2.0 ** state_frac).astype(np.int64)
    return w_out, b, b_out


def train(ens, specs, tasks, the_rule, kind: str, lrs: np.ndarray, optimizer: str, profile: Any, *,
          iterations: int, start_iteration: int = 0, callback=None, progress=None, batch_fn) -> list[BackendRun]:
    """:meth:`TorchBackend.train` under an engine profile (the module docstring); ``batch_fn(i)`` gives batch
    ``i`` as torch tensors ``(x, target, mask)`` like the torch path."""
    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    spec = prof.engine
    x0, t0_, m0 = batch_fn(start_iteration)
    check(ens, the_rule, optimizer, kind, int(x0.shape[-2]), prof.name)
    nets = EngineNetworks(ens, spec, the_rule)
    m = ens.m

    def arrays(x, target, mask):
        x = x.detach().cpu().double().numpy()
        x = np.broadcast_to(x, (m,) + x.shape[1:])[:, :, 0]
        tgt = target.detach().cpu().double().numpy()
        msk = mask.detach().cpu().double().numpy()
        if tgt.ndim == 3:
            tgt, msk = np.broadcast_to(tgt, (m,) + tgt.shape), np.broadcast_to(msk, (m,) + msk.shape)
        return x, tgt[:, :, 0], msk[:, :, 0]

    xa, ta, ma = arrays(x0, t0_, m0)
    norm = np.maximum(ma.reshape(m, -1).sum(axis=1), 1.0)
    nets.calibrate(xa, ta, ma, np.asarray(lrs, dtype=np.float64), norm)
    nets.epoch = start_iteration * nets.epochs_per_trial(xa.shape[1])
    loss_hist = np.full((m, iterations), np.nan)
    acc_hist = np.full((m, iterations), np.nan)
    bar = progress_bar(iterations, progress, f"torch {the_rule.name} engine x{m}")
    t_start = time.perf_counter()
    try:
        for i in range(iterations):
            x, target, mask = batch_fn(start_iteration + i)
            xa, ta, ma = arrays(x, target, mask)
            ys = nets.trial(xa, ta, ma)
            y = torch.as_tensor(ys[:, :, None, :])
            tt, mm = torch.as_tensor(ta[:, :, None, :].copy()), torch.as_tensor(ma[:, :, None, :].copy())
            loss_hist[:, i] = losses.loss(kind, y, tt, mm).numpy()
            acc_hist[:, i] = losses.accuracy(kind, y, tt, mm).numpy()
            if callback is not None:
                callback(i, loss_hist[:, i], acc_hist[:, i])
            if bar is not None:
                bar.update(1)
                if i % 10 == 0 or i == iterations - 1:
                    bar.set_postfix(loss=f"{np.nanmean(loss_hist[:, i]):.4g}")
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    params = nets.float_params()
    with torch.no_grad():
        for name, p in ens.params.items():
            p.copy_(torch.as_tensor(params[name].reshape(tuple(p.shape)), dtype=p.dtype))
    trained = ens.to_specs(specs)
    report = nets.report()
    runs = [BackendRun(spec=s, losses=loss_hist[j], accuracy=acc_hist[j], diverged=False, diverged_at=None,
                       wall_time=wall / m) for j, s in enumerate(trained)]
    for j, r in enumerate(runs):
        r.extra["engine"] = report[j]
    return runs


# ---------------------------------------------------------------------------------------------- compiled trial
try:  # numba is a dependency; without it the numpy path (engine.py's functions) runs
    from numba import njit

    _jit = njit(cache=True, error_model="numpy")
    HAVE_KERNEL = True
except ImportError:  # pragma: no cover
    HAVE_KERNEL = False

    def _jit(f):
        return f


@_jit
def _shift(v, s):
    return v << s if s > 0 else v >> -s

@_jit
def _clip(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)

@_jit
def _sround(acc, u, frac):
    q = acc >> frac
    return q + 1 if (acc & ((1 << frac) - 1)) > u * (2.0 ** frac) else q

@_jit
def _half_even(p):
    """round(p / 2), ties to even (numpy's rounding of the payload)."""
    q = p >> 1
    return q + (q & 1) if p & 1 else q


@_jit
def _trial_kernel(w_rec, w_in, w_out, fb, b, b_out, tag_rec, tag_in, we_rec, we_in, we_out, we_fb, decay, ef,
                  te_rec, te_in, wm_rec, wx_rec, wm_in, wx_in, x_pay, x_int, y_star, mask, u, ys, rec_r, rec_err,
                  rec_e, learn, indep, seed, S, R, X, tb, gb, wb, frac, acc_b, mant_b):
    """One trial of every network, in place (the numpy path of :meth:`EngineNetworks.trial`, one element at a
    time); ``indep``: a fresh random number per synapse and epoch instead of Lava's shared one (a what-if)."""
    if indep:
        np.random.seed(seed)
    m_count, n = w_rec.shape[0], w_rec.shape[1]
    t_steps, n_in, n_out = x_pay.shape[1], x_pay.shape[2], y_star.shape[2]
    acc_lo, acc_hi = -(1 << acc_b) - 1, (1 << acc_b) - 1
    sh_p = max(0, 2 * tb + mant_b - acc_b)
    sh_w = max(0, (gb + 1) + mant_b - acc_b)
    st_lo, st_hi = -(1 << 23), (1 << 23) - 1
    tr_top = (1 << tb) - 1
    pay_top = (1 << (tb + 1)) - 2
    for m in range(m_count):
        a = np.zeros(n, dtype=np.int64)
        a_new = np.zeros(n, dtype=np.int64)
        rbar = np.zeros(n, dtype=np.int64)
        xbar = np.zeros(n_in, dtype=np.int64)
        p_r = np.zeros(n, dtype=np.int64)
        p_new = np.zeros(n, dtype=np.int64)
        y = np.zeros(n_out, dtype=np.int64)
        err = np.zeros(n_out, dtype=np.int64)
        ysig = np.zeros(n, dtype=np.int64)
        x1r = np.zeros(n, dtype=np.int64)
        x1x = np.zeros(n_in, dtype=np.int64)
        d = decay[m]
        for k in range(t_steps):
            for i in range(n):
                r_prev = a[i] if a[i] > 0 else 0
                rbar[i] = _clip(rbar[i] + ((d * (r_prev - rbar[i])) >> 12), st_lo, st_hi)
            for j in range(n_in):
                xbar[j] = _clip(xbar[j] + ((d * (x_int[m, k, j] - xbar[j])) >> 12), st_lo, st_hi)
            for i in range(n):
                s_rec = 0
                for j in range(n):
                    s_rec += w_rec[m, i, j] * p_r[j]
                s_in = 0
                for j in range(n_in):
                    s_in += w_in[m, i, j] * x_pay[m, k, j]
                drive = _shift(s_rec, we_rec[m]) + _shift(s_in, we_in[m]) + b[m, i]
                a_new[i] = _clip(a[i] + ((d * (drive - a[i])) >> 12), st_lo, st_hi)
            for i in range(n):
                a[i] = a_new[i]
                p_new[i] = _clip(_shift(a[i], -(S - R)), 0, (1 << 24) - 1)
            for o in range(n_out):
                s_out = 0
                for j in range(n):
                    s_out += w_out[m, o, j] * p_new[j]
                y[o] = _shift(s_out, we_out[m]) + b_out[m, o]
                ys[m, k, o] = y[o] * 2.0 ** -S
                if learn:
                    rec_err[m, k, o] = ((y[o] - y_star[m, k, o]) if mask[m, k, o] != 0 else 0) * 2.0 ** -S
            for i in range(n):
                p_r[i] = p_new[i]
            if not learn:
                continue
            for o in range(n_out):
                err[o] = (y[o] - y_star[m, k, o]) if mask[m, k, o] != 0 else 0
            sh_e = S - ef[m]
            for i in range(n):
                s_fb = 0
                for o in range(n_out):
                    s_fb += fb[m, i, o] * err[o]
                sig = _shift(s_fb, we_fb[m]) if a[i] > 0 else 0
                rec_e[m, k, i] = sig * 2.0 ** -S
                rec_r[m, k, i] = p_r[i] * 2.0 ** -R
                mag = _shift(abs(sig), -sh_e)
                mag = mag if mag < tr_top else tr_top
                ysig[i] = mag if sig > 0 else (-mag if sig < 0 else 0)
                x1r[i] = (_clip(rbar[i] >> (S - X - 1), 0, pay_top) + 1) >> 1  # round(p/2) half even below
                pr = _clip(rbar[i] >> (S - X - 1), 0, pay_top)
                x1r[i] = np.int64(np.round(pr / 2.0))
            for j in range(n_in):
                px = _clip(xbar[j] >> (S - X - 1), 0, pay_top)
                x1x[j] = np.int64(np.round(px / 2.0))
            uk = u[k]
            for i in range(n):
                yv = ysig[i]
                if yv == 0:  # a zero product leaves the tag as it is (acc = t << frac: nothing to round)
                    continue
                for j in range(n):
                    t = tag_rec[m, i, j]
                    p = ((x1r[j] if x1r[j] < tr_top else tr_top) * yv) >> sh_p
                    p = _clip(_shift(p, te_rec[m] + frac), acc_lo, acc_hi)
                    acc = _clip((t << frac) + p, acc_lo, acc_hi)
                    uu = np.random.random() if indep else uk
                    tag_rec[m, i, j] = _clip(_sround(acc, uu, frac), -(1 << gb) - 1, (1 << gb) - 1)
                for j in range(n_in):
                    t = tag_in[m, i, j]
                    p = ((x1x[j] if x1x[j] < tr_top else tr_top) * yv) >> sh_p
                    p = _clip(_shift(p, te_in[m] + frac), acc_lo, acc_hi)
                    acc = _clip((t << frac) + p, acc_lo, acc_hi)
                    uu = np.random.random() if indep else uk
                    tag_in[m, i, j] = _clip(_sround(acc, uu, frac), -(1 << gb) - 1, (1 << gb) - 1)
        if learn:
            ue = u[u.shape[0] - 1]
            t_lo, t_hi = -(1 << (gb + 1)), (1 << (gb + 1)) - 1
            for i in range(n):
                for j in range(n):
                    dw = _clip(_shift((_clip(tag_rec[m, i, j], t_lo, t_hi) * wm_rec[m]) >> sh_w, wx_rec[m] + frac),
                              acc_lo, acc_hi)
                    acc = _clip((w_rec[m, i, j] << frac) + dw, acc_lo, acc_hi)
                    uu = np.random.random() if indep else ue
                    w_rec[m, i, j] = _clip(_sround(acc, uu, frac), -(1 << wb), (1 << wb) - 1)
                    tag_rec[m, i, j] = 0
                for j in range(n_in):
                    dw = _clip(_shift((_clip(tag_in[m, i, j], t_lo, t_hi) * wm_in[m]) >> sh_w, wx_in[m] + frac),
                              acc_lo, acc_hi)
                    acc = _clip((w_in[m, i, j] << frac) + dw, acc_lo, acc_hi)
                    uu = np.random.random() if indep else ue
                    w_in[m, i, j] = _clip(_sround(acc, uu, frac), -(1 << wb), (1 << wb) - 1)
                    tag_in[m, i, j] = 0
