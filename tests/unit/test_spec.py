"""NetworkSpec: initialisation statistics, low-rank and user matrices, save/load, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import neurorate as nr
from neurorate.errors import FileFormatError, SpecError
from neurorate.model.spec import effective_rank, low_rank, participation_ratio, scale_to_gain


def test_gain_sets_recurrent_variance_and_gains_share_the_matrix():
    a = nr.NetworkSpec.random(n_hidden=400, gain=0.5, seed=3)
    b = nr.NetworkSpec.random(n_hidden=400, gain=1.5, seed=3)
    assert a.w_rec.std() * math.sqrt(400) == pytest.approx(0.5, rel=0.01)
    np.testing.assert_allclose(b.w_rec, 3.0 * a.w_rec, rtol=1e-12)
    np.testing.assert_array_equal(a.w_in, b.w_in)  # only the recurrent matrix depends on the gain
    np.testing.assert_array_equal(a.w_out, b.w_out)
    radius = np.abs(np.linalg.eigvals(b.w_rec)).max()
    assert radius == pytest.approx(1.5, rel=0.08)  # circular law


def test_torch_default_input_init_ranges_and_bias_switch():
    s = nr.NetworkSpec.random(n_in=1, n_hidden=256, n_out=2, seed=0)
    assert np.abs(s.w_in).max() <= 1.0 and np.abs(s.w_in).max() > 0.95
    assert np.abs(s.w_out).max() <= 1 / 16
    no_in = nr.NetworkSpec.random(n_in=1, n_hidden=256, n_out=2, seed=0, input_bias=False)
    assert np.abs(no_in.b).max() <= 1 / 16 < np.abs(s.b).max()
    none = nr.NetworkSpec.random(n_in=1, n_hidden=256, seed=0, input_bias=False, recurrent_bias=False)
    assert not none.b.any()


def test_schuessler_init_norms():
    s = nr.NetworkSpec.random(n_in=2, n_hidden=100, n_out=3, input_init="schuessler", seed=1)
    np.testing.assert_allclose(np.linalg.norm(s.w_in, axis=0), 10.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(s.w_out, axis=1), 0.1, rtol=1e-12)
    assert not s.b.any() and not s.b_out.any()


def test_low_rank_init_rank_and_frobenius_norm():
    full = nr.NetworkSpec.random(n_hidden=60, gain=1.25, seed=2)
    lr = nr.NetworkSpec.random(n_hidden=60, gain=1.25, seed=2, rank=3)
    assert np.linalg.matrix_rank(lr.w_rec, tol=1e-8) == 3
    assert np.linalg.norm(lr.w_rec) == pytest.approx(np.linalg.norm(full.w_rec), rel=1e-12)
    assert effective_rank(lr.w_rec) < 3.0 + 1e-9 < effective_rank(full.w_rec)
    np.testing.assert_allclose(low_rank(full.w_rec, 60), full.w_rec, atol=1e-12)


def test_effective_rank_and_participation_ratio_known_values():
    assert effective_rank(np.eye(7)) == pytest.approx(7.0)
    assert participation_ratio(np.eye(7)) == pytest.approx(7.0)
    d = np.diag([1.0, 1.0, 0.0, 0.0])
    assert effective_rank(d) == pytest.approx(2.0) and participation_ratio(d) == pytest.approx(2.0)


def test_user_matrix_scaled_to_gain():
    m = np.random.default_rng(0).standard_normal((50, 50))
    s = nr.NetworkSpec.random(n_hidden=50, gain=0.8, w_rec=m)
    assert s.gain == pytest.approx(0.8, rel=1e-12)
    s2 = nr.NetworkSpec.random(n_hidden=50, gain=0.8, w_rec=m, gain_measure="spectral_radius")
    assert np.abs(np.linalg.eigvals(s2.w_rec)).max() == pytest.approx(0.8, rel=1e-12)
    with pytest.raises(SpecError):
        scale_to_gain(np.zeros((3, 3)), 1.0)


def test_save_load_roundtrip_exact(tmp_path):
    s = nr.NetworkSpec.random(n_in=3, n_hidden=9, n_out=3, gain=1.1, seed=5, form="C", activation="relu",
                              alpha=0.2, dt=0.1)
    p = s.save(tmp_path / "net.npz")
    t = nr.NetworkSpec.load(p)
    for name in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback"):
        assert np.array_equal(getattr(s, name), getattr(t, name))
    assert (t.form, t.activation, t.alpha, t.dt, t.init) == (s.form, s.activation, s.alpha, s.dt, s.init)
    d = nr.NetworkSpec.from_dict(s.to_dict())
    assert np.array_equal(d.w_rec, s.w_rec)


def test_malformed_spec_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FileFormatError, match="bad.npz") as exc:
        nr.NetworkSpec.load(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(FileFormatError, match="no such spec file"):
        nr.NetworkSpec.load(tmp_path / "missing.npz")
    s = nr.NetworkSpec.random(n_hidden=4)
    p = s.save(tmp_path / "cut.npz")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(FileFormatError, match="cut.npz"):
        nr.NetworkSpec.load(p)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_hidden=0), "n_hidden must be a positive integer"),
    (dict(gain=-1.0), "gain must be >= 0"),
    (dict(alpha=1.5), "alpha"),
    (dict(form="D"), "unknown form"),
    (dict(activation="sigmoid"), "unknown activation"),
    (dict(rank=0), "rank must be"),
])
def test_invalid_specs_rejected(kwargs, message):
    with pytest.raises(SpecError, match=message):
        nr.NetworkSpec.random(**kwargs)


def test_direct_construction_checks_shapes():
    with pytest.raises(SpecError, match="w_in must have shape"):
        nr.NetworkSpec(w_in=np.zeros((3, 1)), w_rec=np.zeros((4, 4)), w_out=np.zeros((2, 4)), b=np.zeros(4),
                       b_out=np.zeros(2))
    with pytest.raises(SpecError, match="NaN"):
        nr.NetworkSpec(w_in=np.zeros((4, 1)), w_rec=np.full((4, 4), np.nan), w_out=np.zeros((2, 4)), b=np.zeros(4),
                       b_out=np.zeros(2))
