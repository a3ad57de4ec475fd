"""Lava backend specifics: the Python-3.11 shim, the missing-extra error, refused rules, data packing and the
tangent map. Trajectory, update and loss-curve agreement is in test_conformance.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from neurorate.errors import MissingExtraError, NeurorateError
from neurorate.model.spec import NetworkSpec

lava_missing = pytest.mark.skipif(not __import__("importlib.util").util.find_spec("lava"), reason="lava-nc missing")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          check=False, timeout=120)


@pytest.mark.lava
@lava_missing
def test_shim_is_sufficient_even_after_set_start_method():
    """With the shim (and a start method already set, which lava's import-time call would trip over), a tiny
    network runs in Lava and its output equals a hand computation."""
    res = _python("""
        import multiprocessing, numpy as np
        multiprocessing.set_start_method("fork")
        from neurorate.model.spec import NetworkSpec
        from neurorate.backends.lava import LavaBackend
        spec = NetworkSpec(w_in=[[1.0]], w_rec=[[0.5]], w_out=[[2.0]], b=[0.0], b_out=[0.1], alpha=0.5,
                           activation="identity")
        out = LavaBackend().simulate([spec], np.ones((3, 1, 1))).outputs[0, :, 0, 0]
        # a_t = 0.5 a + 0.5 (0.5 a + 1): 0.5, 0.875, 1.15625 ; y = 2 a + 0.1
        assert np.allclose(out, [1.1, 1.85, 2.4125], rtol=0, atol=1e-15), out
        print("ok")
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.lava
@lava_missing
def test_spawn_start_method_is_refused_clearly():
    res = _python("""
        import multiprocessing
        multiprocessing.set_start_method("spawn")
        from neurorate.backends.lava import ensure_lava_importable
        from neurorate.errors import NeurorateError
        try:
            ensure_lava_importable()
        except NeurorateError as exc:
            print(exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "needs the 'fork' multiprocessing start method" in res.stdout and "'spawn'" in res.stdout


def test_import_neurorate_does_not_import_lava():
    res = _python("""
        import sys, neurorate, neurorate.backends.lava
        from neurorate.backends.base import get_backend
        get_backend("lava")
        print(sorted(m for m in sys.modules if m == "lava" or m.startswith("lava.")))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_missing_lava_names_the_extra(monkeypatch):
    from neurorate.backends.lava import _compat

    monkeypatch.setattr(_compat, "_done", False)
    monkeypatch.setattr(_compat, "lava_available", lambda: False)
    with pytest.raises(MissingExtraError) as info:
        _compat.ensure_lava_importable()
    msg = str(info.value)
    assert "\n" not in msg and "lava-nc" in msg and "'lava' extra" in msg and "neurorate[lava]" in msg


@pytest.mark.parametrize("rule,optimizer,words", [("bptt", "sgd", "backwards in time"),
                                                  ("trunc1", "sgd", "not available on the Lava backend"),
                                                  ("eprop", "adam", "not local"),
                                                  ("eprop", "rmsprop", "unknown optimizer")])
def test_refused_rules_and_optimizers(rule, optimizer, words):
    from neurorate.backends.lava import LavaBackend
    from neurorate.tasks.romo import RomoTask

    spec = NetworkSpec.random(n_hidden=4, seed=0)
    with pytest.raises(NeurorateError, match=words):
        LavaBackend().train([spec], RomoTask(batch_size=2), rule, iterations=1, lr=0.1, optimizer=optimizer)


def test_pack_trial_folds_normaliser_and_one_hot():
    from neurorate.backends.lava._io import pack_trial

    x = np.arange(6, dtype=np.float32).reshape(3, 2, 1)
    labels = np.array([[0, 2], [1, 0], [2, 2]])
    mask = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32)
    rows = pack_trial(x, labels, mask, "ce", 3)
    assert rows.shape == (3, 2, 1 + 3 + 3 + 1)
    np.testing.assert_array_equal(rows[..., 0], x[..., 0])
    np.testing.assert_array_equal(rows[..., 1:4], np.eye(3)[labels])
    np.testing.assert_array_equal(rows[..., 4:7], np.repeat(mask[..., None] / 4.0, 3, -1))
    np.testing.assert_array_equal(rows[..., 7], [[0, 0], [1, 0], [0, 1]])  # label > 0 and masked


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_jacobian_vector_matches_torch(form):
    from neurorate.backends.lava import LavaBackend
    from neurorate.backends.torch import TorchBackend

    spec = NetworkSpec.random(n_in=2, n_hidden=9, n_out=2, gain=1.4, seed=2, form=form)
    rng = np.random.default_rng(0)
    state, q = rng.normal(size=9), rng.normal(size=(9, 4))
    ours = LavaBackend().jacobian_vector(spec, state, q)
    np.testing.assert_allclose(ours, TorchBackend(dtype="float64").jacobian_vector(spec, state, q), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.lava
@lava_missing
def test_lyapunov_from_lava_trajectory_equals_torch():
    """The shared Lyapunov module gives the same spectrum from a Lava recording as from a torch one."""
    from neurorate.analysis import lyapunov as lyap
    from neurorate.backends.lava import LavaBackend
    from neurorate.backends.torch import TorchBackend

    spec = NetworkSpec.random(n_in=1, n_hidden=12, n_out=2, gain=1.5, seed=4)
    x = np.random.default_rng(5).normal(size=(150, 2, 1))
    ours = LavaBackend().simulate([spec], x)
    ref = TorchBackend(dtype="float64").simulate([spec], x)
    before = lambda sim: np.concatenate([np.zeros_like(sim.states[:, :1]), sim.states[:, :-1]], 1)
    a = lyap.lyapunov_from_trajectory([spec], before(ours), k=4)  # form A: a_0 .. a_{T-1}
    b = lyap.lyapunov_from_trajectory([spec], before(ref), k=4)
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


@pytest.mark.lava
@lava_missing
def test_one_task_per_network_trains_every_network():
    """With one task per network each (source, network) pair is its own Lava graph component; every one must run
    (running only the first left the others' losses NaN with status ok)."""
    import neurorate as nr

    tasks = [nr.make_task("romo", batch_size=4, seed=s) for s in (0, 1)]
    specs = [NetworkSpec.random(n_in=1, n_hidden=8, n_out=2, gain=1.2, seed=s, activation="relu",
                                alpha=tasks[0].alpha) for s in (0, 1)]
    both = nr.train(specs, tasks, rule="eprop", backend="lava", iterations=3, lr=0.3, optimizer="sgd",
                    lyapunov=False, progress=False)
    alone = nr.train(specs[1], tasks[1], rule="eprop", backend="lava", iterations=3, lr=0.3, optimizer="sgd",
                     lyapunov=False, progress=False)
    assert all(np.isfinite(r.losses).all() for r in both)
    np.testing.assert_array_equal(both[1].losses, alone.losses)
