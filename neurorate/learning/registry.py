"""Learning rules as values: one :class:`Rule` per rule and one registry (docs/rules.md).

A rule is described by what its gradient keeps, not by code: what it *detaches* from the exact gradient
(``"nothing"`` = BPTT, ``"presynaptic rates"`` = the e-prop truncation, ``"whole previous state"`` = a
one-step truncation), which matrix carries the output error to the units (``"symmetric"`` = ``W_out^T``,
``"random"`` = the fixed random feedback of :func:`neurorate.learning.feedback.feedback_matrix`) and whether it
runs on explicit forward eligibility traces. The backends compute a rule's gradient from these properties
(the torch backend's autograd path implements any "detach X + feedback Y"), so a new combination needs no
backend change. A rule can also compute: its ``estimator`` names a class with the vectorised protocol of
:mod:`neurorate.learning.estimators` (an estimate of the influence matrix, forward in time), which the torch
backend then runs instead (the built-in ``rtrl``, ``snap1``, ``uoro``, ``kf_rtrl``).

Third-party rules: an entry point of the group ``neurorate.rules`` naming a module attribute that is a
:class:`Rule`, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."neurorate.rules"]
    toy = "my_rules:TOY"

This module imports neither torch nor any backend.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib import metadata

from neurorate.errors import NeurorateError

DETACHES = ("nothing", "presynaptic rates", "whole previous state", "other units' rates")
"""What a rule cuts from the exact gradient of the step (:func:`neurorate.model.dynamics.step`); "other units'
rates" keeps of ``W r_{t-1}`` only the self-connection ``W_kk r_{t-1,k}`` (SnAp-1's sparsity)."""
FEEDBACKS = ("symmetric", "random")
"""The matrix of the learning signal ``L = F dl/dy``: ``F = W_out^T`` or a fixed random ``B``."""
NEURONS = ("rate", "lif", "alif")
FORMS = ("A", "B", "C")
ENTRY_POINT_GROUP = "neurorate.rules"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One learning rule.

    Parameters
    ----------
    name : the value of ``rule=`` (``nr.train``, the CLI's ``--rule``, a study's ``rules``).
    summary : one line for listings and docs.
    detach : one of :data:`DETACHES`.
    feedback : one of :data:`FEEDBACKS`.
    online : True if the torch backend computes it from explicit forward eligibility traces
        (memory independent of T); needs ``detach="presynaptic rates"`` (the traces are that truncation).
    neurons : the neuron models it trains (:data:`NEURONS`).
    backends : the backends that run it.
    forms : the rate-network forms it supports (:data:`FORMS`).
    citation : a key of :data:`neurorate.provenance.CITATIONS` (``""``: none).
    estimator : ``"module:attr"`` of the rule's estimator (``""``: none), a class with the vectorised protocol of
        :mod:`neurorate.learning.estimators` (``init``, ``step``, ``gradients``). A rule with an estimator is
        computed by it (the torch backend dispatches on this field); its ``detach`` and ``online`` then describe
        the estimate (``online``: forward in time, memory independent of T) and may be any values.
    stochastic : the estimator draws random numbers (an unbiased estimate; needs ``estimator``).
    """

    name: str
    summary: str
    detach: str
    feedback: str
    online: bool = False
    neurons: tuple[str, ...] = ("rate",)
    backends: tuple[str, ...] = ("torch",)
    forms: tuple[str, ...] = FORMS
    citation: str = ""
    estimator: str = ""
    stochastic: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise NeurorateError(f"rule name must be an identifier, got {self.name!r}")
        if self.detach not in DETACHES:
            raise NeurorateError(f"rule {self.name!r}: detach must be one of {', '.join(map(repr, DETACHES))}, "
                                 f"got {self.detach!r}")
        if self.feedback not in FEEDBACKS:
            raise NeurorateError(f"rule {self.name!r}: feedback must be one of {', '.join(FEEDBACKS)}, "
                                 f"got {self.feedback!r}")
        if not isinstance(self.estimator, str) or (self.estimator and ":" not in self.estimator):
            raise NeurorateError(f"rule {self.name!r}: estimator must be 'module:attr', got {self.estimator!r}")
        if self.online and self.detach != "presynaptic rates" and not self.estimator:
            raise NeurorateError(f"rule {self.name!r}: forward traces compute the 'presynaptic rates' truncation "
                                 f"only, not detach={self.detach!r} (a rule with an estimator of its own may)")
        if self.stochastic and not self.estimator:
            raise NeurorateError(f"rule {self.name!r}: stochastic needs an estimator that draws the randomness")
        for field, allowed in (("neurons", NEURONS), ("forms", FORMS)):
            values = tuple(getattr(self, field))
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise NeurorateError(f"rule {self.name!r}: {field} must be a non-empty subset of "
                                     f"{', '.join(allowed)}, got {values!r}")
            object.__setattr__(self, field, values)
        object.__setattr__(self, "backends", tuple(self.backends))
        if not self.backends:
            raise NeurorateError(f"rule {self.name!r}: backends must not be empty")

    @property
    def detach_pre(self) -> bool:
        """Cut the gradient through the presynaptic rate in ``W r`` (:func:`neurorate.model.dynamics.step`)."""
        return self.detach == "presynaptic rates"

    @property
    def detach_state(self) -> bool:
        """Cut the gradient through the whole previous state (leak path included)."""
        return self.detach == "whole previous state"

    @property
    def random_feedback(self) -> bool:
        """True if the learning signal uses the fixed random feedback matrix instead of ``W_out^T``."""
        return self.feedback == "random"

    @property
    def detach_others(self) -> bool:
        """Cut the gradient through the other units' rates in ``W r`` (only ``W_kk r_k`` keeps it: SnAp-1)."""
        return self.detach == "other units' rates"

    @property
    def has_estimator(self) -> bool:
        """True if the rule is computed by an estimator of its own (:meth:`make_estimator`)."""
        return bool(self.estimator)

    def estimator_class(self):
        """The estimator class named by ``estimator`` (imported on first use; None without one)."""
        if not self.estimator:
            return None
        module, _, attr = self.estimator.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # a broken estimator is a one-line error
            msg = " ".join(str(exc).split())
            raise NeurorateError(f"rule {self.name!r}: estimator {self.estimator!r} cannot be loaded: "
                                 f"{type(exc).__name__}: {msg}") from exc
        return obj

    def make_estimator(self):
        """A fresh estimator of this rule (None for a rule without one)."""
        cls = self.estimator_class()
        return None if cls is None else cls()

    def state_floats(self, n: int, n_in: int, batch: int) -> int:
        """Numbers the estimator keeps per network for a batch of ``batch`` trials (its influence estimate and
        scratch), for the memory preflight; 0 for a rule without an estimator."""
        cls = self.estimator_class()
        return 0 if cls is None else int(cls.state_floats(int(n), int(n_in), int(batch)))

    def as_dict(self) -> dict:
        """The rule's properties as plain values (for listings and JSON)."""
        return dataclasses.asdict(self)


