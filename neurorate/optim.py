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
        # scratch tensors of one step (the masked gradient and two Adam temporaries per parameter), allocated on
        # the first step and reused: no allocation per step, on any device, and the same arithmetic
        self._work: dict[str, tuple[torch.Tensor, ...]] = {}
        self._lr_work: torch.Tensor | None = None
        self._zeros: dict[tuple, torch.Tensor] = {}

    def _zero(self, like: torch.Tensor) -> torch.Tensor:
        """A 0-dim zero of ``like``'s dtype and device (made once)."""
        key = (like.dtype, like.device)
        z = self._zeros.get(key)
        if z is None:
            z = self._zeros[key] = torch.zeros((), dtype=like.dtype, device=like.device)
        return z

    def _workspace(self, name: str, g: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(masked gradient like g[, two temporaries like p])`` of parameter ``name``, reused between steps."""
        work = self._work.get(name)
        like = [g] + ([] if self.kind == "sgd" else [p, p])
        if work is None or any(w.shape != t.shape or w.dtype != t.dtype or w.device != t.device
                               for w, t in zip(work, like)):
            work = tuple(torch.empty_like(t) for t in like)
            self._work[name] = work
        return work

    def _active_lr(self, active: torch.Tensor) -> torch.Tensor:
        """``lr`` where ``active``, 0 elsewhere ``(M,)``, written into one buffer kept between steps."""
        if self._lr_work is None or self._lr_work.shape != self.lr.shape or self._lr_work.device != self.lr.device:
            self._lr_work = torch.empty_like(self.lr)
        return torch.where(active, self.lr, self._zero(self.lr), out=self._lr_work)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        """One update of every parameter that has a gradient."""
        self.t += 1
        lr_m = self._active_lr(active)
        for name, g in grads.items():
            p = params[name]
            shape = (-1, *([1] * (p.dim() - 1)))
            lr = lr_m.reshape(shape)
            work = self._workspace(name, g, p)
            g = torch.where(active.reshape(-1, *([1] * (g.dim() - 1))), g, self._zero(g), out=work[0])
            if self.kind == "sgd":
                p.sub_(g.mul_(lr))
                continue
            b1, b2 = self.betas
            for store in (self.m1, self.m2):  # the moments start at zero, made once
                if name not in store:
                    store[name] = torch.zeros_like(p)
            m1, m2 = self.m1[name], self.m2[name]
            m1.mul_(b1).add_(g, alpha=1 - b1)
            m2.mul_(b2).addcmul_(g, g, value=1 - b2)
            bc1 = 1 - b1**self.t
            bc2 = 1 - b2**self.t
            denom = torch.div(m2, bc2, out=work[1]).sqrt_().add_(self.eps)
            upd = torch.div(m1, bc1, out=work[2]).mul_(lr).div_(denom)
            p.sub_(upd)

    def state_dict(self) -> dict:
        """Optimizer state (to continue training across calls)."""
        return {"t": self.t, "m1": self.m1, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.t, self.m1, self.m2 = state["t"], dict(state["m1"]), dict(state["m2"])
