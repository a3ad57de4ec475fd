"""The "loihi" graph of the Lava backend: e-prop on Lava's own learning engine, one trial per network step.

``backend_options={"graph": "loihi"}`` (``neurorate run --backend lava --lava-graph loihi``) builds, per network,
a graph of Loihi-mappable pieces (:mod:`neurorate.backends.lava.procs.loihi` describes the phased four-tick
schedule): the input and recurrent weights ``U``, ``W`` are ``LearningDense`` synapses that learn with a
three-factor rule (:func:`learning_rule`), the readout ``V`` and the feedback ``lr B`` are ``Dense`` synapses, the
rate and error neurons are neuron processes. What the engine cannot hold is done beside it and said so
(docs/lava.md, "The loihi graph"): the biases ``b``, ``c`` are learned inside their neurons at the end of each
trial, the readout ``V`` (and ``B = V^T`` for symmetric feedback) by the host between trials, from the rates and
errors the neurons record. Float conformance with the torch backend's e-prop holds to ~1e-14
(``tests/conformance/test_lava_loihi.py``).

What it refuses (:func:`check_loihi`), one line each: activations other than ReLU (the synapses' pre-trace ``x1`` is
unsigned), batches of more than one trial (Loihi has no batch dimension), forms B and C (their eligibility is an
N x N trace, not ``psi * rbar``), hardware profiles other than an engine view (``loihi2-engine``: training then runs
in fixed point, :mod:`neurorate.backends.lava.loihi_engine`). Adam and BPTT are refused by the Lava backend's
capabilities for every graph.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from neurorate.backends.base import BackendRun, SimResult, progress_bar, trained_spec
from neurorate.errors import NeurorateError
from neurorate.learning.feedback import feedback_matrix
from neurorate.model.spec import NetworkSpec

from ._compat import ensure_lava_importable
from ._io import Mailbox, pack_trial

GRAPHS = ("fused", "loihi")
"""Values of the Lava backend's ``graph`` option: the fused single process (default) or the loihi graph."""

TICKS_PER_STEP = 4
"""Ticks per network step and learning epoch (``t_epoch``), as :data:`neurorate.backends.lava.procs.loihi
.TICKS_PER_STEP` (repeated here so that this module imports no lava)."""

HUGE_TAU = 1e300
"""Decay time constant of the engine's traces: ``exp(-t / 1e300) == 1.0`` exactly in float64, so the engine's own
decay (tau 65535 for y1..y3 by default; tau 0 gives NaN for x1) leaves the neurons' values untouched."""

_WHAT = "the Lava loihi graph"


def epochs(n_steps: int) -> tuple[int, int]:
    """``(E, K)``: a trial of ``n_steps`` steps takes ``E = 2^K >= n_steps + 1`` epochs (the last one empty)."""
    k = max(0, math.ceil(math.log2(int(n_steps) + 1)))
    return 2 ** k, k


def rule_strings(k: int) -> dict[str, str]:
    """The learning rule of ``U`` and ``W``: the trial's gradient accumulates in the tag, the weight takes it once.

    ``dt = y0*x1*y2 - y0*x1*y3 - uK*t`` adds ``x1 (y2 - y3) = lr (L psi)_i rbar_j`` in every epoch with a
    back-propagating spike and clears the tag in the trial's last epoch, where ``dw = -uK*t`` applies it.
    """
    return {"dw": f"-u{k} * t", "dt": f"y0 * x1 * y2 - y0 * x1 * y3 - u{k} * t"}


def learning_rule(n_steps: int):
    """The ``Loihi3FLearningRule`` of the loihi graph (:func:`rule_strings`), ``t_epoch = 4``, huge trace taus."""
    ensure_lava_importable()
    from lava.magma.core.learning.learning_rule import Loihi3FLearningRule

    _, k = epochs(n_steps)
    rule = Loihi3FLearningRule(**rule_strings(k), x1_tau=HUGE_TAU, t_epoch=TICKS_PER_STEP)
    rule.y1_tau = rule.y2_tau = rule.y3_tau = HUGE_TAU
    return rule


