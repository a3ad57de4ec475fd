"""SIGTERM and SIGHUP end a command like Ctrl-C.

A cluster's time limit (SLURM sends SIGTERM), ``timeout``, ``kill`` and a closed terminal (SIGHUP) are the usual
ends of a long run. The command line installs :func:`install` so that each raises :class:`Stopped`, a
``KeyboardInterrupt``: everything that keeps a partial result on Ctrl-C (a run's ``result.json`` with status
``interrupted``, a study's finished ensembles) does the same for them, and the process exits with the shell's
code for the signal, ``128 + signum`` (:func:`exit_code`: 143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C).
"""

from __future__ import annotations

import signal
import threading

HANDLED = ("SIGTERM", "SIGHUP")


class Stopped(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP (``signum``)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = signum


def signal_name(signum: int) -> str:
    """"SIGTERM" for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _raise(signum, _frame) -> None:
    raise Stopped(signum)


def install() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Stopped` (from the main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in HANDLED:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, _raise)


def cause(exc: BaseException | None) -> str:
    """What stopped a command: "SIGTERM", "SIGHUP" or "Ctrl-C" (any other ``KeyboardInterrupt``)."""
    signum = getattr(exc, "signum", None)
    return signal_name(signum) if signum is not None else "Ctrl-C"


def exit_code(exc: BaseException | None) -> int:
    """The exit code for a command ended by ``exc``: ``128 + signum`` for :class:`Stopped`, 130 for Ctrl-C."""
    signum = getattr(exc, "signum", None)
    return 128 + int(signum) if signum is not None else 130
