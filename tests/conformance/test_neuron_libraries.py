"""neurorate's leaky-integrator step against norse's ``li_box`` step and snntorch's ``Leaky`` neuron.

With ``alpha = dt / tau`` and the recurrent/input current ``I_t = W f(a_{t-1}) + U x_t + b``, form A is
``a_t = (1 - alpha) a_{t-1} + alpha I_t``:
norse:   ``v <- v + dt * tau_mem_inv * ((v_leak - v) + I)`` with ``tau_mem_inv = 1/tau``, ``v_leak = 0``;
snntorch: ``mem <- beta * mem + input`` with ``beta = 1 - alpha`` and input ``alpha * I`` (no reset).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import TorchBackend

pytestmark = pytest.mark.spiking

T, B = 60, 4


def _trajectory(alpha=0.2):
    spec = nr.NetworkSpec.random(n_in=3, n_hidden=32, n_out=2, gain=1.3, seed=1, alpha=alpha)
    x = np.random.default_rng(2).standard_normal((T, B, 3))
    sim = TorchBackend(dtype="float64").simulate([spec], x)
    return spec, x, sim.states[0]


def _currents(spec, x, a_prev):
    return np.tanh(a_prev) @ spec.w_rec.T + x @ spec.w_in.T + spec.b


def test_leaky_step_equals_norse_li_box():
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.leaky_integrator_box import (
        LIBoxParameters,
        LIBoxState,
        li_box_feed_forward_step,
    )

    dt, tau = 1e-3, 5e-3  # alpha = 0.2
    spec, x, states = _trajectory(alpha=dt / tau)
    p = LIBoxParameters(tau_mem_inv=torch.tensor(1 / tau, dtype=torch.float64),
                        v_leak=torch.tensor(0.0, dtype=torch.float64))
    v = torch.zeros(B, 32, dtype=torch.float64)
    for t in range(T):
        a_prev = np.zeros((B, 32)) if t == 0 else states[t - 1]
        current = torch.as_tensor(_currents(spec, x[t], a_prev))
        _, st = li_box_feed_forward_step(current, LIBoxState(v=v), p, dt=dt)
        v = st.v
        np.testing.assert_allclose(v.numpy(), states[t], rtol=0, atol=1e-12)
    assert norse is not None


def test_leaky_step_equals_snntorch_leaky_without_reset():
    snn = pytest.importorskip("snntorch")
    alpha = 0.2
    spec, x, states = _trajectory(alpha=alpha)
    # beta as a float64 tensor: a Python float would be stored as float32 (a 6e-9 difference)
    lif = snn.Leaky(beta=torch.tensor(1 - alpha, dtype=torch.float64), threshold=1e12, reset_mechanism="none")
    mem = torch.zeros(B, 32, dtype=torch.float64)
    for t in range(T):
        a_prev = np.zeros((B, 32)) if t == 0 else states[t - 1]
        current = torch.as_tensor(_currents(spec, x[t], a_prev))
        _, mem = lif(alpha * current, mem)
        np.testing.assert_allclose(mem.detach().numpy(), states[t], rtol=0, atol=1e-12)