def check_loihi(specs: Sequence[NetworkSpec] = (), batch: int | None = None, profile: Any = None) -> None:
    """One-line :class:`~neurorate.errors.NeurorateError` for what the loihi graph cannot run (module docstring)."""
    for s in specs:
        if s.form != "A":
            raise NeurorateError(f"{_WHAT} runs form A only, not form {s.form!r}: the eligibility of forms B/C is an "
                                 "N x N trace per synapse, not the factorised psi * rbar the synapses hold")
        if s.activation != "relu":
            raise NeurorateError(f"{_WHAT} runs relu neurons only, not {s.activation!r}: the synapses' presynaptic "
                                 "trace x1 is unsigned (signed rates would need split trace populations)")
    if batch is not None and int(batch) > 1:
        raise NeurorateError(f"{_WHAT} runs one trial at a time (Loihi has no batch dimension), got a batch of "
                             f"{int(batch)}; use a batch of 1 (--batch 1) or the fused graph")
    if profile is not None:
        from neurorate.backends.torch.engine_profile import engine_spec

        if engine_spec(profile) is None:
            raise NeurorateError(f"{_WHAT} runs a hardware profile only in the engine view (a profile with an "
                                 "[engine] table, e.g. loihi2-engine: fixed point on Lava's learning engine, "
                                 "backends/lava/loihi_engine.py); drop the profile or use the fused graph")


def check_graph(graph: Any) -> str:
    """The ``graph`` option's value, or a one-line error."""
    if graph not in GRAPHS:
        raise NeurorateError(f"unknown Lava graph {graph!r}; choose {' or '.join(GRAPHS)}")
    return str(graph)



def connect(graph) -> None:
    """Wire one network's loihi graph (float or fixed point): source -> U -> rate neuron <-> W, rate neuron -> V ->
    error neuron -> B -> the rate neuron's third-factor input, and the neuron's post traces (``y0`` as the
    back-propagating spike, ``y1..y3``) to both learning synapses. ``graph`` holds ``source``, ``neuron``,
    ``error`` and the synapses ``syn_u``, ``syn_w``, ``syn_v``, ``syn_b``."""
    graph.source.s_out.connect(graph.syn_u.s_in)
    graph.syn_u.a_out.connect(graph.neuron.a_in)
    graph.neuron.s_out.connect(graph.syn_w.s_in)
    graph.syn_w.a_out.connect(graph.neuron.a_in)
    graph.neuron.s_out.connect(graph.syn_v.s_in)
    graph.syn_v.a_out.connect(graph.error.y_in)
    graph.error.s_out.connect(graph.syn_b.s_in)
    graph.syn_b.a_out.connect(graph.neuron.a_third_factor_in)
    for syn in (graph.syn_u, graph.syn_w):
        graph.neuron.s_out_bap.connect(syn.s_in_bap)
        graph.neuron.s_out_y1.connect(syn.s_in_y1)
        graph.neuron.s_out_y2.connect(syn.s_in_y2)
        graph.neuron.s_out_y3.connect(syn.s_in_y3)


