"""Gradients and training of LIF ensembles: BPTT, e-prop by autograd+detach, and e-prop by online traces.

The equations are in :mod:`neurorate.model.spiking`. :func:`autograd_gradients` and :func:`online_gradients`
(the forward traces, :func:`neurorate.learning.eprop.lif_online_gradients`, beside the rate e-prop)
compute the same e-prop gradient in two ways (checked to 1e-10 in float64 by tests/unit/test_spiking.py);
:func:`train_lif` trains an ensemble (e.g. one network per initial gain) with Adam.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from neurorate.errors import NeurorateError
from neurorate.learning.eprop import lif_online_gradients as online_gradients
from neurorate.learning.registry import BUILTIN_RULES, get_rule
from neurorate.model import losses
from neurorate.model.dynamics import readout_random_feedback
from neurorate.model.spec import NetworkSpec
from neurorate.model.spiking import TRAINED, LIFNetwork, _constants, _tensors, forward, lif_rule
from neurorate.optim import EnsembleOptimizer

LIF_RULES = tuple(r.name for r in BUILTIN_RULES if "lif" in r.neurons)
"""Built-in rules that train LIF networks (derived from the registry, :mod:`neurorate.learning.registry`)."""

READBACK = 16
"""Iterations whose losses stay on a GPU before one read in :func:`train_lif` (1 on the CPU)."""

__all__ = ["LIF_RULES", "as_lif", "autograd_gradients", "online_gradients", "train_lif"]


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
    rule = lif_rule(rule, nets)
    params = _tensors(nets, device=x.device)
    for k in TRAINED:
        params[k].requires_grad_(True)
    loss, _, _ = _loss(nets, params, x, target, mask, kind, rule)
    grads = torch.autograd.grad(loss.sum(), [params[k] for k in TRAINED])
    out = dict(zip(TRAINED, grads))
    out["b"], out["b_out"] = out["b"].squeeze(1), out["b_out"].squeeze(1)
    return out


def _readback_every(device: torch.device) -> int:
    """Iterations per read of :func:`train_lif`'s values: 1 on the CPU, :data:`READBACK` on a GPU."""
    return 1 if device.type == "cpu" else READBACK


def as_lif(specs, threshold: float = 1.0, kappa: float = 0.5, gamma: float = 0.3, **adaptation) -> list[LIFNetwork]:
    """Wrap ``NetworkSpec``s (or pass ``LIFNetwork``s through) as a list of LIF networks.

    ``adaptation``: ``beta_a``, ``rho``, ``adaptive_fraction`` of :class:`~neurorate.model.spiking.LIFNetwork` (ALIF).
    """
    specs = [specs] if isinstance(specs, (NetworkSpec, LIFNetwork)) else list(specs)
    return [s if isinstance(s, LIFNetwork) else LIFNetwork(s, threshold, kappa, gamma, **adaptation) for s in specs]


