"""The ``neurorate`` command line: :mod:`~neurorate.cli.app` holds the application and ``run``; each other
command group has a module of its own (``lyapunov``, ``nir``, ``profiles``, ``study``)."""

from neurorate.cli.app import app, main

__all__ = ["app", "main"]
