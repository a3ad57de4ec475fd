"""The loihi graph in fixed point: the engine view of a network (``loihi2-engine``) run on Lava's own engine.

:class:`EngineLoihiGraph` builds the loihi graph of :mod:`neurorate.backends.lava.loihi` (same processes, same
phased four-tick schedule) for one network of a calibrated
:class:`~neurorate.backends.torch.engine_profile.EngineNetworks`: integer weights with their ``weight_exp``, the
rule strings with the frozen scale factors (``dt = S_t y0 x1 y2 - S_t y0 x1 y3 - uK t``, ``dw = S_w uK t``), the
neurons' ``fixed_pt`` models (:mod:`neurorate.backends.lava.procs.loihi_fixed`), and Lava's bit-approximate
``LearningDense`` and bit-accurate ``Dense`` (``Loihi2SimCfg(select_tag="fixed_pt")``). :func:`train` runs trials
and the host's step between them (:func:`neurorate.backends.torch.engine_profile.host_update`), so the torch
backend's engine view and this graph compute the same integers
(``tests/conformance/test_lava_loihi_fixed.py``). Only the chip's widths exist in Lava's engine.
"""

from __future__ import annotations

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.hardware import engine as E

from ._compat import ensure_lava_importable
from ._io import Mailbox, pack_trial
from .loihi import TICKS_PER_STEP, connect

FIXED_TAU = 2 ** 62
"""The engine traces' decay constant in fixed point: the bit-approximate model holds taus as int64 (the float
graph's 1e300 overflows) and ``exp(-1 / 2^62) == 1.0`` in float64, so its stochastic decay never fires."""

__all__ = ["EngineLoihiGraph", "rule_strings", "train", "train_runs"]


def _scale(m: int, e: int) -> str:
    return f"({int(m)}) * 2 ^ {int(e)}" if int(e) else f"({int(m)})"


def rule_strings(k: int, tag_exponent: int, w_mantissa: int, w_exponent: int) -> dict[str, str]:
    """The engine view's rule for one synapse matrix: the tag sums ``S_t x1 (y2 - y3)``, ``dw = S_w uK t``."""
    st = _scale(1, tag_exponent)
    return {"dt": f"{st} * y0 * x1 * y2 - {st} * y0 * x1 * y3 - u{k} * t",
            "dw": f"{_scale(w_mantissa, w_exponent)} * u{k} * t"}


