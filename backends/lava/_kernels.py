"""The rate-RNN step, the e-prop traces and the output error in numpy, for the Lava process models.

This re-expresses :mod:`neurorate.model.dynamics` and :func:`neurorate.model.losses.output_grad` for one network and a
batch of B trials (no ensemble dimension): states ``(B, N)``, ``w_rec (N, N)``, ``w_in (N, n_in)``,
``w_out (n_out, N)``, ``feedback F (N, n_out)``. Step of each form (``drive = U x_t + b``)::

    A   a_t = (1-alpha) a_{t-1} + alpha (W f(a_{t-1}) + drive)      rate r_t = f(a_t),  psi_t = f'(a_t)
    B   u_t = (1-alpha) h_{t-1} + alpha (W h_{t-1} + drive),  h_t = f(u_t)              psi_t = f'(u_t)
    C   u_t = W h_{t-1} + drive,  h_t = (1-alpha) h_{t-1} + alpha f(u_t)               psi_t = f'(u_t)

On-line three-factor e-prop: learning signal ``L_t = F dl_t/dy_t`` (third factor), eligibility traces::

    A   rbar_t = (1-alpha) rbar_{t-1} + alpha r_{t-1};  xbar_t, bbar_t alike;   dW += (L_t psi_t)^T rbar_t
    B   P_t = psi_t [(1-alpha) P_{t-1} + alpha r_{t-1}]                          dW += sum_b L_t P_t
    C   P_t = (1-alpha) P_{t-1} + alpha psi_t r_{t-1}                            dW += sum_b L_t P_t

The conformance suite pins these against the torch functions they mirror.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Array = np.ndarray


def activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """``(f, f')`` for "tanh", "relu" or "identity" (``f'(0) = 0`` for relu, as in dynamics.py)."""
    if name == "tanh":
        return np.tanh, lambda a: 1.0 - np.tanh(a) ** 2
    if name == "relu":
        return (lambda a: np.maximum(a, 0.0)), (lambda a: (a > 0).astype(a.dtype))
    if name == "identity":
        return (lambda a: a), np.ones_like
    raise ValueError(f"unknown activation {name!r}")


class StepOut(NamedTuple):
    """One step: the new state, the pre-activation (``a`` or ``u``), the rate sent on, ``psi = f'(pre-act)``
    and the presynaptic rate ``r_{t-1}`` that W multiplied."""

    state: Array
    preact: Array
    rate: Array
    psi: Array
    pre_prev: Array


def step(state: Array, x: Array, w_in: Array, w_rec: Array, b: Array, alpha: float, form: str,
         f: Callable, fprime: Callable) -> StepOut:
    """Advance B trials by one step (see the module docstring)."""
    pre_prev = f(state) if form == "A" else state.copy()  # a copy: callers overwrite their state in place
    total = pre_prev @ w_rec.T + x @ w_in.T + b
    if form == "A":
        a = (1.0 - alpha) * state + alpha * total
        r = f(a)
        return StepOut(a, a, r, fprime(a), pre_prev)
    if form == "B":
        u = (1.0 - alpha) * state + alpha * total
        h = f(u)
        return StepOut(h, u, h, fprime(u), pre_prev)
    h = (1.0 - alpha) * state + alpha * f(total)
    return StepOut(h, total, h, fprime(total), pre_prev)


def output_error(kind: str, y: Array, target: Array, weight: Array) -> tuple[float, Array]:
    """This step's loss term and ``dl/dy``; ``weight = mask / normaliser`` per entry ``(B, n_out)``.

    mse: ``0.5 sum w (y - y*)^2`` and ``w (y - y*)``; ce (one-hot ``target``, weight = mask/norm on every
    class): ``-sum w y* log softmax(y)`` and ``w (softmax(y) - y*)``.
    """
    if kind == "mse":
        err = y - target
        return 0.5 * float(np.sum(weight * err * err)), weight * err
    shifted = y - y.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -float(np.sum(weight * target * logp)), weight * (np.exp(logp) - target)


def zero_traces(form: str, batch: int, n: int, n_in: int) -> list[Array]:
    """Zero traces ``[rec, inp, bias]``: form A ``(B,N), (B,n_in), (1,1)``; B/C ``(B,N,N), (B,N,n_in), (B,N)``."""
    if form == "A":
        return [np.zeros((batch, n)), np.zeros((batch, n_in)), np.zeros((1, 1))]
    return [np.zeros((batch, n, n)), np.zeros((batch, n, n_in)), np.zeros((batch, n))]


def trace_step(traces: list[Array], form: str, alpha: float, pre_prev: Array, x: Array, psi: Array) -> None:
    """Advance the eligibility traces in place (mirrors ``dynamics.trace_step``)."""
    rec, inp, bias = traces
    keep = 1.0 - alpha
    if form == "A":
        rec *= keep
        rec += alpha * pre_prev
        inp *= keep
        inp += alpha * x
        bias *= keep
        bias += alpha
        return
    psi3 = psi[:, :, None]
    if form == "B":
        rec *= keep
        rec += alpha * pre_prev[:, None, :]
        rec *= psi3
        inp *= keep
        inp += alpha * x[:, None, :]
        inp *= psi3
        bias *= keep
        bias += alpha
        bias *= psi
        return
    rec *= keep
    rec += alpha * psi3 * pre_prev[:, None, :]
    inp *= keep
    inp += alpha * psi3 * x[:, None, :]
    bias *= keep
    bias += alpha * psi


def trace_gradients(traces: list[Array], form: str, signal: Array, psi: Array) -> tuple[Array, Array, Array]:
    """This step's ``(dW_rec (N,N), dW_in (N,n_in), db (N,))``, summed over the batch (mirrors dynamics)."""
    rec, inp, bias = traces
    if form == "A":
        e = signal * psi
        return e.T @ rec, e.T @ inp, (e * bias).sum(0)
    return (np.einsum("bi,bij->ij", signal, rec), np.einsum("bi,bij->ij", signal, inp),
            (signal * bias).sum(0))
