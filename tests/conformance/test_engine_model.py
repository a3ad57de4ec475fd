"""neurorate.hardware.engine against Lava's own bit-approximate LearningDense, bit for bit.

A bare ``LearningDense`` (graded input, OVERWRITE, a ``Loihi3FLearningRule`` with the e-prop tag rule) is driven
by two probe processes (tests/conformance/engine_probe) that replay given payload, bap, y2 and y3 sequences;
the oracle replays the same sequences through the engine model's functions, tick by tick, with Lava's random
streams (the synaptic one has a fixed seed, the trace ones derive from the rule's ``rng_seed``), and must give
the same tag, weights, x1 and Dense output integers. Lava runs are a few dozen ticks each.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorate.hardware import engine as E

lava_missing = pytest.mark.skipif(not importlib.util.find_spec("lava"), reason="lava-nc missing")


# ---------------------------------------------------------------------------------------------- pure arithmetic
def test_payload_to_trace_rounds_half_to_even_and_wraps_like_uint8():
    p = np.array([0, 1, 2, 3, 5, 254, 255, 256, 600])
    assert E.payload_to_trace(p).tolist() == [0, 0, 1, 2, 2, 127, 128, 128, 44]


def test_product_shift_floors_toward_minus_infinity():
    """x1 * y2 (7 + 7 + 4 - 15 = 3 bits of shift): +5 -> 0, -5 -> -1, 64 * 1 -> 8 tag LSB / 8, in acc units."""
    acc = lambda x1, y2, m: E.product((x1, y2), mantissa=m, names=("x1", "y2"))  # noqa: E731
    assert acc(5, 1, 1) == 0
    assert acc(5, 1, -1) == -1 * 2 ** 7
    assert acc(64, 1, 1) == 8 * 2 ** 7
    assert acc(200, 3, 1) == (127 * 3 >> 3) << 7  # factors saturate to 127
    assert acc(127, 127, 1) == 2 ** 15 - 1  # 2016 tag LSB do not fit the 16-bit accumulator
    assert E.product((-200,), mantissa=-1, names=("t",)) == 200 * 2 ** 7
    assert E.product((-200,), mantissa=-1, exponent=-3, names=("t",)) == 200 * 2 ** 4
    assert E.product((100, 100), mantissa=7, exponent=8, names=("x1", "y2")) == 2 ** 15 - 1  # saturates


def test_stochastic_round_and_saturation():
    acc = np.array([128 * 3 + 32, -128 * 3 - 32, 128 * 300])
    # 3.25 = 3 + 0.25 and -3.25 = -4 + 0.75: up where u < the fraction
    assert E.stochastic_round(acc, 0.3).tolist() == [3, -3, 300]
    assert E.stochastic_round(acc, 0.2).tolist() == [4, -3, 300]
    assert E.stochastic_round(acc, 0.8).tolist() == [3, -4, 300]
    assert E.saturate_tag([300, -300]).tolist() == [255, -257]
    assert E.saturate_weight([300, -300]).tolist() == [255, -256]
    assert E.initial_weights([5, -5, 4, -3]).tolist() == [4, -6, 4, -4]


def test_wider_widths_change_the_shift():
    w = E.EngineWidths(trace_bits=10, tag_bits=12)
    # 10 + 10 + 4 - (12 + 7) = 5 bits of shift
    assert E.product((1000, 40), names=("x1", "y2"), widths=w) == (1000 * 40 >> 5) << 7
    assert E.saturate_tag([5000], w).tolist() == [4095]


def test_leaky_step_and_payloads():
    a = E.leaky_step(np.array([0, 4096, -4096]), np.array([8192, 0, 0]), decay=2048)
    assert a.tolist() == [4096, 2048, -2048]
    assert E.rate_payload(np.array([-5, 100, 2 ** 30]), 2, bits=8).tolist() == [0, 25, 255]
    assert E.trace_payload(np.array([300 << 4]), 4).tolist() == [254]
    y2, y3 = E.third_factor(np.array([40, -40, 40, 2000]), np.array([1, 1, 0, 1]), 3)
    assert y2.tolist() == [5, 0, 0, 127] and y3.tolist() == [0, 5, 0, 0]


# ---------------------------------------------------------------------------------------------- against Lava
def _oracle(w0, payloads, bap, y2s, y3s, *, t_epoch, k_dec, x1_tau, rng_seed, tag_m, tag_e, w_m, w_e, weight_exp):
    """The LearningDense of the probe, tick by tick, with the engine model's functions."""
    n_post, n_pre = w0.shape
    n_ticks = payloads.shape[1]
    w = E.initial_weights(w0)
    tag = np.zeros_like(w)
    x1 = np.zeros(n_pre, dtype=np.int64)
    tx = np.zeros(n_pre, dtype=np.int64)
    ty = np.zeros(n_post, dtype=np.int64)
    y2 = np.zeros(n_post, dtype=np.int64)
    y3 = np.zeros(n_post, dtype=np.int64)
    x_decay, _ = E.trace_randoms(rng_seed, 2 * n_ticks + 1)
    y_decay, _ = E.trace_randoms(rng_seed + 2, 2 * n_ticks + 1)
    syn = E.synaptic_randoms(n_ticks // t_epoch + 1)
    a_log = np.zeros((n_post, n_ticks), dtype=np.int64)
    a_buff = np.zeros(n_post, dtype=np.int64)
    for n in range(1, n_ticks + 1):
        a_log[:, n - 1] = a_buff
        p = payloads[:, n - 1]
        a_buff = E.dense(w, p, weight_exp)
        within = (n - 1) % t_epoch + 1
        spiked = p != 0
        x1[spiked] = E.payload_to_trace(p[spiked])
        tx[spiked] = within
        b = bap[:, n - 1].astype(bool)
        ty[b] = within
        y2, y3 = y2s[:, n - 1].astype(np.int64), y3s[:, n - 1].astype(np.int64)
        if n % t_epoch == 0:
            epoch = n // t_epoch
            # trace histories over the epoch: decays with the tick's shared randoms, impulse (clip) at tx
            hx = [x1.copy()]
            for t in range(1, t_epoch + 1):
                v = E.decay_trace(hx[-1], x1_tau, x_decay[2 * n])
                v = np.where(tx == t, np.clip(v, 0, 127), v)
                hx.append(v)
            hy2, hy3 = [y2.copy()], [y3.copy()]
            for _ in range(1, t_epoch + 1):
                hy2.append(E.decay_trace(hy2[-1], 2 ** 16 - 1, y_decay[2 * n]))
                hy3.append(E.decay_trace(hy3[-1], 2 ** 16 - 1, y_decay[2 * n]))
            hx, hy2, hy3 = np.array(hx), np.array(hy2), np.array(hy3)
            x1_eval = hx[ty]  # (post, pre): x1 at each post neuron's spike time
            y2_eval = hy2[ty, np.arange(n_post)][:, None]
            y3_eval = hy3[ty, np.arange(n_post)][:, None]
            y0 = (ty > 0)[:, None].astype(np.int64)
            apply = epoch % 2 ** k_dec == 0
            tag, w = E.eprop_epoch(tag, w, x1_eval, y2_eval, y3_eval, syn[epoch], y0=y0, apply=apply,
                                   tag_mantissa=tag_m, tag_exponent=tag_e, w_mantissa=w_m, w_exponent=w_e)
            x1 = hx[-1]
            tx[:] = 0
            ty[:] = 0
    return tag, w, x1, a_log


def _lava_run(w0, payloads, bap, y2s, y3s, *, t_epoch, k_dec, x1_tau, rng_seed, tag_m, tag_e, w_m, w_e,
              weight_exp):
    from neurorate.backends.lava import ensure_lava_importable

    ensure_lava_importable()
    from lava.magma.core.learning.constants import GradedSpikeCfg
    from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import LearningDense

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from engine_probe.procs import PayloadSource, ReplayNeuron
    finally:
        sys.path.pop(0)

    def scale(m, e):
        return f"({m}) * 2 ^ {e}" if e else f"({m})"

    rule = Loihi3FLearningRule(
        dt=f"{scale(tag_m, tag_e)} * y0 * x1 * y2 - {scale(tag_m, tag_e)} * y0 * x1 * y3 - u{k_dec} * t",
        dw=f"{scale(w_m, w_e)} * u{k_dec} * t", x1_impulse=0, x1_tau=x1_tau, t_epoch=t_epoch, rng_seed=rng_seed)
    src = PayloadSource(payloads=payloads)
    post = ReplayNeuron(bap=bap, y2=y2s, y3=y3s, learning_rule=rule)
    conn = LearningDense(weights=w0.astype(float), learning_rule=rule, num_message_bits=24,
                         graded_spike_cfg=GradedSpikeCfg.OVERWRITE, weight_exp=weight_exp)
    src.s_out.connect(conn.s_in)
    conn.a_out.connect(post.a_in)
    post.s_out_bap.connect(conn.s_in_bap)
    post.s_out_y1.connect(conn.s_in_y1)
    post.s_out_y2.connect(conn.s_in_y2)
    post.s_out_y3.connect(conn.s_in_y3)
    try:
        src.run(condition=RunSteps(num_steps=payloads.shape[1]), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = (conn.tag_1.get(), conn.weights.get(), conn.x1.get(), post.a_log.get())
    finally:
        src.stop()
    return tuple(np.asarray(a).astype(np.int64) for a in out)


def _case(seed, n_post, n_pre, n_ticks, bap_p=1.0):
    rng = np.random.default_rng(seed)
    w0 = rng.integers(-200, 200, (n_post, n_pre))
    # payloads: mostly trace-sized, some above 255 (uint8 wrap), some 0 (no spike)
    payloads = rng.integers(1, 255, (n_pre, n_ticks))
    payloads[rng.random((n_pre, n_ticks)) < 0.1] = 0
    payloads[rng.random((n_pre, n_ticks)) < 0.05] = 600
    bap = (rng.random((n_post, n_ticks)) < bap_p).astype(int)
    y2s = rng.integers(0, 128, (n_post, n_ticks))
    y3s = np.where(rng.random((n_post, n_ticks)) < 0.5, rng.integers(0, 128, (n_post, n_ticks)), 0)
    return w0, payloads, bap, y2s, y3s


CASES = {
    # deterministic: every product lands on the tag's and the weight's grid (scale exponents >= 0)
    "deterministic_epoch4": dict(seed=0, t_epoch=4, k_dec=2, x1_tau=2 ** 62, rng_seed=11, tag_m=1, tag_e=0,
                                 w_m=-1, w_e=0, weight_exp=-3, bap_p=1.0),
    # stochastic rounding of the tag and the weight every epoch, decaying x1, missing post spikes, t_epoch 1
    "stochastic_epoch1": dict(seed=1, t_epoch=1, k_dec=3, x1_tau=20, rng_seed=5, tag_m=3, tag_e=-3, w_m=-5,
                              w_e=-4, weight_exp=2, bap_p=0.7),
}


@pytest.mark.lava
@lava_missing
@pytest.mark.parametrize("name", sorted(CASES))
def test_learning_dense_bit_for_bit(name):
    """Tag, weights, x1 and the Dense output of a Lava LearningDense equal the engine model's integers."""
    cfg = dict(CASES[name])
    seed, bap_p = cfg.pop("seed"), cfg.pop("bap_p")
    w0, payloads, bap, y2s, y3s = _case(seed, n_post=5, n_pre=4, n_ticks=48, bap_p=bap_p)
    want = _oracle(w0, payloads, bap, y2s, y3s, **cfg)
    got = _lava_run(w0, payloads, bap, y2s, y3s, **cfg)
    for label, a, b in zip(("tag", "weights", "x1", "dense output"), got, want):
        assert np.array_equal(a, b), f"{label}: lava {a.tolist()} vs model {b.tolist()}"
    # the run did learn something and exercised the rounding (not a vacuous comparison)
    assert not np.array_equal(got[1], E.initial_weights(w0))
    assert np.any(got[0] != 0)
