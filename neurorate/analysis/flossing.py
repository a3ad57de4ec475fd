"""Gradient flossing (Engelken 2023) and its local variants, batched over an ensemble of networks.

The flossing loss of one network drives its top-k Lyapunov exponents to a target (docs/theory.md §5)::

    L_floss = sum_{i=1..k} (lambda_i - lambda_target)^2,   lambda_i = (1/T') sum_t log R_t,ii   (per step)

with ``Q_t R_t = qr(D_t Q_{t-1})`` along a driven trajectory (the first 10% of steps are discarded and the
exponents are averaged over the input streams before squaring). Only ``W_in``, ``W_rec`` and ``b`` are
flossed, never the readout. Three modes say which paths the gradient may take:

* ``full``: everything (trajectory, Jacobians, QR chain); Engelken's method, the control.
* ``state``: the forward pass uses the e-prop detach ``W stopgrad(r_{t-1})`` (leak kept). ``D_t`` is
  built analytically from the explicit W and from ``f'`` of the detached-forward state, so the gradient
  reaches W through (i) the explicit W in each ``D_t``, (ii) ``f'(a_{t-1})``, truncated exactly as in
  e-prop, and (iii) the QR chain ``Q_{t-1} -> Q_t``. (Autograd of the detached step itself would give
  ``D_t = (1-alpha) I`` and no gradient at all; that is why D is analytic.)
* ``onestep``: the state is a constant and ``Q_{t-1}`` is detached before each product, so each step's
  term depends only on that step's Jacobian: strictly local in time. For k = 1 the gradient of one term
  is the three-factor product ``d log||v|| / dW_ij = alpha v_i f'(a_{t-1,j}) q_j / ||v||^2`` (form A).
  ``W_in`` and ``b`` enter ``D_t`` only through ``f'``, so in this mode they get no gradient.

Every network has its own Adam state and learning rate (the element-wise ensemble Adam of
:mod:`neurorate.optim`, so a per-network list of learning rates works and networks never share moment estimates).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from neurorate.analysis.lyapunov import as_spec_list, benettin, orthonormal_frame, simulate_fprimes, stack_specs
from neurorate.errors import NeurorateError
from neurorate.model.spec import NetworkSpec
from neurorate.optim import EnsembleOptimizer

FLOSS_MODES = ("full", "state", "onestep")
FLOSSED = ("w_rec", "w_in", "b")
READBACK = 16
"""Flossing iterations whose losses stay on a GPU before one read (1 on the CPU)."""
DISCARD = 0.1  # fraction of the stream run before the exponents are accumulated


def flossing_loss(ens: dict[str, torch.Tensor], form: str, activation: str, x: torch.Tensor, k: int,
                  mode: str = "state", lambda_target: float = 0.0, warmup: int | None = None,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-network flossing loss ``(M,)`` and top-k exponents ``(M, k)`` (per step, mean over streams).

    Parameters
    ----------
    ens : ensemble tensors ``w_rec (M,N,N)``, ``w_in (M,N,n_in)``, ``b (M,1,N)``, ``alpha (M,)``
        (see :func:`neurorate.analysis.lyapunov.stack_specs`); gradients flow to whichever require grad.
    x : inputs ``(T, S, n_in)``, S streams shared by all networks.
    mode : "full", "state" or "onestep" (module docstring).
    warmup : steps not accumulated (default 10% of T).
    """
    if mode not in FLOSS_MODES:
        raise NeurorateError(f"unknown flossing mode {mode!r}; choose one of {', '.join(FLOSS_MODES)}")
    n_t, s = x.shape[0], x.shape[1]
    m, n = ens["w_rec"].shape[0], ens["w_rec"].shape[-1]
    warmup = int(DISCARD * n_t) if warmup is None else int(warmup)
    state0 = torch.zeros(m, s, n, dtype=x.dtype, device=x.device)
    q0 = orthonormal_frame(n, k, seed, x.device, x.dtype).expand(m, s, n, k)
    fps = simulate_fprimes(ens, form, activation, x, state0, detach_pre=mode != "full",
                           track_grad=mode != "onestep")
    log_sum, count = benettin(fps, ens["w_rec"], ens["alpha"], form, q0, n_t, warmup,
                              detach_q=mode == "onestep", detach_warmup=mode != "full")
    lambdas = (log_sum / count).mean(dim=1)
    return ((lambdas - lambda_target) ** 2).sum(-1), lambdas


def _readback_every(device) -> int:
    """Flossing iterations per read of the losses: 1 on the CPU, :data:`READBACK` on a GPU."""
    return 1 if torch.device(device).type == "cpu" else READBACK


def _stream(task_or_inputs, it: int, steps: int | None, n_streams: int, seed: int) -> np.ndarray:
    if hasattr(task_or_inputs, "stream"):
        trial = int(task_or_inputs.n_steps)
        total = 4 * trial if steps is None else int(steps)
        offset = 1_000_000 * (1 + int(seed)) + it * math.ceil(total / trial)  # fresh trials every iteration
        return task_or_inputs.stream(math.ceil(total / trial), batch_size=n_streams, seed_offset=offset)[:total]
    x = np.asarray(task_or_inputs, dtype=np.float64)
    x = x[:, None, :] if x.ndim == 2 else x
    if x.ndim != 3:
        raise NeurorateError(f"inputs must be an array (T, S, n_in), got shape {x.shape}")
    return x if steps is None else x[: int(steps)]


