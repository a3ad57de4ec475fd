"""Learning rules as values (:mod:`neurorate.rules.registry`; docs/rules.md).

The registry and the feedback recipe import no torch; each rule's math lives in a module of its own
(:mod:`neurorate.rules.eprop`, :mod:`neurorate.rules.bptt`), imported by the backends.

``nr.rules()`` lists the rules: once this package is imported, Python binds ``neurorate.rules`` to the package
itself, so the package is callable and calling it is :func:`~neurorate.rules.registry.rules`.
"""

import sys
import types

from neurorate.rules.feedback import feedback_matrix
from neurorate.rules.registry import (
    BUILTIN_RULES,
    DETACHES,
    ENTRY_POINT_GROUP,
    FEEDBACKS,
    Rule,
    check_rule,
    get_rule,
    rule_help,
    rule_names,
    rules,
    rules_table,
)

__all__ = ["BUILTIN_RULES", "DETACHES", "ENTRY_POINT_GROUP", "FEEDBACKS", "Rule", "check_rule", "feedback_matrix",
           "get_rule", "rule_help", "rule_names", "rules", "rules_table"]


class _RulesPackage(types.ModuleType):
    """This package; calling it lists the rules (``nr.rules()`` = :func:`neurorate.rules.registry.rules`)."""

    def __call__(self) -> dict[str, Rule]:
        return rules()


sys.modules[__name__].__class__ = _RulesPackage
