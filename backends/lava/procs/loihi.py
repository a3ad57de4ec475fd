"""Lava processes of the "loihi" graph: e-prop on Lava's own learning engine (``LearningDense``), form A, ReLU.

Side-effect free on purpose: Lava's compiler executes every ``.py`` file of this folder on each compile.

Graph (one network, one trial at a time)::

    LoihiTrialSource --LearningDense(U)--> LoihiRateNeuron <--LearningDense(W)--> (itself)
    LoihiRateNeuron --Dense(V)--> LoihiErrorNeuron --Dense(lr B)--> LoihiRateNeuron.a_third_factor_in
    LoihiRateNeuron --s_out_bap, s_out_y1..y3--> both LearningDense (post-synaptic traces, three-factor rule)

Every ``Dense``/``LearningDense`` delays a message by one tick, so one network step takes **four ticks** and the
learning epoch is four ticks (``t_epoch = 4``). The trial-local tick ``tau = (time_step - 1) % (4 E)`` is
step ``k = tau // 4`` in phase ``tau % 4``; epoch ``k + 1`` of the trial holds step ``k``:

* phase 0: the source sends ``x_k`` (raw payload).
* phase 1: the rate neuron receives ``U x_k``, steps ``a_k = (1-alpha) a_{k-1} + alpha (W r_{k-1} + U x_k + b)``
  (``W r_{k-1}`` latched in phase 2 of the previous step) and sends ``r_k = relu(a_k)``; it keeps
  ``psi_k = relu'(a_k)`` and advances its presynaptic trace ``rbar_k = (1-alpha) rbar_{k-1} + alpha r_{k-1}``.
* phase 2: the rate neuron latches ``W r_k`` and sends ``2 rbar_k``, the source sends ``2 xbar_k``
  (``xbar_k = (1-alpha) xbar_{k-1} + alpha x_k``): with ``GradedSpikeCfg.OVERWRITE`` a graded spike writes
  payload / 2 into the synapse's pre-trace ``x1``, so ``x1 = rbar_k`` (``xbar_k``) at the epoch's end. A zero payload
  is "no spike" and would leave ``x1`` stale, so a zero trace is sent as :data:`TINY`. The error neuron receives
  ``V r_k``, computes ``y_k = V r_k + c`` and ``e_k = dl_k/dy_k`` (``mask / normaliser`` folded in) and sends it.
* phase 3: the rate neuron receives ``L_k = lr B e_k`` on ``a_third_factor_in`` and sends
  ``y2 = [L_k psi_k]+``, ``y3 = [L_k psi_k]-`` with a back-propagating spike (the ``y0`` dependency); the epoch ends
  and the engine adds ``x1 (y2 - y3) = lr (L_k psi_k) rbar_k`` to the tag (``dt = y0*x1*y2 - y0*x1*y3 - uK*t``).

Input arriving in another phase (the products of the trace payloads, ``W 2 rbar`` and ``V 2 rbar``) is ignored. A
trial of T steps is padded to ``E = 2^K >= T + 1`` epochs: the ``u_K`` dependency fires once per trial, in its last
(empty) epoch, where ``dw = -uK*t`` applies the trial's summed update and ``-uK*t`` clears the tag. The bias ``b``
is learned inside the rate neuron, the readout bias ``c`` inside the error neuron (both once per trial, at the last
tick of that update epoch, so a host that withholds the epoch of a diverged trial freezes every weight); the readout
``V`` (and ``B = V^T`` for symmetric feedback) is updated by the host between trials from the rates and errors the
neurons record (see ``docs/lava.md``).

The neurons exchange trial data and records with the host through a *mailbox* (numpy views over a shared anonymous
memory map, :class:`neurorate.backends.lava._io.Mailbox`): ``x (T, n_in)``, ``target``/``weight (T, n_out)``,
``decision (T,)`` in; ``states``/``rates``/``psi (T, N)``, ``outputs``/``errors (T, n_out)``, ``loss (1,)``,
``hits (2,)``, ``b (N,)``, ``c (n_out,)`` out.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.neuron import LearningNeuronModelFloat
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.neuron import LearningNeuronProcess
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurorate.backends.lava import _kernels as K

TICKS_PER_STEP = 4
"""Ticks per network step (and the learning epoch ``t_epoch``) of the phased schedule."""

TINY = 2.0 ** -1000
"""Payload sent for a zero trace so that it still overwrites ``x1`` (its product with a trace is below 1e-300)."""


def _phase(time_step: int, n_epochs: int) -> tuple[int, int, int]:
    """``(tau, k, phase)`` of a 1-based Lava ``time_step`` in a trial of ``n_epochs`` four-tick epochs."""
    tau = (int(time_step) - 1) % (TICKS_PER_STEP * int(n_epochs))
    k, phase = divmod(tau, TICKS_PER_STEP)
    return tau, k, phase


BOUND = 1e100
"""Largest magnitude a trace payload or a post trace is sent with; NaN is sent as 0. In float the engine's
``dw = -uK*t`` is ``-0 * t``, NaN for a NaN tag even when ``uK`` does not fire, so a diverging trial (whose update
epoch the host withholds) must not put NaN or inf into the tags; below the bound every value passes unchanged."""


def bounded(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN as 0 and magnitudes clipped to :data:`BOUND` (identity for any trace of a live trial)."""
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=BOUND, neginf=-BOUND), -BOUND, BOUND)


