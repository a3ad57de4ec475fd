"""Plots of runs (matplotlib, Agg backend; never opens a window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(a: np.ndarray, window: int) -> np.ndarray:
    """Running mean with a window of ``window`` iterations (shorter at the start)."""
    a = np.asarray(a, dtype=float)
    if window <= 1 or a.size == 0:
        return a
    c = np.nancumsum(np.insert(a, 0, 0.0))
    idx = np.arange(1, a.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def learning_curve(results, path: str | Path, title: str | None = None) -> Path:
    """Loss (log scale) and decision accuracy against iteration for one or more TrainResults."""
    plt = _plt()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in results:
        n = len(r.losses)
        w = max(1, n // 50)
        label = f"{r.rule} g={r.spec_initial.init.get('gain', float('nan')):g} lr={r.lr:g}"
        ax_l.plot(np.arange(n), smooth(r.losses, w), label=label)
        ax_a.plot(np.arange(n), smooth(r.accuracy, w), label=label)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("iteration")
    ax_l.set_ylabel("training loss (running mean)")
    ax_a.set_xlabel("iteration")
    ax_a.set_ylabel("decision accuracy")
    ax_a.set_ylim(0, 1.02)
    ax_l.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