BPTT = Rule("bptt", "exact gradient (backpropagation through time)", "nothing", "symmetric",
            neurons=("rate", "lif", "alif"), backends=("torch",))
EPROP = Rule("eprop", "e-prop: presynaptic rates detached, symmetric feedback W_out^T", "presynaptic rates",
             "symmetric", neurons=("rate", "lif", "alif"), backends=("torch", "lava"), citation="eprop")
EPROP_ONLINE = Rule("eprop_online", "e-prop from explicit forward eligibility traces (same gradient as eprop)",
                    "presynaptic rates", "symmetric", online=True, backends=("torch", "lava"), citation="eprop")
EPROP_RANDOM = Rule("eprop_random", "e-prop with a fixed random feedback matrix B", "presynaptic rates", "random",
                    neurons=("rate", "lif", "alif"), backends=("torch", "lava"), citation="eprop")
RFLO = Rule("rflo", "random-feedback local online learning (equals eprop_random in this model)",
            "presynaptic rates", "random", online=True, backends=("torch", "lava"), citation="rflo")
TRUNC1 = Rule("trunc1", "one-step truncation: the whole previous state detached (no trace; a control)",
              "whole previous state", "symmetric")
_EST = "neurorate.learning.estimators"
RTRL = Rule("rtrl", "exact gradient forward in time from the whole influence matrix (RTRL; an oracle, O(N^3) "
            "memory per trial)", "nothing", "symmetric", online=True, estimator=f"{_EST}.rtrl:RTRL",
            citation="rtrl")
SNAP1 = Rule("snap1", "SnAp-1: the influence entries one step reaches (e-prop plus the self-connection term)",
             "other units' rates", "symmetric", online=True, estimator=f"{_EST}.snap1:SnAp1", citation="snap")
UORO = Rule("uoro", "UORO: unbiased rank-one estimate of the influence matrix (random signs)", "nothing",
            "symmetric", online=True, estimator=f"{_EST}.uoro:UORO", stochastic=True, citation="uoro")
KF_RTRL = Rule("kf_rtrl", "KF-RTRL: unbiased Kronecker-factored estimate of the influence matrix (random signs)",
               "nothing", "symmetric", online=True, estimator=f"{_EST}.kf_rtrl:KFRTRL", stochastic=True,
               citation="kfrtrl")
