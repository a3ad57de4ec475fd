"""Exception types of neurorate.

Every error that a user can cause (bad option, bad file, missing extra) is a :class:`NeurorateError`;
the CLI prints its message on one line and exits with code 2. Anything else is a bug and keeps its traceback.
:func:`as_int` and :func:`as_real` turn an argument of the wrong type (a bool or a string where a number belongs)
into such a line.
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


def _kind(value) -> str:
    """How a refused value is named: ``'10' (a string)``, ``True (a bool)``."""
    what = {bool: "a bool", str: "a string", bytes: "bytes", type(None): "None"}.get(type(value))
    text = f"{value!r:.60}"
    return text if what is None or what == "None" else f"{text} ({what})"


def _scalar(value):
    """A 0-d numpy array as its element (anything else unchanged)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def as_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` for the argument ``name``, or a one-line :class:`NeurorateError`.

    An integer (Python, numpy, or a float with an integral value such as ``2.0``) is accepted; a bool is not an
    integer (``iterations=True`` is refused, not taken as 1), and neither is a string (``"10"``) or None."""
    import math
    import numbers

    value = _scalar(value)
    bound = "a non-negative" if minimum == 0 else "a positive" if minimum == 1 else "an"
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or int(value) != value:
        raise NeurorateError(f"{name} must be {bound} integer, got {_kind(value)}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise NeurorateError(f"{name} must be {bound} integer{'' if minimum in (0, 1) else f' >= {minimum}'}, "
                             f"got {out}")
    if maximum is not None and out > maximum:
        raise NeurorateError(f"{name} must be at most {maximum}, got {out}")
    return out


def as_real(value, name: str) -> float:
    """``value`` as a ``float`` for the argument ``name``, or a one-line :class:`NeurorateError`: a number (Python
    or numpy; not a bool, a string or None). Range checks are the caller's."""
    import numbers

    value = _scalar(value)
    if isinstance(value, bool) or type(value).__name__ == "bool_" or not isinstance(value, numbers.Real):
        raise NeurorateError(f"{name} must be a number, got {_kind(value)}")
    return float(value)
