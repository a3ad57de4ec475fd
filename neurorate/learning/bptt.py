"""BPTT: the exact gradient through the whole trajectory (docs/rules.md).

On the torch backend ``bptt`` (and any rule that detaches nothing) runs as autograd through the time loop
of :func:`neurorate.model.dynamics.step` (:func:`neurorate.backends.torch.gradients.autograd_gradients`);
for form A at full precision :func:`bptt_form_a_gradients` computes the same gradient with a hand-written
backward pass (no autograd graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from neurorate.model import dynamics as dyn
from neurorate.model import losses

if TYPE_CHECKING:
    from neurorate.backends.torch.ensemble import Ensemble


def form_a_forward(ens: Ensemble, kind: str, x, target, mask, tag: str):
    """The forward pass the reverse-time form A kernels share (BPTT here, SnAp-1 in
    :mod:`neurorate.learning.estimators.snap1`): the rates of every step, kept in the ensemble's workspace under
    ``tag``, and the readout's output gradient. Returns ``(rates (T, M, B, N), flat (M, T*B, N), xs (T, M, B, n_in),
    y (M, T, B, n_out), g = dL/dy (M, T, B, n_out), a zero state (M, B, N))``."""
    p = ens.params
    f, _ = dyn.activation(ens.activation)
    m, n = ens.m, ens.n
    _, t_steps, b, n_in = x.shape
    drive = dyn.drive_steps(x, p["w_in"], p["b"])
    xs = x.transpose(0, 1).expand(t_steps, m, b, n_in)
    alpha, keep = ens.alpha, 1 - ens.alpha
    w_rec_t = p["w_rec"].transpose(-1, -2).contiguous()
    state = torch.zeros(m, b, n, dtype=p["w_rec"].dtype, device=x.device)
    zero = state
    rates = ens.workspace(f"{tag}_rates", (t_steps, m, b, n), state)
    r = torch.zeros_like(state)
    for t in range(t_steps):
        state = keep * state + alpha * torch.baddbmm(drive(t), r, w_rec_t)
        r = f(state)
        rates[t] = r
    flat = ens.workspace(f"{tag}_flat", (m, t_steps * b, n), state)
    flat.view(m, t_steps, b, n).copy_(rates.transpose(0, 1))
    y = dyn.readout(flat, p["w_out"], p["b_out"]).reshape(m, t_steps, b, -1)
    norm = losses.normalizer(kind, target, mask)
    g = losses.output_grad(kind, y, target, mask, norm[..., None] if norm.dim() else norm)  # (M, T, B, n_out)
    return rates, flat, xs, y, g, zero


@torch.no_grad()
def bptt_form_a_gradients(ens: Ensemble, kind: str, x, target, mask):
    """Exact BPTT for form A with a hand-written backward pass (no autograd graph).

    ``delta_t = dL/da_t = psi_t * (V^T g_t + alpha W^T delta_{t+1}) + (1 - alpha) delta_{t+1}``;
    ``dW = alpha sum_t delta_t r_{t-1}^T``, ``dU = alpha sum_t delta_t x_t^T``, ``db = alpha sum_t delta_t``.
    Identical (to rounding) to :func:`neurorate.backends.torch.gradients.autograd_gradients` with rule ``bptt``.
    """
    p = ens.params
    m, n = ens.m, ens.n
    _, t_steps, b, _ = x.shape
    dt = p["w_rec"].dtype
    rates, flat, xs, y, g, state = form_a_forward(ens, kind, x, target, mask, "bptt")
    alpha, keep = ens.alpha, 1 - ens.alpha
    vg = torch.matmul(g, p["w_out"].unsqueeze(1), out=ens.workspace("bptt_vg", (m, t_steps, b, n), state))
    vg = vg.transpose(0, 1)  # V^T g_t as rows, (T, M, B, N)
    delta = torch.zeros_like(state)
    g_rec = torch.zeros_like(p["w_rec"])
    g_in = torch.zeros_like(p["w_in"])
    g_b = torch.zeros(m, 1, n, dtype=dt, device=x.device)
    for t in range(t_steps - 1, -1, -1):
        back = torch.bmm(delta, p["w_rec"]).mul_(alpha).add_(vg[t])  # V^T g_t + alpha W^T delta_{t+1}
        delta = back.mul_(dyn.fprime_from_rate(ens.activation, rates[t])).addcmul_(keep, delta)
        ad = alpha * delta
        if t > 0:
            g_rec.baddbmm_(ad.transpose(-1, -2), rates[t - 1])
        g_in.baddbmm_(ad.transpose(-1, -2), xs[t])
        g_b.add_(ad.sum(1, keepdim=True))
    g_flat = g.reshape(m, t_steps * b, -1)
    grads = {"w_rec": g_rec, "w_in": g_in, "b": g_b, "w_out": torch.matmul(g_flat.transpose(-1, -2), flat),
             "b_out": g_flat.sum(1, keepdim=True)}
    return losses.loss(kind, y, target, mask), losses.accuracy(kind, y, target, mask), grads
