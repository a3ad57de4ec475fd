"""The math of the rate RNN and of its learning rules as pure functions of tensors (written once).

Shapes: a leading *ensemble* dimension M (many networks run as one program), then the batch B.
Weights ``w_rec (M, N, N)``, ``w_in (M, N, n_in)``, ``w_out (M, n_out, N)``, ``feedback (M, N, n_out)``;
states ``(M, B, N)``; ``alpha`` is a float or a tensor broadcastable to the state, e.g. ``(M, 1, 1)``.
Every function also works without the ensemble dimension (plain matrices), since it only uses
broadcasting matmuls.

Step of each form (state s; ``drive_t = U x_t + b``; ``pre = rate(s_{t-1})`` is what W multiplies)::

    A   a_t = (1-alpha) a_{t-1} + alpha (W f(a_{t-1}) + drive_t)         rate = f(a),  psi_t = f'(a_t)
    B   u_t = (1-alpha) h_{t-1} + alpha (W h_{t-1} + drive_t),  h_t = f(u_t)          psi_t = f'(u_t)
    C   u_t = W h_{t-1} + drive_t,  h_t = (1-alpha) h_{t-1} + alpha f(u_t)           psi_t = f'(u_t)

e-prop / RFLO (docs/theory.md §3.2): the eligibility trace keeps only the neuron-internal dependence, the
learning signal is ``L_t = F dl_t/dy_t`` (``F = W_out^T`` symmetric, or a fixed random B)::

    A   rbar_t = (1-alpha) rbar_{t-1} + alpha r_{t-1};  xbar_t = (1-alpha) xbar_{t-1} + alpha x_t
        bbar_t = (1-alpha) bbar_{t-1} + alpha;          dW += (L_t * psi_t) rbar_t^T  (and U, b alike)
    B   P_t = psi_t * ((1-alpha) P_{t-1} + alpha pre_t)                  dW += L_t * P_t   (N x N trace)
    C   P_t = (1-alpha) P_{t-1} + alpha psi_t * pre_t                     dW += L_t * P_t   (N x N trace)

Tangent map for Lyapunov exponents (docs/theory.md §4.1), applied to Q (..., N, k) without forming D::

    A   D_t Q = (1-alpha) Q + alpha W (f'(a_{t-1}) * Q)
    B   D_t Q = f'(u_t) * ((1-alpha) Q + alpha W Q)
    C   D_t Q = (1-alpha) Q + alpha f'(u_t) * (W Q)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

Activation = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def activation(name: str) -> Activation:
    """``(f, f')`` for "tanh", "relu" or "identity" (f'(0) = 0 for relu)."""
    if name == "tanh":
        return torch.tanh, lambda a: 1.0 - torch.tanh(a) ** 2
    if name == "relu":
        return torch.relu, lambda a: (a > 0).to(a.dtype)
    if name == "identity":
        return (lambda a: a), torch.ones_like
    raise ValueError(f"unknown activation {name!r}")


def fprime_from_rate(name: str, r: torch.Tensor) -> torch.Tensor:
    """``f'(a)`` from the rate ``r = f(a)`` (cheaper than recomputing ``f``): tanh ``1 - r^2``, relu ``r > 0``."""
    if name == "tanh":
        return 1.0 - r * r
    if name == "relu":
        return (r > 0).to(r.dtype)
    if name == "identity":
        return torch.ones_like(r)
    raise ValueError(f"unknown activation {name!r}")


def rate(state: torch.Tensor, form: str, f) -> torch.Tensor:
    """The rate a unit sends to others and to the readout: ``f(a)`` in form A, the state ``h`` in B and C."""
    return f(state) if form == "A" else state


