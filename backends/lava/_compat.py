"""Make lava-nc 0.10.0 importable on Python 3.11 without touching site-packages.

lava-nc 0.10.0 declares Python < 3.11. On 3.11 exactly one module fails to import, and with it every
process/runtime module that depends on it:

1. ``lava.magma.compiler.var_model`` declares dataclasses (``CoreEncoder``, ``ChipEncoder``,
   ``AxonEncoder``) whose fields default to ``ByteEncoder()`` *instances*. Since Python 3.11,
   :mod:`dataclasses` rejects any default whose class is unhashable (every ``@dataclass`` with ``eq=True``
   and no ``frozen``) with ``ValueError: mutable default <class ...ByteEncoder> for field x is not
   allowed``. The fix here: while (and only while) that module is first imported,
   ``dataclasses.dataclass`` is replaced by a wrapper that turns each such class-level default into
   ``field(default_factory=<a copy of it>)``; the original decorator is restored in ``finally``. Each
   encoder instance then owns its own ``ByteEncoder`` instead of sharing one; these encoders are only used
   by the Loihi-hardware compiler path, never by the CPU simulation.
2. ``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
   ``multiprocessing.set_start_method('fork')`` at import time, which raises ``RuntimeError: context has
   already been set`` when anything (a test runner, user code) set a start method before, even 'fork'.
   The shim pre-imports it with the start method forced to 'fork', and refuses with a clear message if
   the process already committed to 'spawn'/'forkserver' (Lava's runtime forks its model processes).

Call :func:`ensure_lava_importable` before the first ``import lava...``; it is idempotent and a no-op
for anything already done. A missing lava raises :class:`neurorate.errors.MissingExtraError`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import multiprocessing
import os
import sys

from neurorate.errors import MissingExtraError, NeurorateError

_VAR_MODEL = "lava.magma.compiler.var_model"
_MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"
_done = False


def lava_available() -> bool:
    """True when the ``lava`` package (lava-nc) can be found, without importing it."""
    try:
        return importlib.util.find_spec("lava") is not None
    except (ImportError, ValueError):  # blocked (sys.modules["lava"] = None) or a broken install
        return False


def _hashable_defaults(cls: type) -> type:
    """Replace unhashable class-level defaults of ``cls`` by ``field(default_factory=...)``."""
    for name in cls.__dict__.get("__annotations__", {}):
        default = cls.__dict__.get(name, dataclasses.MISSING)
        if default is dataclasses.MISSING or isinstance(default, dataclasses.Field):
            continue
        if type(default).__hash__ is None:
            setattr(cls, name, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d)))
    return cls


def _tolerant_dataclass(original):
    """A drop-in for ``dataclasses.dataclass`` that first makes unhashable defaults factories."""

    def wrapper(cls=None, /, **kwargs):
        if cls is None:  # used as @dataclass(...)
            return lambda c: original(_hashable_defaults(c), **kwargs)
        return original(_hashable_defaults(cls), **kwargs)

    return wrapper


def _import_var_model() -> None:
    if _VAR_MODEL in sys.modules:
        return
    original = dataclasses.dataclass
    dataclasses.dataclass = _tolerant_dataclass(original)
    try:
        importlib.import_module(_VAR_MODEL)
    finally:
        dataclasses.dataclass = original


def _import_multiprocessing_module() -> None:
    if _MP_MODULE in sys.modules or os.name == "nt":
        return
    current = multiprocessing.get_start_method(allow_none=True)
    if current not in (None, "fork"):
        raise NeurorateError(
            f"the Lava backend needs the 'fork' multiprocessing start method, but this process already set "
            f"{current!r}; run Lava in a fresh process (or do not call set_start_method before it)"
        )
    original = multiprocessing.set_start_method

    def forced(method, force=False):  # lava calls set_start_method('fork') at import time
        return original(method, force=True)

    multiprocessing.set_start_method = forced
    try:
        importlib.import_module(_MP_MODULE)
    finally:
        multiprocessing.set_start_method = original


def ensure_lava_importable() -> None:
    """Apply the Python-3.11 shim (see the module docstring); raise if lava-nc is not installed.

    Raises
    ------
    MissingExtraError
        lava-nc is not installed (names the ``lava`` extra).
    NeurorateError
        the process already uses a non-fork multiprocessing start method.
    """
    global _done
    if _done:
        return
    if not lava_available():
        raise MissingExtraError("lava-nc", "lava", "the Lava backend")
    # Multi-threaded BLAS inside Lava's forked model processes ran ~30x slower on small machines.
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if sys.version_info >= (3, 11):
        _import_var_model()
    _import_multiprocessing_module()
    _done = True