BUILTIN_RULES: tuple[Rule, ...] = (BPTT, EPROP, EPROP_ONLINE, EPROP_RANDOM, RFLO, TRUNC1, RTRL, SNAP1, UORO, KF_RTRL)
"""The built-in rules (also declared as entry points of ``neurorate.rules`` in neurorate's ``pyproject.toml``)."""

_BUILTIN = {r.name: r for r in BUILTIN_RULES}


def _plugin_rules() -> dict[str, Rule]:
    """Rules of the ``neurorate.rules`` entry points (a plugin may not redefine a built-in rule)."""
    out: dict[str, Rule] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        module, _, attr = ep.value.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except NeurorateError as exc:  # e.g. an invalid Rule(...) in the plugin module
            raise NeurorateError(f"rule entry point {ep.name!r} = {ep.value!r}: {exc}") from exc
        except Exception as exc:  # a broken plugin is a one-line error, not a traceback
            msg = " ".join(str(exc).split())
            raise NeurorateError(f"rule entry point {ep.name!r} = {ep.value!r} cannot be loaded: "
                                 f"{type(exc).__name__}: {msg}") from exc
        if not isinstance(obj, Rule):
            raise NeurorateError(f"rule entry point {ep.name!r} = {ep.value!r} is not a neurorate.learning.Rule")
        if obj.name != ep.name:
            raise NeurorateError(f"rule entry point {ep.name!r} names a Rule called {obj.name!r}")
        if ep.name in _BUILTIN:
            if obj == _BUILTIN[ep.name]:
                continue
            raise NeurorateError(f"rule entry point {ep.name!r} redefines the built-in rule {ep.name!r}")
        out[ep.name] = obj
    return out


def rules() -> dict[str, Rule]:
    """Every known rule by name (built-ins, then entry points of ``neurorate.rules``), sorted by name."""
    found = {**_BUILTIN, **_plugin_rules()}
    return {name: found[name] for name in sorted(found)}


def rule_names(neuron: str | None = None, backend: str | None = None) -> tuple[str, ...]:
    """Names of the rules that train ``neuron`` networks on ``backend`` (all rules when both are None)."""
    return tuple(name for name, r in rules().items()
                 if (neuron is None or neuron in r.neurons) and (backend is None or backend in r.backends))


def rule_help() -> str:
    """``"bptt | eprop | ..."`` for a command-line help text; never raises (a plugin that fails to load is named
    there, and the command that uses a rule reports the one-line error)."""
    try:
        return " | ".join(rule_names())
    except NeurorateError:
        return " | ".join(_BUILTIN) + " (a rule plugin failed to load; see neurorate.learning.rules())"


def get_rule(rule: str | Rule) -> Rule:
    """The :class:`Rule` called ``rule`` (a Rule is returned as is); unknown -> :class:`NeurorateError`."""
    if isinstance(rule, Rule):
        return rule
    known = rules()
    if rule not in known:
        raise NeurorateError(f"unknown rule {rule!r}; choose one of {', '.join(known)}")
    return known[rule]


def check_rule(rule: str | Rule, *, neuron: str = "rate", backend: str | None = None,
               form: str | None = None) -> Rule:
    """:func:`get_rule`, and a one-line error unless the rule trains ``neuron`` networks of ``form`` on ``backend``."""
    r = get_rule(rule)
    if neuron not in r.neurons:
        raise NeurorateError(f"rule {r.name!r} does not train {neuron} networks; for {neuron} choose one of "
                             f"{', '.join(rule_names(neuron=neuron)) or 'none'}")
    if backend is not None and backend not in r.backends:
        raise NeurorateError(f"rule {r.name!r} is not available on the {backend} backend (it runs on "
                             f"{', '.join(r.backends)}); on {backend} choose one of "
                             f"{', '.join(rule_names(neuron=neuron, backend=backend)) or 'none'}")
    if form is not None and form not in r.forms:
        raise NeurorateError(f"rule {r.name!r} supports the forms {', '.join(r.forms)}, not form {form!r}")
    return r


def rules_table(table: dict[str, Rule] | None = None) -> str:
    """The Markdown table of the rules and their properties (the table of docs/rules.md; a test keeps them equal)."""
    rows = ["| rule | what it is | detaches | feedback | forward traces | estimator | neurons | backends | forms "
            "| citation |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in (table if table is not None else rules()).values():
        est = ("stochastic" if r.stochastic else "yes") if r.estimator else "-"
        rows.append(f"| `{r.name}` | {r.summary} | {r.detach} | {r.feedback} | {'yes' if r.online else 'no'} | "
                    f"{est} | {', '.join(r.neurons)} | {', '.join(r.backends)} | {', '.join(r.forms)} | "
                    f"{f'`{r.citation}`' if r.citation else '-'} |")
    return "\n".join(rows) + "\n"