def trace_payload(trace: np.ndarray) -> np.ndarray:
    """The graded payload that overwrites ``x1`` with ``trace``: ``2 trace`` (:func:`bounded`), zeros sent as
    :data:`TINY`."""
    out = bounded(2.0 * trace)
    out[out == 0.0] = TINY
    return out


# ---------------------------------------------------------------------------------------------------- processes
class LoihiTrialSource(AbstractProcess):
    """Sends ``x_k`` (phase 0) and the input trace payload ``2 xbar_k`` (phase 2) of the mailbox's trial.

    Parameters (keyword): ``n_in``, ``alpha``, ``n_steps`` (T), ``n_epochs`` (E), ``mailbox`` (reads ``x``).
    """

    def __init__(self, *, n_in: int, alpha: float, n_steps: int, n_epochs: int, mailbox: dict, **kwargs):
        super().__init__(n_in=int(n_in), alpha=float(alpha), n_steps=int(n_steps), n_epochs=int(n_epochs),
                         mailbox=mailbox, **kwargs)
        self.s_out = OutPort(shape=(int(n_in),))
        self.xbar = Var(shape=(int(n_in),), init=0.0)


class LoihiRateNeuron(LearningNeuronProcess, AbstractProcess):
    """N leaky ReLU rate neurons (form A) that send graded rates and the three-factor post traces y2/y3.

    Parameters (keyword): ``b (N,)`` bias, ``alpha``, ``n_steps``, ``n_epochs``, ``learning_rule`` (the
    :class:`~lava.magma.core.learning.learning_rule.Loihi3FLearningRule` of the synapses it is post-synaptic to),
    ``mailbox`` (writes ``states``, ``rates``, ``psi`` when ``record``, ``b`` after every trial), ``learn_bias``.
    The third factor on ``a_third_factor_in`` is ``lr B e`` (the learning rate is carried by the feedback weights).
    """

    def __init__(self, *, b: np.ndarray, alpha: float, n_steps: int, n_epochs: int, learning_rule, mailbox: dict,
                 record: bool = False, learn_bias: bool = True, **kwargs):
        n = int(np.asarray(b).shape[0])
        super().__init__(shape=(n,), learning_rule=learning_rule, alpha=float(alpha), n_steps=int(n_steps),
                         n_epochs=int(n_epochs), mailbox=mailbox, record=bool(record), learn_bias=bool(learn_bias),
                         **kwargs)
        self.a_in = InPort(shape=(n,))
        self.s_out = OutPort(shape=(n,))
        self.a = Var(shape=(n,), init=0.0)
        self.b = Var(shape=(n,), init=np.array(b, dtype=float))
        self.rec = Var(shape=(n,), init=0.0)        # W r_k, latched in phase 2 for the next step
        self.rbar = Var(shape=(n,), init=0.0)       # presynaptic trace of the recurrent synapses
        self.psi = Var(shape=(n,), init=0.0)        # f'(a_k)
        self.bbar = Var(shape=(1,), init=0.0)       # the bias's trace
        self.b_grad = Var(shape=(n,), init=0.0)     # lr * the trial's bias gradient


class LoihiErrorNeuron(AbstractProcess):
    """``n_out`` output neurons: ``y = V r + c``, the output error ``e = dl/dy`` of the mailbox's target stream.

    Parameters (keyword): ``c (n_out,)`` readout bias, ``loss_kind`` ("mse"/"ce"), ``lr``, ``n_steps``,
    ``n_epochs``, ``mailbox`` (reads ``target``, ``weight``, ``decision``; writes ``outputs``, ``errors``, ``loss``,
    ``hits``, ``c``), ``learn_bias``.
    """

    def __init__(self, *, c: np.ndarray, loss_kind: str, lr: float, n_steps: int, n_epochs: int, mailbox: dict,
                 learn_bias: bool = True, **kwargs):
        n_out = int(np.asarray(c).shape[0])
        super().__init__(loss_kind=loss_kind, lr=float(lr), n_steps=int(n_steps), n_epochs=int(n_epochs),
                         mailbox=mailbox, learn_bias=bool(learn_bias), **kwargs)
        self.y_in = InPort(shape=(n_out,))
        self.s_out = OutPort(shape=(n_out,))
        self.c = Var(shape=(n_out,), init=np.array(c, dtype=float))
        self.c_grad = Var(shape=(n_out,), init=0.0)
        self.trial_loss = Var(shape=(1,), init=0.0)
        self.trial_hits = Var(shape=(2,), init=0.0)


