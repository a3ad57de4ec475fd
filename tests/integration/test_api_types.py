"""Arguments of the wrong type to the functions a user calls first (``nr.train``, ``nr.make_task``,
``nr.NetworkSpec.random``, ``nr.lyapunov_spectrum``, ``nr.study``): one :class:`~neurorate.errors.NeurorateError`
line each, raised before anything is written (docs/cli.md, "Inputs that are refused"). A bool is not an integer
(``iterations=True`` once trained one iteration), a string is not a number (``lr="0.1"`` was taken as 0.1)."""

from __future__ import annotations

import os

import pytest

import neurorate as nr
from neurorate.errors import NeurorateError


@pytest.fixture(scope="module")
def spec():
    return nr.NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, seed=0)


@pytest.fixture(scope="module")
def task():
    return nr.make_task("romo", batch_size=2, seed=0)


def _refused(call, *words: str) -> str:
    """``call()`` raises a one-line NeurorateError holding ``words`` and writes nothing in the cwd."""
    before = set(os.listdir("."))
    with pytest.raises(NeurorateError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert set(os.listdir(".")) == before, "a refused call wrote files"
    return message


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


TRAIN_CASES = {
    "spec-None": (dict(spec=None), "spec must be a NetworkSpec"),
    "spec-int": (dict(spec=3), "spec must be a NetworkSpec"),
    "iterations-str": (dict(iterations="10"), "iterations must be a non-negative integer, got '10' (a string)"),
    "iterations-bool": (dict(iterations=True), "iterations must be a non-negative integer, got True (a bool)"),
    "iterations-fraction": (dict(iterations=2.5), "iterations must be a non-negative integer, got 2.5"),
    "lr-str": (dict(lr="x"), "lr must be a number, got 'x' (a string)"),
    "lr-numeric-str": (dict(lr="0.1"), "lr must be a number, got '0.1' (a string)"),
    "lr-bool": (dict(lr=True), "lr must be a number, got True (a bool)"),
    "lr-list-str": (dict(lr=["0.1"]), "lr must be a number"),
    "floss-iterations-fraction": (dict(floss_iterations=2.5), "floss_iterations must be a non-negative integer"),
    "floss-iterations-bool": (dict(floss_iterations=True), "floss_iterations must be a non-negative integer"),
    "floss-lr-str": (dict(floss_iterations=1, floss_lr="x"), "floss_lr must be a number"),
    "floss-every-bool": (dict(floss_iterations=1, floss_every=True), "floss_every must be a positive integer"),
    "lyapunov-k-str": (dict(lyapunov=True, lyapunov_k="4"), "lyapunov_k must be a positive integer"),
    "lyapunov-str": (dict(lyapunov="yes"), "lyapunov must be True or False"),
    "allow-large-str": (dict(allow_large="no"), "allow_large must be True or False"),
    "overwrite-str": (dict(overwrite="yes"), "overwrite must be True or False"),
    "backend-options-list": (dict(backend_options=[1]), "backend_options must be a dict"),
    "backend-options-str": (dict(backend_options="compiled"), "backend_options must be a dict"),
    "backend-options-int-key": (dict(backend_options={1: 2}), "backend_options must be a dict"),
    "backend-int": (dict(backend=3), "backend must be a backend name"),
    "device-int": (dict(device=3), "device must be a string"),
    "device-index": (dict(device="cuda:x"), "--device cuda:x: the device index must be a non-negative integer"),
    "device-lava": (dict(backend="lava", optimizer="sgd", device="cuda"), "the Lava backend runs on the CPU"),
    "out-int": (dict(out=3), "out must be a path"),
    "progress-str": (dict(progress="x"), "progress must be True, False or None"),
    "callback-int": (dict(callback=3), "callback must be a function"),
    "floss-callback-str": (dict(floss_callback="print"), "floss_callback must be a function"),
}


@pytest.mark.parametrize("kwargs, words", list(TRAIN_CASES.values()), ids=list(TRAIN_CASES))
def test_train_refuses_wrong_types(spec, task, kwargs, words):
    args = {"spec": spec, "task": task, "iterations": 1, "lyapunov": False, **kwargs}
    if kwargs.get("backend") == "lava":
        pytest.importorskip("lava")
    _refused(lambda: nr.train(args.pop("spec"), args.pop("task"), **args), words)


def test_train_refuses_a_cuda_device_this_machine_lacks(spec, task):
    if _cuda():
        pytest.skip("this machine has a CUDA device")
    _refused(lambda: nr.train(spec, task, iterations=1, lyapunov=False, device="cuda:0", out="o"),
             "--device cuda:0: no CUDA device is available on this machine (torch sees 0 GPUs)")
    _refused(lambda: nr.train(spec, task, iterations=1, neuron="lif", lyapunov=False, device="cuda:0", out="o"),
             "no CUDA device is available")


def test_train_accepts_integral_numbers(spec, task):
    """What worked stays working: numpy integers and floats with an integral value."""
    import numpy as np

    res = nr.train(spec, task, iterations=np.int64(2), lr=np.float32(1e-3), lyapunov=False)
    assert len(res.losses) == 2
    assert len(nr.train(spec, task, iterations=2.0, lyapunov=False).losses) == 2


MAKE_TASK_CASES = {
    "batch-str": (dict(batch_size="2"), "batch size must be a positive integer, got '2' (a string)"),
    "batch-bool": (dict(batch_size=True), "batch size must be a positive integer, got True (a bool)"),
    "seed-str": (dict(seed="x"), "seed must be a non-negative integer, got 'x' (a string)"),
    "seed-bool": (dict(seed=True), "seed must be a non-negative integer, got True (a bool)"),
    "tau-str": (dict(tau="x"), "tau must be a number, got 'x' (a string)"),
}


@pytest.mark.parametrize("kwargs, words", list(MAKE_TASK_CASES.values()), ids=list(MAKE_TASK_CASES))
def test_make_task_refuses_wrong_types(kwargs, words):
    _refused(lambda: nr.make_task("romo", **kwargs), words)


RANDOM_CASES = {
    "n-hidden-str": (dict(n_hidden="4"), "n_hidden must be a positive integer, got '4' (a string)"),
    "n-hidden-bool": (dict(n_hidden=True), "n_hidden must be a positive integer, got True (a bool)"),
    "n-in-None": (dict(n_in=None), "n_in must be a positive integer, got None"),
    "gain-str": (dict(gain="1"), "gain must be a number, got '1' (a string)"),
    "gain-None": (dict(gain=None), "gain must be a number, got None"),
    "gain-bool": (dict(gain=True), "gain must be a number, got True (a bool)"),
    "gain-huge": (dict(gain=1e308), "gain must be finite and at most 1e+06"),
    "seed-str": (dict(seed="0"), "seed must be a non-negative integer, got '0' (a string)"),
    "seed-bool": (dict(seed=True), "seed must be a non-negative integer, got True (a bool)"),
    "rank-bool": (dict(n_hidden=4, rank=True), "rank must be a positive integer, got True (a bool)"),
}


@pytest.mark.parametrize("kwargs, words", list(RANDOM_CASES.values()), ids=list(RANDOM_CASES))
def test_network_spec_random_refuses_wrong_types(kwargs, words):
    _refused(lambda: nr.NetworkSpec.random(**kwargs), words)


def test_network_spec_random_refuses_a_user_matrix_that_overflows():
    import numpy as np

    tiny = np.eye(3) * 1e-305  # scaling it to gain 1e6 needs a factor above the largest float: inf and NaN
    _refused(lambda: nr.NetworkSpec.random(n_hidden=3, w_rec=tiny, gain=1e6, gain_measure="spectral_radius"),
             "makes W_rec overflow")
    huge = np.full((3, 3), 1e300)  # its norm overflows: it cannot be measured, let alone rescaled
    _refused(lambda: nr.NetworkSpec.random(n_hidden=3, w_rec=huge, gain=1.0), "gain is not a finite number")
    assert np.isfinite(nr.NetworkSpec.random(n_hidden=3, w_rec=np.eye(3), gain=1e6).w_rec).all()


LYAPUNOV_CASES = {
    "spec-None": (dict(spec=None), "give a NetworkSpec or a non-empty list of NetworkSpecs, got NoneType"),
    "task-None": (dict(task=None), "give a Task (neurorate.make_task) or an input array"),
    "k-str": (dict(k="2"), "k must be a positive integer, got '2' (a string)"),
    "k-bool": (dict(k=True), "k must be a positive integer, got True (a bool)"),
    "k-fraction": (dict(k=2.5), "k must be a positive integer, got 2.5"),
    "steps-bool": (dict(steps=True), "steps must be a positive integer"),
}


@pytest.mark.parametrize("kwargs, words", list(LYAPUNOV_CASES.values()), ids=list(LYAPUNOV_CASES))
def test_lyapunov_spectrum_refuses_wrong_types(spec, task, kwargs, words):
    args = {"spec": spec, "task": task, **kwargs}
    _refused(lambda: nr.lyapunov_spectrum(args.pop("spec"), args.pop("task"), **args), words)


def test_lyapunov_spectrum_refuses_a_cuda_device_this_machine_lacks(spec, task):
    if _cuda():
        pytest.skip("this machine has a CUDA device")
    _refused(lambda: nr.lyapunov_spectrum(spec, task, k=2, device="cuda:0"), "no CUDA device is available")


STUDY_CASES = {
    "workers-str": (dict(workers="2"), "workers must be an integer from 1 to 1024"),
    "workers-huge": (dict(workers=99999), "workers must be an integer from 1 to 1024"),
    "resume-str": (dict(resume="x"), "resume must be True or False"),
    "allow-large-str": (dict(allow_large="yes"), "allow_large must be True or False"),
    "progress-str": (dict(progress="x"), "progress must be True, False or None"),
    "executor-int": (dict(executor=3), "unknown executor 3"),
    "out-int": (dict(out=3), "out must be a path"),
}


@pytest.mark.parametrize("kwargs, words", list(STUDY_CASES.values()), ids=list(STUDY_CASES))
def test_study_refuses_wrong_types(kwargs, words):
    _refused(lambda: nr.study("quick", **{"out": "st", **kwargs}), words)