def train_lif(specs, task, rule: str = "eprop", iterations: int = 500, lr=1e-3,
              threshold: float = 1.0, kappa: float = 0.5, gamma: float = 0.3,
              dtype: str = "float32", beta_a: float = 0.0, rho: float = 0.95, adaptive_fraction: float = 1.0,
              callback=None, device="cpu") -> dict:
    """Train an ensemble of LIF networks (one per spec, e.g. one per gain) on ``task`` with Adam.

    Parameters
    ----------
    specs : ``NetworkSpec``s (their arrays and alpha; wrapped with the LIF constants) or ``LIFNetwork``s.
    task : a :class:`neurorate.tasks.base.Task` (every network sees the same batches) or one task per network.
    rule : "eprop" (autograd with the presynaptic detach; equals the online traces), "eprop_random"
        (random feedback ``spec.feedback``) or "bptt" (surrogate-gradient BPTT).
    iterations, lr : Adam iterations and learning rate, one value or one per network (Adam is element-wise,
        :class:`neurorate.optim.EnsembleOptimizer`, so the ensemble trains exactly as M separate networks would).
    threshold, kappa, gamma, beta_a, rho, adaptive_fraction : the constants of
        :class:`~neurorate.model.spiking.LIFNetwork` for ``NetworkSpec`` inputs (``beta_a > 0``: ALIF units).
    callback : called as ``callback(iteration, losses (M,), accuracy (M,))`` after every iteration.
    device : where the ensemble trains ("cpu", "cuda", "cuda:1" or a ``torch.device``; :func:`neurorate.train`
        passes its resolved ``device``); on a GPU the per-iteration values are read back in blocks of
        :data:`READBACK` iterations (the callback still sees every iteration, in order).

    Returns
    -------
    dict with ``losses`` and ``accuracy`` ``(iterations, M)``, ``rate`` (mean spikes per unit and step,
    ``(iterations, M)``), ``networks`` (trained ``LIFNetwork``s; a network whose weights blew up to NaN/inf keeps
    its starting weights), ``lost`` (the indices of those networks) and ``wall_time`` seconds.
    """
    rule = lif_rule(rule)
    nets = as_lif(specs, threshold, kappa, gamma, beta_a=beta_a, rho=rho, adaptive_fraction=adaptive_fraction)
    try:
        lrs = np.broadcast_to(np.asarray(lr, dtype=np.float64), (len(nets),))
    except ValueError:
        raise NeurorateError(f"lr must be one value or one per network ({len(nets)}), got {lr!r}") from None
    if iterations <= 0 or not np.all(lrs > 0):
        raise NeurorateError(f"iterations must be > 0 and lr > 0, got {iterations} and {lr}")
    rule = lif_rule(rule, nets)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    dev = torch.device(device)
    params = _tensors(nets, tdtype, dev)
    for k in TRAINED:
        params[k].requires_grad_(True)
    opt = EnsembleOptimizer("adam", torch.tensor(lrs, dtype=tdtype, device=dev))
    active = torch.ones(len(nets), dtype=torch.bool, device=dev)
    hist = np.zeros((3, iterations, len(nets)))
    start = time.perf_counter()
    tasks = list(task) if isinstance(task, (list, tuple)) else None
    if tasks is not None and len(tasks) != len(nets):
        raise NeurorateError(f"give one task or one per network ({len(nets)}), got {len(tasks)}")
    kind = (tasks or [task])[0].loss_kind
    tt = lambda a: torch.as_tensor(a, device=dev).to(torch.long if a.dtype.kind in "iu" else tdtype)  # noqa: E731
    every = _readback_every(dev)
    pending: list[tuple[int, torch.Tensor]] = []

    def flush():  # one copy to the host per block; the callback sees every iteration, in order
        if not pending:
            return
        rows = torch.stack([r for _, r in pending]).cpu().numpy()
        for (j, _), row in zip(pending, rows):
            hist[:, j] = row
            if callback is not None:
                callback(j, hist[0, j], hist[1, j])
        pending.clear()

    for i in range(iterations):
        if tasks is None:
            xb, target, mask = task.batch(i)
        else:  # per-network streams, stacked on a leading ensemble axis
            xb, target, mask = (np.stack(a) for a in zip(*(t.batch(i) for t in tasks)))
        x, target, mask = tt(xb), tt(target), tt(mask)
        loss, y, z = _loss(nets, params, x, target, mask, kind, rule)
        for k in TRAINED:
            params[k].grad = None
        loss.sum().backward()
        opt.step({k: params[k].data for k in TRAINED}, {k: params[k].grad for k in TRAINED}, active)
        with torch.no_grad():
            pending.append((i, torch.stack([loss.detach().to(torch.float64),
                                            losses.accuracy(kind, y, target, mask).to(torch.float64),
                                            z.mean(dim=(1, 2, 3)).to(torch.float64)])))
        if len(pending) >= every:
            flush()
    flush()
    trained, lost = [], []
    for j, net in enumerate(nets):
        arrays = {k: params[k][j].detach().cpu().double().numpy().reshape(getattr(net.spec, k).shape)
                  for k in TRAINED}
        if not all(np.all(np.isfinite(a)) for a in arrays.values()):  # blew up: diverged, starting weights kept
            lost.append(j)
            trained.append(net)
            continue
        trained.append(dataclasses.replace(net, spec=net.spec.replace(**arrays)))
    return {"losses": hist[0], "accuracy": hist[1], "rate": hist[2], "networks": trained, "lost": lost,
            "wall_time": time.perf_counter() - start}
