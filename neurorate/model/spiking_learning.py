"""Gradients and training of LIF ensembles: BPTT, e-prop by autograd+detach, and e-prop by online traces.

The equations are in :mod:`neurorate.model.spiking`. :func:`autograd_gradients` and :func:`online_gradients`
compute the same e-prop gradient in two ways (checked to 1e-10 in float64 by tests/test_spiking.py);
:func:`train_lif` trains an ensemble (e.g. one network per initial gain) with Adam.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from neurorate.errors import NeurorateError
from neurorate.model import losses
from neurorate.model.dynamics import readout_random_feedback
from neurorate.model.spec import NetworkSpec
from neurorate.model.spiking import LIFNetwork, _adaptation, _constants, _tensors, forward, pseudo_derivative
from neurorate.rules.registry import BUILTIN_RULES, Rule, check_rule, get_rule

LIF_RULES = tuple(r.name for r in BUILTIN_RULES if "lif" in r.neurons)
"""Built-in rules that train LIF networks (derived from the registry, :mod:`neurorate.rules.registry`)."""
_TRAINED = ("w_in", "w_rec", "b", "w_out", "b_out")


def _check_rule(rule: str | Rule, nets: list[LIFNetwork] | None = None) -> Rule:
    """The :class:`Rule` of ``rule`` if it trains these (LIF or, with adaptation, ALIF) networks."""
    neuron = "alif" if nets and any(n.adaptive for n in nets) else "lif"
    r = check_rule(rule, neuron=neuron)
    if r.detach_state:  # the spiking step cuts z_{t-1} (detach_pre) or nothing
        raise NeurorateError(f"rule {r.name!r}: spiking networks implement detach 'nothing' or 'presynaptic "
                             f"rates', not {r.detach!r}")
    return r


def _loss(nets, params, x, target, mask, kind: str, rule: str):
    """Per-network loss ``(M,)`` with the gradient paths of ``rule`` (detach / random feedback)."""
    r = get_rule(rule)
    kappa = _constants(nets)[2]
    _, z, _ = forward(nets, params, x, detach_pre=r.detach_pre)
    m, t, b, n = z.shape
    flat = z.reshape(m, t * b, n)
    if r.random_feedback:
        step_out = readout_random_feedback(flat, params["w_out"], params["b_out"], params["feedback"])
    else:
        step_out = torch.matmul(flat, params["w_out"].transpose(-1, -2)) + params["b_out"]
    step_out = step_out.reshape(m, t, b, -1)
    y, outs = torch.zeros_like(step_out[:, 0]), []
    for i in range(t):
        y = kappa * y + step_out[:, i]
        outs.append(y)
    y = torch.stack(outs, 1)
    return losses.loss(kind, y, target, mask), y, z


def autograd_gradients(nets: list[LIFNetwork], x, target, mask, kind: str = "mse", rule: str = "eprop"):
    """Gradients ``{name: (M, ...)}`` of the summed loss by autograd; ``rule="eprop"`` detaches ``z_{t-1}``."""
    rule = _check_rule(rule, nets)
    params = _tensors(nets)
    for k in _TRAINED:
        params[k].requires_grad_(True)
    loss, _, _ = _loss(nets, params, x, target, mask, kind, rule)
    grads = torch.autograd.grad(loss.sum(), [params[k] for k in _TRAINED])
    out = dict(zip(_TRAINED, grads))
    out["b"], out["b_out"] = out["b"].squeeze(1), out["b_out"].squeeze(1)
    return out


def online_gradients(nets: list[LIFNetwork], x, target, mask, kind: str = "mse", rule: str = "eprop"):
    """The e-prop gradient from explicit eligibility traces run forward in time (no backward pass).

    For ALIF units the eligibility ``e_t = psi_t (zbar_t - beta_a eps_t)`` carries the adaptation trace
    ``eps_t = psi_{t-1} zbar_{t-1} + (rho - psi_{t-1} beta_a) eps_{t-1}`` (Bellec et al. 2020); with
    ``beta_a = 0`` it is the LIF trace ``psi_t zbar_t``.
    """
    r = _check_rule(rule, nets)
    if not r.detach_pre:
        raise NeurorateError(f"online traces implement e-prop only (detach 'presynaptic rates'), not {r.name!r}")
    beta, theta, kappa, gamma = _constants(nets)
    rho, beta_a = _adaptation(nets, x)
    p = _tensors(nets)
    feedback = p["feedback"] if r.random_feedback else p["w_out"].transpose(-1, -2)
    norm = losses.normalizer(kind, target, mask)
    m, n, n_in = p["w_in"].shape
    bsz = x.shape[1]
    v = x.new_zeros(m, bsz, n)
    z, a, psi = torch.zeros_like(v), torch.zeros_like(v), torch.zeros_like(v)
    y = x.new_zeros(m, bsz, p["w_out"].shape[1])
    # presynaptic traces (zbar: recurrent, xbar: input, bbar: bias) and the adaptation traces eps = da/dW
    pre = {"w_rec": torch.zeros_like(v), "w_in": x.new_zeros(m, bsz, n_in), "b": x.new_zeros(m, bsz, 1)}
    eps = {k: torch.zeros_like(v).unsqueeze(-1).expand(-1, -1, -1, t.shape[-1]).clone() for k, t in pre.items()}
    ebar = {k: torch.zeros_like(e) for k, e in eps.items()}
    z_out, c_bar = torch.zeros_like(v), 0.0
    g = {k: torch.zeros_like(p[k]) for k in _TRAINED}
    col = (lambda u: u.unsqueeze(-1))
    for t in range(x.shape[0]):
        new_pre = {"w_rec": z, "w_in": x[t].expand(m, -1, -1), "b": x.new_ones(m, bsz, 1)}
        for k in pre:  # eps_t from step t-1's psi and presynaptic trace, then the trace itself moves to t
            eps[k] = col(psi) * pre[k].unsqueeze(-2) + (rho - col(psi * beta_a)) * eps[k]
            pre[k] = beta * pre[k] + new_pre[k]
        drive = x[t] @ p["w_in"].transpose(-1, -2) + p["b"]
        v = beta * v + z @ p["w_rec"].transpose(-1, -2) + drive - theta * z
        a = rho * a + z
        z = (v - beta_a * a >= theta).to(v.dtype)
        psi = pseudo_derivative(v - beta_a * a, theta, gamma)
        for k in pre:
            ebar[k] = kappa * ebar[k] + col(psi) * (pre[k].unsqueeze(-2) - col(beta_a) * eps[k])
        y = kappa * y + z @ p["w_out"].transpose(-1, -2) + p["b_out"]
        z_out, c_bar = kappa * z_out + z, kappa * c_bar + 1.0
        g_y = losses.output_grad(kind, y, target[t], mask[t], norm)
        signal = col(g_y @ feedback.transpose(-1, -2))
        g["w_rec"] += (signal * ebar["w_rec"]).sum(1)
        g["w_in"] += (signal * ebar["w_in"]).sum(1)
        g["b"] += (signal * ebar["b"]).sum(1).transpose(-1, -2)
        g["w_out"] += g_y.transpose(-1, -2) @ z_out
        g["b_out"] += g_y.sum(1, keepdim=True) * c_bar
    g["b"], g["b_out"] = g["b"].squeeze(1), g["b_out"].squeeze(1)
    return g


def as_lif(specs, threshold: float = 1.0, kappa: float = 0.5, gamma: float = 0.3, **adaptation) -> list[LIFNetwork]:
    """Wrap ``NetworkSpec``s (or pass ``LIFNetwork``s through) as a list of LIF networks.

    ``adaptation``: ``beta_a``, ``rho``, ``adaptive_fraction`` of :class:`~neurorate.model.spiking.LIFNetwork` (ALIF).
    """
    specs = [specs] if isinstance(specs, (NetworkSpec, LIFNetwork)) else list(specs)
    return [s if isinstance(s, LIFNetwork) else LIFNetwork(s, threshold, kappa, gamma, **adaptation) for s in specs]


def train_lif(specs, task, rule: str = "eprop", iterations: int = 500, lr: float = 1e-3,
              threshold: float = 1.0, kappa: float = 0.5, gamma: float = 0.3,
              dtype: str = "float32", beta_a: float = 0.0, rho: float = 0.95, adaptive_fraction: float = 1.0,
              callback=None) -> dict:
    """Train an ensemble of LIF networks (one per spec, e.g. one per gain) on ``task`` with Adam.

    Parameters
    ----------
    specs : ``NetworkSpec``s (their arrays and alpha; wrapped with the LIF constants) or ``LIFNetwork``s.
    task : a :class:`neurorate.tasks.base.Task` (every network sees the same batches) or one task per network.
    rule : "eprop" (autograd with the presynaptic detach; equals the online traces), "eprop_random"
        (random feedback ``spec.feedback``) or "bptt" (surrogate-gradient BPTT).
    iterations, lr : Adam iterations and learning rate (Adam is element-wise, so the ensemble trains
        exactly as M separate networks would).
    threshold, kappa, gamma, beta_a, rho, adaptive_fraction : the constants of
        :class:`~neurorate.model.spiking.LIFNetwork` for ``NetworkSpec`` inputs (``beta_a > 0``: ALIF units).
    callback : called as ``callback(iteration, losses (M,), accuracy (M,))`` after every iteration.

    Returns
    -------
    dict with ``losses`` and ``accuracy`` ``(iterations, M)``, ``rate`` (mean spikes per unit and step,
    ``(iterations, M)``), ``networks`` (trained ``LIFNetwork``s) and ``wall_time`` seconds.
    """
    rule = _check_rule(rule)
    if iterations <= 0 or not lr > 0:
        raise NeurorateError(f"iterations must be > 0 and lr > 0, got {iterations} and {lr}")
    nets = as_lif(specs, threshold, kappa, gamma, beta_a=beta_a, rho=rho, adaptive_fraction=adaptive_fraction)
    rule = _check_rule(rule, nets)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    params = _tensors(nets, tdtype)
    leaves = [params[k].requires_grad_(True) for k in _TRAINED]
    opt = torch.optim.Adam(leaves, lr=lr)
    hist = np.zeros((3, iterations, len(nets)))
    start = time.perf_counter()
    tasks = list(task) if isinstance(task, (list, tuple)) else None
    if tasks is not None and len(tasks) != len(nets):
        raise NeurorateError(f"give one task or one per network ({len(nets)}), got {len(tasks)}")
    kind = (tasks or [task])[0].loss_kind
    tt = lambda a: torch.as_tensor(a).to(torch.long if a.dtype.kind in "iu" else tdtype)
    for i in range(iterations):
        if tasks is None:
            xb, target, mask = task.batch(i)
        else:  # per-network streams, stacked on a leading ensemble axis
            xb, target, mask = (np.stack(a) for a in zip(*(t.batch(i) for t in tasks)))
        x, target, mask = tt(xb), tt(target), tt(mask)
        loss, y, z = _loss(nets, params, x, target, mask, kind, rule)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            hist[0, i] = loss.detach().cpu().numpy()
            hist[1, i] = losses.accuracy(kind, y, target, mask).cpu().numpy()
            hist[2, i] = z.mean(dim=(1, 2, 3)).cpu().numpy()
        if callback is not None:
            callback(i, hist[0, i], hist[1, i])
    trained = []
    for j, net in enumerate(nets):
        arrays = {k: params[k][j].detach().double().numpy().reshape(getattr(net.spec, k).shape) for k in _TRAINED}
        trained.append(dataclasses.replace(net, spec=net.spec.replace(**arrays)))
    return {"losses": hist[0], "accuracy": hist[1], "rate": hist[2], "networks": trained,
            "wall_time": time.perf_counter() - start}