class LoihiGraph:
    """One network's loihi graph (source, rate neuron, error neuron, U/W learning synapses, V and B synapses).

    ``feedback`` is "symmetric" (``B = V^T``, refreshed after every readout update), "random" (the spec's fixed
    ``B``) or None (no learning: ``lr`` is ignored and the feedback weights are zero). The neurons always record the
    trial's states, rates and errors in the mailbox (the host's readout update reads them). ``stop()`` in a
    ``finally``.
    """

    def __init__(self, spec: NetworkSpec, *, n_steps: int, loss_kind: str, lr: float, feedback: str | None,
                 tag: str = "floating_pt"):
        ensure_lava_importable()
        from lava.magma.core.learning.constants import GradedSpikeCfg
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense, LearningDense

        from .procs.loihi import LoihiErrorNeuron, LoihiRateNeuron, LoihiTrialSource

        n, n_in, n_out = spec.n_hidden, spec.n_in, spec.n_out
        self.n_steps = int(n_steps)
        self.n_epochs, _ = epochs(n_steps)
        self.ticks_per_trial = TICKS_PER_STEP * self.n_epochs
        self.feedback = feedback
        self.lr = float(lr) if feedback is not None else 0.0
        t = self.n_steps
        self.box = Mailbox({"x": (t, n_in), "target": (t, n_out), "weight": (t, n_out), "decision": (t,),
                            "states": (t, n), "rates": (t, n), "psi": (t, n), "outputs": (t, n_out),
                            "errors": (t, n_out), "loss": (1,), "hits": (2,), "b": (n,), "c": (n_out,)})
        self.v = np.array(spec.w_out, dtype=np.float64)
        self.b_random = np.array(feedback_matrix(spec), dtype=np.float64)
        rule = learning_rule(n_steps)
        learn = feedback is not None
        common = {"n_steps": t, "n_epochs": self.n_epochs, "mailbox": self.box}
        self.source = LoihiTrialSource(n_in=n_in, alpha=spec.alpha, **common)
        self.neuron = LoihiRateNeuron(b=np.array(spec.b, dtype=np.float64), alpha=spec.alpha, learning_rule=rule,
                                      record=True, learn_bias=learn, **common)
        self.error = LoihiErrorNeuron(c=np.array(spec.b_out, dtype=np.float64), loss_kind=loss_kind, lr=self.lr,
                                      learn_bias=learn, **common)
        graded = {"num_message_bits": 24}
        self.syn_u = LearningDense(weights=np.array(spec.w_in, dtype=np.float64), learning_rule=rule,
                                   graded_spike_cfg=GradedSpikeCfg.OVERWRITE, **graded)
        self.syn_w = LearningDense(weights=np.array(spec.w_rec, dtype=np.float64), learning_rule=rule,
                                   graded_spike_cfg=GradedSpikeCfg.OVERWRITE, **graded)
        self.syn_v = Dense(weights=self.v.copy(), **graded)
        self.syn_b = Dense(weights=self._feedback_weights(), **graded)
        connect(self)
        self.run_cfg = Loihi2SimCfg(select_tag=tag)
        self.ticks = 0
        self.started = False

    def _feedback_weights(self) -> np.ndarray:
        """``lr B`` (N, n_out): the learning rate rides on the feedback synapses (the engine's scale factors are a
        4-bit mantissa times a power of two; a Dense weight carries any value)."""
        if self.feedback is None:
            return np.zeros_like(self.b_random)
        return self.lr * (self.v.T if self.feedback == "symmetric" else self.b_random)

    def load(self, x: np.ndarray, target: np.ndarray, mask: np.ndarray, loss_kind: str) -> None:
        """Write one trial (``x (T, 1, n_in)``, target and mask as the task gives them) into the mailbox."""
        n_in, n_out = self.box["x"].shape[1], self.box["c"].shape[0]
        packed = pack_trial(x, target, mask, loss_kind, n_out)[:, 0]
        self.box["x"][:] = packed[:, :n_in]
        self.box["target"][:] = packed[:, n_in:n_in + n_out]
        self.box["weight"][:] = packed[:, n_in + n_out:n_in + 2 * n_out]
        self.box["decision"][:] = packed[:, -1]

    def start(self, ticks: int | None = None) -> None:
        """Run ``ticks`` ticks (default: one whole trial) without blocking; :meth:`wait` for them."""
        from lava.magma.core.run_conditions import RunSteps

        ticks = self.ticks_per_trial if ticks is None else int(ticks)
        self.source.run(condition=RunSteps(num_steps=ticks, blocking=False), run_cfg=self.run_cfg)
        self.started = True
        self.ticks += ticks

    def wait(self) -> None:
        """Wait for the trial started by :meth:`start`."""
        self.source.wait()

    def update_readout(self) -> None:
        """SGD on the readout from the trial's records (``V -= lr sum_k e_k r_k^T``), and ``B = V^T`` with it."""
        if self.feedback is None:
            return
        self.v -= self.lr * (self.box["errors"].T @ self.box["rates"])
        self.syn_v.weights.set(self.v.copy())
        if self.feedback == "symmetric":
            self.syn_b.weights.set(self._feedback_weights())

    def weights(self) -> dict[str, np.ndarray]:
        """The network's current weights (``w_in``/``w_rec`` read from the learning synapses)."""
        return {"w_in": np.array(self.syn_u.weights.get(), dtype=np.float64),
                "w_rec": np.array(self.syn_w.weights.get(), dtype=np.float64),
                "w_out": self.v.copy(), "b": self.box.snapshot("b"), "b_out": self.box.snapshot("c")}

    def stop(self) -> None:
        """Stop the runtime (its forked processes) if it was started."""
        if self.started and self.source.runtime is not None:
            self.source.stop()


def _run_trials(graphs: list[LoihiGraph], ticks: int | None = None) -> None:
    for g in graphs:
        g.start(ticks)
    for g in graphs:
        g.wait()


