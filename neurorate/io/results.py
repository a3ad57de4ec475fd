"""Training results and run directories.

A run directory holds everything needed to trust and reuse a run (docs/cli.md, "The run directory")::

    config.json        resolved configuration (task, network, rule, optimizer, lr, seed, backend, profile)
    environment.json   package versions, git revision, Python, machine
    metrics.jsonl      one line per iteration, appended as training goes (iteration, loss, accuracy)
    spec_initial.npz   the network before training (and spec_flossed.npz after flossing, when used)
    spec_final.npz     the trained network
    lyapunov.json      top-k Lyapunov spectra before / after flossing / after training, with the unit
    result.json        status and summary (final loss, lambda_max before/after, divergence, wall time, paths)
    learning_curve.png loss and accuracy against iteration

For an ensemble (several networks in one call) each network gets ``net-000/``, ``net-001/``, ... inside.

``result.json`` is written first, with ``"status": "running"``, when the directory is claimed (its exclusive
creation is what claims the directory: two runs can never share one), then rewritten with the final status:
``ok``, ``diverged`` (non-finite loss or more than :data:`neurorate.training.DIVERGENCE_FACTOR` times the initial
loss, with ``diverged_at``), ``interrupted`` (Ctrl-C: the metrics so far, no final spec) or ``failed`` (an
error, named in ``error``). Every other file is written under a temporary name and renamed when complete, so a
file that exists is whole; ``metrics.jsonl`` is appended line by line as training goes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import shutil
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
    interrupted: bool = False

    @property
    def status(self) -> str:
        """"ok", "diverged" or "interrupted" (a partial result: ``losses`` holds the iterations done)."""
        if self.interrupted:
            return "interrupted"
        return "diverged" if self.diverged else "ok"

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean loss over the last ``fraction`` of iterations (NaN if diverged or interrupted)."""
        if self.diverged or self.interrupted or len(self.losses) == 0:
            return math.nan
        k = max(1, int(round(len(self.losses) * fraction)))
        return float(np.mean(self.losses[-k:]))

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``neurorate run --json`` prints, plus the loss curve)."""
        f = lambda v: None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)  # noqa: E731
        arr = lambda a: None if a is None else [f(v) for v in np.asarray(a, dtype=float)]  # noqa: E731
        return {
            "rule": self.rule, "backend": self.backend, "lr": self.lr, "optimizer": self.optimizer,
            "iterations": self.iterations, "iterations_done": int(len(self.losses)), "status": self.status,
            "diverged_at": self.diverged_at,
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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`neurorate.train` after the partial result was written; ``str()`` says what was kept."""


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents) and check it is writable; a one-line error otherwise."""
    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".neurorate-write-test-{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise NeurorateError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


def _is_run_directory(path: Path) -> bool:
    marks = ("result.json", "config.json", "lyapunov.json")
    if any((path / m).is_file() for m in marks):
        return True
    subs = [p for p in path.iterdir()]
    return bool(subs) and all(p.is_dir() and p.name.startswith("net-") and _is_run_directory(p) for p in subs)


def check_out_dir(out: str | Path, overwrite: bool = False, option: str = "out") -> Path:
    """Check, without writing anything, that ``out`` can become a run directory.

    ``out`` must not exist or be an empty directory; with ``overwrite`` an existing run directory (one holding
    ``result.json``, ``config.json`` or ``lyapunov.json``, or only ``net-XXX/`` run directories) is accepted and
    :func:`open_out_dir` replaces it whole. Anything else is a one-line :class:`NeurorateError` (``option`` names
    the option in it).
    """
    if out is None or str(out).strip() == "":
        raise NeurorateError(f"--{option} must name a directory, got an empty path")
    path = Path(out).expanduser()
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise NeurorateError(f"--{option} {path} exists and is not a directory")
        if any(path.iterdir()):
            if not overwrite:
                raise NeurorateError(f"output directory {path} is not empty; choose a new --{option}, or pass "
                                     "--overwrite to replace it")
            if not _is_run_directory(path):
                raise NeurorateError(f"--overwrite: {path} is not a neurorate run directory; not replacing it")
    return path


def open_out_dir(out: str | Path, overwrite: bool = False, option: str = "out") -> Path:
    """:func:`check_out_dir`, then create the directory (replacing it with ``overwrite``)."""
    path = check_out_dir(out, overwrite, option)
    if overwrite and path.is_dir() and any(path.iterdir()):
        shutil.rmtree(path)
    return prepare_out_dir(path)


def unique_run_dir(parent: str | Path, stem: str) -> Path:
    """Create and return a new directory ``parent/<stem>-<6 hex digits>``.

    The creation is atomic (``mkdir`` fails if the name exists, and then another suffix is drawn), so runs started
    at the same moment never share a directory.
    """
    parent = prepare_out_dir(parent)
    for _ in range(100):
        path = parent / f"{stem}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise NeurorateError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
        return path
    raise NeurorateError(f"cannot find a free run directory name {stem}-XXXXXX in {parent}")


def atomic_write(target: Path, write) -> Path:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``target`` once it is complete."""
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


class RunDirectory:
    """Writes one network's run directory incrementally (metrics are appended as training goes).

    Creating it claims the directory: ``result.json`` is created exclusively with ``"status": "running"`` (a
    second writer gets a one-line error), and ``metrics.jsonl`` starts empty.
    """

    def __init__(self, path: str | Path, iterations: int | None = None):
        self.path = prepare_out_dir(path)
        try:
            fd = os.open(self.path / "result.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise NeurorateError(f"output directory {self.path} already holds a run (result.json exists)") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"status": "running", "iterations": iterations, "pid": os.getpid(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
        self._metrics = open(self.path / "metrics.jsonl", "w", buffering=1)
        self._last_flush = time.monotonic()

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as pretty JSON (atomically: a killed run never leaves a half-written file)."""
        text = json.dumps(obj, indent=2, default=_json_default)
        return atomic_write(self.path / name, lambda tmp: tmp.write_text(text))

    def save_spec(self, name: str, spec) -> Path:
        """Save a spec (or anything with ``save(path)``) under ``name``, atomically."""
        return atomic_write(self.path / name, lambda tmp: spec.save(tmp))

    def set_status(self, status: str, **fields: Any) -> Path:
        """Rewrite ``result.json`` with ``status`` and ``fields`` (used for "failed" and "interrupted")."""
        return self.write_json("result.json", {"status": status, **fields, "run_dir": str(self.path)})

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
    """Specs, Lyapunov spectra, the learning-curve plot and, last, ``result.json`` with the final status.

    Every file is written under a temporary name and renamed when complete. For an interrupted result no
    ``spec_final.npz`` is written (the backend's weights at the interrupt are not available).
    """
    run.save_spec("spec_initial.npz", result.spec_initial)
    if not result.interrupted:
        run.save_spec("spec_final.npz", result.spec)
    if result.spec_flossed is not None:
        run.save_spec("spec_flossed.npz", result.spec_flossed)
    s = result.summary()
    run.write_json("lyapunov.json", {k: s[k] for k in ("lyapunov_unit", "lambda_max_before", "lambda_max_flossed",
                                                         "lambda_max_after", "spectrum_before", "spectrum_flossed",
                                                         "spectrum_after")})
    s["run_dir"] = str(run.path)
    from neurorate.io.plots import learning_curve

    if len(result.losses):
        atomic_write(run.path / "learning_curve.png", lambda tmp: learning_curve([result], tmp))
    run.write_json("result.json", s)


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
