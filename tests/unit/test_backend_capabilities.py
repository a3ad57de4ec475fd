"""Backends declare capabilities; the core asks them (backends/base.py) and trains through one pipeline.

The third-party story: a toy backend installed as a distribution on ``sys.path`` (its module and a dist-info with
the ``neurorate.backends`` entry point) declares what it runs; the core refuses the rest with one line before
anything is written and runs what it declares (its arithmetic is the torch backend's, so its numbers are).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import neurorate as nr
from neurorate.backends.base import (
    BackendCapabilities,
    backend_capabilities,
    check_compatible,
    check_ensemble,
    get_backend,
    progress_bar,
    task_list,
)
from neurorate.cli.app import main
from neurorate.defaults import RUN_DEFAULTS
from neurorate.errors import NeurorateError
from neurorate.io.results import RunInterrupted
from neurorate.learning.registry import rules

TOY_MODULE = '''
from neurorate.backends.base import BackendCapabilities
from neurorate.backends.torch import TorchBackend


class ToyBackend:
    """e-prop with SGD on form A, float64 on the CPU; the arithmetic is the torch backend's."""

    name = "toy"
    capabilities = BackendCapabilities(name="toy", rules=("eprop",), optimizers=("sgd",), default_lr={"sgd": 0.1},
                                       forms=("A",), dtypes=("float64",), devices=("cpu",), max_networks=2)

    def __init__(self, device="cpu", dtype="float64"):
        self._torch = TorchBackend(device=device, dtype=dtype)

    def simulate(self, specs, inputs, profile=None):
        return self._torch.simulate(specs, inputs, profile)

    def train(self, specs, task, rule, **kw):
        return self._torch.train(specs, task, rule, **kw)

    def jacobian_vector(self, spec, state, q):
        return self._torch.jacobian_vector(spec, state, q)
