"""Loss and (pseudo-)gradients of an ensemble for one batch, for any learning rule (docs/rules.md).

The implementation follows from the rule's :class:`~neurorate.learning.registry.Rule` properties, not its name:

* a rule with an estimator of its own (``Rule.estimator``: ``rtrl``, ``snap1``, ``uoro``, ``kf_rtrl``) runs it
  (:func:`neurorate.learning.estimators.estimator_gradients`, with the estimator's fast kernel where it has one);
* a rule on forward traces (``online``: ``eprop_online``, ``rflo``) runs
  :func:`neurorate.learning.eprop.online_gradients` (no autograd, memory independent of T);
* otherwise autograd through the time loop of :func:`neurorate.model.dynamics.step` with the rule's detach
  (``"presynaptic rates"``: the rate in ``W r``; ``"whole previous state"``: the leak path too) and, for random
  feedback, the readout whose backward uses the fixed ``B`` (:func:`autograd_gradients`); any combination of
  detach and feedback works, so a new rule needs no change here;
* fused kernels with the same numbers where they apply: the e-prop truncation in form A at full precision
  (:func:`neurorate.learning.eprop.factorized_gradients`), exact symmetric BPTT in form A
  (:func:`neurorate.learning.bptt.bptt_form_a_gradients`); under a hardware profile the e-prop truncation runs
  on the forward traces held at the trace precision.

Inputs: ``x (Mx, T, B, n_in)`` with ``Mx`` 1 (shared data) or M (one stream per network); targets and
masks with the same optional leading dimension. Returns ``(loss (M,), accuracy (M,), grads)`` with
``grads[name]`` shaped like the ensemble parameter.
"""

from __future__ import annotations

import torch

from neurorate.errors import NeurorateError
from neurorate.hardware.quantize import make_quantizer
from neurorate.learning.bptt import bptt_form_a_gradients
from neurorate.learning.eprop import factorized_gradients, online_gradients
from neurorate.learning.estimators import estimator_gradients
from neurorate.learning.registry import BUILTIN_RULES, Rule, get_rule
from neurorate.model import dynamics as dyn
from neurorate.model import losses

from .ensemble import Ensemble

AUTOGRAD_RULES = {r.name: (r.detach_pre, r.detach_state) for r in BUILTIN_RULES if not r.online}
"""Built-in rules run by autograd: ``name -> (detach_pre, detach_state)`` (derived from the registry)."""
ONLINE_RULES = tuple(r.name for r in BUILTIN_RULES if r.online and not r.estimator)
"""Built-in rules run on forward traces (derived from the registry)."""
RANDOM_FEEDBACK = tuple(r.name for r in BUILTIN_RULES if r.random_feedback)
"""Built-in rules with the fixed random feedback matrix (derived from the registry)."""

# full precision: the quantizer of no profile returns every value unchanged
IDENTITY = make_quantizer(None, training=False)


def forward(ens: Ensemble, x: torch.Tensor, quant=IDENTITY, params=None, detach_pre=False, detach_state=False,
            step0: int = 0, detach_others=False):
    """Run the ensemble from the zero state. Returns ``(states, rates, preacts)`` each ``(M, T, B, N)``.

    ``step0`` is the global index of the first step (keys stochastic rounding: step ``step0 + t``).
    """
    params = dyn.on_grid(params if params is not None else ens.params, quant)
    f, _ = dyn.activation(ens.activation)
    drv = dyn.drive_sequence(x, params["w_in"], params["b"])
    state = torch.zeros(ens.m, x.shape[2], ens.n, dtype=drv.dtype, device=drv.device)
    states, rates, preacts = [], [], []
    for t in range(x.shape[1]):
        state, pre = dyn.step(state, drv[:, t], params["w_rec"], ens.alpha, ens.form, f, detach_pre, detach_state,
                              detach_others)
        state = quant.state(state, step=step0 + t)
        r = quant.rate(dyn.rate(state, ens.form, f), step=step0 + t)
        states.append(state)
        rates.append(r)
        preacts.append(pre)
    return torch.stack(states, 1), torch.stack(rates, 1), torch.stack(preacts, 1)


