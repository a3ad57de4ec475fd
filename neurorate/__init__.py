"""neurorate: how initial connectivity shapes biologically plausible learning in rate RNNs.

The public API (docs/api.md)::

    import neurorate as nr
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=64, n_out=2, gain=1.5, seed=0)
    task = nr.make_task("romo", batch_size=32, seed=0)
    result = nr.train(spec, task, rule="eprop", backend="torch", iterations=2000, lr=1e-3)
    les = nr.lyapunov_spectrum(spec, task)

Names are imported lazily: ``import neurorate`` loads neither torch nor lava, snntorch, norse or nir.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "NetworkSpec": "neurorate.spec",
    "effective_rank": "neurorate.spec",
    "participation_ratio": "neurorate.spec",
    "low_rank": "neurorate.spec",
    "scale_to_gain": "neurorate.spec",
    "Task": "neurorate.task",
    "make_task": "neurorate.task",
    "available_tasks": "neurorate.task",
    "train": "neurorate.api",
    "TrainResult": "neurorate.results",
    "load_run": "neurorate.results",
    "RULES": "neurorate.backend",
    "get_backend": "neurorate.backend",
    "available_backends": "neurorate.backend",
    "lyapunov_spectrum": "neurorate.lyapunov",
    "max_lyapunov": "neurorate.lyapunov",
    "lyapunov_from_trajectory": "neurorate.lyapunov",
    "floss": "neurorate.flossing",
    "load_profile": "neurorate.profiles",
    "available_profiles": "neurorate.profiles",
    "HardwareProfile": "neurorate.profiles",
    "citation": "neurorate.provenance",
    "NeurorateError": "neurorate.errors",
    "study": "neurorate.study",
    "to_nir": "neurorate.nir_io",
    "from_nir": "neurorate.nir_io",
    "write_nir": "neurorate.nir_io",
    "read_nir": "neurorate.nir_io",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neurorate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
