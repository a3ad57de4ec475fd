"""LavaBackend: the neurorate Backend protocol on Lava (CPU simulation of a Loihi target).

Each network is one vectorised :class:`~neurorate.backends.lava.procs.rate_rnn.RateRNN` process (its B
trials inside) fed by a :class:`~neurorate.backends.lava.procs.rate_rnn.TrialSource`; M networks are M
RateRNN processes in one Lava graph, running in lock step (one OS process each). One tick is one network
step; a training iteration is T ticks; the update is applied inside Lava after the trial's last step. This is the
``fused`` graph (the default of the ``graph`` option); ``graph="loihi"`` runs e-prop on Lava's own learning engine
instead, one trial at a time (:mod:`neurorate.backends.lava.loihi`, docs/lava.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from neurorate.backends.base import (
    BackendCapabilities,
    BackendRun,
    SimResult,
    check_compatible,
    check_ensemble,
    make_profile_quantizer,
    progress_bar,
    task_list,
    trained_spec,
)
from neurorate.defaults import DEFAULT_LR
from neurorate.errors import NeurorateError
from neurorate.learning.feedback import feedback_matrix
from neurorate.learning.registry import BUILTIN_RULES, Rule
from neurorate.model.spec import NetworkSpec

from . import loihi as _loihi
from ._compat import ensure_lava_importable
from ._io import FixedFeed, Mailbox, TaskFeed

FEEDBACK = {r.name: r.feedback for r in BUILTIN_RULES if "lava" in r.backends}
"""Built-in rules that run on-line inside Lava, and the feedback kind of their learning signal (derived from
the registry, :mod:`neurorate.learning.registry`)."""

_WEIGHTS = ("w_in", "w_rec", "w_out", "b", "b_out")


CAPABILITIES = BackendCapabilities(
    name="lava", title="Lava", online_only=True, optimizers=("sgd",), default_lr={"sgd": DEFAULT_LR["sgd"]},
    refusals={"adam": "is not local"}, profiles=True, neurons=("rate",), options=("graph",), extra="lava",
    own_processes=True, cost=5.0)
"""What the Lava backend runs: the rules that list ``lava`` in ``Rule.backends`` and run forward in time (no
BPTT), SGD applied inside the Lava process (Adam is not local), every form and activation, hardware profiles
(the ``fixed_pt`` models), rate neurons; its precision and placement are Lava's own (no dtype/device). It runs one
OS process per network, and a network-iteration costs about 5 of the torch backend's (docs/study.md). Its one
``train`` option, ``graph``, picks the fused process ("fused", default) or the loihi graph ("loihi", which runs
form A, relu, one trial per batch, float only: :func:`LavaBackend.check_options`)."""


def check_rule(rule: str | Rule, optimizer: str) -> str:
    """The feedback kind ("symmetric" / "random") of ``rule`` on Lava, or a one-line error for what Lava cannot run
    (:func:`neurorate.backends.base.check_compatible` with :data:`CAPABILITIES`).

    The Lava process runs the e-prop forward traces with either feedback, so it runs any rule that declares
    the ``lava`` backend and detaches the presynaptic rates.
    """
    return check_compatible(CAPABILITIES, rule, optimizer).feedback


class _Graph:
    """M RateRNN processes (plus their sources) in one Lava graph; ``stop()`` it in a ``finally``."""

    def __init__(self, specs, feeds, *, batch: int, n_steps: int, loss_kind: str, learning: str | None,
                 lrs, boxes, quantizers, tag: str):
        ensure_lava_importable()
        from lava.magma.core.run_configs import Loihi2SimCfg

        from .procs.rate_rnn import RateRNN, TrialSource

        width = specs[0].n_in + 2 * specs[0].n_out + 1
        self.sources = [TrialSource(feed=f, batch=batch, width=width, n_steps=n_steps) for f in feeds]
        self.nets = []
        for j, spec in enumerate(specs):
            q = quantizers[j]
            weights = {name: getattr(spec, name) for name in ("w_in", "w_rec", "w_out", "b", "b_out")}
            alpha = spec.alpha
            if q is not None:  # fixed point: freeze each matrix's grid, start on it, quantise the leak
                q.calibrate(weights)
                weights = {name: q.weight(w, name) for name, w in weights.items()}
                alpha = float(q.decay(spec.alpha))
            net = RateRNN(**weights, feedback=feedback_matrix(spec), alpha=alpha, form=spec.form,
                          activation=spec.activation, batch=batch, n_steps=n_steps, loss_kind=loss_kind,
                          learning=learning, lr=float(lrs[j]), mailbox=boxes[j], quantizer=quantizers[j],
                          record="states" in boxes[j])
            self.sources[j if len(self.sources) > 1 else 0].data_out.connect(net.data_in)
            self.nets.append(net)
        # Lava compiles and runs the processes connected to the one it is asked to run: with one source per
        # network the graph has M components, and running nets[0] alone would leave the others untrained.
        self.roots = self.nets[:1] if len(self.sources) == 1 else list(self.nets)
        self.n_steps = n_steps
        self.run_cfg = Loihi2SimCfg(select_tag=tag)
        self.ticks = 0

    def run(self, ticks: int) -> None:
        """Advance every network by ``ticks`` steps (blocking)."""
        from lava.magma.core.run_conditions import RunSteps

        if len(self.roots) == 1:
            self.roots[0].run(condition=RunSteps(num_steps=int(ticks)), run_cfg=self.run_cfg)
        else:  # one runtime per (source, network) pair: start them all, then wait for each
            for root in self.roots:
                root.run(condition=RunSteps(num_steps=int(ticks), blocking=False), run_cfg=self.run_cfg)
            for root in self.roots:
                root.wait()
        self.ticks += int(ticks)

    def stop(self) -> None:
        """Stop the runtimes (their forked processes) that were started."""
        for root in self.roots:
            if root.runtime is not None:
                root.stop()


class LavaBackend:
    """The :class:`neurorate.backends.base.Backend` protocol on Lava.

    Parameters
    ----------
    chunk_seconds : wall time per ``run()`` call between progress/callback updates during training (fused graph).
    graph : "fused" (one vectorised process per network, default) or "loihi" (Lava's learning engine,
        :mod:`neurorate.backends.lava.loihi`) for ``simulate`` and ``train``; ``train(..., graph=...)``
        (``backend_options={"graph": ...}`` in :func:`neurorate.train`) overrides it for one call.
    """

    name = "lava"
    capabilities = CAPABILITIES

    def __init__(self, chunk_seconds: float = 0.5, graph: str = "fused"):
        self.chunk_seconds = float(chunk_seconds)
        self.graph = _loihi.check_graph(graph)

    @staticmethod
    def check_options(options: dict, *, specs=(), batch: int | None = None, profile: Any = None,
                      **_run: Any) -> str:
        """The graph the ``train`` options select, or one line naming what it cannot run: an unknown ``graph``;
        on the loihi graph a form other than A, an activation other than relu, a batch of more than one trial or
        a hardware profile (:func:`neurorate.backends.lava.loihi.check_loihi`). :func:`neurorate.train` calls it
        in its validate step, before anything is written (also with ``rule``, ``optimizer`` and ``loss``, which the
        backend's capabilities already check)."""
        graph = _loihi.check_graph((options or {}).get("graph", "fused"))
        if graph == "loihi":
            _loihi.check_loihi(specs, batch, profile)
        return graph

    @staticmethod
    def check_available() -> None:
        """A one-line :class:`~neurorate.errors.MissingExtraError` naming the ``lava`` extra when lava-nc is missing
        (and lava made importable on Python 3.11, :func:`~neurorate.backends.lava._compat.ensure_lava_importable`)."""
        ensure_lava_importable()

    # ------------------------------------------------------------------ protocol
    def simulate(self, specs: list[NetworkSpec] | NetworkSpec, inputs: np.ndarray, profile: Any = None) -> SimResult:
        """Trajectories ``(M, T, B, N)`` (outputs ``(M, T, B, n_out)``) driven by ``inputs (T, B, n_in)`` (on the
        loihi graph the B trials run one after another, each from the zero state)."""
        specs = [specs] if isinstance(specs, NetworkSpec) else list(specs)
        check_ensemble(specs)
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim != 3 or x.shape[-1] != specs[0].n_in:
            raise NeurorateError(f"inputs must have shape (T, B, n_in={specs[0].n_in}), got {x.shape}")
        if self.graph == "loihi":
            self.check_options({"graph": "loihi"}, specs=specs, profile=profile)
            if profile is not None:
                raise NeurorateError("the Lava loihi graph simulates in float only (an engine profile applies to "
                                     "training); drop the profile or use the fused graph")
            return _loihi.simulate(specs, x)
        t_steps, batch, _ = x.shape
        n, n_out = specs[0].n_hidden, specs[0].n_out
        boxes = [Mailbox({"states": (t_steps, batch, n), "rates": (t_steps, batch, n),
                          "preacts": (t_steps, batch, n), "outputs": (t_steps, batch, n_out)}) for _ in specs]
        quantizers, tag = self._quantizers(profile, specs, training=False)
        graph = _Graph(specs, [FixedFeed(x, n_out)], batch=batch, n_steps=t_steps, loss_kind="mse",
                       learning=None, lrs=np.zeros(len(specs)), boxes=boxes, quantizers=quantizers, tag=tag)
        try:
            graph.run(t_steps)
            return SimResult(*(np.stack([b.snapshot(k) for b in boxes]) for k in ("states", "rates", "outputs",
                                                                                    "preacts")))
        finally:
            graph.stop()

    def train(self, specs: list[NetworkSpec], task, rule: str, *, iterations: int, lr, optimizer: str = "sgd",
              profile: Any = None, progress: bool | None = None,
              callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
              start_iteration: int = 0, **options: Any) -> list[BackendRun]:
        """Train the networks with on-line three-factor learning and SGD inside Lava.

        Batch ``start_iteration + i`` of ``task`` (one shared task, or one per network) is trial batch i.
        ``callback(i, losses (M,), accuracy (M,))`` runs for every iteration, in bursts after each
        ``run()`` chunk (after every trial on the loihi graph). A network whose loss becomes NaN/inf is frozen and
        reported as diverged. ``graph`` ("fused"/"loihi") overrides the constructor's.
        """
        check_compatible(CAPABILITIES, options=options)
        specs = [specs] if isinstance(specs, NetworkSpec) else list(specs)
        check_ensemble(specs)
        learning = check_rule(rule, optimizer)
        tasks = task_list(task, len(specs))
        iterations = int(iterations)
        m = len(specs)
        lrs = np.array(np.broadcast_to(np.asarray(lr, dtype=np.float64), (m,)))
        graph = self.check_options({"graph": options.get("graph", self.graph)}, specs=specs,
                                   batch=tasks[0].batch_size, profile=profile)
        if graph == "loihi" and profile is not None:  # an engine view (check_loihi): fixed point on the engine
            from . import loihi_engine

            return loihi_engine.train_runs(specs, tasks, rule if isinstance(rule, str) else rule.name,
                                           iterations=iterations, lrs=lrs, profile=profile, progress=progress,
                                           callback=callback, start_iteration=start_iteration)
        if graph == "loihi":
            return _loihi.train(specs, tasks, rule if isinstance(rule, str) else rule.name, learning,
                                iterations=iterations, lrs=lrs, progress=progress, callback=callback,
                                start_iteration=start_iteration)
        t_steps, batch = tasks[0].n_steps, tasks[0].batch_size
        n, n_in, n_out = specs[0].n_hidden, specs[0].n_in, specs[0].n_out
        shapes = {"loss": (iterations,), "accuracy": (iterations,), "done": (1,), "diverged_at": (1,),
                  "w_in": (n, n_in), "w_rec": (n, n), "w_out": (n_out, n), "b": (n,), "b_out": (n_out,)}
        boxes = [Mailbox(shapes) for _ in specs]
        for box in boxes:
            box["loss"][:] = np.nan
            box["accuracy"][:] = np.nan
            box["diverged_at"][0] = -1
        quantizers, tag = self._quantizers(profile, specs, training=True)
        feeds = [TaskFeed(t, start_iteration) for t in tasks]
        t0 = time.perf_counter()
        graph = _Graph(specs, feeds, batch=batch, n_steps=t_steps, loss_kind=tasks[0].loss_kind, learning=learning,
                       lrs=lrs, boxes=boxes, quantizers=quantizers, tag=tag)
        bar = progress_bar(iterations, progress, f"lava {rule} x{m}")
        reported = 0
        try:
            chunk = 1
            while reported < iterations:
                chunk = min(chunk, iterations - reported)
                t_run = time.perf_counter()
                graph.run(chunk * t_steps)
                per_it = (time.perf_counter() - t_run) / chunk
                for i in range(reported, reported + chunk):
                    losses = np.array([b["loss"][i] for b in boxes])
                    acc = np.array([b["accuracy"][i] for b in boxes])
                    if callback is not None:
                        callback(i, losses, acc)
                reported += chunk
                if bar is not None:
                    bar.update(chunk)
                    last = np.array([b["loss"][reported - 1] for b in boxes], dtype=float)
                    last = last[np.isfinite(last)]  # every network diverged: no mean to show
                    bar.set_postfix(loss=f"{last.mean():.4g}" if last.size else "nan")
                chunk = max(1, int(self.chunk_seconds / max(per_it, 1e-6)))
        finally:
            graph.stop()
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        runs = []
        for spec, box in zip(specs, boxes):
            div = int(box["diverged_at"][0])
            trained, finite = trained_spec(spec, {k: box.snapshot(k).reshape(getattr(spec, k).shape)
                                                  for k in _WEIGHTS})
            if not finite and div < 0:  # weights that are not numbers: diverged (by the last update at the latest)
                div = max(0, iterations - 1)
            runs.append(BackendRun(spec=trained, losses=box.snapshot("loss"), accuracy=box.snapshot("accuracy"),
                                   diverged=div >= 0, diverged_at=div if div >= 0 else None, wall_time=wall / m,
                                   extra={"ticks": graph.ticks, "tag": tag}))
        return runs

    def jacobian_vector(self, spec: NetworkSpec, state: np.ndarray, q: np.ndarray) -> np.ndarray:
        """``D q`` of one autonomous step at ``state (N,)`` (form A: a_{t-1}; B/C: the state, zero input):
        :func:`neurorate.model.dynamics.tangent_step` in torch float64."""
        import torch

        from neurorate.model import dynamics as dyn

        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        s = t(state).reshape(-1)
        qt = t(q).reshape(spec.n_hidden, -1)
        w_rec = t(spec.w_rec)
        _, fprime = dyn.activation(spec.activation)
        if spec.form == "A":
            return dyn.tangent_step(qt, w_rec, spec.alpha, "A", fprime(s), None).numpy()
        f, _ = dyn.activation(spec.activation)
        _, pre = dyn.step(s.reshape(1, -1), t(spec.b).reshape(1, -1), w_rec, spec.alpha, spec.form, f)
        return dyn.tangent_step(qt, w_rec, spec.alpha, spec.form, None, fprime(pre.reshape(-1))).numpy()

    # ------------------------------------------------------------------ helpers
    def _quantizers(self, profile, specs, training: bool):
        """One quantizer per network (the same one the torch backend builds) and the model tag."""
        if profile is None:
            return [None] * len(specs), "floating_pt"
        return [make_profile_quantizer(profile, specs, training) for _ in specs], "fixed_pt"
