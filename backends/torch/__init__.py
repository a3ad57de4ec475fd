"""The dense PyTorch backend: M networks (gains x seeds x learning rates) as one batched program.

Every tensor carries a leading ensemble dimension (``w_rec (M, N, N)``, state ``(M, B, N)``); one training
iteration is one batched forward (and backward) pass for all M networks, with element-wise per-network
optimizers. Runs on CUDA when available (``device="auto"``), else on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from neurorate.backends.base import OPTIMIZERS, BackendRun, SimResult
from neurorate.errors import NeurorateError
from neurorate.learning.registry import check_rule
from neurorate.model.dynamics import on_grid
from neurorate.model.spec import NetworkSpec
from neurorate.optim import EnsembleOptimizer

from . import gradients as _grad
from .ensemble import Ensemble, stack

__all__ = ["TorchBackend", "Ensemble", "stack", "resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cuda"`` without a GPU is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NeurorateError("--device cuda requested but no CUDA device is available; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise NeurorateError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32" or "float64"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise NeurorateError(f"unknown dtype {dtype!r}; choose float32 or float64")
    return _DTYPES[dtype]


def _batch_tensors(tasks, i: int, dtype, device):
    """Batch ``i`` of one shared task (leading dim 1) or of one task per network (leading dim M)."""
    parts = [t.batch(i) for t in tasks]
    out = []
    for j in range(3):
        arr = np.stack([p[j] for p in parts])
        tdtype = torch.long if arr.dtype.kind in "iu" else dtype
        out.append(torch.as_tensor(arr, device=device).to(tdtype))
    x, target, mask = out
    if len(tasks) == 1:
        target, mask = target[0], mask[0]
    return x, target, mask


class TorchBackend:
    """Dense, batched PyTorch implementation of the :class:`neurorate.backends.base.Backend` protocol.

    Parameters
    ----------
    device : "auto" (CUDA if present), "cpu" or "cuda".
    dtype : "float32" (default) or "float64" (used by the oracle tests).
    threads : CPU threads for torch (None: chosen per training call by the size of one step's matmuls:
        one thread for small programs, all cores for large ensembles; see docs/benchmarks.md).
    """

    name = "torch"

    def __init__(self, device: str = "auto", dtype: str = "float32", threads: int | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.threads = threads
        if self.device.type == "cpu" and threads is not None:
            torch.set_num_threads(int(threads))

    def _set_threads(self, m: int, batch: int, n: int) -> None:
        """Choose CPU threads when the user did not: one for small programs (dispatch-bound; a second
        thread only contends on 2 cores), all cores once one step's matmuls are large (M B N^2 >= 2^20)."""
        if self.device.type != "cpu" or self.threads is not None:
            return
        import os

        torch.set_num_threads(max(1, os.cpu_count() or 1) if m * batch * n * n >= 2**20 else 1)

    # ------------------------------------------------------------------ protocol
    def simulate(self, specs: list[NetworkSpec] | NetworkSpec, inputs: np.ndarray, profile: Any = None) -> SimResult:
        """Trajectories of the networks driven by ``inputs (T, B, n_in)`` from the zero state."""
        specs = [specs] if isinstance(specs, NetworkSpec) else list(specs)
        ens = stack(specs, self.dtype, self.device)
        x = torch.as_tensor(np.asarray(inputs), dtype=self.dtype, device=self.device)
        if x.dim() != 3 or x.shape[-1] != specs[0].n_in:
            raise NeurorateError(f"inputs must have shape (T, B, n_in={specs[0].n_in}), got {tuple(x.shape)}")
        quant = self._quantizer(profile, training=False, specs=specs)
        if quant.enabled:
            ens.alpha = quant.decay(ens.alpha)
        with torch.no_grad():
            states, rates, pre = _grad.forward(ens, x.unsqueeze(0), quant)
            w = on_grid(ens.params, quant)
            m, t, b, n = rates.shape
            y = (rates.reshape(m, t * b, n) @ w["w_out"].transpose(-1, -2) + w["b_out"]).reshape(m, t, b, -1)
        to_np = lambda a: a.cpu().double().numpy()  # noqa: E731
        return SimResult(to_np(states), to_np(rates), to_np(y), to_np(pre))

    def train(self, specs: list[NetworkSpec], task, rule: str, *, iterations: int, lr, optimizer: str = "adam",
              profile: Any = None, progress: bool | None = None,
              callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
              start_iteration: int = 0, optimizer_state: dict | None = None, **options: Any) -> list[BackendRun]:
        """Train all ``specs`` as one ensemble on ``task`` (one shared task, or a list with one per network).

        Batch ``start_iteration + i`` of the task is used at iteration i. Returns one
        :class:`~neurorate.backends.base.BackendRun` per spec; a network whose loss becomes NaN/inf is frozen and
        reported as diverged while the others go on. ``BackendRun.extra["optimizer_state"]`` (on the first
        run) lets a later call continue with the same optimizer state.
        """
        if options:
            raise NeurorateError(f"torch backend: unknown option(s) {', '.join(sorted(options))}")
        specs = list(specs)
        if not specs:
            raise NeurorateError("no networks given")
        the_rule = check_rule(rule, backend="torch", form=specs[0].form)
        if optimizer not in OPTIMIZERS:
            raise NeurorateError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        tasks = list(task) if isinstance(task, (list, tuple)) else [task]
        if len(tasks) not in (1, len(specs)):
            raise NeurorateError(f"give one task or one per network ({len(specs)}), got {len(tasks)}")
        kind = tasks[0].loss_kind
        lrs = np.array(np.broadcast_to(np.asarray(lr, dtype=np.float64), (len(specs),)))
        ens = stack(specs, self.dtype, self.device)
        quant = self._quantizer(profile, training=True, specs=specs)
        on_grid = _prepare_fixed_point(ens, quant, optimizer)
        lr_t = torch.as_tensor(lrs, dtype=self.dtype, device=self.device)
        opt = EnsembleOptimizer(optimizer, lr_t)
        if optimizer_state is not None:
            opt.load_state_dict(optimizer_state)
        m = len(specs)
        self._set_threads(m, tasks[0].batch_size, specs[0].n_hidden)
        active = torch.ones(m, dtype=torch.bool, device=self.device)
        loss_hist = np.full((m, iterations), np.nan)
        acc_hist = np.full((m, iterations), np.nan)
        diverged_at: list[int | None] = [None] * m
        t0 = time.perf_counter()
        bar = _progress(iterations, progress, f"torch {the_rule.name} x{m}")
        try:
            for i in range(iterations):
                x, target, mask = _batch_tensors(tasks, start_iteration + i, self.dtype, self.device)
                it = start_iteration + i
                loss, acc, grads = _grad.gradients(ens, the_rule, kind, x, target, mask, quant,
                                                   step0=it * x.shape[1])
                finite = torch.isfinite(loss)
                for j in torch.nonzero(active & ~finite).flatten().tolist():
                    diverged_at[j] = i
                active &= finite
                if on_grid:
                    _grid_sgd_step(ens, quant, grads, lr_t, active, it)
                else:
                    opt.step(ens.params, grads, active)
                loss_np = loss.detach().cpu().double().numpy()
                acc_np = acc.detach().cpu().double().numpy()
                loss_hist[:, i] = np.where(active.cpu().numpy(), loss_np, np.nan)
                acc_hist[:, i] = acc_np
                if callback is not None:
                    callback(i, loss_hist[:, i], acc_np)
                if bar is not None:
                    bar.update(1)
                    if i % 10 == 0 or i == iterations - 1:
                        bar.set_postfix(loss=f"{np.nanmean(loss_hist[:, i]):.4g}")
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        trained = ens.to_specs(specs)
        runs = [BackendRun(spec=s, losses=loss_hist[j], accuracy=acc_hist[j], diverged=diverged_at[j] is not None,
                           diverged_at=diverged_at[j], wall_time=wall / m) for j, s in enumerate(trained)]
        runs[0].extra["optimizer_state"] = opt.state_dict()
        return runs

    def jacobian_vector(self, spec: NetworkSpec, state: np.ndarray, q: np.ndarray) -> np.ndarray:
        """``D q`` of one autonomous step at ``state (N,)`` (form A: a_{t-1}; B/C: the state, zero input)."""
        from neurorate.model import dynamics as dyn

        ens = stack([spec], torch.float64, torch.device("cpu"))
        f, fp = dyn.activation(spec.activation)
        s = torch.as_tensor(np.asarray(state, dtype=np.float64)).reshape(1, 1, -1)
        qq = torch.as_tensor(np.asarray(q, dtype=np.float64)).reshape(1, 1, spec.n_hidden, -1)
        drv = ens.params["b"]
        _, pre = dyn.step(s, drv, ens.params["w_rec"], ens.alpha, spec.form, f)
        out = dyn.tangent_step(qq, ens.params["w_rec"].unsqueeze(1), ens.alpha.unsqueeze(-1), spec.form, fp(s), fp(pre))
        return out.reshape(spec.n_hidden, -1).numpy()

    # ------------------------------------------------------------------ helpers
    def _quantizer(self, profile, training: bool, specs):
        if profile is None:
            return _grad.IDENTITY
        from neurorate.hardware.profiles import load_profile
        from neurorate.hardware.quantize import make_quantizer

        prof = load_profile(profile) if isinstance(profile, str) else profile
        for s in specs:
            prof.check(s)
        return make_quantizer(prof, training=training, seed=int(specs[0].init.get("seed", 0)), batch_dims=1)


