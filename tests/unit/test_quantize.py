"""The one quantizer: exact grids, rounding and overflow on known numbers, unbiased and reproducible stochastic
rounding, straight-through gradients, the leak quantisation, and torch == numpy bit for bit for every
shipped profile and every method."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from neurorate.errors import NeurorateError
from neurorate.hardware.profiles import NumberFormat, available_profiles, load_profile
from neurorate.hardware.quantize import make_quantizer, mix32, quantize_value, stream_keys

NAMES = ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")


def _int(bits, signed=True, **kw):
    return NumberFormat(format="int", bits=bits, signed=signed, **kw)


def test_shared_exponent_known_matrix():
    q = make_quantizer("loihi2", training=False)
    w = np.array([[0.3, -1.7], [0.05, 1.0]])  # max 1.7 = 0.85 * 2^1 -> step 2^(1-7) = 1/64
    assert q.weight_step(w, "w_rec").item() == 2.0**-6
    np.testing.assert_array_equal(q.weight(w, "w_rec"), np.array([[19, -109], [3, 64]]) / 64)
    # the largest magnitude may round up to 2^7 and then saturates at 127
    np.testing.assert_array_equal(q.weight(np.array([[1.999, 0.0]]), "w_rec"), [[127 / 64, 0.0]])
    np.testing.assert_array_equal(q.weight(np.array([[-2.0, 0.5]]), "w_rec"), [[-64 / 32, 16 / 32]])
    # one exponent per network of a leading ensemble axis; biases over their last axis
    ens = np.stack([w, w / 8])
    np.testing.assert_array_equal(q.weight_step(ens, "w_rec").ravel(), [2.0**-6, 2.0**-9])
    np.testing.assert_array_equal(q.weight(ens, "w_rec")[1], q.weight(w, "w_rec") / 8)
    np.testing.assert_array_equal(q.weight(np.array([[1.0, 0.3], [0.25, 0.1]]), "b"),
                                  [[1.0, 38 / 128], [0.25, 26 / 256]])
    assert np.all(q.weight(np.zeros((3, 3)), "w_in") == 0)


def test_values_lie_on_the_grid():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (5, 40, 40))
    for name in ("loihi2", "xylo", "dynapse2", "brainscales2"):
        q = make_quantizer(name, training=False)
        fmt = q.profile.weights
        m = q.weight(w, "w_rec") / q.weight_step(w, "w_rec")
        assert np.all(m == np.round(m)), name
        assert m.max() <= 2 ** (fmt.bits - 1) - 1 and m.min() >= -(2 ** (fmt.bits - 1)), name
        assert np.abs(m).max(axis=(1, 2)).min() >= 2 ** (fmt.bits - 2), name  # the largest fills the mantissa
    state = make_quantizer("loihi2", training=False).state(rng.normal(0, 50, (4, 100)))
    assert np.all(state * 2**16 == np.round(state * 2**16)) and state.max() < 128 and state.min() >= -128


def test_per_tensor_per_row_and_pow2():
    int8 = make_quantizer("int8", training=False)
    np.testing.assert_allclose(int8.weight(np.array([[0.5, -1.27, 0.011, 0.004]]), "w_rec"),
                               [[0.5, -1.27, 0.01, 0.0]], rtol=0, atol=1e-15)
    per_row = quantize_value(np.array([[1.0, 0.3], [0.25, 0.1]]), _int(8, scale="per_row"))
    np.testing.assert_array_equal(per_row, [[1.0, 38 / 128], [0.25, 26 / 256]])
    pow2 = quantize_value(np.array([0.7, -0.3, 0.74, 0.76, 0.01, 0.0]), _int(4, scale="pow2"))
    np.testing.assert_array_equal(pow2, [0.5, -0.25, 0.5, 1.0, 0.0, 0.0])


def test_saturate_and_wrap_on_known_integers():
    x = np.array([127.0, 128.0, 200.0, -129.0, -300.0, -128.0])
    np.testing.assert_array_equal(quantize_value(x, _int(8)), [127, 127, 127, -128, -128, -128])
    np.testing.assert_array_equal(quantize_value(x, _int(8, overflow="wrap")), [127, -128, -56, 127, -44, -128])
    np.testing.assert_array_equal(quantize_value(np.array([17.0, -1.0, 15.0]), _int(4, signed=False, overflow="wrap")),
                                  [1, 15, 15])
    np.testing.assert_array_equal(quantize_value(np.array([17.0, -1.0]), _int(4, signed=False)), [15, 0])
    # fixed point: 24-bit Q.16 wraps at 128
    np.testing.assert_array_equal(quantize_value(np.array([128.0, 127.5]), _int(24, frac_bits=16, overflow="wrap")),
                                  [-128.0, 127.5])


def test_rounding_modes():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.49, -1.7, 2.5000001])
    np.testing.assert_array_equal(quantize_value(x, _int(8)), [1, 0, 2, -1, 2, -2, 3])  # ties toward +inf
    np.testing.assert_array_equal(quantize_value(x, _int(8, rounding="floor")), [0, -1, 1, -2, 2, -2, 2])
    np.testing.assert_array_equal(quantize_value(x, _int(8, rounding="trunc")), [0, 0, 1, -1, 2, -1, 2])
    np.testing.assert_array_equal(quantize_value(torch.tensor(x), _int(8)).numpy(), [1, 0, 2, -1, 2, -2, 3])


def test_stochastic_rounding_unbiased_and_reproducible():
    fmt = _int(8, rounding="stochastic")
    x = np.full(40000, 0.3)
    a = quantize_value(x, fmt, seed=3, step=7, stream=1)
    assert set(np.unique(a)) == {0.0, 1.0}
    assert abs(a.mean() - 0.3) < 4 * np.sqrt(0.21 / x.size)
    np.testing.assert_array_equal(a, quantize_value(x, fmt, seed=3, step=7, stream=1))
    others = ({"seed": 4, "step": 7, "stream": 1}, {"seed": 3, "step": 8, "stream": 1},
              {"seed": 3, "step": 7, "stream": 2})
    for other in others:
        assert np.mean(a != quantize_value(x, fmt, **other)) > 0.3
    # one element over many steps: unbiased in time as well; negative values round down as often as they should
    over_time = np.array([quantize_value(np.array([-2.75]), fmt, seed=0, step=s)[0] for s in range(4000)])
    assert set(np.unique(over_time)) == {-3.0, -2.0}
    assert abs(over_time.mean() + 2.75) < 4 * np.sqrt(0.1875 / 4000)
    # the hash: known values (regression guard for the cross-backend contract) and no overflow
    assert mix32(0) == 0 and mix32(1) == mix32(np.array([1], dtype=np.int64))[0]
    assert stream_keys(0, 0, 0) == stream_keys(0, 0, 0) != stream_keys(0, 1, 0)
    h = mix32(np.arange(100000, dtype=np.int64))
    assert h.min() >= 0 and h.max() < 2**32 and abs(h.mean() / 2**32 - 0.5) < 0.005 and len(np.unique(h)) == 100000


def test_float_formats_round_like_torch_dtypes():
    x = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 1e-3, -3.3e38, 7e4, np.nan])
    bf = make_quantizer("bf16", training=False).weight(x, "w_rec")
    np.testing.assert_array_equal(bf[:2], [1.0, 1 + 2.0**-6])  # ties to even
    np.testing.assert_array_equal(bf, torch.tensor(x).to(torch.float32).to(torch.bfloat16).double().numpy())
    fp = make_quantizer("fp16", training=False).weight(x, "w_rec")
    assert fp[4] == np.inf and fp[2] == np.float16(1e-3)
    assert make_quantizer("fp32", training=False).weight(np.float32(0.1), "w_in") == np.float32(0.1)


def _data(rng, shape, scale):
    x = rng.normal(0, scale, shape)
    for i, v in enumerate((0.0, 40 * scale, -40 * scale)[: x.size]):  # a zero and saturating values
        x.flat[i] = v
    return x


@pytest.mark.parametrize("name", available_profiles())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_and_numpy_twins_are_bit_identical(name, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    qn, qt = make_quantizer(name, training=False, seed=5), make_quantizer(name, training=True, seed=5)
    shapes = {"w_in": (1, 16, 3), "w_rec": (1, 16, 16), "w_out": (1, 2, 16), "b": (1, 1, 16), "b_out": (1, 1, 2),
                  "feedback": (1, 16, 2)}
    weights = {n: _data(rng, s, 0.4).astype(dtype) for n, s in shapes.items()}
    qn.calibrate(weights)
    qt.calibrate({n: torch.from_numpy(w) for n, w in weights.items()})

    def same(a, b):
        b = b.detach().numpy()
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))

    for n, w in weights.items():
        w2 = (w * 1.7).astype(dtype)  # beyond the frozen grid: saturates
        same(qn.weight(w2, n, step=3), qt.weight(torch.from_numpy(w2), n, step=3))
        dw = _data(rng, w.shape, 0.02).astype(dtype)
        for step in (0, 1, 12345):
            same(qn.update(dw, n, step), qt.update(torch.from_numpy(dw), n, step))
    for method, scale in (("state", 8.0), ("rate", 0.7), ("trace", 0.5)):
        x = _data(rng, (1, 8, 16), scale).astype(dtype)
        for step in (0, 9):
            same(getattr(qn, method)(x, step=step), getattr(qt, method)(torch.from_numpy(x), step=step))
    alphas = np.array([1.0, 0.5, 0.1, 0.09, 0.3, 1e-5], dtype=dtype)
    same(qn.decay(alphas), qt.decay(torch.from_numpy(alphas)))


def test_straight_through_in_training_and_hard_in_eval():
    w = torch.randn(1, 8, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(0)) * 0.3
    w.requires_grad_(True)
    train, hard = make_quantizer("loihi2", training=True), make_quantizer("loihi2", training=False)
    q = train.weight(w, "w_rec")
    np.testing.assert_array_equal(q.detach().numpy(), hard.weight(w.detach().numpy(), "w_rec"))
    (q * torch.arange(64.0).reshape(1, 8, 8)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.arange(64.0, dtype=np.float32).reshape(1, 8, 8))
    assert not np.array_equal(q.detach().numpy(), w.detach().numpy())
    assert hard.weight(w, "w_rec").grad_fn is None and hard.state(w).grad_fn is None
    r = train.rate(w * 3)
    assert r.grad_fn is not None and r.dtype == torch.float32
    upd = train.update(w, "w_rec", 0, scale=2.0**-6)
    assert upd.grad_fn is None  # updates are never differentiated


def test_decay_quantisation():
    loihi = make_quantizer("loihi2", training=False)
    assert loihi.decay(0.5) == 0.5 and float(loihi.decay_integer(0.5)) == 2048
    assert loihi.decay(0.1) == 410 / 4096 and loihi.decay(1.0) == 1.0 and loihi.decay(1e-6) == 1 / 4096
    assert isinstance(loihi.decay(0.5), float)
    xylo = make_quantizer("xylo", training=False)
    assert [xylo.decay(a) for a in (1.0, 0.5, 0.1, 0.09, 0.08, 0.7)] == [1.0, 0.5, 0.125, 0.125, 0.0625, 0.5]
    assert float(xylo.decay_integer(0.1)) == 3
    assert make_quantizer("fp32", training=False).decay(0.37) == 0.37
    assert make_quantizer(None, training=False).decay(0.37) == 0.37


def test_messages_traces_and_state_formats():
    xylo = make_quantizer("xylo", training=False)
    np.testing.assert_array_equal(xylo.rate(np.array([-0.3, 0.3, 5.0, 1.0])), [0.0, 0.25, 31 / 8, 1.0])
    loihi = make_quantizer("loihi2", training=False)
    np.testing.assert_array_equal(loihi.rate(np.array([0.5 + 2.0**-18, -1.0, 200.0])),
                                  [0.5, -1.0, 128 - 2.0**-16])
    np.testing.assert_array_equal(loihi.state(np.array([1.0 + 3 * 2.0**-18, -(1.0 + 3 * 2.0**-18)])),
                                  [1.0, -1.0])  # trunc toward zero
    tr = loihi.trace(np.full(20000, 0.3), step=1)
    assert set(np.unique(tr)) == {38 / 128, 39 / 128} and abs(tr.mean() - 0.3) < 0.002
    np.testing.assert_array_equal(loihi.trace(np.array([2.0, -2.0]), step=0), [127 / 128, -1.0])


def test_weight_updates_on_the_frozen_grid():
    q = make_quantizer("loihi2", training=False, seed=1)
    w = np.array([[1.7, -0.5], [0.2, 0.0]])
    steps = q.calibrate({"w_rec": w})
    assert steps["w_rec"].item() == 2.0**-6
    lsb = 2.0**-6
    up = q.update(np.full((100, 100), 2.5 * lsb), "w_rec", 0)
    assert set(np.unique(up / lsb)) == {2.0, 3.0} and abs((up / lsb).mean() - 2.5) < 0.05
    assert np.all(q.update(np.full((50, 50), 0.003 * lsb), "w_rec", 0) == 0)  # below the accumulator LSB 2^-7
    big = q.update(np.full((10, 10), 1000 * lsb), "w_rec", 4) / lsb
    assert set(np.unique(big)) <= {255.0, 256.0}  # 16-bit accumulator saturates at 32767/128
    step = np.full(3, 2.5 * lsb)
    np.testing.assert_array_equal(q.update(step, "w_rec", 9), q.update(step, "w_rec", 9))
    # the frozen grid does not follow growing weights: they saturate at 127 LSB
    np.testing.assert_array_equal(q.weight(np.array([[3.0, 0.1]]), "w_rec"), [[127 * lsb, 6 * lsb]])
    with pytest.raises(NeurorateError, match="not frozen: call calibrate"):
        q.update(np.ones(2), "w_in", 0)
    assert np.array_equal(make_quantizer("fp32", training=False).update(np.array([0.1]), "w_rec", 0), [0.1])


def test_disabled_quantizer_is_identity():
    q = make_quantizer(None, training=True)
    x = torch.randn(3)
    assert not q.enabled and q.weight(x, "w_rec") is x and q.state(x) is x and q.rate(x) is x
    assert q.trace(x) is x and q.update(x, "w_rec", 0) is x
    assert make_quantizer("loihi2", training=True).enabled
    with pytest.raises(NeurorateError, match="unknown hardware profile"):
        make_quantizer("loihi9", training=False)
    assert make_quantizer(load_profile("xylo"), training=False).profile.name == "xylo"
