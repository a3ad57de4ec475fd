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

    .lock              held (``fcntl.flock``) while the run writes (the ensemble's directory holds it for an ensemble)

For an ensemble (several networks in one call) each network gets ``net-000/``, ``net-001/``, ... inside, beside
``ensemble.json`` (the ensemble's marker).

The directory is claimed (:func:`claim_out_dir`) by taking its lock, then ``result.json`` is created exclusively
with ``"status": "running"`` and the run marker (format, run id, pid, host, process start; two runs can never
share a directory), then rewritten with the final status: ``ok``, ``diverged`` (:func:`neurorate.training.
divergence_iteration`, with ``diverged_at``), ``interrupted`` (Ctrl-C, SIGTERM or SIGHUP: the metrics so far, no
final spec, the signal in ``stopped_by``) or ``failed`` (an error, named in ``error``). A run recorded as
``running`` whose process is gone reads ``stale`` (:func:`neurorate.io.dirs.run_state`). Every other file is
written under a temporary name, flushed and renamed when complete, so a file that exists is whole;
``metrics.jsonl`` is appended one whole line per iteration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.errors import FileFormatError, NeurorateError
from neurorate.io import dirs
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
    alignment : with ``grad_alignment_every``, ``{"iteration": (K,), field: (K,)}``: the alignment of the rule's
        update with the exact gradient on the iterations measured (:data:`neurorate.analysis.alignment.FIELDS`;
        also in those lines of ``metrics.jsonl``); None otherwise.
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
    record: dict | None = None
    alignment: dict | None = None

    @property
    def status(self) -> str:
        """"ok", "diverged" or "interrupted" (a partial result: ``losses`` holds the iterations done); for a run
        read back by :func:`load_run`, its status as it is now (also "failed", "running" or "stale")."""
        if self.record is not None and isinstance(self.record.get("status"), str):
            return self.record["status"]
        if self.interrupted:
            return "interrupted"
        return "diverged" if self.diverged else "ok"

    @property
    def finished(self) -> bool:
        """The run trained to its end (status "ok" or "diverged"): ``spec`` is its trained network."""
        return self.status in ("ok", "diverged")

    def __getitem__(self, key: str):
        """``result["summary"]`` (``result.json`` as :func:`load_run` read it, status as it is now), ``["config"]``
        and ``["spec"]`` (the final network, None for a run that did not finish): the dictionary view older code
        reads."""
        if key == "summary":
            return self.record if self.record is not None else self.summary()
        if key == "config":
            return self.config
        if key == "spec":
            return self.spec if self.finished else None
        raise KeyError(key)

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean loss over the last ``fraction`` of iterations (NaN if diverged or interrupted)."""
        if self.diverged or not self.finished or len(self.losses) == 0:
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
    """Ctrl-C (or SIGTERM/SIGHUP in the command line) during :func:`neurorate.train` after the partial result was
    written; ``str()`` says what was kept, ``signum`` is the signal (None for Ctrl-C)."""

    def __init__(self, message: str = "", signum: int | None = None):
        super().__init__(message)
        self.signum = signum


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


def _check_creatable(path: Path, option: str) -> None:
    """Prove, leaving nothing behind, that the missing directory ``path`` can be created: its nearest existing
    ancestor is a directory in which a directory can be made (and is removed again)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NeurorateError(f"--{option} {path}: {parent} is not a directory")
    try:
        Path(tempfile.mkdtemp(dir=parent, prefix=".neurorate-write-test-")).rmdir()
    except OSError as exc:
        raise NeurorateError(f"cannot write to output directory {path}: cannot create it in {parent} "
                             f"({exc.strerror or exc})") from None


def check_out_dir(out: str | Path, overwrite: bool = False, option: str = "out",
                  kinds: tuple[str, ...] = ("run", "ensemble")) -> Path:
    """Check, without writing anything (a directory that must be made is made and removed again to prove it
    can be), that ``out`` can become a run directory.

    ``out`` must not exist or be an empty directory. With ``overwrite`` an existing directory that neurorate made
    is accepted (:func:`neurorate.io.dirs.check_replaceable`: a marked run or ensemble directory, ``kinds``,
    holding nothing else, whose run is not alive, that is neither the current directory nor above it) and
    :func:`claim_out_dir` replaces it whole. Anything else is a one-line :class:`NeurorateError` (``option``
    names the option in it).
    """
    if out is None or str(out).strip() == "":
        raise NeurorateError(f"--{option} must name a directory, got an empty path")
    path = Path(out).expanduser()
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise NeurorateError(f"--{option} {path} exists and is not a directory")
        try:
            kind, _ = dirs.classify(path)
        except OSError as exc:
            raise NeurorateError(f"cannot read output directory {path}: {exc.strerror or exc}") from None
        if kind != "empty":
            if not overwrite:
                raise NeurorateError(f"output directory {path} is not empty; choose a new --{option}, or pass "
                                     "--overwrite to replace a run neurorate wrote there")
            dirs.check_replaceable(path, option, kinds)
        elif not os.access(path, os.W_OK | os.X_OK):
            raise NeurorateError(f"cannot write to output directory {path}: permission denied")
    else:
        _check_creatable(path, option)
    return path


def open_out_dir(out: str | Path, overwrite: bool = False, option: str = "out",
                 kinds: tuple[str, ...] = ("run", "ensemble")) -> Path:
    """:func:`check_out_dir`, then create the directory (its contents replaced with ``overwrite``); for a
    directory written at once and not held while a process runs (``neurorate lyapunov``). A run uses
    :func:`claim_out_dir`, which also locks it."""
    path, lock = claim_out_dir(out, overwrite, option, kinds=kinds)
    lock.release()
    return path


def claim_out_dir(out: str | Path, overwrite: bool = False, option: str = "out", ensemble: bool = False,
                  kinds: tuple[str, ...] = ("run", "ensemble")) -> tuple[Path, dirs.DirLock]:
    """Create ``out`` and take its lock (:class:`neurorate.io.dirs.DirLock`) for a run: returns the path and the
    held lock (release it when the run has ended). With ``overwrite`` the directory's contents are deleted only
    after its lock is held and it was checked again under the lock (a second process can neither replace a run
    that is writing nor be replaced while it writes). ``ensemble``: mark it as the directory of an ensemble
    (``ensemble.json``; the networks go to ``net-XXX/``)."""
    path = check_out_dir(out, overwrite, option, kinds)
    path = prepare_out_dir(path)
    lock = dirs.DirLock(path, "a running run", f"choose another --{option}").acquire()
    try:
        kind, detail = dirs.classify(path)
        if kind != "empty":
            if not overwrite:
                raise NeurorateError(f"output directory {path} is not empty; choose a new --{option}, or pass "
                                     "--overwrite to replace a run neurorate wrote there")
            if kind not in kinds:  # it changed between the check and the lock
                raise NeurorateError(f"--overwrite: {path} is not a directory neurorate can replace here "
                                     f"({detail}); not replacing it")
            dirs.clear_directory(path)
        if ensemble:
            dirs.atomic_write_bytes(path / "ensemble.json", json.dumps(
                {"format": dirs.ENSEMBLE_FORMAT, "format_version": dirs.FORMAT_VERSION,
                 **dirs.process_identity()}, indent=2).encode())
    except BaseException:
        lock.release()
        raise
    return path, lock


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


atomic_write = dirs.atomic_write  # one whole-file write for the package (fsync, group-readable, no temporaries)


class RunDirectory:
    """Writes one network's run directory incrementally (metrics are appended as training goes).

    Creating it claims the directory: ``result.json`` is created exclusively with ``"status": "running"`` and
    the run marker (:func:`neurorate.io.dirs.new_run_marker`: format, run id, pid, host, process start; every
    later ``result.json`` keeps them), and ``metrics.jsonl`` starts empty. A second writer gets a one-line error.

    ``metrics.jsonl`` only ever holds whole lines: each line is one ``write``; a write that fails (disk full,
    quota, permission lost) is cut back to the last whole line and raised as
    :class:`~neurorate.io.dirs.OutputError`. The file is flushed to disk (``fsync``) at least every
    :attr:`SYNC_EVERY` seconds and when it is closed.
    """

    SYNC_EVERY = 30.0

    def __init__(self, path: str | Path, iterations: int | None = None):
        self.path = prepare_out_dir(path)
        self.marker = dirs.new_run_marker(iterations)
        try:
            fd = os.open(self.path / "result.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise NeurorateError(f"output directory {self.path} already holds a run (result.json exists)") from None
        except OSError as exc:
            raise dirs.write_failure(self.path / "result.json", exc) from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.marker, indent=2))
            self.metrics_path = self.path / "metrics.jsonl"
            self._fd = os.open(self.metrics_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        except OSError as exc:
            raise dirs.write_failure(self.path, exc) from None
        self._size, self.lines = 0, 0
        self._last_sync = time.monotonic()

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as pretty JSON (atomically: a killed run never leaves a half-written file)."""
        text = json.dumps(obj, indent=2, default=_json_default)
        return atomic_write(self.path / name, lambda tmp: tmp.write_text(text))

    def write_result(self, summary: dict[str, Any]) -> Path:
        """Write ``result.json``: ``summary`` with the run marker (its ``status`` replaces ``running``)."""
        return self.write_json("result.json", {**self.marker, **summary})

    def save_spec(self, name: str, spec) -> Path:
        """Save a spec (or anything with ``save(path)``) under ``name``, atomically."""
        return atomic_write(self.path / name, lambda tmp: spec.save(tmp))

    def set_status(self, status: str, **fields: Any) -> Path:
        """Rewrite ``result.json`` with ``status`` and ``fields`` (used for "failed" and "interrupted"). When no
        temporary file can be made (a full disk), ``result.json`` is rewritten in place."""
        obj = {**self.marker, "status": status, **fields, "run_dir": str(self.path)}
        try:
            return self.write_json("result.json", obj)
        except dirs.OutputError:
            dirs.write_in_place(self.path / "result.json", json.dumps(obj, indent=2, default=_json_default))
            return self.path / "result.json"

    def append_metrics(self, iteration: int, loss: float, accuracy: float, **extra: float) -> None:
        """Append one metrics line (whole, or not at all)."""
        row = {"iteration": int(iteration), "loss": _finite_or_none(loss), "accuracy": _finite_or_none(accuracy)}
        row.update({k: _finite_or_none(v) for k, v in extra.items()})
        data = (json.dumps(row) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)  # never leave a partial line
            except OSError:
                pass
            raise dirs.write_failure(self.metrics_path, exc) from None
        self._size += len(data)
        self.lines += 1
        if time.monotonic() - self._last_sync > self.SYNC_EVERY:
            self.sync()

    def catch_up(self, losses, accuracy) -> None:
        """After an interrupt: close ``metrics.jsonl`` holding exactly one whole line per iteration of ``losses``
        (a signal can land between an iteration's record in memory and its line on disk, or inside the write):
        a partial last line is cut, lines beyond ``len(losses)`` are dropped, missing ones are written."""
        self.close()
        data = self.metrics_path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        lines = whole.splitlines(keepends=True)[: len(losses)]
        extra = [json.dumps({"iteration": k, "loss": _finite_or_none(losses[k]),
                             "accuracy": _finite_or_none(accuracy[k])}) + "\n" for k in range(len(lines), len(losses))]
        text = b"".join(lines) + "".join(extra).encode()
        if text != data:
            with open(self.metrics_path, "r+b") as fh:
                fh.truncate(0)
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        self.lines = len(losses)

    def sync(self) -> None:
        """Flush ``metrics.jsonl`` to disk (a checkpoint: what it holds survives a power cut)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise dirs.write_failure(self.metrics_path, exc) from None
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush and close the metrics file (a failing flush is raised after the file is closed)."""
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = None


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


def write_final(run: RunDirectory, result: TrainResult, stopped_by: str | None = None) -> None:
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
    if result.interrupted and stopped_by is not None:
        s["stopped_by"] = stopped_by
    run.write_result(s)


def load_run(path: str | Path) -> TrainResult:
    """Read a run directory back as a :class:`TrainResult` (one-line :class:`FileFormatError` if malformed).

    ``losses``/``accuracy`` come from ``metrics.jsonl`` (its whole lines), the networks from ``spec_initial.npz``,
    ``spec_flossed.npz`` and ``spec_final.npz``, the spectra from ``lyapunov.json``, the rest from ``result.json``
    and ``config.json``. ``status`` is the status as it is now (:func:`neurorate.io.dirs.run_state`: a run
    recorded as ``running`` whose process is gone reads ``stale``), ``record`` the ``result.json`` it read. For a
    run that did not finish (``interrupted``, ``failed``, ``stale``, ``running``) ``spec`` is its initial network
    and ``finished`` is False. The result is a start for :func:`neurorate.train` (its ``spec``), and
    ``result["summary"]``, ``result["config"]`` and ``result["spec"]`` read as the dictionary older versions
    returned.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileFormatError(f"{path}: not a run directory")
    if not (path / "result.json").exists() and (path / "ensemble.json").exists():
        nets = sorted(p.name for p in path.iterdir() if dirs.NET_DIR.fullmatch(p.name))
        raise FileFormatError(f"{path}: the directory of an ensemble; load one of its runs ({', '.join(nets[:3])}"
                              f"{', ...' if len(nets) > 3 else ''})")
    try:
        summary = json.loads((path / "result.json").read_text())
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError as exc:
        raise FileFormatError(f"{path}: incomplete run directory (missing {Path(exc.filename).name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: malformed JSON ({exc})") from None
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(summary, dict) or not isinstance(config, dict):
        raise FileFormatError(f"{path}: malformed run directory (result.json and config.json must be JSON objects)")
    summary = dirs.run_state(path, summary)
    initial = NetworkSpec.load(path / "spec_initial.npz")
    final = path / "spec_final.npz"
    spec = NetworkSpec.load(final) if final.exists() and summary.get("status") in ("ok", "diverged") else initial
    flossed = NetworkSpec.load(path / "spec_flossed.npz") if (path / "spec_flossed.npz").exists() else None
    losses, accuracy = read_metrics(path / "metrics.jsonl")
    lya = {}
    if (path / "lyapunov.json").exists():
        try:
            lya = json.loads((path / "lyapunov.json").read_text())
        except (OSError, ValueError):
            lya = {}
    lya = lya if isinstance(lya, dict) else {}
    num = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None  # noqa: E731
    arr = lambda v: None if not isinstance(v, list) else np.array([np.nan if x is None else x for x in v],  # noqa: E731
                                                                  dtype=float)
    floss = summary.get("floss_losses")
    return TrainResult(
        losses=losses, accuracy=accuracy, spec=spec, spec_initial=initial,
        rule=str(summary.get("rule", config.get("rule", "?"))), backend=str(summary.get("backend", "?")),
        lr=num(summary.get("lr", config.get("lr"))) or math.nan, optimizer=str(config.get("optimizer", "?")),
        iterations=int(num(summary.get("iterations", config.get("iterations"))) or len(losses)),
        diverged=summary.get("status") == "diverged", diverged_at=summary.get("diverged_at"),
        wall_time=num(summary.get("wall_time_s")) or 0.0, spec_flossed=flossed, floss_losses=arr(floss),
        lambda_max_before=num(lya.get("lambda_max_before")), lambda_max_flossed=num(lya.get("lambda_max_flossed")),
        lambda_max_after=num(lya.get("lambda_max_after")), spectrum_before=arr(lya.get("spectrum_before")),
        spectrum_flossed=arr(lya.get("spectrum_flossed")), spectrum_after=arr(lya.get("spectrum_after")),
        lyapunov_unit=lya.get("lyapunov_unit"), config=config, run_dir=path,
        interrupted=summary.get("status") == "interrupted", record=summary)


def load_start(path: str | Path) -> NetworkSpec:
    """The network a new run starts from (``neurorate run --init``, ``neurorate lyapunov --spec``): a spec file
    (``.npz``) as it is, or a finished run directory's trained network (``spec_final.npz``). A run that did not
    finish, an ensemble's directory or anything else is a one-line :class:`FileFormatError`."""
    path = Path(path).expanduser()
    if path.is_dir():
        from neurorate.training import start_specs

        try:
            return start_specs(load_run(path))
        except NeurorateError as exc:
            raise FileFormatError(str(exc)) from None
    if not path.exists():
        raise FileFormatError(f"{path}: no such spec file or run directory")
    return NetworkSpec.load(path)


def read_metrics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(losses, accuracy)`` from a run's ``metrics.jsonl``: its whole lines in order (null reads NaN; a last line
    without its newline, from a process killed mid-write by an older version, is left out)."""
    losses: list[float] = []
    accuracy: list[float] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return np.zeros(0), np.zeros(0)
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"cannot read {path}: {exc}") from None
    lines = text.split("\n")[:-1]  # the part after the last newline is not a whole line
    for k, line in enumerate(lines):
        try:
            row = json.loads(line)
            losses.append(math.nan if row["loss"] is None else float(row["loss"]))
            accuracy.append(math.nan if row.get("accuracy") is None else float(row["accuracy"]))
        except (ValueError, KeyError, TypeError):
            raise FileFormatError(f"{path}: line {k + 1} is not a metrics record") from None
    return np.array(losses, dtype=float), np.array(accuracy, dtype=float)


RUN_ROW_FIELDS = ("run", "status", "task", "rule", "backend", "profile", "gain", "seed", "lr", "iterations_done",
                  "iterations", "final_loss", "final_accuracy", "started", "error")
"""The fields of one row of :func:`list_runs` (``neurorate runs --json``)."""


def find_run_dirs(root: str | Path, max_depth: int = 6, max_entries: int = 200_000) -> list[Path]:
    """Every run directory (a directory holding ``result.json``) at most ``max_depth`` levels below ``root``,
    ``root`` included, in path order. Links are not followed; at most ``max_entries`` entries are looked at."""
    root = Path(root)
    found: list[Path] = []
    seen = 0
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        path, depth = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue
        seen += len(entries)
        if any(e.name == "result.json" and e.is_file(follow_symlinks=False) for e in entries):
            found.append(path)
        if depth < max_depth and seen < max_entries:
            stack.extend((Path(e.path), depth + 1) for e in entries
                         if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    return sorted(found)


def run_row(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """One run directory as a row of :data:`RUN_ROW_FIELDS` (status as it is now: ``stale`` for a run whose
    process is gone; ``unreadable`` with ``error`` for a directory whose files cannot be read)."""
    path = Path(path)
    name = str(path.relative_to(root)) if root is not None and path != Path(root) else str(path)
    row: dict[str, Any] = dict.fromkeys(RUN_ROW_FIELDS)
    row["run"] = name
    state = dirs.run_state(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    task = config.get("task")
    num = lambda v: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None  # noqa: E731
    row.update(
        status=str(state.get("status", "?")), task=task.get("name") if isinstance(task, dict) else None,
        rule=state.get("rule", config.get("rule")), backend=state.get("backend", config.get("backend")),
        profile=config.get("profile"), gain=num(state.get("gain")), seed=num(state.get("seed")),
        lr=num(state.get("lr", config.get("lr"))), iterations_done=num(state.get("iterations_done")),
        iterations=num(state.get("iterations", config.get("iterations"))),
        final_loss=num(state.get("final_loss")), final_accuracy=num(state.get("final_accuracy")),
        started=state.get("started"), error=state.get("error"))
    if row["gain"] is None and isinstance(config.get("network"), dict):
        init = config["network"].get("init") or {}
        row["gain"], row["seed"] = num(init.get("gain")), num(init.get("seed"))
    if row["iterations_done"] is None and row["status"] in ("running", "stale"):
        try:  # the metrics written so far: one whole line per iteration
            with open(path / "metrics.jsonl", "rb") as fh:
                row["iterations_done"] = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except OSError:
            pass
    return row


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """The run directories below ``root`` (:func:`find_run_dirs`) as rows (:func:`run_row`), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise NeurorateError(f"{root}: no such directory (neurorate run writes to runs/ unless given --out)")
    rows = [run_row(p, root) for p in find_run_dirs(root)]
    return sorted(rows, key=lambda r: (str(r["started"] or ""), r["run"]))
