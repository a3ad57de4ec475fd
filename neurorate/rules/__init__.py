"""Learning rules as values (:mod:`neurorate.rules.registry`; docs/rules.md).

The registry and the feedback recipe import no torch; each rule's math lives in a module of its own
(:mod:`neurorate.rules.eprop`, :mod:`neurorate.rules.bptt`), imported by the backends.
"""

from neurorate.rules.feedback import feedback_matrix
from neurorate.rules.registry import (
    BUILTIN_RULES,
    DETACHES,
    ENTRY_POINT_GROUP,
    FEEDBACKS,
    Rule,
    check_rule,
    get_rule,
    rule_names,
    rules,
)

__all__ = ["BUILTIN_RULES", "DETACHES", "ENTRY_POINT_GROUP", "FEEDBACKS", "Rule", "check_rule", "feedback_matrix",
           "get_rule", "rule_names", "rules"]
