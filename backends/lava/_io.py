"""Data in and out of the Lava graph: trial feeds for the source process and the shared-memory mailbox.

Feeds pack one trial batch as ``(T, B, n_in + 2 n_out + 1)`` float64 rows
``[x | target | mask / normaliser | decision flag]`` so the RateRNN process needs no knowledge of the task:
the normaliser (``sum(mask)``, see :mod:`neurorate.model.losses`) is folded into the per-entry weight, a
cross-entropy label becomes a one-hot target, and the decision flag marks the steps that count for
accuracy (as :func:`neurorate.model.losses.accuracy` defines them).

The mailbox is a set of numpy arrays over one anonymous ``mmap`` (MAP_SHARED). Created before Lava forks
its model processes, it is shared with them: the model writes losses, weights and recordings with a
memcpy, the host reads them after ``run()`` returns. Lava's own ``Var.get`` sends values one by one
(~50k values/s), so a 256 x 256 matrix would take a second.
"""

from __future__ import annotations

import math
import mmap

import numpy as np


class Mailbox(dict):
    """Named float64 arrays of the given shapes in one shared anonymous memory map."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        sizes = {name: math.prod(shape) for name, shape in shapes.items()}
        self._map = mmap.mmap(-1, max(8, 8 * sum(sizes.values())))
        flat = np.frombuffer(self._map, dtype=np.float64)
        start = 0
        for name, shape in shapes.items():
            self[name] = flat[start:start + sizes[name]].reshape(shape)
            start += sizes[name]

    def snapshot(self, name: str) -> np.ndarray:
        """A private copy of one array (the shared one keeps changing while Lava runs)."""
        return np.array(self[name], copy=True)


def pack_trial(x: np.ndarray, target: np.ndarray, mask: np.ndarray, loss_kind: str, n_out: int) -> np.ndarray:
    """Pack one batch ``x (T,B,n_in)``, ``target``, ``mask`` into the rows the RateRNN process reads."""
    x = np.asarray(x, dtype=np.float64)
    t_steps, batch, _ = x.shape
    mask = np.asarray(mask, dtype=np.float64)
    norm = max(float(mask.sum()), 1.0)
    if loss_kind == "mse":
        tgt = np.asarray(target, dtype=np.float64)
        weight = mask / norm
        decision = (np.abs(tgt).max(-1) > 0) & (mask.max(-1) > 0)
    elif loss_kind == "ce":
        labels = np.asarray(target, dtype=np.int64)
        tgt = np.eye(n_out)[labels]
        weight = np.repeat((mask / norm)[..., None], n_out, axis=-1)
        decision = (labels > 0) & (mask > 0)
    else:
        raise ValueError(f"unknown loss kind {loss_kind!r}")
    out = np.empty((t_steps, batch, x.shape[2] + 2 * n_out + 1))
    out[..., :x.shape[2]] = x
    out[..., x.shape[2]:x.shape[2] + n_out] = tgt
    out[..., x.shape[2] + n_out:-1] = weight
    out[..., -1] = decision
    return out


class TaskFeed:
    """``feed(i)``: batch ``i`` of a task, packed (called in the source's own process, in parallel)."""

    def __init__(self, task, first: int = 0):
        self.task, self.first = task, int(first)

    def __call__(self, i: int) -> np.ndarray:
        x, target, mask = self.task.batch(self.first + int(i))
        return pack_trial(x, target, mask, self.task.loss_kind, self.task.n_out)


class FixedFeed:
    """Feeds the same packed inputs every trial (simulation: no targets, zero weight)."""

    def __init__(self, inputs: np.ndarray, n_out: int):
        t_steps, batch, _ = inputs.shape
        zeros = np.zeros((t_steps, batch, n_out))
        self.packed = pack_trial(inputs, zeros, zeros, "mse", n_out)

    def __call__(self, i: int) -> np.ndarray:
        return self.packed
