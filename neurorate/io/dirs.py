"""What neurorate owns on disk, and how it knows: markers, locks, liveness and whole-file writes.

neurorate deletes or writes into an existing directory only when it can prove the directory is its own and no
process is using it (docs/cli.md, "What happens when something goes wrong"):

* **Markers.** A run directory's ``result.json`` carries ``"format": "neurorate-run"``, the format version, the
  run's id and the process that made it (pid, host, process start). An ensemble's directory holds
  ``ensemble.json`` (``"format": "neurorate-ensemble"``) beside its ``net-XXX/`` runs; a spectrum directory of
  ``neurorate lyapunov`` has ``"format": "neurorate-lyapunov"`` in its ``lyapunov.json``; a study directory has
  ``"format": "neurorate-study"`` in its ``config.json``. A file name alone never makes a directory neurorate's.
* **Locks.** A run (the ensemble's directory for an ensemble) and a study hold an exclusive ``fcntl.flock`` on
  ``DIR/.lock`` while they run. The kernel releases it when the process ends, however it ends, so "is anyone
  using this directory?" has a reliable answer on this host: :func:`lock_held`.
* **Liveness.** A run whose ``result.json`` still says ``running`` but whose lock is free (or, for a directory
  without a lock file, whose recorded process is gone) is ``stale``: :func:`run_state`.
* **Whole files.** :func:`atomic_write` writes under a unique temporary name, flushes it to disk (``fsync``)
  and renames it onto the target, with the permissions of any other file the process creates (the umask), so a
  file that exists is complete and colleagues can read it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from neurorate.errors import NeurorateError

FORMAT_VERSION = 1
"""The version of the on-disk formats below (written beside each marker)."""

RUN_FORMAT = "neurorate-run"
ENSEMBLE_FORMAT = "neurorate-ensemble"
LYAPUNOV_FORMAT = "neurorate-lyapunov"
STUDY_FORMAT = "neurorate-study"

RUN_FILES = frozenset({"config.json", "environment.json", "metrics.jsonl", "spec_initial.npz", "spec_flossed.npz",
                       "spec_final.npz", "lyapunov.json", "result.json", "learning_curve.png", ".lock"})
"""Every name a run directory of this version holds (besides temporary files of an interrupted write)."""

LYAPUNOV_FILES = frozenset({"lyapunov.json", "spectrum.png", ".lock"})
NET_DIR = re.compile(r"net-\d{3,}")


class OutputError(NeurorateError):
    """A file or directory neurorate writes could not be written (disk full, permission lost, quota): the
    message names the path and the system's reason."""


def write_failure(path: str | Path, exc: OSError) -> OutputError:
    """An :class:`OutputError` for ``exc`` raised while writing ``path``: "cannot write PATH: REASON"."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OutputError(f"cannot write {path}: {reason}")


# ---------------------------------------------------------------------- whole files
def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`atomic_write` (or of an earlier version's) left by an interrupted write."""
    return name.startswith(".") and (".tmp" in name or name.startswith(".neurorate-write-test-"))


