"""Lava processes of the neurorate rate RNN: a trial source and one vectorised RateRNN process.

Side-effect free on purpose: Lava's compiler executes every ``.py`` file of this folder on each compile.

One Lava tick is one network step. Tick ``t`` (1-based ``time_step``) is step ``k = (t-1) % T`` of trial
batch ``i = (t-1) // T``. The :class:`TrialSource` sends, per tick, one row per trial
``[x_t (n_in) | target_t (n_out) | mask_t / normaliser (n_out) | decision flag (1)]``; the
:class:`RateRNN` receives it in the same tick (no delay), advances its B trials, computes the readout,
the error and (when learning) the eligibility traces and the three-factor update, accumulates the
update over the trial and applies it with SGD after the trial's last step.

Large results leave through a *mailbox*: numpy views over an anonymous shared-memory map created by
the host before the runtime forks the model processes (``Var.get`` moves ~50k values/s).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurorate.backends.lava import _kernels as K


class TrialSource(AbstractProcess):
    """Sends trial data, one step per tick: ``feed(i)`` returns batch ``i`` as ``(T, B, width)`` floats."""

    def __init__(self, *, feed, batch: int, width: int, n_steps: int, **kwargs):
        super().__init__(feed=feed, n_steps=n_steps, **kwargs)
        self.data_out = OutPort(shape=(batch, width))


class RateRNN(AbstractProcess):
    """B trials of one leaky rate RNN with on-line three-factor learning (see the module docstring).

    Parameters (all keyword)
    ------------------------
    w_in, w_rec, w_out, b, b_out, feedback : the weights of a NetworkSpec (feedback ``(N, n_out)``).
    alpha, form, activation : the spec's leak, form ("A"/"B"/"C") and activation.
    batch, n_steps : trials B per batch and steps T per trial.
    loss_kind : "mse" or "ce".
    learning : None (inference) or "symmetric" / "random" (the feedback of the learning signal).
    lr : SGD learning rate.
    mailbox : dict of shared numpy arrays the model writes its results to.
    quantizer : None (float) or the numpy quantizer of a hardware profile (``fixed_pt`` model).
    """

    def __init__(self, *, w_in, w_rec, w_out, b, b_out, feedback, alpha: float, form: str, activation: str,
                 batch: int, n_steps: int, loss_kind: str, learning: str | None, lr: float, mailbox: dict,
                 quantizer=None, record: bool = False, **kwargs):
        super().__init__(alpha=float(alpha), form=form, activation=activation, n_steps=int(n_steps),
                         loss_kind=loss_kind, learning=learning, lr=float(lr), mailbox=mailbox,
                         quantizer=quantizer, record=record, **kwargs)
        n, n_in = w_in.shape
        n_out = w_out.shape[0]
        self.data_in = InPort(shape=(batch, n_in + 2 * n_out + 1))
        self.w_in = Var(shape=w_in.shape, init=np.array(w_in, dtype=float))
        self.w_rec = Var(shape=w_rec.shape, init=np.array(w_rec, dtype=float))
        self.w_out = Var(shape=w_out.shape, init=np.array(w_out, dtype=float))
        self.b = Var(shape=(n,), init=np.array(b, dtype=float))
        self.b_out = Var(shape=(n_out,), init=np.array(b_out, dtype=float))
        self.feedback = Var(shape=(n, n_out), init=np.array(feedback, dtype=float))
        self.state = Var(shape=(batch, n), init=np.zeros((batch, n)))
        wide = form != "A"
        self.trace_rec = Var(shape=(batch, n, n) if wide else (batch, n), init=0.0)
        self.trace_in = Var(shape=(batch, n, n_in) if wide else (batch, n_in), init=0.0)
        self.trace_b = Var(shape=(batch, n) if wide else (1, 1), init=0.0)
        self.trial_loss = Var(shape=(1,), init=0.0)
        self.trial_hits = Var(shape=(2,), init=0.0)  # correct decisions, decision steps


class _SourceBase(PyLoihiProcessModel):
    data_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self) -> None:
        n_steps = self.proc_params["n_steps"]
        k = (self.time_step - 1) % n_steps
        if k == 0:
            self._trial = self.proc_params["feed"]((self.time_step - 1) // n_steps)
        self.data_out.send(self._trial[k])


@implements(proc=TrialSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyTrialSourceFloat(_SourceBase):
    """Float trial source (used under both tags: the RNN quantises its own inputs in fixed point)."""


@implements(proc=TrialSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyTrialSourceFixed(_SourceBase):
    """Same data as the float source; float on the wire so nothing is truncated."""


class _RateRNNBase(PyLoihiProcessModel):
    """Shared step code; the fixed-point model overrides the quantisation hooks ``_q*``."""

    data_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    w_in: np.ndarray = LavaPyType(np.ndarray, float)
    w_rec: np.ndarray = LavaPyType(np.ndarray, float)
    w_out: np.ndarray = LavaPyType(np.ndarray, float)
    b: np.ndarray = LavaPyType(np.ndarray, float)
    b_out: np.ndarray = LavaPyType(np.ndarray, float)
    feedback: np.ndarray = LavaPyType(np.ndarray, float)
    state: np.ndarray = LavaPyType(np.ndarray, float)
    trace_rec: np.ndarray = LavaPyType(np.ndarray, float)
    trace_in: np.ndarray = LavaPyType(np.ndarray, float)
    trace_b: np.ndarray = LavaPyType(np.ndarray, float)
    trial_loss: np.ndarray = LavaPyType(np.ndarray, float)
    trial_hits: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self._f, self._fprime = K.activation(p["activation"])
        self._grads = None
        self._diverged = False
        self._quantized = p.get("quantizer") is not None
        self._w = None

    # ------------------------------------------------------------------ quantisation hooks (identity)
    def _used_weights(self) -> dict:
        """The weights the trial computes with (float: the Vars themselves)."""
        return {name: getattr(self, name) for name in _LEARNED}

    def _q_state(self, state: np.ndarray, step: int) -> np.ndarray:
        return state

    def _q_rate(self, rate: np.ndarray, step: int) -> np.ndarray:
        return rate

    def _q_traces(self, traces: list, step: int) -> None:
        return None

    def _apply_update(self, name: str, delta: np.ndarray, it: int) -> None:
        getattr(self, name)[...] += delta

    # ------------------------------------------------------------------ one tick
    def run_spk(self) -> None:
        # a network that blows up (a huge learning rate) overflows to inf/NaN: that is a divergence, which the
        # loss reports (the backend freezes the network), not a warning for every matrix product
        with np.errstate(over="ignore", invalid="ignore"):
            self._tick()

    def _tick(self) -> None:
        p = self.proc_params
        n_steps, form, alpha = p["n_steps"], p["form"], p["alpha"]
        k = (self.time_step - 1) % n_steps
        it = (self.time_step - 1) // n_steps
        data = self.data_in.recv()
        n_in, n_out = self.w_in.shape[1], self.w_out.shape[0]
        x = data[:, :n_in]
        target = data[:, n_in:n_in + n_out]
        weight = data[:, n_in + n_out:n_in + 2 * n_out]
        decision = data[:, -1] > 0
        if k == 0:
            self._start_trial()

        w = self._w
        out = K.step(self.state, x, w["w_in"], w["w_rec"], w["b"], alpha, form, self._f, self._fprime)
        step = self.time_step - 1  # global step: keys stochastic rounding exactly as the torch backend does
        if self._quantized:  # the state is held, and rates are sent, on the profile's grids
            self.state[:] = self._q_state(out.state, step)
            rate = self._q_rate(self._f(self.state) if form == "A" else self.state.copy(), step)
            pre_prev = self._q_rate(out.pre_prev, step - 1) if k > 0 else out.pre_prev
        else:
            self.state[:] = out.state
            rate, pre_prev = out.rate, out.pre_prev
        y = rate @ w["w_out"].T + w["b_out"]
        loss_t, grad_y = K.output_error(p["loss_kind"], y, target, weight)
        self.trial_loss[0] += loss_t
        hits = (np.argmax(y, axis=-1) == np.argmax(target, axis=-1)) & decision
        self.trial_hits += (hits.sum(), decision.sum())

        if p["learning"] is not None and not self._diverged:
            fb = w["w_out"].T if p["learning"] == "symmetric" else self.feedback
            signal = grad_y @ fb.T  # third factor L_t = F dl/dy, (B, N)
            traces = [self.trace_rec, self.trace_in, self.trace_b]
            K.trace_step(traces, form, alpha, pre_prev, x, out.psi)
            self._q_traces(traces, step)
            g_rec, g_in, g_b = K.trace_gradients(traces, form, signal, out.psi)
            g = self._grads
            g["w_rec"] += g_rec
            g["w_in"] += g_in
            g["b"] += g_b
            g["w_out"] += grad_y.T @ rate
            g["b_out"] += grad_y.sum(0)

        if p["record"]:
            box = p["mailbox"]
            box["states"][k] = self.state
            box["rates"][k] = rate
            box["preacts"][k] = out.preact
            box["outputs"][k] = y
        if k == n_steps - 1:
            self._end_trial(it)

    def _start_trial(self) -> None:
        self._w = self._used_weights()
        self.state[:] = 0.0
        for tr in (self.trace_rec, self.trace_in, self.trace_b):
            tr[:] = 0.0
        self.trial_loss[:] = 0.0
        self.trial_hits[:] = 0.0
        if self.proc_params["learning"] is not None:
            self._grads = {name: np.zeros_like(getattr(self, name)) for name in _LEARNED}

    def _end_trial(self, it: int) -> None:
        box = self.proc_params["mailbox"]
        loss = float(self.trial_loss[0])
        correct, total = self.trial_hits
        if not np.isfinite(loss) and not self._diverged and "diverged_at" in box:
            self._diverged = True
            box["diverged_at"][0] = it
        if "loss" in box and it < box["loss"].shape[0]:
            box["loss"][it] = np.nan if self._diverged else loss  # a frozen network reports NaN, as on torch
            box["accuracy"][it] = correct / total if total > 0 else np.nan
        if self.proc_params["learning"] is not None and not self._diverged:
            lr = self.proc_params["lr"]
            for name in _LEARNED:  # SGD once per trial batch (fixed point: on the weight grid)
                self._apply_update(name, -lr * self._grads[name], it)
        if "w_rec" in box:
            for name in _LEARNED:
                box[name][...] = getattr(self, name)
        if "done" in box:
            box["done"][0] = it + 1


_LEARNED = ("w_in", "w_rec", "w_out", "b", "b_out")


@implements(proc=RateRNN, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRateRNNFloat(_RateRNNBase):
    """float64 model: the equations of :mod:`neurorate.model.dynamics` exactly."""


@implements(proc=RateRNN, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRateRNNFixed(_RateRNNBase):
    """Fixed point under a hardware profile, with the quantizer shared with the torch backend.

    Mirrors the torch backend's fake-quant bit for bit: the weights a trial uses are the profile's
    quantisation of the float master weights (refreshed after every update); states are held on the state
    grid (saturating), rates are sent and traces held on their grids (stochastic rounding by the
    counter-based hash). All values are integers times power-of-two steps kept in float64, so numpy's
    arithmetic on them is the same as torch's.
    """

    def _used_weights(self) -> dict:
        q = self.proc_params["quantizer"]
        return {name: q.weight(getattr(self, name), name) for name in _LEARNED}

    def _q_state(self, state: np.ndarray, step: int) -> np.ndarray:
        return self.proc_params["quantizer"].state(state, step=step)

    def _q_rate(self, rate: np.ndarray, step: int) -> np.ndarray:
        return self.proc_params["quantizer"].rate(rate, step=step)

    def _q_traces(self, traces: list, step: int) -> None:
        q = self.proc_params["quantizer"]
        for tr, name in zip(traces, ("w_rec", "w_in", "b")):
            tr[...] = q.trace(tr, name=name, step=step)

    def _apply_update(self, name: str, delta: np.ndarray, it: int) -> None:
        # weights live on the grid frozen at the start (calibrate); the update is rounded onto it (learning
        # accumulator, stochastic rounding keyed by the iteration) and the sum saturates: as the torch backend
        q = self.proc_params["quantizer"]
        w = getattr(self, name)
        w[...] = q.weight(w + q.update(delta, name, step=it), name)