# ---------------------------------------------------------------------------------------------------- float models
@implements(proc=LoihiTrialSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLoihiTrialSourceFloat(PyLoihiProcessModel):
    """The source in float64 (the inputs as the task gives them)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    xbar: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        p = self.proc_params
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        out = np.zeros(self.xbar.shape)
        if tau == 0:
            self.xbar[:] = 0.0
        if k < p["n_steps"]:
            x = p["mailbox"]["x"][k]
            if phase == 0:
                out = np.array(x, dtype=float)
            elif phase == 2:
                self.xbar[:] = (1.0 - p["alpha"]) * self.xbar + p["alpha"] * x
                out = trace_payload(self.xbar)
        self.s_out.send(out)


@implements(proc=LoihiRateNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLoihiRateNeuronFloat(LearningNeuronModelFloat):
    """The rate neuron in float64: the form-A step of :mod:`neurorate.model.dynamics` exactly."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a: np.ndarray = LavaPyType(np.ndarray, float)
    b: np.ndarray = LavaPyType(np.ndarray, float)
    rec: np.ndarray = LavaPyType(np.ndarray, float)
    rbar: np.ndarray = LavaPyType(np.ndarray, float)
    psi: np.ndarray = LavaPyType(np.ndarray, float)
    bbar: np.ndarray = LavaPyType(np.ndarray, float)
    b_grad: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        p = self.proc_params
        alpha = p["alpha"]
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        drive = self.a_in.recv()
        third = self.a_third_factor_in.recv()
        n = self.a.shape[0]
        out = np.zeros(n)
        bap = np.zeros(n, dtype=bool)
        self.y2[:] = 0.0
        self.y3[:] = 0.0
        if tau == 0:
            for var in (self.a, self.rec, self.rbar, self.psi, self.bbar, self.b_grad):
                var[:] = 0.0
        if k < p["n_steps"]:
            if phase == 1:
                r_prev = np.maximum(self.a, 0.0)
                self.rbar[:] = (1.0 - alpha) * self.rbar + alpha * r_prev
                self.bbar[:] = (1.0 - alpha) * self.bbar + alpha
                self.a[:] = (1.0 - alpha) * self.a + alpha * (self.rec + drive + self.b)
                self.psi[:] = (self.a > 0).astype(float)
                out = np.maximum(self.a, 0.0)
                if p["record"]:
                    box = p["mailbox"]
                    box["states"][k] = self.a
                    box["rates"][k] = out
                    box["psi"][k] = self.psi
            elif phase == 2:
                self.rec[:] = drive
                out = trace_payload(self.rbar)
            elif phase == 3:
                z = self.psi * third
                self.y2[:] = bounded(np.maximum(z, 0.0))
                self.y3[:] = bounded(np.maximum(-z, 0.0))
                bap[:] = True
                self.b_grad += z * self.bbar[0]
        if tau == TICKS_PER_STEP * p["n_epochs"] - 1:  # the trial's last tick (its update epoch)
            if p["learn_bias"]:
                self.b -= self.b_grad
            p["mailbox"]["b"][:] = self.b
        self.s_out.send(out)
        self.s_out_bap.send(bap)
        self.s_out_y1.send(self.y1)
        self.s_out_y2.send(self.y2)
        self.s_out_y3.send(self.y3)


@implements(proc=LoihiErrorNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLoihiErrorNeuronFloat(PyLoihiProcessModel):
    """The error neuron in float64 (:func:`neurorate.backends.lava._kernels.output_error`)."""

    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    c: np.ndarray = LavaPyType(np.ndarray, float)
    c_grad: np.ndarray = LavaPyType(np.ndarray, float)
    trial_loss: np.ndarray = LavaPyType(np.ndarray, float)
    trial_hits: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        p = self.proc_params
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        vr = self.y_in.recv()
        out = np.zeros(self.c.shape)
        if tau == 0:
            for var in (self.c_grad, self.trial_loss, self.trial_hits):
                var[:] = 0.0
        if k < p["n_steps"] and phase == 2:
            box = p["mailbox"]
            y = (vr + self.c)[None, :]
            target, weight = box["target"][k][None, :], box["weight"][k][None, :]
            loss_t, err = K.output_error(p["loss_kind"], y, target, weight)
            out = err[0]
            self.trial_loss[0] += loss_t
            decision = box["decision"][k] > 0
            hit = bool(np.argmax(y[0]) == np.argmax(target[0])) and decision
            self.trial_hits += (float(hit), float(decision))
            self.c_grad += out
            box["outputs"][k] = y[0]
            box["errors"][k] = out
            if k == p["n_steps"] - 1:
                box["loss"][0] = self.trial_loss[0]
                box["hits"][:] = self.trial_hits
        if tau == TICKS_PER_STEP * p["n_epochs"] - 1:  # the trial's last tick (its update epoch)
            if p["learn_bias"]:
                self.c -= p["lr"] * self.c_grad
            p["mailbox"]["c"][:] = self.c
        self.s_out.send(out)
