"""Stack M NetworkSpecs into ensemble tensors with a leading dimension, and back.

Parameters: ``w_in (M, N, n_in)``, ``w_rec (M, N, N)``, ``w_out (M, n_out, N)``, ``b (M, 1, N)``,
``b_out (M, 1, n_out)``; fixed per network: ``feedback (M, N, n_out)``, ``alpha (M, 1, 1)``. The singleton
batch axis of the biases lets them broadcast over ``(M, B, N)`` states.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from neurorate.backends.base import trained_spec
from neurorate.errors import NeurorateError
from neurorate.learning.feedback import feedback_matrix
from neurorate.model.spec import NetworkSpec

PARAMS = ("w_in", "w_rec", "w_out", "b", "b_out")


@dataclasses.dataclass
class Ensemble:
    """Trainable tensors of M networks sharing sizes, form and activation."""

    params: dict[str, torch.Tensor]
    feedback: torch.Tensor
    alpha: torch.Tensor
    form: str
    activation: str
    buffers: dict = dataclasses.field(default_factory=dict, repr=False)

    def workspace(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A scratch tensor kept between iterations (uninitialised; reallocated when the shape changes).

        Large per-iteration buffers (the BPTT trajectory, tens of MB) cost page faults every time they are
        allocated afresh; reusing them changes no number.
        """
        buf = self.buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            self.buffers[name] = buf
        return buf

    @property
    def m(self) -> int:
        """Number of networks M."""
        return self.params["w_rec"].shape[0]

    @property
    def n(self) -> int:
        """Hidden units N."""
        return self.params["w_rec"].shape[1]

    def to_specs(self, templates: list[NetworkSpec], lost: list[int] | None = None) -> list[NetworkSpec]:
        """Copies of ``templates`` carrying this ensemble's current weights. With a list ``lost``, a network whose
        weights are not all finite keeps its template and its index is appended to ``lost``
        (:func:`~neurorate.backends.base.trained_spec`); without one, such weights are a SpecError."""
        out = []
        for i, spec in enumerate(templates):
            arrays = {name: self.params[name][i].detach().cpu().double().numpy().reshape(getattr(spec, name).shape)
                      for name in PARAMS}
            if lost is None:
                out.append(spec.replace(**arrays))
                continue
            trained, finite = trained_spec(spec, arrays)
            if not finite:
                lost.append(i)
            out.append(trained)
        return out


def check_compatible(specs: list[NetworkSpec]) -> None:
    """All specs of one ensemble must share N, n_in, n_out, form and activation (alpha may differ)."""
    if not specs:
        raise NeurorateError("no networks given")
    first = specs[0]
    for i, s in enumerate(specs[1:], start=1):
        for attr in ("n_hidden", "n_in", "n_out", "form", "activation"):
            if getattr(s, attr) != getattr(first, attr):
                raise NeurorateError(
                    f"networks of one ensemble must share {attr}: network 0 has {getattr(first, attr)!r}, "
                    f"network {i} has {getattr(s, attr)!r}; train them in separate calls")


def stack(specs: list[NetworkSpec], dtype: torch.dtype, device: torch.device) -> Ensemble:
    """Ensemble tensors (leaf tensors with ``requires_grad=False``) for ``specs``."""
    check_compatible(specs)

    def t(arrs, shape=None):
        a = np.stack(arrs)
        if shape is not None:
            a = a.reshape(shape)
        return torch.tensor(a, dtype=dtype, device=device)

    m = len(specs)
    params = {
        "w_in": t([s.w_in for s in specs]),
        "w_rec": t([s.w_rec for s in specs]),
        "w_out": t([s.w_out for s in specs]),
        "b": t([s.b for s in specs], (m, 1, -1)),
        "b_out": t([s.b_out for s in specs], (m, 1, -1)),
    }
    feedback = t([feedback_matrix(s) for s in specs])
    alpha = torch.tensor([s.alpha for s in specs], dtype=dtype, device=device).reshape(m, 1, 1)
    return Ensemble(params, feedback, alpha, specs[0].form, specs[0].activation)
