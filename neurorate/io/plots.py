"""Plots of runs (matplotlib figures made without pyplot: never opens a window and never changes the backend of
the caller, so a notebook that imported pyplot keeps showing its own figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def smooth(a: np.ndarray, window: int) -> np.ndarray:
    """Running mean with a window of ``window`` iterations (shorter at the start)."""
    a = np.asarray(a, dtype=float)
    if window <= 1 or a.size == 0:
        return a
    c = np.nancumsum(np.insert(a, 0, 0.0))
    idx = np.arange(1, a.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _name(v) -> str:
    """A rule or task given by name or as a value (a :class:`~neurorate.learning.Rule`, a task config)."""
    return str(getattr(v, "name", v))


def _task_name(config: dict) -> str:
    task = config.get("task") or {}
    name = str(task.get("name", "?"))
    return f"neurogym:{task['env_id']}" if name == "neurogym" and task.get("env_id") else name


def _task_options(name: str, task: dict) -> dict:
    """The constructor options of a run's task from its stored config (what ``make_task`` takes besides the
    batch size and the seed), so that the reference line is the one of the task that was trained."""
    import dataclasses

    from neurorate.tasks.base import make_task

    cls = type(make_task(name, batch_size=1))
    fields = ({f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls)
              else {"dt", "tau"})
    return {k: v for k, v in task.items() if k in fields - {"batch_size", "seed", "env_id"}}


def reference_line(config: dict) -> tuple[float, str] | None:
    """The dashed reference of a run's loss panel, the same value and label as in the study's figures
    (:func:`neurorate.studies.report.reference_loss`): Romo's "no working memory" plateau for Romo, the chance
    level (fixation right, choice guessed) for a cross-entropy task; None for a task without one (an MSE task other
    than Romo, a task that cannot be rebuilt here from its config)."""
    from neurorate.studies.report import ROMO_PLATEAU, reference_loss

    task = config.get("task") or {}
    name = _task_name(config)
    if name == "romo":
        return ROMO_PLATEAU, "no-memory plateau"
    if task.get("loss") != "ce":
        return None
    try:
        options = _task_options(name, task)
    except Exception:  # noqa: BLE001 - a task that cannot be rebuilt here (e.g. defined in a notebook): no line
        return None
    return reference_loss({"name": "run", "tasks": [name], "task_options": {name: options}}, name, name)


def run_title(r) -> str:
    """What a run's figure says about it: task, rule, N, g, seed, optimizer and lr, backend and profile (first
    line); lambda_max before and after training with its unit, and a status other than ok (second line)."""
    cfg = r.config or {}
    init = getattr(r.spec_initial, "init", {}) or {}
    n = getattr(r.spec_initial, "n_hidden", None)
    parts = [_task_name(cfg) if cfg.get("task") else "?", _name(r.rule), f"N={n}" if n is not None else None,
             f"g={init['gain']:g}" if init.get("gain") is not None else None,
             f"seed {init['seed']}" if init.get("seed") is not None else None, f"{r.optimizer} lr={r.lr:g}",
             r.backend + (f" / {cfg['profile']}" if cfg.get("profile") else "")]
    if cfg.get("neuron", "rate") != "rate":
        parts.insert(2, str(cfg["neuron"]))
    lines = [", ".join(p for p in parts if p)]
    second = []
    if r.lambda_max_before is not None or r.lambda_max_after is not None:
        lam = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:+.3f}"  # noqa: E731
        second.append(f"λ_max per {r.lyapunov_unit or 'step'}: before {lam(r.lambda_max_before)}, "
                      f"after {lam(r.lambda_max_after)}")
    if r.status != "ok":
        second.append(f"status {r.status}" + (f" at iteration {r.diverged_at}" if r.diverged_at is not None else ""))
    if second:
        lines.append("; ".join(second))
    return "\n".join(lines)


def learning_curve_figure(results, title: str | None = None):
    """The figure of :func:`learning_curve` (a matplotlib ``Figure`` outside pyplot: nothing to close): loss (log
    scale) and decision accuracy against iteration, a dashed reference line on each panel (:func:`reference_line`
    on the loss, chance on the accuracy of the built-in two-choice tasks), titled with :func:`run_title` of the
    first result unless ``title`` is given."""
    from matplotlib.figure import Figure

    from neurorate.studies.report import CHANCE

    results = list(results)
    fig = Figure(figsize=(10, 4.0))
    ax_l, ax_a = fig.subplots(1, 2)
    for r in results:
        n = len(r.losses)
        w = max(1, n // 50)
        label = f"{_name(r.rule)} g={r.spec_initial.init.get('gain', float('nan')):g} lr={r.lr:g}"
        ax_l.plot(np.arange(n), smooth(r.losses, w), label=label)
        ax_a.plot(np.arange(n), smooth(r.accuracy, w), label=label)
    cfg = results[0].config if results else {}
    ref = reference_line(cfg or {}) if cfg else None
    if ref is not None:
        ax_l.axhline(ref[0], color="k", ls="--", lw=0.8, label=f"{ref[1]} ({ref[0]:.3g})")
    if cfg and _task_name(cfg) in ("romo", "2af", "dms"):
        ax_a.axhline(CHANCE, color="k", ls="--", lw=0.8, label="chance")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("iteration")
    ax_l.set_ylabel("training loss (running mean)")
    ax_a.set_xlabel("iteration")
    ax_a.set_ylabel("decision accuracy")
    ax_a.set_ylim(0, 1.02)
    ax_l.legend(fontsize=7)
    ax_a.legend(fontsize=7)
    if title is None and results:
        title = run_title(results[0])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def learning_curve(results, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`learning_curve_figure` of one or more TrainResults to ``path`` (PNG)."""
    path = Path(path)
    learning_curve_figure(results, title).savefig(path, dpi=110, format="png")
    return path
