"""Training results and run directories.

A run directory holds everything needed to trust and reuse a run (docs/cli.md, "The run directory")::

    config.json        resolved configuration (task, network, rule, optimizer, lr, seed, backend, profile)
    environment.json   package versions, git revision, Python, machine
    metrics.jsonl      one line per iteration, appended as training goes (iteration, loss, accuracy)
    spec_initial.npz   the network before training (and spec_flossed.npz after flossing, when used)
    spec_final.npz     the trained network
    lyapunov.json      top-k Lyapunov spectra before / after flossing / after training, with the unit
    result.json        summary (final loss, lambda_max before/after, diverged, wall time, paths)
    learning_curve.png loss and accuracy against iteration

For an ensemble (several networks in one call) each network gets ``net-000/``, ``net-001/``, ... inside.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.errors import FileFormatError, NeurorateError
from neurorate.model.spec import NetworkSpec


@dataclasses.dataclass
class TrainResult:
    """The outcome of training one network (see :func:`neurorate.train`).

    Attributes
    ----------
    losses, accuracy : ``(iterations,)`` training loss and decision accuracy per iteration (NaN after divergence).
    spec, spec_initial : trained and initial :class:`~neurorate.model.spec.NetworkSpec`.
    spec_flossed : the network after flossing pre-training (None without flossing).
    lambda_max_before, lambda_max_flossed, lambda_max_after : maximum Lyapunov exponent (``lyapunov_unit``).
    spectrum_before, spectrum_flossed, spectrum_after : top-k spectra (descending) or None.
    floss_losses : ``(floss_iterations,)`` flossing loss, or None.
    """

    losses: np.ndarray
    accuracy: np.ndarray
    spec: NetworkSpec
    spec_initial: NetworkSpec
    rule: str
    backend: str
    lr: float
    optimizer: str
    iterations: int
    diverged: bool = False
    diverged_at: int | None = None
    wall_time: float = 0.0
    spec_flossed: NetworkSpec | None = None
    floss_losses: np.ndarray | None = None
    lambda_max_before: float | None = None
    lambda_max_flossed: float | None = None
    lambda_max_after: float | None = None
    spectrum_before: np.ndarray | None = None
    spectrum_flossed: np.ndarray | None = None
    spectrum_after: np.ndarray | None = None
    lyapunov_unit: str | None = None
    config: dict = dataclasses.field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def status(self) -> str:
        """"ok" or "diverged"."""
        return "diverged" if self.diverged else "ok"

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean loss over the last ``fraction`` of iterations (NaN if diverged)."""
        if self.diverged or len(self.losses) == 0:
            return math.nan
        k = max(1, int(round(len(self.losses) * fraction)))
        return float(np.mean(self.losses[-k:]))

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``neurorate run --json`` prints, plus the loss curve)."""
        f = lambda v: None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)  # noqa: E731
        arr = lambda a: None if a is None else [f(v) for v in np.asarray(a, dtype=float)]  # noqa: E731
        return {
            "rule": self.rule, "backend": self.backend, "lr": self.lr, "optimizer": self.optimizer,
            "iterations": self.iterations, "status": self.status, "diverged_at": self.diverged_at,
            "final_loss": f(self.final_loss()), "final_accuracy": f(_nanmean_tail(self.accuracy)),
            "lambda_max_before": f(self.lambda_max_before), "lambda_max_flossed": f(self.lambda_max_flossed),
            "lambda_max_after": f(self.lambda_max_after), "lyapunov_unit": self.lyapunov_unit,
            "spectrum_before": arr(self.spectrum_before), "spectrum_flossed": arr(self.spectrum_flossed),
            "spectrum_after": arr(self.spectrum_after), "wall_time_s": f(self.wall_time),
            "gain": self.spec_initial.init.get("gain"), "seed": self.spec_initial.init.get("seed"),
            "losses": arr(self.losses), "floss_losses": arr(self.floss_losses),
            "run_dir": None if self.run_dir is None else str(self.run_dir),
        }


def _nanmean_tail(a: np.ndarray, fraction: float = 0.1) -> float:
    a = np.asarray(a, dtype=float)
    if a.size == 0:
        return math.nan
    tail = a[-max(1, int(round(a.size * fraction))):]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else math.nan


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents) and check it is writable; a one-line error otherwise."""
    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".neurorate-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise NeurorateError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


class RunDirectory:
    """Writes one network's run directory incrementally (metrics are appended as training goes)."""

    def __init__(self, path: str | Path):
        self.path = prepare_out_dir(path)
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._last_flush = time.monotonic()

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as pretty JSON (atomically: a killed run never leaves a half-written file)."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
        os.replace(tmp, target)
        return target

    def append_metrics(self, iteration: int, loss: float, accuracy: float, **extra: float) -> None:
        """Append one metrics line."""
        row = {"iteration": int(iteration), "loss": _finite_or_none(loss), "accuracy": _finite_or_none(accuracy)}
        row.update({k: _finite_or_none(v) for k, v in extra.items()})
        self._metrics.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Flush and close the metrics file."""
        if not self._metrics.closed:
            self._metrics.close()


def _finite_or_none(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_final(run: RunDirectory, result: TrainResult) -> None:
    """Specs, Lyapunov spectra, summary and the learning-curve plot of a finished run."""
    result.spec_initial.save(run.path / "spec_initial.npz")
    result.spec.save(run.path / "spec_final.npz")
    if result.spec_flossed is not None:
        result.spec_flossed.save(run.path / "spec_flossed.npz")
    s = result.summary()
    run.write_json("lyapunov.json", {k: s[k] for k in ("lyapunov_unit", "lambda_max_before", "lambda_max_flossed",
                                                         "lambda_max_after", "spectrum_before", "spectrum_flossed",
                                                         "spectrum_after")})
    s["run_dir"] = str(run.path)
    run.write_json("result.json", s)
    from neurorate.io.plots import learning_curve

    learning_curve([result], run.path / "learning_curve.png")


def load_run(path: str | Path) -> dict:
    """Read a run directory's result.json, config and final spec (one-line error if malformed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileFormatError(f"{path}: not a run directory")
    try:
        summary = json.loads((path / "result.json").read_text())
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError as exc:
        raise FileFormatError(f"{path}: incomplete run directory (missing {Path(exc.filename).name})") from None
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: malformed JSON ({exc})") from None
    return {"summary": summary, "config": config, "spec": NetworkSpec.load(path / "spec_final.npz")}
