"""The Lava backend: the rate RNN as a Lava process graph with on-line three-factor e-prop inside.

Importing this package does not import lava (so :data:`CAPABILITIES`, ``LavaBackend.capabilities``, can be read
and a missing extra reported in one line); the Python-3.11 compatibility shim
(:func:`~neurorate.backends.lava._compat.ensure_lava_importable`) runs before the first lava import,
when a graph is built. See ``docs/lava.md``.
"""

from ._compat import ensure_lava_importable, lava_available
from .backend import CAPABILITIES, LavaBackend, check_rule, feedback_matrix

__all__ = ["CAPABILITIES", "LavaBackend", "check_rule", "ensure_lava_importable", "feedback_matrix",
           "lava_available"]