def drive(x: torch.Tensor, w_in: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``U x + b`` for inputs ``x (M|1, T*B, n_in)`` -> ``(M, T*B, N)`` (b is ``(M, 1, N)``)."""
    return torch.matmul(x, w_in.transpose(-1, -2)) + b


def drive_sequence(x: torch.Tensor, w_in: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``U x_t + b`` for a whole input ``x (M|1, T, B, n_in)`` -> ``(M, T, B, N)`` (:func:`drive` on all steps)."""
    mx, t, bsz, n_in = x.shape
    d = drive(x.reshape(mx, t * bsz, n_in), w_in, b)
    return d.reshape(d.shape[0], t, bsz, d.shape[-1])


def drive_steps(x: torch.Tensor, w_in: torch.Tensor, b: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """``drive(t)`` = ``U x_t + b`` ``(M, B, N)`` computed per step (the ops of :func:`drive_sequence`, one step).

    Materialising the whole ``(M, T, B, N)`` drive first costs three passes over a fresh tens-of-MB buffer
    (page faults included) per iteration: a third of a Romo e-prop iteration at M = 40, B = 32, N = 64.
    """
    w_in_t = w_in.transpose(-1, -2)
    return lambda t: torch.matmul(x[:, t], w_in_t) + b


def on_grid(params: dict, quant) -> dict:
    """The weights the network computes with: each of ``params`` on ``quant``'s weight grid (unchanged when the
    quantizer is disabled, i.e. at full precision)."""
    if not quant.enabled:
        return params
    return {name: quant.weight(p, name) for name, p in params.items()}


def step(state, drive_t, w_rec, alpha, form: str, f, detach_pre: bool = False, detach_state: bool = False,
         detach_others: bool = False):
    """One step of the network. Returns ``(new_state, pre_activation)``.

    ``detach_pre`` cuts the gradient through the presynaptic rate in ``W pre`` (the e-prop truncation);
    ``detach_state`` also cuts the leak path (the "trunc1" reading); ``detach_others`` cuts it through the other
    units' rates only, keeping the self-connection ``W_kk pre_k`` (SnAp-1's reading). The pre-activation is
    ``a_t`` in form A and ``u_t`` in forms B and C; ``f'`` of it is the postsynaptic factor psi_t.
    """
    prev = state.detach() if detach_state else state
    pre = rate(prev, form, f)
    if detach_pre or detach_others:
        kept = pre
        pre = pre.detach()
    rec = torch.matmul(pre, w_rec.transpose(-1, -2))
    if detach_others and not detach_pre:  # + W_kk (pre_k - stopgrad(pre_k)): no change in value
        rec = rec + (kept - pre) * torch.diagonal(w_rec, dim1=-2, dim2=-1).unsqueeze(-2)
    return integrate(prev, rec + drive_t, alpha, form, f)


def integrate(prev, total_input, alpha, form: str, f):
    """The leak and nonlinearity of one step, given the unit's whole input ``W pre + U x_t + b``.

    Returns ``(new_state, pre_activation)`` as :func:`step` does (which calls it after its recurrent matmul);
    an executor that computes the input elsewhere (NIR's graph of Affine nodes, :mod:`neurorate.io.nir`) calls
    it directly.
    """
    if form == "A":
        a = (1 - alpha) * prev + alpha * total_input
        return a, a
    if form == "B":
        u = (1 - alpha) * prev + alpha * total_input
        return f(u), u
    return (1 - alpha) * prev + alpha * f(total_input), total_input


def readout(rates: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
    """``y = V r + c`` for rates ``(M, S, N)`` -> ``(M, S, n_out)``."""
    return torch.matmul(rates, w_out.transpose(-1, -2)) + b_out


class _FeedbackReadout(torch.autograd.Function):
    """Readout whose backward sends the error to the rates through a fixed matrix B instead of V^T."""

    @staticmethod
    def forward(ctx, rates, w_out, b_out, feedback):
        ctx.save_for_backward(rates, feedback)
        return torch.matmul(rates, w_out.transpose(-1, -2)) + b_out

    @staticmethod
    def backward(ctx, grad_y):
        rates, feedback = ctx.saved_tensors
        grad_rates = torch.matmul(grad_y, feedback.transpose(-1, -2))
        grad_w = torch.matmul(grad_y.transpose(-1, -2), rates)
        grad_b = grad_y.sum(dim=-2, keepdim=True)
        return grad_rates, grad_w, grad_b, None


def readout_random_feedback(rates, w_out, b_out, feedback):
    """``y = V r + c`` whose gradient reaches ``r`` as ``B dl/dy`` (random-feedback e-prop / RFLO).

    ``b_out`` must be ``(M, 1, n_out)``; ``feedback`` is ``(M, N, n_out)``.
    """
    return _FeedbackReadout.apply(rates, w_out, b_out, feedback)


def learning_signal(grad_y: torch.Tensor, feedback: torch.Tensor) -> torch.Tensor:
    """Third factor ``L = F dl/dy``: ``grad_y (M, B, n_out)``, ``feedback (M, N, n_out)`` -> ``(M, B, N)``."""
    return torch.matmul(grad_y, feedback.transpose(-1, -2))


class Traces(NamedTuple):
    """On-line eligibility traces. Form A: presynaptic filters ``rbar (M,B,N)``, ``xbar (M,B,n_in)``,
    ``bbar`` (scalar per step). Forms B/C: full traces ``p_rec (M,B,N,N)``, ``p_in (M,B,N,n_in)``, ``p_b (M,B,N)``."""

    rec: torch.Tensor
    inp: torch.Tensor
    bias: torch.Tensor


def init_traces(form: str, m: int, batch: int, n: int, n_in: int, like: torch.Tensor) -> Traces:
    """Zero traces for ``m`` networks and ``batch`` trials."""
    z = lambda *shape: torch.zeros(shape, dtype=like.dtype, device=like.device)  # noqa: E731
    if form == "A":
        return Traces(z(m, batch, n), z(m, batch, n_in), z(m, 1, 1))
    return Traces(z(m, batch, n, n), z(m, batch, n, n_in), z(m, batch, n))


def trace_step(traces: Traces, form: str, alpha, pre_prev, x_t, psi_t) -> Traces:
    """Advance the eligibility traces by one step.

    ``pre_prev`` is the presynaptic rate ``rate(s_{t-1})`` ``(M,B,N)``, ``x_t`` the input ``(M|1,B,n_in)``,
    ``psi_t = f'(pre-activation_t)`` ``(M,B,N)``. Form A filters presynaptic activity only (the trace
    factorises as ``psi_t * rbar_t``); forms B and C carry an N x N trace per trial.
    """
    keep = 1 - alpha
    if form == "A":
        return Traces(keep * traces.rec + alpha * pre_prev,
                      keep * traces.inp + alpha * x_t,
                      keep * traces.bias + alpha)
    a4 = alpha.unsqueeze(-1) if isinstance(alpha, torch.Tensor) else alpha
    psi = psi_t.unsqueeze(-1)
    x_t = x_t.expand(psi_t.shape[0], *x_t.shape[1:])
    if form == "B":
        return Traces(psi * ((1 - a4) * traces.rec + a4 * pre_prev.unsqueeze(-2)),
                      psi * ((1 - a4) * traces.inp + a4 * x_t.unsqueeze(-2)),
                      psi_t * (keep * traces.bias + alpha))
    return Traces((1 - a4) * traces.rec + a4 * psi * pre_prev.unsqueeze(-2),
                  (1 - a4) * traces.inp + a4 * psi * x_t.unsqueeze(-2),
                  keep * traces.bias + alpha * psi_t)


def trace_gradients(traces: Traces, form: str, signal: torch.Tensor, psi_t: torch.Tensor):
    """This step's contribution to ``(dW_rec, dW_in, db)``: the learning signal times the eligibility.

    ``signal`` is ``L_t (M, B, N)``; sums over the batch. Returns tensors ``(M,N,N), (M,N,n_in), (M,N)``.
    """
    if form == "A":
        e = signal * psi_t
        et = e.transpose(-1, -2)
        return (torch.matmul(et, traces.rec), torch.matmul(et, traces.inp.expand(e.shape[0], *traces.inp.shape[1:])),
                (e * traces.bias).sum(-2))
    lam = signal.unsqueeze(-1)
    return (lam * traces.rec).sum(-3), (lam * traces.inp).sum(-3), (signal * traces.bias).sum(-2)


def tangent_step(q, w_rec, alpha, form: str, fprime_prev, fprime_now):
    """``D_t Q`` for perturbations ``q (..., N, k)`` without forming the Jacobian.

    ``fprime_prev = f'(a_{t-1})`` (form A) and ``fprime_now = f'(u_t)`` (forms B, C), each ``(..., N)``.
    """
    if form == "A":
        return (1 - alpha) * q + alpha * torch.matmul(w_rec, fprime_prev.unsqueeze(-1) * q)
    wq = torch.matmul(w_rec, q)
    if form == "B":
        return fprime_now.unsqueeze(-1) * ((1 - alpha) * q + alpha * wq)
    return (1 - alpha) * q + alpha * fprime_now.unsqueeze(-1) * wq