def autograd_gradients(ens: Ensemble, rule: str | Rule, kind: str, x, target, mask, quant=IDENTITY, step0: int = 0):
    """Loss, accuracy and gradients by autograd with the rule's detach and feedback (any :class:`Rule`)."""
    r = get_rule(rule)
    leaves = {name: p.detach().requires_grad_(True) for name, p in ens.params.items()}
    _, rates, _ = forward(ens, x, quant, leaves, r.detach_pre, r.detach_state, step0, r.detach_others)
    m, t, b, n = rates.shape
    w = dyn.on_grid(leaves, quant)
    flat = rates.reshape(m, t * b, n)
    if r.random_feedback:
        y = dyn.readout_random_feedback(flat, w["w_out"], w["b_out"], ens.feedback)
    else:
        y = dyn.readout(flat, w["w_out"], w["b_out"])
    y = y.reshape(m, t, b, -1)
    loss = losses.loss(kind, y, target, mask)
    names = list(leaves)
    grads = torch.autograd.grad(loss.sum(), [leaves[k] for k in names])
    with torch.no_grad():
        acc = losses.accuracy(kind, y, target, mask)
    return loss.detach(), acc, dict(zip(names, grads))


def gradients(ens: Ensemble, rule: str | Rule, kind: str, x, target, mask, quant=IDENTITY, impl: str = "auto",
              step0: int = 0, seed: int = 0):
    """Dispatch on the rule's properties (see the module docstring).

    A rule with an ``estimator`` runs it (:func:`neurorate.learning.estimators.estimator_gradients`; "auto" lets
    the estimator use its fast kernel, "estimator" forces its forward recursion (and computes any other rule by
    the estimator of its detach, :func:`neurorate.learning.estimators.estimator_for`); ``seed`` and ``step0`` key a
    stochastic estimator's draws); "autograd" computes its ``detach`` reading instead (``rtrl``: BPTT; ``snap1``:
    the other units' rates detached), which a stochastic rule does not have.

    ``impl``: "auto" uses the fused form A kernels (:func:`~neurorate.learning.eprop.factorized_gradients` for the
    e-prop truncation, :func:`~neurorate.learning.bptt.bptt_form_a_gradients` for symmetric BPTT) when no profile
    quantises. Under a profile, the e-prop truncation (``eprop``, ``eprop_random``) runs on the forward traces
    (:func:`~neurorate.learning.eprop.online_gradients`): the eligibility traces are then held at the profile's
    trace precision, as on the chip and in the Lava process, so the rule is the same on both backends (an
    autograd gradient has no trace to round). "autograd" forces the autograd implementation (the oracle tests
    compare the implementations).
    """
    r = get_rule(rule)
    if impl == "estimator":  # any rule through the estimator protocol: its own, or its detach's
        return estimator_gradients(ens, r, kind, x, target, mask, quant, step0, seed, fast=False)
    if r.estimator:
        if impl == "autograd":
            if r.stochastic:
                raise NeurorateError(f"rule {r.name!r} is a stochastic estimate; it has no autograd reading")
            return autograd_gradients(ens, r, kind, x, target, mask, quant, step0)
        return estimator_gradients(ens, r, kind, x, target, mask, quant, step0, seed, fast=impl == "auto")
    if r.online or (impl == "auto" and quant.enabled and r.detach_pre):
        return online_gradients(ens, r, kind, x, target, mask, quant, step0)
    if impl == "auto" and r.detach_pre and ens.form == "A" and not quant.enabled:
        return factorized_gradients(ens, r, kind, x, target, mask)
    if impl == "auto" and r.detach == "nothing" and not r.random_feedback and ens.form == "A" and not quant.enabled:
        return bptt_form_a_gradients(ens, kind, x, target, mask)
    return autograd_gradients(ens, r, kind, x, target, mask, quant, step0)