def _prepare_fixed_point(ens: Ensemble, quant, optimizer: str) -> bool:
    """Apply a profile's leak quantisation; with SGD and integer weights, put the weights on their grid.

    As on the device (and in the Lava ``fixed_pt`` model), each matrix's grid (shared exponent) is frozen
    from the initial weights, and SGD updates are rounded onto it (:func:`_grid_sgd_step`): the weights are
    integers times a fixed step, never a float master copy. With Adam, a float master copy is trained
    through straight-through fake-quant instead. Returns whether weights live on the grid.
    """
    if not quant.enabled:
        return False
    ens.alpha = quant.decay(ens.alpha)
    fmt_float = all(quant.profile.weights.for_matrix(n).format == "float" for n in ens.params)
    if optimizer != "sgd" or fmt_float:
        return False
    quant.calibrate(ens.params)
    with torch.no_grad():
        for name, p in ens.params.items():
            p.copy_(quant.weight(p, name))
    return True


@torch.no_grad()
def _grid_sgd_step(ens: Ensemble, quant, grads, lr: torch.Tensor, active: torch.Tensor, iteration: int) -> None:
    """``w <- Q_w(w + Q_update(-lr * grad))`` for the active networks (hardware learning on the grid)."""
    for name, p in ens.params.items():
        shape = (-1,) + (1,) * (p.dim() - 1)
        delta = quant.update(-lr.reshape(shape) * grads[name], name, step=iteration)
        new = quant.weight(p + delta, name)
        p.copy_(torch.where(active.reshape(shape), new, p))


def _progress(total: int, progress: bool | None, desc: str):
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=None if progress is None else not progress,
                dynamic_ncols=True, leave=True)
