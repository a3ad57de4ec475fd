"""Third-party behaviour neurorate works around, as ``xfail(strict=True)`` tests of the behaviour we would want.

Each test asserts what the library *should* do; today it does not, so the test fails and is reported as xfail.
When an upstream release fixes it the test passes, ``strict=True`` turns that into a failure, and the workaround
named in the test's docstring can be reconsidered (and this test removed).
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neurorate as nr

_SPEC = dict(n_in=3, n_hidden=10, n_out=2, gain=1.4, seed=3, activation="tanh", alpha=0.2)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


@pytest.mark.lava
@pytest.mark.skipif(importlib.util.find_spec("lava") is None, reason="lava-nc missing")
@pytest.mark.skipif(sys.version_info < (3, 11), reason="the dataclass check exists from Python 3.11")
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="lava-nc 0.10 uses a mutable dataclass default (ByteEncoder) that Python 3.11 refuses; "
                          "neurorate.backends.lava._compat patches it (docs/lava.md)")
def test_lava_imports_on_python_311_without_the_shim():
    res = _python("import lava.magma.compiler.var_model")
    assert res.returncode == 0, res.stderr.strip().splitlines()[-1]


@pytest.mark.xfail(strict=True, raises=(AssertionError, RuntimeError),
                   reason="norse 1.1 maps no nir.LI node and does not import recurrent graphs (it fails with a shape "
                          "error or drops the LI); neurorate.io.nir.to_torch executes neurorate's graphs itself")
def test_norse_runs_a_recurrent_leaky_integrator_graph():
    norse = pytest.importorskip("norse.torch")
    torch = pytest.importorskip("torch")
    from neurorate.backends.torch import TorchBackend
    from neurorate.io import nir as nir_io

    spec = nr.NetworkSpec.random(**_SPEC)
    x = np.random.default_rng(5).standard_normal((25, 4, 3))
    logging.disable(logging.WARNING)
    try:
        module = norse.from_nir(nir_io.to_nir(spec))
        outs, state = [], None
        for t in range(x.shape[0]):
            y, state = module(torch.as_tensor(x[t], dtype=torch.float32), state)
            outs.append(y.detach().double().numpy())
    finally:
        logging.disable(logging.NOTSET)
    ref = TorchBackend(dtype="float64").simulate([spec], x).outputs[0]
    np.testing.assert_allclose(np.array(outs), ref, atol=1e-4)


@pytest.mark.xfail(strict=True, reason="snntorch's import_from_nir has no mapping for nir.LI; neurorate.io.nir "
                                       "documents the consumers that run its graphs (docs/nir.md)", raises=ValueError)
def test_snntorch_imports_a_leaky_integrator_graph():
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    from neurorate.io import nir as nir_io

    assert import_from_nir(nir_io.to_nir(nr.NetworkSpec.random(**_SPEC))) is not None


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="nirtorch 2.6's default Affine map sets weight.bias instead of the Linear's bias; "
                          "neurorate.io.nir.to_torch maps Affine itself")
def test_nirtorch_default_affine_map_keeps_the_bias():
    nir = pytest.importorskip("nir")
    nirtorch = pytest.importorskip("nirtorch")
    spec = nr.NetworkSpec.random(**_SPEC)
    lin = nirtorch.nir_interpreter.DEFAULT_MAP[nir.Affine](nir.Affine(weight=spec.w_in, bias=spec.b))
    np.testing.assert_allclose(lin.bias.detach().double().numpy(), spec.b, rtol=1e-6)
