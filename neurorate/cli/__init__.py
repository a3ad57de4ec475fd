"""The ``neurorate`` command line: :mod:`~neurorate.cli.app` holds the application and ``run``; each other
command group has a module of its own (``lyapunov``, ``nir``, ``profiles``, ``runs``, ``study``, ``tasks``).

:func:`main` is the script's entry point. It imports the application itself, so that a Ctrl-C while the
libraries load (typer, numpy, the command modules: about a second) is one line and exit code 130, as everywhere
else in the command line, instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``neurorate`` script (:func:`neurorate.cli.app.main` once the application is loaded)."""
    try:
        from neurorate.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting; nothing was run\n")
        sys.exit(130)
    run(argv)


def __getattr__(name: str) -> Any:
    if name == "app":
        from neurorate.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
