"""``fixed_pt`` models of the loihi graph's neurons: the engine view's integer arithmetic on the phased schedule.

Side-effect free on purpose: Lava's compiler executes every ``.py`` file of this folder on each compile.

The processes are :mod:`neurorate.backends.lava.procs.loihi`'s (same ports, same four phases); these models hold
integers and compute with :mod:`neurorate.hardware.engine`'s functions, as the torch backend's engine view does
(:mod:`neurorate.backends.torch.engine_profile`). They read one more process parameter, ``engine``: a dict with
``S`` (state fractional bits), ``R`` (rate payload bits), ``X`` (trace fractional bits), ``decay`` (the 12-bit
leak ``d``), ``ef`` (third-factor fractional bits), ``trace_bits``. Payloads are integers: the rate
``clip(a >> (S - R))`` in phase 1, the traces ``rbar`` / ``xbar`` as ``trace_payload`` in phase 2 (a zero trace is
sent as payload 1, which overwrites ``x1`` with ``round(1/2) = 0``: a zero payload is no spike), the error
``mask (y - y*)`` on the state grid. The biases ``b``, ``c`` and the readout are the host's (between trials); the
neurons record ``rates``, ``errors``, ``signals`` (``L psi``) and ``outputs`` as floats for it.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurorate.backends.lava.procs.loihi import LoihiErrorNeuron, LoihiRateNeuron, LoihiTrialSource, _phase
from neurorate.hardware import engine as E


def _widths(p) -> E.EngineWidths:
    return E.EngineWidths(trace_bits=int(p["engine"]["trace_bits"]))


def _trace_out(trace: np.ndarray, p) -> np.ndarray:
    eng = p["engine"]
    pay = E.trace_payload(trace, eng["S"] - eng["X"] - 1, _widths(p))
    return np.maximum(pay, 1)


@implements(proc=LoihiTrialSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLoihiTrialSourceFixed(PyLoihiProcessModel):
    """The source on the integer grid: ``x_k 2^R`` (phase 0), the trace payload of ``xbar_k`` (phase 2)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    xbar: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        p = self.proc_params
        eng = p["engine"]
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        out = np.zeros(self.xbar.shape, dtype=np.int64)
        if tau == 0:
            self.xbar[:] = 0
        if k < p["n_steps"]:
            x = np.asarray(p["mailbox"]["x"][k], dtype=np.float64)
            if phase == 0:
                out = np.round(x * 2.0 ** eng["R"]).astype(np.int64)
            elif phase == 2:
                self.xbar[:] = E.leaky_step(self.xbar, np.round(x * 2.0 ** eng["S"]).astype(np.int64), eng["decay"])
                out = _trace_out(self.xbar, p)
        self.s_out.send(out.astype(np.int32))


@implements(proc=LoihiRateNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLoihiRateNeuronFixed(LearningNeuronModelFixed):
    """The leaky ReLU rate neuron on the integer grid (24-bit state, 12-bit leak, 7-bit y2/y3)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a: np.ndarray = LavaPyType(np.ndarray, np.int64)
    b: np.ndarray = LavaPyType(np.ndarray, np.int64)
    rec: np.ndarray = LavaPyType(np.ndarray, np.int64)
    rbar: np.ndarray = LavaPyType(np.ndarray, np.int64)
    psi: np.ndarray = LavaPyType(np.ndarray, np.int64)
    bbar: np.ndarray = LavaPyType(np.ndarray, np.int64)
    b_grad: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        p = self.proc_params
        eng = p["engine"]
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        drive = self.a_in.recv().astype(np.int64)
        third = self.a_third_factor_in.recv().astype(np.int64)
        n = self.a.shape[0]
        out = np.zeros(n, dtype=np.int64)
        bap = np.zeros(n, dtype=bool)
        self.y2[:] = 0
        self.y3[:] = 0
        if tau == 0:
            for var in (self.a, self.rec, self.rbar, self.psi):
                var[:] = 0
        if k < p["n_steps"]:
            box = p["mailbox"]
            if phase == 1:
                self.rbar[:] = E.leaky_step(self.rbar, np.maximum(self.a, 0), eng["decay"])
                self.a[:] = E.leaky_step(self.a, self.rec + drive + self.b, eng["decay"])
                self.psi[:] = (self.a > 0).astype(np.int64)
                out = E.rate_payload(self.a, eng["S"] - eng["R"])
                box["states"][k] = self.a * 2.0 ** -eng["S"]
                box["rates"][k] = out * 2.0 ** -eng["R"]
                box["psi"][k] = self.psi
            elif phase == 2:
                self.rec[:] = drive
                out = _trace_out(self.rbar, p)
            elif phase == 3:
                y2, y3 = E.third_factor(third, self.psi, eng["S"] - eng["ef"], _widths(p))
                self.y2[:] = y2
                self.y3[:] = y3
                bap[:] = True
                box["signals"][k] = third * self.psi * 2.0 ** -eng["S"]
        self.s_out.send(out.astype(np.int32))
        self.s_out_bap.send(bap)
        self.s_out_y1.send(self.y1)
        self.s_out_y2.send(self.y2)
        self.s_out_y3.send(self.y3)


@implements(proc=LoihiErrorNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLoihiErrorNeuronFixed(PyLoihiProcessModel):
    """The error neuron on the state grid: ``y = V r + c``, sends ``mask (y - y*)`` (MSE; the normaliser and lr
    ride in the engine's weight scale)."""

    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    c: np.ndarray = LavaPyType(np.ndarray, np.int64)
    c_grad: np.ndarray = LavaPyType(np.ndarray, np.int64)
    trial_loss: np.ndarray = LavaPyType(np.ndarray, float)
    trial_hits: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        p = self.proc_params
        eng = p["engine"]
        tau, k, phase = _phase(self.time_step, p["n_epochs"])
        vr = self.y_in.recv().astype(np.int64)
        out = np.zeros(self.c.shape, dtype=np.int64)
        if k < p["n_steps"] and phase == 2:
            box = p["mailbox"]
            y = vr + self.c
            target = np.round(np.asarray(box["target"][k], dtype=np.float64) * 2.0 ** eng["S"]).astype(np.int64)
            mask = (np.asarray(box["weight"][k]) != 0).astype(np.int64)
            out = mask * (y - target)
            box["outputs"][k] = y * 2.0 ** -eng["S"]
            box["errors"][k] = out * 2.0 ** -eng["S"]
        self.s_out.send(out.astype(np.int32))