class EngineLoihiGraph:
    """Network ``j`` of a calibrated ``EngineNetworks`` as a fixed-point loihi graph (``stop()`` in a ``finally``)."""

    def __init__(self, nets, j: int, n_steps: int):
        if nets.widths != E.EngineWidths(trace_bits=7, tag_bits=8, weight_bits=8, frac_bits=7):
            raise NeurorateError("the Lava loihi graph in fixed point has the chip's engine widths only "
                                 "(traces 7, tag and weights 8 + sign bits)")
        ensure_lava_importable()
        from lava.magma.core.learning.constants import GradedSpikeCfg
        from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense, LearningDense
        from lava.utils.weightutils import SignMode

        from .procs.loihi import LoihiErrorNeuron, LoihiRateNeuron, LoihiTrialSource

        n, n_in, n_out = nets.n, nets.w_in.shape[-1], nets.w_out.shape[1]
        self.nets, self.j = nets, j
        self.n_steps = int(n_steps)
        self.n_epochs = nets.epochs_per_trial(self.n_steps)
        k = int(np.log2(self.n_epochs))
        self.ticks_per_trial = TICKS_PER_STEP * self.n_epochs
        t = self.n_steps
        self.box = Mailbox({"x": (t, n_in), "target": (t, n_out), "weight": (t, n_out), "decision": (t,),
                            "states": (t, n), "rates": (t, n), "psi": (t, n), "signals": (t, n),
                            "outputs": (t, n_out), "errors": (t, n_out), "loss": (1,), "hits": (2,), "b": (n,),
                            "c": (n_out,)})

        def rule(name):
            r = Loihi3FLearningRule(**rule_strings(k, nets.tag_e[name][j], nets.w_m[name][j], nets.w_e[name][j]),
                                    x1_tau=FIXED_TAU, t_epoch=TICKS_PER_STEP)
            r.y1_tau = r.y2_tau = r.y3_tau = FIXED_TAU
            return r

        rule_u, rule_w = rule("w_in"), rule("w_rec")
        eng = {"S": nets.S, "R": nets.R, "X": nets.X, "decay": int(nets.decay[j]), "ef": int(nets.ef[j]),
               "trace_bits": nets.widths.trace_bits}
        common = {"n_steps": t, "n_epochs": self.n_epochs, "mailbox": self.box, "engine": eng}
        self.source = LoihiTrialSource(n_in=n_in, alpha=float(nets._alpha[j]), **common)
        self.neuron = LoihiRateNeuron(b=nets.b[j].astype(np.float64), alpha=float(nets._alpha[j]),
                                      learning_rule=rule_w, record=True, learn_bias=False, **common)
        self.error = LoihiErrorNeuron(c=nets.b_out[j].astype(np.float64), loss_kind="mse", lr=0.0, learn_bias=False,
                                      **common)
        graded = {"num_message_bits": 24}
        we = lambda a: int(a[j, 0])  # noqa: E731
        self.syn_u = LearningDense(weights=nets.w_in[j].astype(np.float64), learning_rule=rule_u,
                                   graded_spike_cfg=GradedSpikeCfg.OVERWRITE, weight_exp=we(nets.we_in), **graded)
        self.syn_w = LearningDense(weights=nets.w_rec[j].astype(np.float64), learning_rule=rule_w,
                                   graded_spike_cfg=GradedSpikeCfg.OVERWRITE, weight_exp=we(nets.we_rec), **graded)
        self.syn_v = Dense(weights=nets.w_out[j].astype(np.float64), weight_exp=we(nets.we_out),
                           sign_mode=SignMode.MIXED, **graded)
        self.syn_b = Dense(weights=nets.fb[j].astype(np.float64), weight_exp=we(nets.we_fb), sign_mode=SignMode.MIXED,
                           **graded)
        connect(self)
        self.run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
        self.w_out, self.fb = nets.w_out[j:j + 1].copy(), nets.fb[j:j + 1].copy()
        self.b, self.b_out = nets.b[j:j + 1].copy(), nets.b_out[j:j + 1].copy()
        self.started = False

    def trial(self, x: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One trial (``x (T, 1, n_in)``, target, mask as the task gives them) and the host's step; the outputs."""
        from lava.magma.core.run_conditions import RunSteps

        n_in, n_out = self.box["x"].shape[1], self.box["c"].shape[0]
        packed = pack_trial(x, target, mask, "mse", n_out)[:, 0]
        self.box["x"][:] = packed[:, :n_in]
        self.box["target"][:] = packed[:, n_in:n_in + n_out]
        self.box["weight"][:] = packed[:, n_in + n_out:n_in + 2 * n_out]
        self.box["decision"][:] = packed[:, -1]
        self.source.run(condition=RunSteps(num_steps=self.ticks_per_trial), run_cfg=self.run_cfg)
        self.started = True
        nets = self.nets
        rec = lambda name: self.box.snapshot(name)[None]  # noqa: E731
        self.w_out, self.b, self.b_out = _host_step(nets, self.j, self.w_out, self.b, self.b_out, rec("rates"),
                                                rec("errors"), rec("signals"), np.asarray(mask)[None, :, 0])
        self.fb = (np.swapaxes(self.w_out, -1, -2).copy() if nets._symmetric else self.fb)
        self.syn_v.weights.set(self.w_out[0].astype(np.float64))
        self.syn_b.weights.set(self.fb[0].astype(np.float64))
        self.neuron.b.set(self.b[0].astype(np.float64))
        self.error.c.set(self.b_out[0].astype(np.float64))
        return self.box.snapshot("outputs")

    def weights(self) -> dict[str, np.ndarray]:
        """The integers: ``w_in``, ``w_rec`` (from the learning synapses), ``w_out``, ``b``, ``b_out``."""
        return {"w_in": np.asarray(self.syn_u.weights.get()).astype(np.int64),
                "w_rec": np.asarray(self.syn_w.weights.get()).astype(np.int64),
                "w_out": self.w_out[0], "b": self.b[0], "b_out": self.b_out[0]}

    def stop(self) -> None:
        if self.started and self.source.runtime is not None:
            self.source.stop()


def _host_step(nets, j, w_out, b, b_out, rates, errors, signals, mask):
    """:func:`~neurorate.backends.torch.engine_profile.host_update` for network ``j`` alone."""
    from neurorate.backends.torch.engine_profile import host_update

    return host_update(w_out, nets.e_out[j:j + 1], b, b_out, rates, errors, signals, mask, nets._lr[j:j + 1],
                       nets._alpha[j:j + 1], nets.S, nets.widths)


def train(nets, task, iterations: int, start: int = 0, losses: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """``iterations`` trials of every network of ``nets`` (calibrated, not yet trained) on its fixed-point loihi
    graph, one after the other; returns each network's final integers (:meth:`EngineLoihiGraph.weights`).
    ``losses (M, iterations)``, if given, receives each trial's masked MSE loss (from the recorded outputs)."""
    out = []
    for j in range(nets.m):
        g = EngineLoihiGraph(nets, j, task.n_steps)
        try:
            for i in range(iterations):
                x, target, mask = task.batch(start + i)
                y = g.trial(x, target, mask)
                if losses is not None:
                    k = mask[:, 0]
                    losses[j, i] = 0.5 * float((k * (y - target[:, 0]) ** 2).sum()) / max(float(k.sum()), 1.0)
            out.append(g.weights())
        finally:
            g.stop()
    return out


def train_runs(specs, tasks, rule: str, *, iterations: int, lrs: np.ndarray, profile, progress=None, callback=None,
               start_iteration: int = 0):
    """:meth:`LavaBackend.train` on the loihi graph under an engine profile (``--lava-graph loihi --profile
    loihi2-engine``): the networks are mapped as the torch backend's engine view maps them (scales frozen from the
    first trial), then each runs its trials on its fixed-point graph, all networks trial by trial; one
    :class:`~neurorate.backends.base.BackendRun` per network, ``extra["engine"]`` the frozen scales."""
    import time

    import torch

    from neurorate.backends.base import BackendRun, progress_bar
    from neurorate.backends.torch import engine_profile as ep
    from neurorate.backends.torch import stack
    from neurorate.hardware.profiles import HardwareProfile, load_profile
    from neurorate.model import losses as L

    prof = profile if isinstance(profile, HardwareProfile) else load_profile(profile)
    m = len(specs)
    ens = stack(list(specs), torch.float64, torch.device("cpu"))
    kind = tasks[0].loss_kind
    ep.check(ens, rule, "sgd", kind, int(tasks[0].batch_size), prof.name)
    nets = ep.EngineNetworks(ens, prof.engine, rule)
    first = [tk.batch(start_iteration) for tk in (tasks if len(tasks) > 1 else tasks * m)]
    x, t, k = (np.stack([f[i][:, 0] for f in first]) for i in range(3))
    nets.calibrate(x, t, k, np.asarray(lrs, dtype=np.float64), np.maximum(k.reshape(m, -1).sum(axis=1), 1.0))
    nets.epoch = start_iteration * nets.epochs_per_trial(x.shape[1])
    if start_iteration:
        raise NeurorateError("the Lava loihi graph in fixed point starts from the first iteration (no resume)")
    loss = np.full((m, iterations), np.nan)
    acc = np.full((m, iterations), np.nan)
    graphs = [EngineLoihiGraph(nets, j, tasks[0].n_steps) for j in range(m)]
    bar = progress_bar(iterations, progress, f"lava loihi {rule} fixed x{m}")
    t0 = time.perf_counter()
    try:
        for i in range(iterations):
            for j, g in enumerate(graphs):
                xb, tb, kb = tasks[j if len(tasks) > 1 else 0].batch(start_iteration + i)
                y = g.trial(xb, tb, kb)
                yy, tt, kk = (torch.as_tensor(np.asarray(a, dtype=np.float64)[None, :, None, :].copy())
                              for a in (y, tb[:, 0], kb[:, 0]))
                loss[j, i] = float(L.loss(kind, yy, tt, kk)[0])
                acc[j, i] = float(L.accuracy(kind, yy, tt, kk)[0])
            if callback is not None:
                callback(i, loss[:, i].copy(), acc[:, i].copy())
            if bar is not None:
                bar.update(1)
        weights = [g.weights() for g in graphs]
    finally:
        for g in graphs:
            g.stop()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    report = nets.report()
    runs = []
    for j, spec in enumerate(specs):
        w = weights[j]
        sc = lambda v, e: np.asarray(v, dtype=np.float64) * 2.0 ** -int(e)  # noqa: E731
        new = {"w_in": sc(w["w_in"], nets.e_in[j]), "w_rec": sc(w["w_rec"], nets.e_rec[j]),
               "w_out": sc(w["w_out"], nets.e_out[j]), "b": sc(w["b"], nets.S), "b_out": sc(w["b_out"], nets.S)}
        trained = spec.replace(**{name: v.reshape(np.asarray(getattr(spec, name)).shape) for name, v in new.items()})
        run = BackendRun(spec=trained, losses=loss[j], accuracy=acc[j], diverged=False, diverged_at=None,
                         wall_time=wall / m)
        run.extra["engine"] = report[j]
        runs.append(run)
    return runs
