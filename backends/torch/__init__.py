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

from neurorate.backends.base import (
    BackendCapabilities,
    BackendRun,
    SimResult,
    check_compatible,
    check_device,
    check_threads,
    env_threads,
    make_profile_quantizer,
    progress_bar,
    task_list,
)
from neurorate.defaults import DEFAULT_LR
from neurorate.errors import NeurorateError
from neurorate.model.dynamics import on_grid
from neurorate.model.spec import NetworkSpec
from neurorate.optim import EnsembleOptimizer

from . import compiled as _compiled
from . import engine_profile as _engine
from . import gradients as _grad
from . import loop as _loop
from .ensemble import Ensemble, stack

__all__ = ["TorchBackend", "Ensemble", "stack", "resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; a device this machine does not have (``"cuda"`` or ``"cuda:K"``
    without that GPU) or the backend does not declare is a one-line error
    (:func:`~neurorate.backends.base.check_device`)."""
    if isinstance(device, torch.device):
        return device
    check_device(TorchBackend.capabilities, device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    threads : CPU threads of a training call (None: the environment variable ``NEURORATE_THREADS``, else the
        default). The compiled path (below) runs this many threads across networks (default: 1)
        while torch keeps one intra-op thread; the torch path gives them to torch (default: 1, since intra-op
        threads > 1 were 4-14x slower on a busy 2-core machine; docs/benchmarks.md). Never both at once.
    compiled : the compiled CPU path (:mod:`neurorate.backends.torch.compiled`: one numba kernel per training
        iteration) where it applies: CPU, form A, no profile, rule eprop / eprop_random / rflo / bptt / snap1, tanh or
        relu, mse or ce. None (default): on unless the environment variable ``NEURORATE_COMPILED=0``; False:
        always the torch path. ``train(..., compiled=...)`` (``backend_options={"compiled": False}`` in
        :func:`neurorate.train`) overrides it per call.
    """

    name = "torch"
    capabilities = BackendCapabilities(
        name="torch", optimizers=("adam", "sgd"), default_lr=DEFAULT_LR, profiles=True,
        dtypes=("float32", "float64"), devices=("auto", "cpu", "cuda"), neurons=("rate", "lif", "alif"),
        options=("compiled",), resumable=True, threads=True)
    """Every rule listing ``torch`` in ``Rule.backends``, Adam (default) and SGD, all forms and activations,
    hardware profiles, float32/float64 on CPU or CUDA, rate and spiking (LIF/ALIF) neurons, resumable training."""
    options = ("compiled",)
    """Keyword options of :meth:`train` (``backend_options`` of :func:`neurorate.train`)."""
    readback_every: int | None = None
    """Iterations whose losses stay on the device before one read (:class:`~neurorate.backends.torch.loop.Readback`;
    None: 1 on the CPU, on CUDA up to ``loop.READBACK_MAX`` and at least every ``loop.READBACK_SECONDS``)."""
    prefetch: int | None = None
    """Iterations whose batches are drawn and uploaded in one block (:class:`~neurorate.backends.torch.loop.Batches`;
    None: 1 on the CPU, on CUDA up to ``loop.PREFETCH_MAX``)."""

    def __init__(self, device: str = "auto", dtype: str = "float32", threads: int | None = None,
                 compiled: bool | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.threads = None if threads is None else check_threads(threads)
        self.compiled = compiled

    def _requested_threads(self) -> int | None:
        if self.threads is not None:
            return int(self.threads)
        return env_threads()

    def _set_threads(self, compiled: bool) -> int | None:
        """torch's intra-op threads on the CPU: the requested threads on the torch path, else 1. Returns the
        compiled kernel's threads (None: its default, 1)."""
        if self.device.type != "cpu":
            return None
        requested = self._requested_threads()
        torch.set_num_threads(1 if compiled or requested is None else requested)
        return requested

    @staticmethod
    def check_options(options: dict, *, specs=(), batch: int | None = None, profile: Any = None,
                      rule: str | None = None, optimizer: str | None = None, loss: str | None = None) -> None:
        """Under an engine profile (an ``[engine]`` table), one line naming a form, activation, batch, rule,
        optimizer or loss the engine view does not train (:func:`neurorate.backends.torch.engine_profile.
        check_network`); :func:`neurorate.train` calls it in its validate step, before anything is written."""
        if _engine.applies(profile):
            _engine.check_network(specs, batch, profile, rule=rule, optimizer=optimizer, loss=loss)

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
              start_iteration: int = 0, optimizer_state: dict | None = None,
              grad_alignment_every: int | None = None,
              alignment_callback: Callable[[int, dict], None] | None = None, **options: Any) -> list[BackendRun]:
        """Train all ``specs`` as one ensemble on ``task`` (one shared task, or a list with one per network).

        Batch ``start_iteration + i`` of the task is used at iteration i. Returns one
        :class:`~neurorate.backends.base.BackendRun` per spec; a network whose loss becomes NaN/inf is frozen and
        reported as diverged while the others go on. ``BackendRun.extra["optimizer_state"]`` (on the first
        run) lets a later call continue with the same optimizer state.

        ``grad_alignment_every=K``: on every iteration whose global index ``start_iteration + i`` is a multiple of
        K, the alignment of the rule's update with the exact gradient of that batch, before the update
        (:func:`neurorate.analysis.alignment.alignment_fields`, one exact gradient each), goes to
        ``alignment_callback(start_iteration + i, {field: (M,)})``.
        """
        compiled_option = options.pop("compiled", None)
        if options:
            raise NeurorateError(f"torch backend: unknown option(s) {', '.join(sorted(options))}")
        if compiled_option not in (None, True, False):
            raise NeurorateError(f"torch backend: compiled must be true or false, got {compiled_option!r}")
        specs = list(specs)
        if not specs:
            raise NeurorateError("no networks given")
        the_rule = check_compatible(self.capabilities, rule, optimizer, specs=specs[:1])
        tasks = task_list(task, len(specs))
        kind = tasks[0].loss_kind
        lrs = np.array(np.broadcast_to(np.asarray(lr, dtype=np.float64), (len(specs),)))
        ens = stack(specs, self.dtype, self.device)
        if grad_alignment_every is not None:
            if isinstance(grad_alignment_every, bool) or int(grad_alignment_every) < 1:
                raise NeurorateError(f"grad_alignment_every must be a positive integer, got {grad_alignment_every!r}")
            if _engine.applies(profile):
                raise NeurorateError("the engine view does not measure grad_alignment_every; train without it")
        if _engine.applies(profile):  # the engine view: e-prop as Loihi 2's learning engine computes it
            self._set_threads(False)
            return _engine.train(ens, specs, tasks, the_rule, kind, lrs, optimizer, profile, iterations=iterations,
                                 start_iteration=start_iteration, callback=callback, progress=progress,
                                 batch_fn=lambda i: _batch_tensors(tasks, i, self.dtype, self.device))
        quant = self._quantizer(profile, training=True, specs=specs)
        on_grid = _prepare_fixed_point(ens, quant, optimizer)
        lr_t = torch.as_tensor(lrs, dtype=self.dtype, device=self.device)
        opt = EnsembleOptimizer(optimizer, lr_t)
        if optimizer_state is not None:
            opt.load_state_dict(optimizer_state)
        m = len(specs)
        step = None
        if (not on_grid and _compiled.enabled(self.compiled if compiled_option is None else compiled_option)
                and _compiled.applies(self.device.type, ens.form, ens.activation, the_rule, kind, profile)):
            step = _compiled.CompiledStep(ens, the_rule, kind, opt, threads=self._set_threads(True))
        else:
            self._set_threads(False)
        active = torch.ones(m, dtype=torch.bool, device=self.device)
        # the divergence iteration of each network, on the device (-1: none); read once, after the loop
        div_at = torch.full((m,), -1, dtype=torch.long, device=self.device)
        nan = torch.full((), float("nan"), dtype=torch.float64, device=self.device)
        diverged_at: list[int | None] = [None] * m
        t0 = time.perf_counter()
        bar = progress_bar(iterations, progress, f"torch {the_rule.name} x{m}")
        batches = _loop.Batches(tasks, start_iteration, iterations, self.dtype, self.device,
                                block=1 if step is not None else self.prefetch)
        rb = _loop.Readback(m, iterations, self.device, every=1 if step is not None else self.readback_every,
                            callback=callback, bar=bar)
        try:
            for i in range(iterations):
                x, target, mask = batches(i)
                it = start_iteration + i
                aligned = grad_alignment_every is not None and it % int(grad_alignment_every) == 0
                if aligned and step is not None:  # the kernel returns no gradient: the rule's, before the update
                    _align(alignment_callback, it, ens, the_rule, kind, x, target, mask, None, quant, x.shape[1])
                if step is not None:  # the whole iteration in one kernel call (same numbers, docs/api.md)
                    was = active.numpy().copy()
                    loss_c, acc_c = step(x.numpy(), target.numpy(), mask.numpy(), active.numpy())
                    for j in np.nonzero(was & ~np.isfinite(loss_c))[0].tolist():
                        diverged_at[j] = i
                    loss_np, acc_np = loss_c.astype(np.float64), acc_c.astype(np.float64)
                    rb.push_host(i, np.where(active.numpy(), loss_np, np.nan), acc_np)
                else:  # nothing here waits for the device: values are read in blocks (backends/torch/loop.py)
                    loss, acc, grads = _grad.gradients(ens, the_rule, kind, x, target, mask, quant,
                                                       step0=it * x.shape[1])
                    if aligned:  # this update's own draw against one exact gradient
                        _align(alignment_callback, it, ens, the_rule, kind, x, target, mask, grads, quant,
                               x.shape[1])
                    finite = torch.isfinite(loss)
                    div_at = torch.where(active & ~finite, i, div_at)
                    active &= finite
                    if on_grid:
                        _grid_sgd_step(ens, quant, grads, lr_t, active, it)
                    else:
                        opt.step(ens.params, grads, active)
                    rb.push(i, torch.where(active, loss.detach().to(torch.float64), nan), acc.detach())
            rb.flush()
            if step is None:
                diverged_at = [None if v < 0 else int(v) for v in div_at.cpu().tolist()]
        except KeyboardInterrupt:
            rb.flush()  # the iterations done so far reach the callback (a run directory keeps them)
            raise
        finally:
            if bar is not None:
                bar.close()
        loss_hist, acc_hist = rb.loss, rb.acc
        wall = time.perf_counter() - t0
        lost: list[int] = []  # networks whose weights are no longer numbers: diverged, with their starting spec
        trained = ens.to_specs(specs, lost)
        for j in lost:
            if diverged_at[j] is None:  # the last update overflowed: no later loss showed it
                diverged_at[j] = max(0, iterations - 1)
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
        return make_profile_quantizer(profile, specs, training, batch_dims=1)


def _align(callback, it: int, ens: Ensemble, rule, kind: str, x, target, mask, grads, quant, steps: int) -> None:
    """The alignment fields of iteration ``it`` (:func:`neurorate.analysis.alignment.alignment_fields`) to
    ``callback``."""
    from neurorate.analysis.alignment import alignment_fields

    fields = alignment_fields(ens, rule, kind, x, target, mask, rule_grads=grads, quant=quant, step0=it * steps)
    if callback is not None:
        callback(it, fields)


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
