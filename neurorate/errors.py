"""Exception types of neurorate.

Every error that a user can cause (bad option, bad file, missing extra) is a :class:`NeurorateError`;
the CLI prints its message on one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NeurorateError(ValueError):
    """A user-facing error: the message says what was wrong and what to do."""


class SpecError(NeurorateError):
    """An invalid network specification (shapes, form, activation, alpha ...)."""


class FileFormatError(NeurorateError):
    """A saved spec, run or profile file that is missing, truncated or malformed."""


class MissingExtraError(NeurorateError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{what}: install the '{extra}' extra, "
            f"e.g. `bash scripts/setup.sh` or `pip install 'neurorate[{extra}]'`"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str = ""):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