def atomic_write(target: str | Path, write) -> Path:
    """Call ``write(tmp_path)``, flush the file to disk and rename it onto ``target``.

    The temporary file has a unique name in ``target``'s directory (two writers never share one) and the
    permissions of an ordinary new file (``0666`` less the umask, not ``mkstemp``'s ``0600``). A reader sees the
    old file or the new one, never a half-written one. An ``OSError`` (disk full, permission) leaves no temporary
    file behind and is raised as :class:`OutputError` naming ``target``.
    """
    target = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    except OSError as exc:
        raise write_failure(target, exc) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failure(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


def write_in_place(target: str | Path, text: str) -> None:
    """Overwrite a small file in place (truncate, write, fsync): the last resort for recording a failure when
    the disk is full and no temporary file can be created (the truncation frees the blocks the write needs)."""
    with open(target, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------- processes and locks
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, with the boot's id): unique on this host, so a
    recycled pid is not mistaken for the process that wrote a file. None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def process_identity() -> dict[str, Any]:
    """This process as a marker records it: ``pid``, ``host``, ``process_start`` and ``started`` (local time)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def process_alive(record: dict) -> bool | None:
    """Is the process a marker recorded still running? True/False on this host; None when it ran on another
    host (nothing here can tell)."""
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    if record.get("host") not in (None, socket.gethostname()):
        return None
    pid = record["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except OSError:
        return None
    start = record.get("process_start")
    return start is None or _process_start(pid) in (None, start)


def lock_held(lock_file: str | Path) -> bool | None:
    """Does a live process hold the ``flock`` on ``lock_file``? None when there is no such file."""
    import fcntl

    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def describe_holder(record: dict | str | None) -> str:
    """"pid 123 on host, started 2026-12-07T10:00:00+0000" from a lock file's or marker's record."""
    if isinstance(record, str):
        return record.strip() or "another process"
    if not isinstance(record, dict) or "pid" not in record:
        return "another process"
    return f"pid {record['pid']} on {record.get('host', '?')}, started {record.get('started', '?')}"


def read_holder(lock_file: str | Path) -> dict | str | None:
    """What a lock file says about its holder (a dict of :func:`process_identity`, or the text of an older
    lock file)."""
    try:
        text = Path(lock_file).read_text()
    except OSError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


class DirLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``DIR/.lock`` (``DIR`` must exist).

    The lock file records the holder (:func:`process_identity`, one JSON object). A second holder fails at once
    with one line naming the first (``what`` says what holds it: "a run", "another study"). The kernel releases
    the lock when the holder exits, however it exits (SIGKILL included), so a stale lock file never blocks anyone.
    """

    def __init__(self, directory: str | Path, what: str = "another process", hint: str = "choose another --out"):
        self.path = Path(directory) / ".lock"
        self.what, self.hint = what, hint
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise write_failure(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = describe_holder(read_holder(self.path))
            raise NeurorateError(f"{self.path.parent} is in use by {self.what} ({holder}); wait for it to end or "
                                 f"{self.hint}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(process_identity()) + "\n").encode(), 0)
        except OSError:  # a full disk: the lock itself holds, only its note of the holder is missing
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------- what a directory is
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def new_run_marker(iterations: int | None = None) -> dict[str, Any]:
    """The ``result.json`` a run directory starts with: the marker, a fresh run id and this process."""
    return {"format": RUN_FORMAT, "format_version": FORMAT_VERSION, "run_id": uuid.uuid4().hex,
            "status": "running", "iterations": iterations, **process_identity()}


def is_run_marker(obj: Any) -> bool:
    """Is ``obj`` (a parsed ``result.json``) the marker of a neurorate run directory?"""
    return isinstance(obj, dict) and obj.get("format") == RUN_FORMAT and isinstance(obj.get("run_id"), str)


def lock_file_of(run_dir: str | Path) -> Path | None:
    """The lock file that guards a run directory: its own ``.lock``, or its ensemble's (``net-XXX/``'s parent)."""
    run_dir = Path(run_dir)
    own = run_dir / ".lock"
    if own.exists():
        return own
    if NET_DIR.fullmatch(run_dir.name) and (run_dir.parent / ".lock").exists():
        return run_dir.parent / ".lock"
    return None


def run_alive(run_dir: str | Path, result: dict) -> bool | None:
    """Is the process that writes the run directory ``run_dir`` (whose ``result.json`` is ``result``) alive?
    The lock decides when there is one; otherwise the recorded process (None: it ran on another host)."""
    lock = lock_file_of(run_dir)
    if lock is not None:
        held = lock_held(lock)
        if held is not None:
            return held
    return process_alive(result)


def run_state(run_dir: str | Path, result: dict | None = None) -> dict:
    """``result.json`` of ``run_dir`` with its status as it is now: a run recorded as ``running`` whose process
    is gone (killed, machine rebooted) reads ``"stale"`` (with ``"recorded_status": "running"``). An unreadable
    file reads ``{"status": "unreadable", "error": ...}``."""
    run_dir = Path(run_dir)
    if result is None:
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except FileNotFoundError:
            return {"status": "unreadable", "error": "no result.json"}
        except (OSError, ValueError) as exc:
            return {"status": "unreadable", "error": f"result.json: {exc}"}
    if not isinstance(result, dict):
        return {"status": "unreadable", "error": "result.json is not a JSON object"}
    if result.get("status") == "running" and run_alive(run_dir, result) is False:
        return {**result, "status": "stale", "recorded_status": "running"}
    return result


def _foreign(entries: list[Path], allowed: frozenset[str]) -> list[str]:
    return sorted(p.name for p in entries if p.name not in allowed and not _is_temporary(p.name))


def classify(path: str | Path) -> tuple[str, str]:
    """What the existing directory ``path`` is, as (kind, detail): ``"empty"``, ``"run"``, ``"ensemble"``,
    ``"lyapunov"``, ``"study"`` or ``"foreign"`` (detail: why it is not neurorate's, or what else it holds)."""
    path = Path(path)
    entries = list(path.iterdir())
    names = {p.name for p in entries}
    if not entries or names == {".lock"}:
        return "empty", ""
    config = _read_json(path / "config.json") if "config.json" in names else None
    if (isinstance(config, dict) and (config.get("format") == STUDY_FORMAT or "digest" in config)) or \
            "manifest.json" in names:
        return "study", "a study directory (config.json, manifest.json, results/)"
    if "result.json" in names:
        result = _read_json(path / "result.json")
        if not is_run_marker(result):
            return "foreign", "its result.json carries no neurorate run marker (written by another program or an " \
                              "older neurorate)"
        other = _foreign(entries, RUN_FILES)
        return ("foreign", f"it also holds files neurorate did not write ({', '.join(other[:5])})") if other else \
            ("run", result.get("status", "?"))
    if "ensemble.json" in names:
        marker = _read_json(path / "ensemble.json")
        if not (isinstance(marker, dict) and marker.get("format") == ENSEMBLE_FORMAT):
            return "foreign", "its ensemble.json carries no neurorate marker"
        nets = [p for p in entries if p.is_dir() and NET_DIR.fullmatch(p.name)]
        other = _foreign([p for p in entries if p not in nets], frozenset({"ensemble.json", ".lock"}))
        if other:
            return "foreign", f"it also holds files neurorate did not write ({', '.join(other[:5])})"
        for net in nets:
            kind, detail = classify(net)
            if kind not in ("run", "empty"):
                return "foreign", f"{net.name}/: {detail}"
        return "ensemble", f"{len(nets)} networks"
    if "lyapunov.json" in names:
        record = _read_json(path / "lyapunov.json")
        if not (isinstance(record, dict) and record.get("format") == LYAPUNOV_FORMAT):
            return "foreign", "its lyapunov.json carries no neurorate marker"
        other = _foreign(entries, LYAPUNOV_FILES)
        return ("foreign", f"it also holds files neurorate did not write ({', '.join(other[:5])})") if other else \
            ("lyapunov", "")
    shown = sorted(p.name for p in entries if not _is_temporary(p.name))
    more = f", and {len(shown) - 5} more" if len(shown) > 5 else ""
    return "foreign", f"it holds files neurorate did not write ({', '.join(shown[:5])}{more}) and no neurorate marker"


def live_runs(path: str | Path) -> list[str]:
    """The holders of live runs inside the run or ensemble directory ``path`` (empty: none is running)."""
    path = Path(path)
    held = lock_held(path / ".lock")
    if held:
        return [describe_holder(read_holder(path / ".lock"))]
    found = []
    for d in [path, *sorted(p for p in path.iterdir() if p.is_dir() and NET_DIR.fullmatch(p.name))]:
        result = _read_json(d / "result.json")
        if isinstance(result, dict) and result.get("status") == "running" and run_alive(d, result) is not False:
            found.append(describe_holder(result))
    return found


def inside(path: str | Path, other: str | Path) -> bool:
    """Is ``other`` the directory ``path`` or somewhere below it?"""
    p, o = Path(path).resolve(), Path(other).resolve()
    return p == o or p in o.parents


def check_replaceable(path: str | Path, option: str = "out", kinds: tuple[str, ...] = ("run", "ensemble")) -> str:
    """Why ``--overwrite`` may not replace the existing directory ``path`` (a one-line :class:`NeurorateError`),
    or its kind: only a directory neurorate made (a marked run, ensemble or spectrum directory of ``kinds``, with
    nothing else in it) that no live process uses, that is not the current directory or above it, and not a link."""
    path = Path(path)
    head = f"--overwrite: {path}"
    if path.is_symlink():
        raise NeurorateError(f"{head} is a symbolic link; give the directory itself")
    if inside(path, Path.cwd()):
        raise NeurorateError(f"{head} is the current directory or contains it; neurorate never replaces it "
                             f"(choose another --{option})")
    kind, detail = classify(path)
    if kind == "study":
        raise NeurorateError(f"{head} is {detail}; --overwrite replaces only run directories (remove the study "
                             f"yourself, or choose another --{option})")
    if kind not in kinds and kind != "empty":
        why = detail if kind == "foreign" else f"a {kind} directory"
        raise NeurorateError(f"{head} is not a directory neurorate can replace here: {why}; not replacing it")
    holders = live_runs(path) if kind in ("run", "ensemble") else []
    if holders:
        raise NeurorateError(f"{head} holds a run that is still running ({holders[0]}); wait for it to end or "
                             f"choose another --{option}")
    return kind


def clear_directory(path: str | Path) -> None:
    """Delete everything in ``path`` but its ``.lock`` (the caller holds that lock)."""
    for p in Path(path).iterdir():
        if p.name == ".lock":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
