"""A payload source and a post neuron that replay given sequences, to probe Lava's LearningDense.

Side-effect free on purpose: Lava's compiler executes every ``.py`` file of this folder on each compile.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.neuron import LearningNeuronProcess
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class PayloadSource(AbstractProcess):
    """Sends ``payloads[:, k]`` (graded integers) at tick ``k + 1``."""

    def __init__(self, *, payloads, **kwargs):
        payloads = np.asarray(payloads)
        super().__init__(payloads=payloads, **kwargs)
        self.s_out = OutPort(shape=(payloads.shape[0],))


class ReplayNeuron(LearningNeuronProcess, AbstractProcess):
    """Sends ``bap[:, k]``, ``y2[:, k]``, ``y3[:, k]`` at tick ``k + 1`` (y1 = 0); logs its input in ``a_log``."""

    def __init__(self, *, bap, y2, y3, learning_rule, **kwargs):
        bap, y2, y3 = (np.asarray(a) for a in (bap, y2, y3))
        super().__init__(shape=(bap.shape[0],), learning_rule=learning_rule, bap=bap, ys2=y2, ys3=y3, **kwargs)
        self.a_in = InPort(shape=(bap.shape[0],))
        self.a_log = Var(shape=bap.shape, init=0)


@implements(proc=PayloadSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPayloadSourceFixed(PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self):
        seq = self.proc_params["payloads"]
        self.s_out.send(seq[:, (self.time_step - 1) % seq.shape[1]].astype(np.int32))


@implements(proc=ReplayNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReplayNeuronFixed(LearningNeuronModelFixed):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_log: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self):
        k = (self.time_step - 1) % self.proc_params["bap"].shape[1]
        self.a_log[:, k] = self.a_in.recv()
        n = self.proc_params["bap"].shape[0]
        self.s_out_bap.send(self.proc_params["bap"][:, k].astype(bool))
        self.s_out_y1.send(np.zeros(n, dtype=np.int32))
        self.s_out_y2.send(self.proc_params["ys2"][:, k].astype(np.int32))
        self.s_out_y3.send(self.proc_params["ys3"][:, k].astype(np.int32))
