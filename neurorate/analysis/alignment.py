"""How far is a rule's update from the exact gradient? (docs/rules.md, "Alignment with the exact gradient").

:func:`gradient_alignment` compares a rule's gradient (its pseudo-gradient before the optimizer: the update
direction; for a stochastic rule the mean over ``samples`` independent draws) with the exact gradient of the same
batch (BPTT), per parameter: the cosine, the relative error ``|g_rule - g| / |g|`` and the sign agreement (the
fraction of entries, among those where the exact gradient is non-zero, whose signs agree). ``neurorate.train(...,
grad_alignment_every=K)`` records the single-draw alignment during training (:func:`alignment_fields`).

The influence-matrix view (docs/theory.md §3.6) says what to expect: ``rtrl`` has cosine 1 to rounding; ``eprop``
and ``snap1`` differ exactly by the self-connection term ``alpha W_kk f'(a_{t-1,k})`` of the kept influence (equal
when ``diag(W) = 0``); ``uoro`` and ``kf_rtrl`` are unbiased, so their mean over draws tends to cosine 1 as the
number of draws grows (their error of the mean falls as ``1/sqrt(samples)``). The readout gradient is exact for
every rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from neurorate.errors import NeurorateError
from neurorate.learning.registry import check_rule
from neurorate.model.spec import NetworkSpec

STATS = ("cosine", "relative_error", "sign_agreement")
PARAMS = ("w_rec", "w_in", "b", "w_out", "b_out")
FIELDS = ("align_cos_w_rec", "align_cos_w_in", "align_cos_b", "align_cos_all", "align_rel_error_w_rec",
          "align_rel_error_all", "align_sign_w_rec", "align_sign_all")
"""The extra fields of a ``metrics.jsonl`` line on the iterations ``grad_alignment_every`` measures."""


def _count(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (not a bool), or a one-line error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise NeurorateError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _stats(u: torch.Tensor, g: torch.Tensor) -> dict[str, np.ndarray]:
    """Cosine, relative error and sign agreement of ``u`` against ``g``, both ``(M, D)``; one value per network
    (NaN where the exact gradient, or for the cosine the rule's, is zero)."""
    u, g = u.double(), g.double()
    nu, ng = u.norm(dim=-1), g.norm(dim=-1)
    nan = torch.full_like(ng, float("nan"))
    cos = torch.where((nu > 0) & (ng > 0), (u * g).sum(-1) / (nu * ng).clamp_min(1e-300), nan)
    rel = torch.where(ng > 0, (u - g).norm(dim=-1) / ng.clamp_min(1e-300), nan)
    nz = g != 0
    count = nz.sum(-1)
    agree = ((torch.sign(u) == torch.sign(g)) & nz).sum(-1).double()
    sign = torch.where(count > 0, agree / count.clamp_min(1).double(), nan)
    return {"cosine": cos.cpu().numpy(), "relative_error": rel.cpu().numpy(), "sign_agreement": sign.cpu().numpy()}


def compare(rule_grads: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    """``{parameter: {stat: (M,)}}`` for every parameter and ``"all"`` (every parameter as one vector)."""
    m = exact["w_rec"].shape[0]
    out = {name: _stats(rule_grads[name].reshape(m, -1), exact[name].reshape(m, -1)) for name in PARAMS}
    out["all"] = _stats(torch.cat([rule_grads[k].reshape(m, -1) for k in PARAMS], -1),
                        torch.cat([exact[k].reshape(m, -1) for k in PARAMS], -1))
    return out


def replicate(ens, samples: int):
    """The ensemble with every network repeated ``samples`` times (network j's copies are rows
    ``j * samples ... (j + 1) * samples - 1``): one pass draws ``samples`` independent estimates of each."""
    rep = lambda t: t.repeat_interleave(samples, 0)  # noqa: E731
    return dataclasses.replace(ens, params={k: rep(v) for k, v in ens.params.items()}, feedback=rep(ens.feedback),
                               alpha=rep(ens.alpha), buffers={})


def _per_network(t: torch.Tensor, samples: int) -> torch.Tensor:
    """Repeat a per-network batch tensor (leading dim M) like :func:`replicate`; a shared one (dim 1 or none) as is."""
    return t.repeat_interleave(samples, 0)


def rule_and_exact(ens, rule, kind: str, x, target, mask, samples: int = 1, seed: int = 0, quant=None,
                   step0: int = 0, rule_grads=None):
    """``(rule gradient, exact gradient)`` of one batch; a stochastic rule's is the mean over ``samples`` draws.
    ``rule_grads`` (one draw, already computed, e.g. the training update's) is used as is."""
    from neurorate.backends.torch import gradients as G

    q = G.IDENTITY if quant is None else quant
    r = check_rule(rule)
    if rule_grads is None:
        if r.stochastic and samples > 1:
            m = ens.m
            shared = x.shape[0] == 1
            big = replicate(ens, samples)
            xs = x if shared else _per_network(x, samples)
            per_net = target.dim() == (4 if kind == "mse" else 3)
            ts, ms = (_per_network(target, samples), _per_network(mask, samples)) if per_net else (target, mask)
            _, _, draws = G.gradients(big, r, kind, xs, ts, ms, q, step0=step0, seed=seed)
            rule_grads = {k: v.reshape(m, samples, *v.shape[1:]).mean(1) for k, v in draws.items()}
        else:
            _, _, rule_grads = G.gradients(ens, r, kind, x, target, mask, q, step0=step0, seed=seed)
    _, _, exact = G.gradients(ens, "bptt", kind, x, target, mask, q, step0=step0)
    return rule_grads, exact


def alignment_fields(ens, rule, kind: str, x, target, mask, rule_grads=None, quant=None,
                     step0: int = 0) -> dict[str, np.ndarray]:
    """The :data:`FIELDS` of one training iteration, one value per network ``(M,)``: the single-draw alignment of
    the rule's update (``rule_grads`` when given) with the exact gradient, at the cost of one exact gradient."""
    ours, exact = rule_and_exact(ens, rule, kind, x, target, mask, quant=quant, step0=step0, rule_grads=rule_grads)
    s = compare(ours, exact)
    return {"align_cos_w_rec": s["w_rec"]["cosine"], "align_cos_w_in": s["w_in"]["cosine"],
            "align_cos_b": s["b"]["cosine"], "align_cos_all": s["all"]["cosine"],
            "align_rel_error_w_rec": s["w_rec"]["relative_error"], "align_rel_error_all": s["all"]["relative_error"],
            "align_sign_w_rec": s["w_rec"]["sign_agreement"], "align_sign_all": s["all"]["sign_agreement"]}


def gradient_alignment(spec: NetworkSpec | Sequence[NetworkSpec], task, rule: str = "eprop", batch_index: int = 0,
                       samples: int = 1, *, seed: int = 0, dtype: str = "float64", device: str = "cpu"):
    """How far ``rule``'s update is from the exact gradient on batch ``batch_index`` of ``task``.

    Parameters
    ----------
    spec : a rate :class:`NetworkSpec` (or a list sharing N, form and activation: one dict each, one pass).
    task : a :class:`~neurorate.tasks.base.Task` whose sizes match the networks.
    rule : a rule of ``nr.rules()`` the torch backend trains rate networks with.
    batch_index : which batch of the task (``task.batch(batch_index)``).
    samples : draws averaged for a stochastic rule (``uoro``, ``kf_rtrl``); a deterministic rule's one gradient
        is used whatever ``samples`` says.
    seed : keys the draws of a stochastic rule (the same seed repeats them).
    dtype, device : precision and placement of the computation (float64 on the CPU by default; on the CPU with
        the torch backend's threads, ``NEURORATE_THREADS`` or one, and torch's setting restored after).

    Returns
    -------
    ``{parameter: {"cosine": c, "relative_error": e, "sign_agreement": s}}`` for ``"w_rec"``, ``"w_in"``, ``"b"``,
    ``"w_out"``, ``"b_out"`` and ``"all"`` (every parameter as one vector); a list of them for a list of specs.
    The rule's update is its gradient before the optimizer (the readout's is exact for every rule).
    """
    from neurorate.backends.torch import resolve_device, resolve_dtype
    from neurorate.backends.torch.ensemble import stack
    from neurorate.tasks.base import Task

    single = isinstance(spec, NetworkSpec)
    specs = [spec] if single else list(spec)
    if not specs or not all(isinstance(s, NetworkSpec) for s in specs):
        raise NeurorateError("spec must be a NetworkSpec or a list of them")
    if not isinstance(task, Task):
        raise NeurorateError("task must be a neurorate Task (see neurorate.make_task)")
    r = check_rule(rule, neuron="rate", backend="torch", form=specs[0].form)
    batch_index, samples = _count(batch_index, "batch_index", 0), _count(samples, "samples", 1)
    for s in specs:
        if (s.n_in, s.n_out) != (task.n_in, task.n_out):
            raise NeurorateError(f"network has n_in={s.n_in}, n_out={s.n_out} but task {task.name!r} needs "
                                 f"n_in={task.n_in}, n_out={task.n_out}")
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    ens = stack(specs, dt, dev)
    x, target, mask = task.batch(batch_index)
    x, target, mask = (torch.as_tensor(np.asarray(a), device=dev).to(torch.long if np.asarray(a).dtype.kind in "iu"
                                                                        else dt) for a in (x, target, mask))
    x = x.unsqueeze(0)
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # the torch backend's thread policy: NEURORATE_THREADS, else one thread
        from neurorate.backends.base import env_threads

        torch.set_num_threads(env_threads() or 1)
    try:
        ours, exact = rule_and_exact(ens, r, task.loss_kind, x, target, mask, samples=samples, seed=seed)
    finally:
        torch.set_num_threads(threads)
    stats = compare(ours, exact)
    out = [{name: {k: float(v[j]) for k, v in st.items()} for name, st in stats.items()} for j in range(len(specs))]
    return out[0] if single else out
