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
    "NetworkSpec": "neurorate.model.spec",
    "effective_rank": "neurorate.model.spec",
    "participation_ratio": "neurorate.model.spec",
    "low_rank": "neurorate.model.spec",
    "scale_to_gain": "neurorate.model.spec",
    "Task": "neurorate.tasks.base",
    "make_task": "neurorate.tasks.base",
    "available_tasks": "neurorate.tasks.base",
    "train": "neurorate.training",
    "TrainResult": "neurorate.io.results",
    "load_run": "neurorate.io.results",
    "RULES": "neurorate.backends.base",
    "rules": "neurorate.learning.registry",
    "Rule": "neurorate.learning.registry",
    "get_rule": "neurorate.learning.registry",
    "get_backend": "neurorate.backends.base",
    "available_backends": "neurorate.backends.base",
    "lyapunov_spectrum": "neurorate.analysis.lyapunov",
    "max_lyapunov": "neurorate.analysis.lyapunov",
    "lyapunov_from_trajectory": "neurorate.analysis.lyapunov",
    "floss": "neurorate.analysis.flossing",
    "gradient_alignment": "neurorate.analysis.alignment",
    "load_profile": "neurorate.hardware.profiles",
    "available_profiles": "neurorate.hardware.profiles",
    "HardwareProfile": "neurorate.hardware.profiles",
    "citation": "neurorate.provenance",
    "NeurorateError": "neurorate.errors",
    "study": "neurorate.studies.runner",
    "to_nir": "neurorate.io.nir",
    "from_nir": "neurorate.io.nir",
    "write_nir": "neurorate.io.nir",
    "read_nir": "neurorate.io.nir",
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
