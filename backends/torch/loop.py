"""The host side of the torch backend's training loop: batches on the device and losses read back in blocks.

On a GPU, every read of a device value (``.item()``, ``.tolist()``, ``.cpu()``) waits for all queued work, so
one per iteration serialises the host and the device. The loop therefore

* keeps each iteration's losses and accuracies (and each network's divergence iteration) on the device and
  copies them to the host in one transfer every few iterations (:class:`Readback`): at most
  :data:`READBACK_MAX` iterations, and at least every :data:`READBACK_SECONDS` of wall time, so a progress bar
  or callback still moves about twice a second; the callback still sees every iteration, in order, with the
  same values, only later;
* draws the batches of the next iterations in numpy in one go and uploads them into one device buffer
  (:class:`Batches`), instead of one upload per iteration.

On the CPU both default to one iteration (a read is free there, and the numbers and callback order are those of
a plain per-iteration loop); :attr:`TorchBackend.readback_every` and :attr:`TorchBackend.prefetch` set them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

READBACK_MAX = 256
"""Most iterations whose losses wait on the device before they are read (CUDA)."""
READBACK_SECONDS = 0.5
"""Longest wall time between two reads of the losses (CUDA), so progress and callbacks keep moving."""
PREFETCH_MAX = 32
"""Most iterations whose batches are drawn and uploaded at once (CUDA)."""
PREFETCH_BYTES = 64 * 2**20
"""Largest block of batches (float64 on the host) uploaded at once."""


def _stack_parts(tasks, first: int, count: int) -> list[np.ndarray]:
    """``x, target, mask`` of iterations ``first .. first + count - 1``, each ``(count, Mx, ...)`` (numpy)."""
    parts = [[t.batch(first + k) for t in tasks] for k in range(count)]
    return [np.stack([np.stack([p[j] for p in it]) for it in parts]) for j in range(3)]


class Batches:
    """Batch ``start + i`` of one shared task (leading dim 1, dropped for target and mask) or of one task per
    network (leading dim M), as device tensors of ``dtype``.

    ``block`` iterations are drawn in numpy at once and uploaded in one copy per array; ``block = 1`` is exactly
    one batch per call (the CPU default). The tensors of a block are views of one device buffer per array
    (reused from block to block), valid until the next block is drawn.
    """

    def __init__(self, tasks, start: int, iterations: int, dtype: torch.dtype, device: torch.device,
                 block: int | None = None):
        self.tasks, self.start, self.iterations = list(tasks), int(start), int(iterations)
        self.dtype, self.device = dtype, device
        self.block = self._default_block() if block is None else max(1, int(block))
        self._first = None  # first iteration of the block held in _held
        self._held: list[torch.Tensor] = []
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _default_block(self) -> int:
        if self.device.type == "cpu" or self.iterations <= 1:
            return 1
        x, target, mask = self.tasks[0].batch(self.start)
        per = 8 * len(self.tasks) * (x.size + target.size + mask.size)
        return int(max(1, min(PREFETCH_MAX, self.iterations, PREFETCH_BYTES // max(per, 1))))

    def _upload(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        """One copy per array into the block's device buffers (made once, converted in place to ``dtype``)."""
        out = []
        for j, arr in enumerate(arrays):
            tdtype = torch.long if arr.dtype.kind in "iu" else self.dtype
            host = torch.from_numpy(np.ascontiguousarray(arr))
            bufs = self._buffers[j] if j < len(self._buffers) else None
            if bufs is None or bufs[0].shape != host.shape or bufs[0].dtype != host.dtype:
                raw = torch.empty(host.shape, dtype=host.dtype, device=self.device)
                bufs = (raw, raw if tdtype == host.dtype else torch.empty(host.shape, dtype=tdtype, device=self.device))
                self._buffers[j:j + 1] = [bufs]
            bufs[0].copy_(host)
            if bufs[1] is not bufs[0]:
                bufs[1].copy_(bufs[0])
            out.append(bufs[1])
        return out

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, target, mask)`` of iteration ``i`` (0-based within this call)."""
        if self.block == 1:  # one batch, converted as it comes (the CPU path)
            parts = [t.batch(self.start + i) for t in self.tasks]
            out = []
            for j in range(3):
                arr = np.stack([p[j] for p in parts])
                tdtype = torch.long if arr.dtype.kind in "iu" else self.dtype
                out.append(torch.as_tensor(arr, device=self.device).to(tdtype))
            x, target, mask = out
        else:
            first = (i // self.block) * self.block
            if first != self._first:
                count = max(1, min(self.block, self.iterations - first))
                self._held = self._upload(_stack_parts(self.tasks, self.start + first, count))
                self._first = first
            x, target, mask = (h[i - first] for h in self._held)
        if len(self.tasks) == 1:
            target, mask = target[0], mask[0]
        return x, target, mask


class Readback:
    """Losses and accuracies of every iteration: kept on the device and copied to the host in blocks.

    ``push(i, loss, acc)`` takes device tensors ``(M,)`` (the loss already NaN where a network is frozen);
    ``push_host`` numpy arrays (the compiled path). At every read, for each iteration in order, the history
    row is filled, ``callback(i, losses (M,), accuracy (M,))`` is called with the values a per-iteration loop
    would give, and the progress bar advances. ``every``: iterations per read (None: 1 on the CPU; on CUDA up to
    :data:`READBACK_MAX`, at least every :data:`READBACK_SECONDS`). :meth:`flush` reads what is left.
    """

    def __init__(self, m: int, iterations: int, device: torch.device, every: int | None = None,
                 callback: Callable | None = None, bar=None):
        self.loss = np.full((m, iterations), np.nan)
        self.acc = np.full((m, iterations), np.nan)
        self.callback, self.bar, self.iterations = callback, bar, int(iterations)
        if every is None:
            self.every, self.seconds = (1, None) if device.type == "cpu" else (READBACK_MAX, READBACK_SECONDS)
        else:
            self.every, self.seconds = max(1, int(every)), None
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._last = time.perf_counter()
        self.reads = 0  # device-to-host reads made (one per block)

    def push(self, i: int, loss: torch.Tensor, acc: torch.Tensor) -> None:
        """Iteration ``i``'s losses ``(M,)`` (NaN for frozen networks) and accuracies, on the device."""
        if self.every == 1 and self.seconds is None and not self._pending:  # read at once: no block to keep
            self.reads += 1
            self.loss[:, i] = loss.detach().cpu().numpy()
            self._notify(i, acc.detach().cpu().double().numpy())
            return
        # copies: a value the next iteration overwrites in place (a kernel's workspace) must not be read late
        self._pending.append((i, loss.to(torch.float64, copy=True), acc.to(torch.float64, copy=True)))
        if len(self._pending) >= self.every or (
                self.seconds is not None and time.perf_counter() - self._last >= self.seconds):
            self.flush()

    def push_host(self, i: int, loss: np.ndarray, acc: np.ndarray) -> None:
        """Iteration ``i``'s values already on the host (read at once, after anything pending)."""
        self.flush()
        self.loss[:, i] = loss
        self._notify(i, np.asarray(acc, dtype=np.float64))

    def flush(self) -> None:
        """Copy every pending iteration to the host (one transfer) and report them in order."""
        if not self._pending:
            return
        n = len(self._pending)
        block = torch.stack([p[1] for p in self._pending] + [p[2] for p in self._pending])
        host = block.cpu().numpy()
        self.reads += 1
        pending, self._pending = self._pending, []
        for k, (i, _, _) in enumerate(pending):
            self.loss[:, i] = host[k]
            self._notify(i, host[n + k].copy())
        self._last = time.perf_counter()

    def _notify(self, i: int, acc_np: np.ndarray) -> None:
        self.acc[:, i] = acc_np
        if self.callback is not None:
            self.callback(i, self.loss[:, i], acc_np)
        if self.bar is not None:
            self.bar.update(1)
            if i % 10 == 0 or i == self.iterations - 1:
                live = self.loss[:, i][np.isfinite(self.loss[:, i])]  # every network diverged: no mean to show
                self.bar.set_postfix(loss=f"{live.mean():.4g}" if live.size else "nan")
