"""Tasks: shapes, seeding, exact timing and masks, trial statistics, and agreement with neurogym itself."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurorate.errors import NeurorateError
from neurorate.tasks.base import available_tasks, make_task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import neurogym as ngym


def ngym_env(env_id, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ngym.make(env_id, **kwargs).unwrapped


def assert_seeding(name, **kwargs):
    """batch(i) is bit-for-bit reproducible, and differs across i and seeds."""
    task = make_task(name, **kwargs)
    a = task.batch(3)
    task.batch(0)
    again, fresh = task.batch(3), make_task(name, **kwargs).batch(3)
    for u, v, w in zip(a, again, fresh):
        assert np.array_equal(u, v) and np.array_equal(u, w)
    assert not np.array_equal(a[0], task.batch(4)[0])
    assert not np.array_equal(a[0], make_task(name, seed=1, **kwargs).batch(3)[0])


# --------------------------------------------------------------------------------------------- registry
def test_registry_and_errors():
    assert {"romo", "2af", "dms", "neurogym"} <= set(available_tasks())
    for bad, kwargs in [
        ("nosuchtask", {}),
        ("neurogym", {}),
        ("neurogym:", {}),
        ("romo:Foo-v0", {}),
        ("neurogym:NoSuchEnv-v0", {}),
        ("neurogym:ReachingDelayResponse-v0", {}),  # Box actions
        ("neurogym:Bandit-v0", {}),  # no ground truth
        ("2af", {"bogus": 1}),
        ("2af", {"timing": "long"}),
        ("2af", {"timing": {"stimulus": -100}}),
        ("dms", {"timing": {"sample2": 100}}),
        ("2af", {"dt": 200.0}),
        ("dms", {"seq_len": 0}),
        ("2af", {"cohs": []}),
        ("2af", {"timing": {"decision": 50}}),
        ("romo", {"batch_size": 0}),
    ]:
        with pytest.raises(NeurorateError):
            make_task(bad, **kwargs)


# ------------------------------------------------------------------------------------------------- romo
def test_romo_shapes_and_seeding():
    task = make_task("romo")
    x, target, mask = task.batch(0)
    assert (task.n_steps, task.batch_size, task.alpha, task.loss_kind) == (56, 32, 0.5, "mse")
    assert x.shape == (56, 32, 1) and target.shape == mask.shape == (56, 32, 2)
    assert x.dtype == target.dtype == mask.dtype == np.float32
    assert_seeding("romo")


def test_romo_timing_masks_and_targets():
    x, target, mask = make_task("romo", batch_size=400, seed=5).batch(0)
    t = np.arange(56)
    delay_steps = []
    for b in range(400):
        on = np.flatnonzero(x[:, b, 0])
        f1, f2 = x[6, b, 0], x[on[-1], b, 0]
        assert on[:2].tolist() == [6, 7] and x[6, b, 0] == x[7, b, 0]  # f1: 2 steps after 6 fixation steps
        end2 = on[-1] + 1
        assert on.size == 4 and on[2] == end2 - 2  # f2: 2 steps
        delay_steps.append(on[2] - 8)  # int(U[2, 8] / 0.5) steps between f1 and f2
        assert 0.5 <= min(f1, f2) and max(f1, f2) <= 1.5 and abs(f1 - f2) >= 0.2
        decision = (t >= end2 + 10) & (t < end2 + 30)  # 10 decision-delay steps, then 20 decision steps
        chosen = 0 if f1 > f2 else 1
        assert np.array_equal(target[:, b, chosen], np.where(decision, 0.5, 0.0).astype(np.float32))
        assert not target[:, b, 1 - chosen].any()
        expected_mask = (decision | (t < end2)).astype(np.float32)
        assert np.array_equal(mask[:, b, 0], expected_mask) and np.array_equal(mask[:, b, 1], expected_mask)
        assert mask[:, b].sum() == 2 * 20 + 2 * end2
    f = x[[6, 7]].max(0)[:, 0]
    assert abs(f.mean() - 1.0) < 0.05  # U[0.5, 1.5] (mildly reshaped by the |f1 - f2| >= 0.2 redraw)
    values, counts = np.unique(delay_steps, return_counts=True)
    assert values.tolist() == list(range(4, 16)) and counts.min() >= 15  # ~33 per value


# -------------------------------------------------------------------------------------------------- 2AF
def test_2af_shapes_timing_and_labels():
    task = make_task("2af")
    x, labels, mask = task.batch(0)
    assert (task.n_steps, task.batch_size, task.n_in, task.n_out) == (22, 16, 3, 3)
    assert (task.dt, task.tau, task.alpha, task.time_unit, task.loss_kind) == (100.0, 100.0, 1.0, "ms", "ce")
    assert x.shape == (22, 16, 3) and labels.shape == mask.shape == (22, 16)
    assert (x.dtype, labels.dtype, mask.dtype) == (np.float32, np.int64, np.float32)
    assert task.periods == {"fixation": (0, 1), "stimulus": (1, 21), "delay": (21, 21), "decision": (21, 22)}
    assert not labels[:21].any() and set(np.unique(labels[21])) <= {1, 2}
    assert (labels == 0).mean() == 21 / 22 and mask.sum() == 22 * 16
    assert (x[0, :, 0] == 1).all() and not x[1:, :, 0].any() and not x[0, :, 1:].any() and not x[21].any()
    assert_seeding("2af")
    _, labels, mask = make_task("2af", fixate=False).batch(0)
    assert np.array_equal(mask, (labels > 0).astype(np.float32)) and mask.sum() == 16


def test_2af_statistics_and_noise():
    n = 4000
    x, labels, _ = make_task("2af", batch_size=n, seed=2).batch(0)
    clean, clean_labels, _ = make_task("2af", batch_size=n, seed=2, sigma=0.0).batch(0)
    assert np.array_equal(labels, clean_labels)  # the noise is drawn after the trial parameters
    gt = labels[21] - 1
    assert abs(gt.mean() - 0.5) < 0.04
    coh = np.round(np.abs(clean[1, :, 1] - clean[1, :, 2]).astype(np.float64) * 100, 1)
    values, counts = np.unique(coh, return_counts=True)
    assert values.tolist() == [0.0, 6.4, 12.8, 25.6, 51.2] and np.abs(counts / n - 0.2).max() < 0.035
    assert (clean[1:21] == clean[1:2]).all()  # noiseless stimulus is constant over the stimulus period
    # the stronger unit is the correct one: channel 1 for label 1, channel 2 for label 2
    strong = np.where(clean[1, :, 1] > clean[1, :, 2], 1, 2)
    assert (strong[coh > 0] == labels[21][coh > 0]).all()
    noise = (x[1:21, :, 1:] - clean[1:21, :, 1:]).astype(np.float64)
    assert abs(noise.std() - 0.1) < 0.002 and abs(noise.mean()) < 0.002  # sigma / sqrt(dt) = 1 / sqrt(100)
    for g in (0, 1):
        for c in (0.0, 25.6, 51.2):
            sel = (gt == g) & (coh == c)
            expected = np.cos(np.array([0.0, np.pi]) - np.pi * g) * c / 200 + 0.5
            assert np.abs(x[1:21, sel, 1:].mean(axis=(0, 1)) - expected).max() < 0.005
    x20, _, _ = make_task("2af", batch_size=200, dt=20.0, seed=2).batch(0)
    clean20, _, _ = make_task("2af", batch_size=200, dt=20.0, seed=2, sigma=0.0).batch(0)
    assert abs((x20[5:105, :, 1:] - clean20[5:105, :, 1:]).std() - 1 / np.sqrt(20)) < 0.005


def test_2af_layouts():
    task = make_task("2af", seq_len=100, seed=4)
    x, labels, mask = task.batch(0)
    assert x.shape == (100, 16, 3) and task.n_steps == 100 and mask.sum() == 1600
    assert np.flatnonzero(labels[:, 0]).tolist() == [21, 43, 65, 87] and ((labels > 0).sum(0) == 4).all()
    assert (x[[0, 22, 44, 66, 88], :, 0] == 1).all() and x[:, :, 0].sum() == 5 * 16
    short = make_task("2af", timing="short")
    x, labels, _ = short.batch(0)
    assert short.periods == {"fixation": (0, 0), "stimulus": (0, 7), "delay": (7, 7), "decision": (7, 8)}
    assert x.shape == (8, 16, 3) and not x[:, :, 0].any() and (labels[7] > 0).all() and not labels[:7].any()
    assert make_task("2af", timing={"stimulus": 500}).n_steps == 7


# -------------------------------------------------------------------------------------------------- DMS
def test_dms_shapes_timing_and_inputs():
    task = make_task("dms", sigma=0.0)
    x, labels, mask = task.batch(0)
    assert (task.n_steps, task.n_in, task.n_out, task.alpha) == (32, 3, 3, 1.0)
    assert x.shape == (32, 16, 3) and labels.shape == mask.shape == (32, 16) and labels.dtype == np.int64
    assert task.periods == {
        "fixation": (0, 3),
        "sample": (3, 8),
        "delay": (8, 18),
        "test": (18, 23),
        "decision": (23, 32),
    }
    assert (x[:23, :, 0] == 1).all() and not x[23:, :, 0].any()
    assert (
        not labels[:23].any() and (labels[23:] == labels[23]).all() and set(np.unique(labels[23])) <= {1, 2}
    )
    assert (labels > 0).mean() == 9 / 32 and mask.sum() == 32 * 16
    ring = x[..., 1:]
    assert not ring[:3].any() and not ring[8:18].any() and not ring[23:].any()
    sample, test = ring[3], ring[18]
    assert ((sample == 0) | (sample == 1)).all() and (sample.sum(-1) == 1).all()
    match = (sample == test).all(-1)
    assert np.array_equal(np.where(match, 1, 2), labels[23])
    assert_seeding("dms")


def test_dms_statistics_and_noise():
    n = 4000
    x, labels, _ = make_task("dms", batch_size=n, seed=3).batch(0)
    clean, _, _ = make_task("dms", batch_size=n, seed=3, sigma=0.0).batch(0)
    assert abs((labels[23] == 1).mean() - 0.5) < 0.04 and abs(clean[3, :, 1].mean() - 0.5) < 0.04
    noise = np.concatenate([x[3:8, :, 1:] - clean[3:8, :, 1:], x[18:23, :, 1:] - clean[18:23, :, 1:]])
    assert abs(noise.std() - 0.1) < 0.002
    assert np.array_equal(x[8:18], clean[8:18]) and np.array_equal(x[..., 0], clean[..., 0])
    short = make_task("dms", timing="short")
    assert short.n_steps == 8 and short.periods["decision"] == (7, 8)
    assert make_task("dms", seq_len=40).batch(0)[1].shape == (40, 16)


# --------------------------------------------------------------------------------- agreement with neurogym
@pytest.mark.parametrize("timing", ["default", "short"])
@pytest.mark.parametrize("dt", [100.0, 20.0])
def test_2af_matches_neurogym(timing, dt):
    task = make_task("2af", timing=timing, dt=dt, sigma=0.0)
    env = ngym_env("PerceptualDecisionMaking-v0", dt=dt, sigma=0.0, timing=task.durations)
    assert (task.n_in, task.n_out) == (env.observation_space.shape[0], env.action_space.n)
    env.seed(0)
    for gt in (0, 1):
        for coh in task.cohs:
            env.new_trial(ground_truth=gt, coh=coh)
            x, labels, _ = task.trials([gt], [coh])
            assert np.array_equal(x[:, 0], env.ob) and np.array_equal(labels[:, 0], env.gt)
    assert task.periods == {p: (env.start_ind[p], env.end_ind[p]) for p in task.periods}


@pytest.mark.parametrize("timing", ["default", "short"])
@pytest.mark.parametrize("dt", [100.0, 30.0])
def test_dms_matches_neurogym(timing, dt):
    task = make_task("dms", timing=timing, dt=dt, sigma=0.0)
    env = ngym_env("DelayMatchSample-v0", dt=dt, sigma=0.0, timing=task.durations)
    assert (task.n_in, task.n_out) == (env.observation_space.shape[0], env.action_space.n)
    env.seed(0)
    for gt in (1, 2):
        for sample in (0, 1):
            env.new_trial(ground_truth=gt, sample_theta=np.pi * sample)
            x, labels, _ = task.trials([gt], [sample])
            assert np.array_equal(x[:, 0], env.ob) and np.array_equal(labels[:, 0], env.gt)
    assert task.periods == {p: (env.start_ind[p], env.end_ind[p]) for p in task.periods}


def test_2af_noise_level_matches_neurogym():
    env = ngym_env("PerceptualDecisionMaking-v0", dt=100)
    env.seed(1)
    residual = []
    for _ in range(200):
        trial = env.new_trial()
        clean, _, _ = make_task("2af", sigma=0.0).trials([trial["ground_truth"]], [trial["coh"]])
        residual.append(env.ob[1:21, 1:] - clean[1:21, 0, 1:])
    ours = make_task("2af", batch_size=200, seed=1)
    x, _, _ = ours.batch(0)
    clean, _, _ = make_task("2af", batch_size=200, seed=1, sigma=0.0).batch(0)
    assert abs(np.std(residual) - (x[1:21, :, 1:] - clean[1:21, :, 1:]).std()) < 0.005


# ----------------------------------------------------------------------------------------------- adapter
def test_adapter_shapes_and_reproducibility():
    name = "neurogym:PerceptualDecisionMaking-v0"
    task = make_task(name)
    x, labels, mask = task.batch(0)
    assert (task.n_in, task.n_out, task.n_steps, task.dt, task.alpha, task.loss_kind) == (
        3,
        3,
        22,
        100.0,
        1.0,
        "ce",
    )
    assert x.shape == (22, 16, 3) and (x.dtype, labels.dtype, mask.dtype) == (
        np.float32,
        np.int64,
        np.float32,
    )
    assert not labels[:21].any() and (labels[21] > 0).all() and mask.sum() == 22 * 16
    assert_seeding(name)
    # column b is neurogym's own trial after env.seed(trial_seeds(0)[b])
    env = ngym_env("PerceptualDecisionMaking-v0")
    for b, s in enumerate(task.trial_seeds(0)[:4]):
        env.seed(int(s))
        env.new_trial()
        assert np.array_equal(env.ob, x[:, b]) and np.array_equal(env.gt, labels[:, b])


def test_adapter_agrees_with_fast_generators():
    task = make_task("neurogym:PerceptualDecisionMaking-v0", env_kwargs={"sigma": 0.0}, batch_size=8)
    x, labels, _ = task.batch(0)
    trials = task.trials(0)
    fast_x, fast_labels, _ = make_task("2af", sigma=0.0).trials(
        [t["ground_truth"] for t in trials], [t["coh"] for t in trials]
    )
    assert np.array_equal(x, fast_x) and np.array_equal(labels, fast_labels)
    task = make_task("neurogym:DelayMatchSample-v0", env_kwargs={"sigma": 0.0}, batch_size=8)
    x, labels, _ = task.batch(2)
    trials = task.trials(2)
    fast_x, fast_labels, _ = make_task("dms", sigma=0.0).trials(
        [t["ground_truth"] for t in trials], [round(t["sample_theta"] / np.pi) for t in trials]
    )
    assert np.array_equal(x, fast_x) and np.array_equal(labels, fast_labels)


def test_adapter_padding_and_random_timing():
    x, labels, mask = make_task("neurogym:PerceptualDecisionMaking-v0", n_steps=30).batch(0)
    assert x.shape == (30, 16, 3) and (mask.sum(0) == 22).all() and not x[22:].any() and not labels[22:].any()
    _, labels, mask = make_task("neurogym:PerceptualDecisionMaking-v0", n_steps=10).batch(0)
    assert mask.sum() == 160 and not labels.any()
    task = make_task("neurogym:PerceptualDecisionMakingDelayResponse-v0", batch_size=32, fixate=False)
    x, labels, mask = task.batch(0)
    lengths = (np.abs(x).sum(-1) > 0).sum(0)
    assert task.n_steps == 66 and lengths.min() < 66 and np.array_equal(mask, (labels > 0).astype(np.float32))
    assert (mask.sum(0) == 15).all()  # decision 1500 ms at dt 100, wherever the random delay puts it


def test_neurogym_dataset_first_batch_is_not_reproducible():
    """The trap the adapter avoids: Dataset fills its cache before Dataset.seed can act."""
    batches = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = ngym.Dataset(
                "PerceptualDecisionMaking-v0", env_kwargs={"dt": 100}, batch_size=4, seq_len=22
            )
            dataset.seed(0)
        batches.append(dataset()[0])
    assert not np.array_equal(*batches)
