"""Learning rules as values (:mod:`neurorate.learning.registry`; docs/rules.md).

The registry and the feedback recipe import no torch; each rule's math lives in a module of its own
(:mod:`neurorate.learning.eprop`, :mod:`neurorate.learning.bptt`, the estimators of
:mod:`neurorate.learning.estimators`: ``rtrl``, ``snap1``, ``uoro``, ``kf_rtrl``), imported by the backends.

``nr.rules()`` (:func:`~neurorate.learning.registry.rules`) lists them; third parties add rules through the
entry-point group ``neurorate.rules``.
"""

from neurorate.learning.feedback import feedback_matrix
from neurorate.learning.registry import (
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