def floss(specs, task_or_inputs, iterations: int = 100, mode: str = "state", k: int = 8, lr=1e-3,
          lambda_target: float = 0.0, steps: int | None = None, n_streams: int = 4, seed: int = 0,
          progress: Callable[[int, np.ndarray], None] | bool | None = None, device="cpu",
          dtype=torch.float32) -> tuple[list[NetworkSpec], np.ndarray]:
    """Floss an ensemble: push the top-k Lyapunov exponents of each network towards ``lambda_target``.

    Parameters
    ----------
    specs : a NetworkSpec or a list sharing N, n_in, form and activation.
    task_or_inputs : a Task (a fresh stream of ``steps`` steps, default 4 trials, with ``n_streams``
        trials in parallel, every iteration) or a fixed input array ``(T, S, n_in)``.
    iterations : Adam steps (100 in the paper).
    mode : "state" (default, the paper's detach), "onestep" (strictly local in time) or "full" (Engelken).
    k : number of exponents flossed (capped at N).
    lr : Adam learning rate, a float or one per network.
    lambda_target : target exponent, per step.
    steps : stream length in steps; the first 10% are discarded.
    progress : ``progress(iteration, losses (M,))`` after each iteration, or True for a tqdm bar (on a GPU
        called in blocks of :data:`READBACK` iterations, every iteration in order).
    device, dtype : where and in which precision the networks are flossed (:func:`neurorate.train` passes its
        backend's device and keeps float32).

    Returns
    -------
    ``(flossed specs, losses (M, iterations))``: copies of the specs with new ``w_in``, ``w_rec``, ``b``
    and an ``init["flossed"]`` record; the readout is unchanged.
    """
    spec_list, _ = as_spec_list(specs)
    if mode not in FLOSS_MODES:
        raise NeurorateError(f"unknown flossing mode {mode!r}; choose one of {', '.join(FLOSS_MODES)}")
    if int(iterations) != iterations or iterations < 0:
        raise NeurorateError(f"iterations must be a non-negative integer, got {iterations}")
    if int(n_streams) != n_streams or n_streams < 1:
        raise NeurorateError(f"n_streams must be a positive integer, got {n_streams}")
    n, m = spec_list[0].n_hidden, len(spec_list)
    if int(k) != k or k < 1:
        raise NeurorateError(f"k must be a positive integer, got {k}")
    k = min(int(k), n)
    lrs = np.asarray(lr, dtype=np.float64).reshape(-1)
    if lrs.size not in (1, m) or not np.all(lrs > 0):
        raise NeurorateError(f"lr must be a positive float or a list of {m} positive floats, got {lr}")
    if steps is not None and (int(steps) != steps or steps < 10):
        raise NeurorateError(f"steps must be an integer >= 10, got {steps}")

    ens = stack_specs(spec_list, device, dtype)
    params = [ens[name].requires_grad_(True) for name in FLOSSED]
    opt = EnsembleOptimizer("adam", torch.as_tensor(np.broadcast_to(lrs, (m,)).copy(), dtype=dtype, device=device))
    losses = np.full((m, int(iterations)), np.nan)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(iterations), desc=f"flossing ({mode})")
    form, act = spec_list[0].form, spec_list[0].activation
    lambdas = torch.full((m, k), float("nan"))
    # losses stay on the device and are read every READBACK iterations on a GPU (one sync per block), at once on
    # the CPU; progress still sees every iteration, in order
    every = _readback_every(device)
    pending: list[tuple[int, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        values = torch.stack([v for _, v in pending]).cpu().numpy()
        for (i, _), v in zip(pending, values):
            losses[:, i] = v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=float(np.nanmean(losses[:, i])))
            elif callable(progress):
                progress(i, losses[:, i])
        pending.clear()

    for it in range(int(iterations)):
        x = torch.as_tensor(_stream(task_or_inputs, it, steps, int(n_streams), seed), device=device, dtype=dtype)
        if x.shape[-1] != spec_list[0].n_in:
            raise NeurorateError(f"inputs have {x.shape[-1]} channels but the network has n_in={spec_list[0].n_in}")
        loss, lambdas = flossing_loss(ens, form, act, x, k, mode, lambda_target, seed=seed)
        grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
        finite = torch.isfinite(loss)
        for g in grads:
            if g is not None:
                finite &= torch.isfinite(g.reshape(m, -1)).all(dim=1)
        opt.step(dict(zip(FLOSSED, params)), {n: g for n, g in zip(FLOSSED, grads) if g is not None}, finite)
        pending.append((it, loss.detach()))
        if len(pending) >= every:
            flush()
    flush()
    if bar is not None:
        bar.close()

    out = []
    top = lambdas.detach().cpu().numpy()
    for i, spec in enumerate(spec_list):
        record = {"mode": mode, "iterations": int(iterations), "k": k, "lr": float(lrs[i if lrs.size > 1 else 0]),
                  "lambda_target": float(lambda_target), "steps": steps, "n_streams": int(n_streams), "seed": int(seed),
                  "final_loss": float(losses[i, -1]) if iterations else None,
                  "lambda_top_last_iteration": top[i].tolist(), "unit": "step",
                  "diverged": bool(iterations and not np.isfinite(losses[i]).all())}
        init = dict(spec.init)
        init["flossed"] = record
        out.append(spec.replace(w_rec=ens["w_rec"][i].detach().cpu().double().numpy(),
                                w_in=ens["w_in"][i].detach().cpu().double().numpy(),
                                b=ens["b"][i, 0].detach().cpu().double().numpy(), init=init))
    return out, losses
