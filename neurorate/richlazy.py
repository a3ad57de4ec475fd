"""Rich/lazy learning metrics of a trained network (science.md §7; Liu et al. 2024).

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

from neurorate.spec import NetworkSpec, effective_rank


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


def tangent_features(spec: NetworkSpec, probe_inputs: np.ndarray, step: int, kernel: str = "bptt") -> np.ndarray:
    """``J (B * n_out, N * N)``: derivatives of the outputs at ``step`` with respect to W_rec (float64).

    ``kernel="eprop"`` cuts the presynaptic path ``W r_{t-1}`` (the e-prop truncation) before differentiating.
    """
    import torch

    from neurorate import dynamics as dyn

    if kernel not in ("bptt", "eprop"):
        raise ValueError(f"kernel must be 'bptt' or 'eprop', got {kernel!r}")
    f, _ = dyn.activation(spec.activation)
    x = torch.as_tensor(np.asarray(probe_inputs[: step + 1]), dtype=torch.float64)
    w_in, b = torch.as_tensor(spec.w_in), torch.as_tensor(spec.b)
    w_out, b_out = torch.as_tensor(spec.w_out), torch.as_tensor(spec.b_out)
    drive = x @ w_in.T + b

    def outputs(w_rec):
        state = torch.zeros(x.shape[1], spec.n_hidden, dtype=torch.float64)
        for t in range(step + 1):
            state, _ = dyn.step(state, drive[t], w_rec, spec.alpha, spec.form, f, detach_pre=kernel == "eprop")
        return (dyn.rate(state, spec.form, f) @ w_out.T + b_out).reshape(-1)

    jac = torch.func.jacrev(outputs)(torch.as_tensor(spec.w_rec))
    return jac.reshape(jac.shape[0], -1).numpy()


def kernel_alignment(before: NetworkSpec, after: NetworkSpec, probe_inputs: np.ndarray, step: int,
                     kernel: str = "bptt") -> float:
    """Alignment of the tangent kernels ``J J^T`` of ``before`` and ``after`` (1 = lazy, lower = richer)."""
    j0 = tangent_features(before, probe_inputs, step, kernel)
    j1 = tangent_features(after, probe_inputs, step, kernel)
    k0, k1 = j0 @ j0.T, j1 @ j1.T
    denom = float(np.linalg.norm(k0) * np.linalg.norm(k1))
    return math.nan if denom == 0 or not math.isfinite(denom) else float(np.sum(k0 * k1) / denom)


def richlazy_metrics(initial: Sequence[NetworkSpec], trained: Sequence[NetworkSpec], probe_inputs: np.ndarray,
                     probe_mask: np.ndarray, kernel_trials: int = 16) -> list[dict[str, float]]:
    """Per network: ``weight_change``, ``erank_before``, ``erank_after``, ``repr_alignment``, ``kernel_alignment``
    (exact tangent kernel) and ``kernel_alignment_eprop`` (e-prop pseudo-gradient kernel), the kernels on the
    first ``kernel_trials`` probe trials.

    Parameters
    ----------
    initial, trained : the networks before and after training (same length M).
    probe_inputs : ``(T, B, n_in)`` fixed probe batch (the same for every network).
    probe_mask : the probe batch's loss mask; its last non-zero step is the decision step.
    """
    from neurorate.backends.torch import TorchBackend

    be = TorchBackend(device="cpu", dtype="float64")
    t_dec = last_decision_step(probe_mask)
    finite = [bool(np.all(np.isfinite(s.w_rec))) for s in trained]
    safe_trained = [t if ok else i for t, i, ok in zip(trained, initial, finite)]
    r0 = be.simulate(list(initial), probe_inputs).rates[:, t_dec]
    r1 = be.simulate(safe_trained, probe_inputs).rates[:, t_dec]
    out = []
    for j, (a, b) in enumerate(zip(initial, trained)):
        ok = finite[j]
        out.append({
            "weight_change": relative_weight_change(a, b) if ok else math.nan,
            "erank_before": effective_rank(a.w_rec),
            "erank_after": effective_rank(b.w_rec) if ok else math.nan,
            "repr_alignment": gram_alignment(r0[j], r1[j]) if ok else math.nan,
            "kernel_alignment": kernel_alignment(a, b, probe_inputs[:, :kernel_trials], t_dec) if ok else math.nan,
            "kernel_alignment_eprop": (kernel_alignment(a, b, probe_inputs[:, :kernel_trials], t_dec, "eprop")
                                       if ok else math.nan),
        })
    return out
