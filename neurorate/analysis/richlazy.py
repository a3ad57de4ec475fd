"""Rich/lazy learning metrics of a trained network (docs/theory.md §7; Liu et al. 2024).

* relative weight change ``||W_rec(T) - W_rec(0)||_F / ||W_rec(0)||_F``;
* effective rank (Roy & Vetterli 2007) of ``W_rec`` before and after training;
* representation alignment ``RA = <K0, KT>_F / (||K0||_F ||KT||_F)`` with ``K = H H^T`` the uncentred
  batch x batch Gram matrix of the hidden rates at the last decision time step of a fixed probe batch
  (lower RA = richer learning).

* tangent-kernel alignment ``KA = <K0, KT>_F / (||K0||_F ||KT||_F)`` with ``K = J J^T`` the empirical tangent kernel
  restricted to W_rec: ``J[(b, k), :] = d y_{t*, b, k} / d W_rec`` over the outputs at the last decision step t* of a
  probe batch. ``kernel="bptt"`` uses the exact derivative; ``kernel="eprop"`` the e-prop pseudo-derivative (the
  presynaptic detach), i.e. the kernel the local rule actually follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from neurorate.model.spec import NetworkSpec, effective_rank


def relative_weight_change(before: NetworkSpec, after: NetworkSpec) -> float:
    """``||W_T - W_0||_F / ||W_0||_F`` of the recurrent weights (NaN for an all-zero ``W_0``)."""
    norm0 = float(np.linalg.norm(before.w_rec))
    if norm0 == 0 or not np.all(np.isfinite(after.w_rec)):
        return math.nan
    return float(np.linalg.norm(after.w_rec - before.w_rec) / norm0)


def gram_alignment(h0: np.ndarray, h1: np.ndarray) -> float:
    """Alignment of the uncentred Gram matrices of ``h0`` and ``h1`` (each ``(B, N)``): 1 = same geometry."""
    k0, k1 = h0 @ h0.T, h1 @ h1.T
    denom = float(np.linalg.norm(k0) * np.linalg.norm(k1))
    if denom == 0 or not math.isfinite(denom):
        return math.nan
    return float(np.sum(k0 * k1) / denom)


def last_decision_step(mask: np.ndarray) -> int:
    """Index of the last time step where the loss mask is non-zero (``mask (T, B[, k])``)."""
    active = np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1)
    steps = np.nonzero(active)[0]
    return int(steps[-1]) if steps.size else int(mask.shape[0] - 1)


def analysis_device(device=None):
    """The torch device the metrics are computed on: ``None``/"cpu" the CPU, "auto" CUDA when present, else as
    given ("cuda", "cuda:1" or a ``torch.device``). The precision is float64 on every device."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def tangent_features(spec: NetworkSpec | Sequence[NetworkSpec], probe_inputs: np.ndarray, step: int,
                     kernel: str = "bptt", device=None) -> np.ndarray:
    """``J (B * n_out, N * N)``: derivatives of the outputs at ``step`` with respect to W_rec (float64).

    ``kernel="eprop"`` cuts the presynaptic path ``W r_{t-1}`` (the e-prop truncation) before differentiating.
    A list of specs (sharing N, n_in, n_out, form and activation) gives ``(M, B * n_out, N * N)``, computed for
    all networks in one vectorised program, on ``device`` (see :func:`analysis_device`; float64 everywhere, the
    result is a numpy array).

    How: W_rec enters every step only through the unit's input ``W r_{t-1} + U x_t + b``
    (:func:`neurorate.model.dynamics.step`), so ``dy/dW[i, j] = sum_t g_t[i] r_{t-1}[j]`` with ``g_t = dy/d(input_t)``,
    the gradient with respect to the step's drive. One backward pass per output unit gives ``g`` for every trial
    of every network at once (trials do not interact), and one batched product over time forms ``J``: the same
    derivatives as differentiating each output with respect to W_rec (``torch.func.jacrev``), without one
    backward pass per (trial, output) that accumulates an N x N gradient at every step.
    """
    import torch

    from neurorate.model import dynamics as dyn

    if kernel not in ("bptt", "eprop"):
        raise ValueError(f"kernel must be 'bptt' or 'eprop', got {kernel!r}")
    specs = [spec] if isinstance(spec, NetworkSpec) else list(spec)
    first = specs[0]
    f, _ = dyn.activation(first.activation)
    dev = analysis_device(device)
    stack = lambda name: torch.as_tensor(np.stack([getattr(s, name) for s in specs]), dtype=torch.float64,  # noqa: E731
                                         device=dev)
    alpha = torch.tensor([s.alpha for s in specs], dtype=torch.float64, device=dev).reshape(-1, 1, 1)
    x = torch.as_tensor(np.asarray(probe_inputs[: step + 1]), dtype=torch.float64, device=dev).unsqueeze(0)
    w_rec, w_out, b_out = stack("w_rec"), stack("w_out"), stack("b_out")
    with torch.no_grad():
        drv = dyn.drive_sequence(x, stack("w_in"), stack("b").unsqueeze(1))  # (M, T, B, N)
    drv.requires_grad_(True)
    state = torch.zeros(len(specs), x.shape[2], first.n_hidden, dtype=torch.float64, device=dev)
    pres = []
    for t in range(step + 1):
        pres.append(dyn.rate(state, first.form, f).detach())
        state, _ = dyn.step(state, drv[:, t], w_rec, alpha, first.form, f, detach_pre=kernel == "eprop")
    y = torch.matmul(dyn.rate(state, first.form, f), w_out.transpose(-1, -2)) + b_out.unsqueeze(1)  # (M, B, K)
    n_out = y.shape[-1]
    pre = torch.stack(pres, dim=2)  # (M, B, T, N)
    # (M, B, K, N, N): rows ordered (trial, output) as y.reshape(-1); filled one output at a time (no second copy)
    jac = torch.empty(len(specs), x.shape[2], n_out, first.n_hidden, first.n_hidden, dtype=torch.float64, device=dev)
    for k in range(n_out):
        (g,) = torch.autograd.grad(y[..., k].sum(), drv, retain_graph=k + 1 < n_out)  # (M, T, B, N)
        # J[m, b, i, j] = sum_t g[m, t, b, i] pre[m, b, t, j]: one (N x T) @ (T x N) product per trial
        jac[:, :, k] = torch.matmul(g.permute(0, 2, 3, 1), pre)
    jac = jac.reshape(len(specs), -1, first.n_hidden * first.n_hidden).cpu().numpy()
    return jac[0] if isinstance(spec, NetworkSpec) else jac


