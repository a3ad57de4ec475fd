"""The one optimizer of neurorate: element-wise Adam and SGD for an ensemble, every network with its own
learning rate and its own state.

Adam (Kingma & Ba; PyTorch's defaults beta = (0.9, 0.999), eps = 1e-8) and plain SGD, applied to
``(M, ...)`` tensors with ``lr (M,)``. Being element-wise, one ensemble step equals M separate optimizers.
A frozen network (``active[m] = False``, e.g. after divergence or a non-finite gradient) is not updated and
its moments decay as if its gradient were 0. Used by the torch backend's training, by
:func:`neurorate.floss` and by the spiking networks' training.
"""

from __future__ import annotations

import torch


class EnsembleOptimizer:
    """``step(params, grads, active)`` updates ``params`` in place.

    Parameters
    ----------
    kind : "adam" or "sgd".
    lr : ``(M,)`` learning rates.
    """

    def __init__(self, kind: str, lr: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.kind, self.lr, self.betas, self.eps = kind, lr, betas, eps
        self.t = 0
        self.m1: dict[str, torch.Tensor] = {}
        self.m2: dict[str, torch.Tensor] = {}

    def _lr(self, p: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        lr = torch.where(active, self.lr, torch.zeros_like(self.lr))
        return lr.reshape(-1, *([1] * (p.dim() - 1)))

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        """One update of every parameter that has a gradient."""
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            lr = self._lr(p, active)
            g = torch.where(active.reshape(-1, *([1] * (g.dim() - 1))), g, torch.zeros_like(g))
            if self.kind == "sgd":
                p.sub_(lr * g)
                continue
            b1, b2 = self.betas
            m1 = self.m1.setdefault(name, torch.zeros_like(p))
            m2 = self.m2.setdefault(name, torch.zeros_like(p))
            m1.mul_(b1).add_(g, alpha=1 - b1)
            m2.mul_(b2).addcmul_(g, g, value=1 - b2)
            bc1 = 1 - b1**self.t
            bc2 = 1 - b2**self.t
            denom = (m2 / bc2).sqrt_().add_(self.eps)
            p.sub_(lr * (m1 / bc1) / denom)

    def state_dict(self) -> dict:
        """Optimizer state (to continue training across calls)."""
        return {"t": self.t, "m1": self.m1, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.t, self.m1, self.m2 = state["t"], dict(state["m1"]), dict(state["m2"])