def simulate(specs: list[NetworkSpec], x: np.ndarray) -> SimResult:
    """Trajectories of the networks on ``x (T, B, n_in)``: the B trials run one after the other, each from zero."""
    t_steps, batch, _ = x.shape
    n, n_out = specs[0].n_hidden, specs[0].n_out
    m = len(specs)
    states, rates, outputs = np.zeros((m, t_steps, batch, n)), np.zeros((m, t_steps, batch, n)), \
        np.zeros((m, t_steps, batch, n_out))
    graphs = [LoihiGraph(s, n_steps=t_steps, loss_kind="mse", lr=0.0, feedback=None) for s in specs]
    zeros = np.zeros((t_steps, 1, n_out))
    try:
        for b in range(batch):
            for g in graphs:
                g.load(x[:, b:b + 1], zeros, zeros, "mse")
            _run_trials(graphs)
            for j, g in enumerate(graphs):
                states[j, :, b] = g.box["states"]
                rates[j, :, b] = g.box["rates"]
                outputs[j, :, b] = g.box["outputs"]
    finally:
        for g in graphs:
            g.stop()
    return SimResult(states, rates, outputs, states.copy())


def train(specs: list[NetworkSpec], tasks: list, rule: str, feedback: str, *, iterations: int, lrs: np.ndarray,
          progress: bool | None, callback: Callable[[int, np.ndarray, np.ndarray], None] | None,
          start_iteration: int = 0) -> list[BackendRun]:
    """Train each network on its task, one trial per iteration and SGD once per trial (see the module docstring).

    ``callback(i, losses (M,), accuracy (M,))`` runs after every trial. A network whose loss becomes NaN/inf is
    frozen (its update epoch is withheld and it runs no further trials) and reported as diverged, as on the fused
    graph.
    """
    t0 = time.perf_counter()
    m = len(specs)
    t_steps, loss_kind = tasks[0].n_steps, tasks[0].loss_kind
    losses = np.full((m, iterations), np.nan)
    accuracy = np.full((m, iterations), np.nan)
    diverged_at: list[int | None] = [None] * m
    graphs = [LoihiGraph(s, n_steps=t_steps, loss_kind=loss_kind, lr=float(lrs[j]), feedback=feedback)
              for j, s in enumerate(specs)]
    bar = progress_bar(iterations, progress, f"lava loihi {rule} x{m}")
    try:
        for i in range(iterations):
            live = [j for j in range(m) if diverged_at[j] is None]
            for j in live:
                graphs[j].load(*tasks[j if len(tasks) > 1 else 0].batch(start_iteration + i), loss_kind)
            # the trial's steps first; its last (update) epoch only for a network whose loss stayed finite, so a
            # diverged network keeps the weights it ran the trial with (as the fused graph and torch do)
            _run_trials([graphs[j] for j in live], graphs[0].ticks_per_trial - TICKS_PER_STEP)
            for j in live:
                g = graphs[j]
                loss = float(g.box["loss"][0])
                if not np.isfinite(loss):
                    diverged_at[j] = i
                    continue
                correct, total = g.box["hits"]
                losses[j, i] = loss
                accuracy[j, i] = correct / total if total > 0 else np.nan
            live = [j for j in live if diverged_at[j] is None]
            _run_trials([graphs[j] for j in live], TICKS_PER_STEP)
            for j in live:
                graphs[j].update_readout()
            if callback is not None:
                callback(i, losses[:, i].copy(), accuracy[:, i].copy())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.nanmean(losses[:, i]) if np.isfinite(losses[:, i]).any() else np.nan:.4g}")
        weights = [g.weights() for g in graphs]
        ticks = [g.ticks for g in graphs]
    finally:
        for g in graphs:
            g.stop()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    runs = []
    for j, spec in enumerate(specs):
        trained, finite = trained_spec(spec, {k: v.reshape(getattr(spec, k).shape) for k, v in weights[j].items()})
        div = diverged_at[j]
        if not finite and div is None:  # weights that are not numbers: diverged (by the last update at the latest)
            div = max(0, len(losses[j]) - 1)
        runs.append(BackendRun(spec=trained, losses=losses[j], accuracy=accuracy[j], diverged=div is not None,
                               diverged_at=div, wall_time=wall / m,
                               extra={"ticks": ticks[j], "tag": "floating_pt", "graph": "loihi"}))
    return runs