'''


@pytest.fixture
def toy_backend(tmp_path, monkeypatch):
    """Install the toy backend as a distribution on sys.path: its module and a dist-info with the entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_backend.py").write_text(textwrap.dedent(TOY_MODULE))
    info = site / "toy_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[neurorate.backends]\ntoy = toy_backend:ToyBackend\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("toy_backend", None)


def run_main(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
        sys.exit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def small(seed=0, **kw):
    task = nr.make_task("romo", batch_size=4, seed=seed)
    spec = nr.NetworkSpec.random(n_in=task.n_in, n_hidden=8, n_out=task.n_out, gain=1.5, seed=seed,
                                 alpha=task.alpha, **kw)
    return spec, task


# ------------------------------------------------------------------------------------------ declared capabilities
def test_builtin_capabilities_derive_their_rules_from_the_registry():
    torch_caps, lava_caps = backend_capabilities("torch"), backend_capabilities("lava")
    assert torch_caps.rule_names() == tuple(n for n, r in rules().items() if "torch" in r.backends)
    assert torch_caps.rule_names("lif") == ("bptt", "eprop", "eprop_random")
    # Lava: the rules that list it and run forward in time
    assert lava_caps.rule_names() == ("eprop", "eprop_online", "eprop_random", "rflo")
    assert lava_caps.rule_names("lif") == ()
    assert (torch_caps.default_optimizer, lava_caps.default_optimizer) == ("adam", "sgd")
    # the CLI's documented defaults are the backends' declared ones
    assert dict(torch_caps.default_lr) == {"adam": RUN_DEFAULTS["lr"], "sgd": RUN_DEFAULTS["lr_sgd"]}
    assert lava_caps.default_lr["sgd"] == RUN_DEFAULTS["lr_sgd"]
    assert get_backend("lava").capabilities is lava_caps


def test_lava_capabilities_are_read_without_lava_and_a_missing_extra_is_one_line():
    code = textwrap.dedent("""
        import sys
        sys.modules["lava"] = None  # as if lava-nc were not installed
        import neurorate as nr
        from neurorate.backends.base import backend_capabilities
        caps = backend_capabilities("lava")
        print(caps.name, caps.extra, ",".join(caps.rule_names()))
        spec = nr.NetworkSpec.random(n_hidden=4, seed=0)
        try:
            from neurorate.training import check_train
            check_train(spec, nr.make_task("romo", batch_size=2), backend="lava", optimizer="sgd", iterations=1)
        except nr.NeurorateError as exc:
            print(type(exc).__name__, "|", exc)
        print(sorted(m for m in sys.modules if m.startswith("lava.")))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    first, error, imported = p.stdout.strip().splitlines()
    assert first == "lava lava eprop,eprop_online,eprop_random,rflo"
    assert error.startswith("MissingExtraError | ") and "neurorate[lava]" in error
    assert imported == "[]"


@pytest.mark.parametrize("fields, words", [
    ({"optimizers": ("rmsprop",)}, "capabilities.optimizers must be a non-empty subset"),
    ({"optimizers": ()}, "capabilities.optimizers must be a non-empty subset"),
    ({"forms": ("D",)}, "capabilities.forms"),
    ({"neurons": ("izhikevich",)}, "capabilities.neurons"),
    ({"optimizers": ("adam",), "default_lr": {"sgd": 0.1}}, "no learning rate for adam"),
    ({"name": ""}, "need a name"),
])
def test_capabilities_are_validated(fields, words):
    with pytest.raises(NeurorateError, match=words):
        BackendCapabilities(**{"name": "x", **fields})


CAPS = BackendCapabilities(name="chip", title="Chip", rules=("eprop", "bptt"), optimizers=("sgd",),
                           default_lr={"sgd": 0.1}, refusals={"adam": "is not local"}, forms=("A",),
                           activations=("relu",), dtypes=("float32",), devices=("cpu",), max_batch=8,
                           max_networks=2, options=("fast",))


@pytest.mark.parametrize("kwargs, words", [
    ({"rule": "eprop_random"}, "rule 'eprop_random' is not available on the Chip backend (it runs on torch, lava); "
                               "on chip choose one of bptt, eprop"),
    ({"rule": "hebb"}, "unknown rule 'hebb'"),
    ({"optimizer": "adam"}, "optimizer 'adam' is not local and is not run on the Chip backend; use --optimizer sgd"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"profile": "loihi2"}, "the Chip backend runs at full precision only"),
    ({"specs": [nr.NetworkSpec.random(n_hidden=3, form="B", activation="relu")]}, "runs the forms A, not form 'B'"),
    ({"specs": [nr.NetworkSpec.random(n_hidden=3, activation="tanh")]}, "runs the activations relu, not 'tanh'"),
    ({"specs": [nr.NetworkSpec.random(n_hidden=3, activation="relu")] * 3}, "at most 2 networks at once, got 3"),
    ({"batch": 9}, "batches of at most 8 trials, got 9"),
    ({"dtype": "float64"}, "unknown dtype 'float64' for the Chip backend; choose float32"),
    ({"device": "cuda:1"}, "--device cuda:1: unknown device for the Chip backend; choose cpu"),
    ({"options": {"fast": True, "slow": True}}, "chip backend: unknown option(s) slow; it takes fast"),
    ({"neuron": "lif"}, "the Chip backend does not train lif networks (it trains rate)"),
])
def test_check_compatible_is_one_line_per_limit(kwargs, words):
    with pytest.raises(NeurorateError) as info:
        check_compatible(CAPS, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_check_compatible_accepts_what_is_declared():
    spec = nr.NetworkSpec.random(n_hidden=3, activation="relu")
    rule = check_compatible(CAPS, "bptt", "sgd", specs=[spec, spec], dtype="float32", device="cpu", batch=8,
                            options={"fast": 1})
    assert rule.name == "bptt"
    assert check_compatible(CAPS) is None


def test_online_only_backends_refuse_backwards_rules_with_the_reason():
    caps = BackendCapabilities(name="stream", online_only=True, rules=("bptt", "eprop"))
    with pytest.raises(NeurorateError, match="needs the whole trajectory backwards in time; use an on-line rule "
                                             r"\(eprop\) or --backend torch"):
        check_compatible(caps, "bptt")


def test_shared_helpers():
    a = nr.NetworkSpec.random(n_hidden=3)
    with pytest.raises(NeurorateError, match="must share n_hidden: network 0 has 3, network 1 has 4"):
        check_ensemble([a, nr.NetworkSpec.random(n_hidden=4)])
    with pytest.raises(NeurorateError, match="no networks given"):
        check_ensemble([])
    task = nr.make_task("romo", batch_size=2)
    assert task_list(task, 3) == [task] and task_list([task, task], 2) == [task, task]
    with pytest.raises(NeurorateError, match=r"give one task or one per network \(3\), got 2"):
        task_list([task, task], 3)
    assert progress_bar(3, False, "x") is None
    bar = progress_bar(3, True, "x")
    assert bar.leave is True and bar.total == 3
    bar.close()


def test_a_backend_without_capabilities_is_one_line():
    class Bare:
        name = "bare"

    with pytest.raises(NeurorateError, match="backend 'bare' declares no capabilities"):
        backend_capabilities(Bare())


# ------------------------------------------------------------------------------------------ a third-party backend
def test_toy_backend_refuses_what_it_does_not_declare(toy_backend, tmp_path):
    spec, task = small()
    common = dict(iterations=2, lyapunov=False, progress=False, device="cpu", dtype="float64")
    cases = [(dict(rule="bptt", optimizer="sgd"), "rule 'bptt' is not available on the toy backend"),
             (dict(rule="eprop", optimizer="adam"), "optimizer 'adam' is not run on the toy backend"),
             (dict(rule="eprop", optimizer="sgd", profile="loihi2"), "runs at full precision only"),
             (dict(rule="eprop", optimizer="sgd", dtype="float32"), "unknown dtype 'float32'"),
             (dict(rule="eprop", optimizer="sgd", backend_options={"fast": 1}), "toy backend: unknown option(s) fast"),
             (dict(rule="eprop", optimizer="sgd", floss_iterations=1, floss_every=1),
              "periodic flossing (floss_every) needs a backend whose training resumes"),
             (dict(rule="eprop", optimizer="sgd", neuron="lif"), "neuron='lif' trains with adam"),
             (dict(rule="eprop", optimizer="adam", neuron="lif"), "the toy backend does not train lif networks")]
    for j, (kw, words) in enumerate(cases):
        out = tmp_path / f"r{j}"
        with pytest.raises(NeurorateError) as info:
            nr.train(spec, task, backend="toy", out=out, **{**common, **kw})
        assert words in str(info.value) and "\n" not in str(info.value), (kw, str(info.value))
        assert not out.exists()
    with pytest.raises(NeurorateError, match="at most 2 networks at once, got 3"):
        nr.train([spec] * 3, task, backend="toy", rule="eprop", optimizer="sgd", **common)


def test_toy_backend_runs_what_it_declares_with_the_torch_numbers(toy_backend, tmp_path):
    assert "toy" in nr.available_backends()
    spec, task = small()
    kw = dict(rule="eprop", optimizer="sgd", lr=0.05, iterations=4, lyapunov=True, lyapunov_k=2, progress=False,
              device="cpu", dtype="float64")
    toy = nr.train(spec, task, backend="toy", out=tmp_path / "toy", **kw)
    ref = nr.train(spec, task, backend="torch", **kw)
    assert toy.backend == "toy" and ref.backend == "torch"
    np.testing.assert_allclose(toy.losses, ref.losses, rtol=1e-10)
    np.testing.assert_allclose(toy.spec.w_rec, ref.spec.w_rec, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(toy.spectrum_after, ref.spectrum_after, rtol=1e-10)
    saved = json.loads((tmp_path / "toy" / "result.json").read_text())
    assert saved["status"] == "ok" and saved["backend"] == "toy"


def test_cli_asks_the_toy_backend(toy_backend, capsys, tmp_path):
    base = ["run", "--backend", "toy", "--iterations", "2", "--hidden", "8", "--batch", "4", "--no-lyapunov",
            "--device", "cpu", "--form", "A"]
    rc, so, err = run_main(capsys, *base, "--rule", "bptt", "--out", str(tmp_path / "a"))
    assert rc == 2 and so == "" and err.strip().startswith("error: rule 'bptt' is not available on the toy backend")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    # no --optimizer: the toy's default (sgd, not adam); the run then fails only on the dtype it does not declare
    rc, so, err = run_main(capsys, *base, "--out", str(tmp_path / "b"))
    assert rc == 2 and "unknown dtype 'float32' for the toy backend" in err and "optimizer" not in err
    rc, so, err = run_main(capsys, *base, "--neuron", "lif", "--out", str(tmp_path / "c"))
    assert rc == 2 and err.strip() == "error: the toy backend does not train lif networks (it trains rate)"


# ------------------------------------------------------------------------------------------ one pipeline
def test_spiking_runs_go_through_the_same_pipeline(tmp_path):
    """A spiking run records like a rate run: spec_initial.npz at the start, the metrics as it goes, and Ctrl-C
    keeps what it says it keeps."""
    spec, task = small()
    seen = []

    def stop(i, losses, acc):
        seen.append(i)
        if i == 1:
            raise KeyboardInterrupt

    out = tmp_path / "lif"
    with pytest.raises(RunInterrupted, match="interrupted after 2 of 5 iterations"):
        nr.train(spec, task, rule="eprop", iterations=5, lr=1e-3, neuron="lif", lyapunov=False, out=out,
                 callback=stop)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "interrupted" and result["backend"] == "torch (lif)"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2 and (out / "spec_initial.npz").is_file()
    full = nr.train(spec, task, rule="eprop", iterations=3, lr=1e-3, neuron="lif", out=tmp_path / "ok")
    assert isinstance(full, nr.TrainResult) and full.lyapunov_unit is None and full.spectrum_before is None
    assert full.config["neuron"] == "lif" and full.config["spiking"] == {} and full.config["lr"] == 1e-3
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["network"] == spec.meta()


def test_pipeline_steps_by_hand_equal_train():
    from neurorate import training as T

    spec, task = small()
    args = dict(rule="eprop", backend="torch", iterations=3, lr=1e-3, optimizer="adam", profile=None,
                floss_iterations=2, floss_mode="state", floss_k=2, floss_lr=1e-3, floss_every=None, lyapunov=True,
                lyapunov_k=2, lyapunov_units="step", device="cpu", dtype="float64", backend_options=None,
                neuron="rate", out=None, overwrite=False, allow_large=False)
    plan = T.build(T.validate(spec, task, **args))
    plan.progress = False
    for step in (T.record_start, lambda p: T.measure(p, "before"), T.floss_step, lambda p: T.measure(p, "flossed"),
                 T.train_step, lambda p: T.measure(p, "after")):
        step(plan)
    (by_hand,) = T.record(plan)
    keys = ("floss_iterations", "floss_mode", "floss_k", "floss_lr", "lyapunov", "lyapunov_k", "lyapunov_units",
            "device", "dtype", "iterations", "lr", "optimizer", "rule", "backend")
    whole = nr.train(spec, task, progress=False, **{k: args[k] for k in keys})
    np.testing.assert_allclose(by_hand.losses, whole.losses, rtol=1e-12)
    for name in ("spectrum_before", "spectrum_flossed", "spectrum_after", "floss_losses"):
        np.testing.assert_allclose(getattr(by_hand, name), getattr(whole, name), rtol=1e-12)


@pytest.mark.parametrize("form", ["A", "B", "C"])
def test_richlazy_rates_are_the_simulated_rates(form):
    from neurorate.analysis.richlazy import rates_at

    specs = [nr.NetworkSpec.random(n_in=2, n_hidden=7, n_out=2, gain=g, seed=s, form=form, alpha=a)
             for g, s, a in ((1.5, 0, 0.2), (0.7, 1, 0.5))]
    x = np.random.default_rng(0).normal(size=(20, 3, 2))
    ref = get_backend("torch", device="cpu", dtype="float64").simulate(specs, x).rates[:, 11]
    np.testing.assert_allclose(rates_at(specs, x, 11), ref, rtol=1e-12, atol=1e-15)