def rates_at(specs: Sequence[NetworkSpec], inputs: np.ndarray, step: int, device=None) -> np.ndarray:
    """The rates ``(M, B, N)`` of the networks at ``step`` driven by ``inputs (T, B, n_in)`` from the zero state, in
    float64 on ``device`` (:func:`analysis_device`; default the CPU): the equations of
    :mod:`neurorate.model.dynamics` (no backend is involved; the specs share N, n_in, form and activation)."""
    import torch

    from neurorate.model import dynamics as dyn

    first = specs[0]
    f, _ = dyn.activation(first.activation)
    dev = analysis_device(device)
    stack = lambda name: torch.as_tensor(np.stack([getattr(s, name) for s in specs]), dtype=torch.float64,  # noqa: E731
                                         device=dev)
    alpha = torch.tensor([s.alpha for s in specs], dtype=torch.float64, device=dev).reshape(-1, 1, 1)
    x = torch.as_tensor(np.asarray(inputs[: step + 1]), dtype=torch.float64, device=dev).unsqueeze(0)
    with torch.no_grad():
        drv = dyn.drive_sequence(x, stack("w_in"), stack("b").unsqueeze(1))
        w_rec = stack("w_rec")
        state = torch.zeros(len(specs), x.shape[2], first.n_hidden, dtype=torch.float64, device=dev)
        for t in range(step + 1):
            state, _ = dyn.step(state, drv[:, t], w_rec, alpha, first.form, f)
        return dyn.rate(state, first.form, f).cpu().numpy()


