"""Task losses, their per-step output gradients and decision accuracy (torch; shared by all backends).

Shapes: outputs ``y (..., T, B, n_out)`` with any leading (ensemble) dimensions; targets and masks
``(T, B, n_out)`` for ``mse`` and ``(T, B)`` integer labels for ``ce``; every reduction keeps the leading
dimensions, so one call evaluates M networks.

* ``mse`` (Romo, Schuessler et al.): ``0.5 * sum(mask * (y - y*)^2) / sum(mask)``.
* ``ce`` (neurogym tasks, nn-brain): mean cross-entropy over the masked (T, B) entries.

Both are sums over time of per-step terms with a normaliser fixed by the batch, so the gradient with
respect to ``y_t`` is available on-line at step t (:func:`output_grad`), as e-prop needs.
"""

from __future__ import annotations

import torch

LOSS_KINDS = ("mse", "ce")


def normalizer(kind: str, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The constant the summed loss is divided by: the sum of the mask over (T, B[, n_out]), at least 1.

    Keeps leading (ensemble) dimensions of a per-network mask; a shared mask gives a scalar.
    """
    dims = (-3, -2, -1) if kind == "mse" else (-2, -1)
    return mask.sum(dim=dims).clamp_min(1.0)


def loss(kind: str, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Loss per network: reduces the last three (mse) or the (T, B, class) dims (ce)."""
    norm = normalizer(kind, target, mask)
    if kind == "mse":
        return 0.5 * (mask * (y - target) ** 2).sum(dim=(-3, -2, -1)) / norm
    if kind == "ce":
        logp = torch.log_softmax(y, dim=-1)
        picked = torch.gather(logp, -1, target.expand(*y.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return -(mask * picked).sum(dim=(-2, -1)) / norm
    raise ValueError(f"unknown loss kind {kind!r}")


def output_grad(kind: str, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm) -> torch.Tensor:
    """``d loss / d y`` for any slice of time (e.g. one step ``y_t (M, B, n_out)`` with its target/mask).

    ``norm`` is :func:`normalizer` of the whole batch (scalar or one value per network).
    """
    if isinstance(norm, torch.Tensor) and norm.dim() > 0:
        norm = norm[..., None, None]
    if kind == "mse":
        return mask * (y - target) / norm
    if kind == "ce":
        p = torch.softmax(y, dim=-1)
        onehot = torch.nn.functional.one_hot(target, y.shape[-1]).to(y.dtype)
        return mask.unsqueeze(-1) * (p - onehot) / norm
    raise ValueError(f"unknown loss kind {kind!r}")


def accuracy(kind: str, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Decision-period accuracy per network.

    mse: steps where the target is non-zero (the decision window); correct when ``argmax y`` equals the
    channel with the largest target. ce: steps whose label is a choice (label > 0); correct when
    ``argmax y`` equals the label. NaN where a batch has no decision step.
    """
    if kind == "mse":
        decision = (target.abs().amax(-1) > 0) & (mask.amax(-1) > 0)
        correct = y.argmax(-1) == target.argmax(-1)
    elif kind == "ce":
        decision = (target > 0) & (mask > 0)
        correct = y.argmax(-1) == target
    else:
        raise ValueError(f"unknown loss kind {kind!r}")
    n = decision.sum(dim=(-2, -1)).to(y.dtype)
    return (correct & decision).sum(dim=(-2, -1)).to(y.dtype) / torch.where(n > 0, n, torch.nan)
