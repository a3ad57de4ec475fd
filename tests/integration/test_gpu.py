"""The torch backend on CUDA gives the CPU's numbers (skipped without a GPU: CI has none)."""

from __future__ import annotations

import numpy as np
import pytest

import neurorate as nr
from neurorate.backends.torch import TorchBackend

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("rule", ["bptt", "eprop", "eprop_online", "rflo"])
def test_cuda_ensemble_matches_cpu_float64(rule):
    task = nr.make_task("romo", batch_size=8, seed=0)
    specs = [nr.NetworkSpec.random(n_hidden=32, gain=g, seed=s) for g, s in ((0.5, 0), (1.5, 1))]
    cpu = TorchBackend(device="cpu", dtype="float64").train(specs, task, rule, iterations=10, lr=3e-3, progress=False)
    gpu = TorchBackend(device="cuda", dtype="float64").train(specs, task, rule, iterations=10, lr=3e-3, progress=False)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-9)
        np.testing.assert_allclose(b.spec.w_rec, a.spec.w_rec, rtol=0, atol=1e-10)


def test_auto_device_picks_cuda():
    assert TorchBackend(device="auto").device.type == "cuda"