def _kernel_alignments(j0: np.ndarray, j1: np.ndarray) -> np.ndarray:
    """Per network alignment of ``J0 J0^T`` and ``J1 J1^T`` (``j0, j1 (M, P, D)``)."""
    k0, k1 = j0 @ j0.transpose(0, 2, 1), j1 @ j1.transpose(0, 2, 1)
    denom = np.linalg.norm(k0, axis=(1, 2)) * np.linalg.norm(k1, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ka = np.sum(k0 * k1, axis=(1, 2)) / denom
    return np.where((denom > 0) & np.isfinite(denom), ka, np.nan)


def kernel_alignment(before: NetworkSpec, after: NetworkSpec, probe_inputs: np.ndarray, step: int,
                     kernel: str = "bptt", device=None) -> float:
    """Alignment of the tangent kernels ``J J^T`` of ``before`` and ``after`` (1 = lazy, lower = richer); the
    features on ``device`` (:func:`analysis_device`)."""
    j = tangent_features([before, after], probe_inputs, step, kernel, device)
    return float(_kernel_alignments(j[:1], j[1:])[0])


def richlazy_metrics(initial: Sequence[NetworkSpec], trained: Sequence[NetworkSpec], probe_inputs: np.ndarray,
                     probe_mask: np.ndarray, kernel_trials: int = 16, device=None) -> list[dict[str, float]]:
    """Per network: ``weight_change``, ``erank_before``, ``erank_after``, ``repr_alignment``, ``kernel_alignment``
    (exact tangent kernel) and ``kernel_alignment_eprop`` (e-prop pseudo-gradient kernel), the kernels on the
    first ``kernel_trials`` probe trials.

    Parameters
    ----------
    initial, trained : the networks before and after training (same length M).
    probe_inputs : ``(T, B, n_in)`` fixed probe batch (the same for every network).
    probe_mask : the probe batch's loss mask; its last non-zero step is the decision step.
    device : where the trajectories and tangent features are computed (:func:`analysis_device`: None or "cpu",
        "auto", "cuda"), in float64 on every device; the CPU's numbers are those of the default.
    """
    t_dec = last_decision_step(probe_mask)
    finite = [bool(np.all(np.isfinite(s.w_rec))) for s in trained]
    safe_trained = [t if ok else i for t, i, ok in zip(trained, initial, finite)]
    r0 = rates_at(list(initial), probe_inputs, t_dec, device)
    r1 = rates_at(safe_trained, probe_inputs, t_dec, device)
    ka = {}
    for kernel in ("bptt", "eprop"):  # all networks in one program per kernel
        j0 = tangent_features(list(initial), probe_inputs[:, :kernel_trials], t_dec, kernel, device)
        j1 = tangent_features(safe_trained, probe_inputs[:, :kernel_trials], t_dec, kernel, device)
        ka[kernel] = _kernel_alignments(j0, j1)
    out = []
    for j, (a, b) in enumerate(zip(initial, trained)):
        ok = finite[j]
        out.append({
            "weight_change": relative_weight_change(a, b) if ok else math.nan,
            "erank_before": effective_rank(a.w_rec),
            "erank_after": effective_rank(b.w_rec) if ok else math.nan,
            "repr_alignment": gram_alignment(r0[j], r1[j]) if ok else math.nan,
            "kernel_alignment": float(ka["bptt"][j]) if ok else math.nan,
            "kernel_alignment_eprop": float(ka["eprop"][j]) if ok else math.nan,
        })
    return out
