"""Learning rules as values: the registry, the tables derived from it, one feedback recipe, and a third-party
rule added by one module plus an entry point (docs/rules.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import neurorate as nr
from neurorate.backends.torch import gradients as G
from neurorate.backends.torch.ensemble import stack
from neurorate.errors import NeurorateError
from neurorate.learning import Rule, check_rule, feedback_matrix, get_rule, rule_names, rules, rules_table
from neurorate.model.spiking import LIFNetwork
from neurorate.model.spiking_learning import LIF_RULES, autograd_gradients, online_gradients

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- registry and derived tables
def test_builtin_rules_and_their_properties():
    table = {name: (r.detach, r.feedback, r.online, r.neurons, r.backends) for name, r in nr.rules().items()}
    assert table == {
        "bptt": ("nothing", "symmetric", False, ("rate", "lif", "alif"), ("torch",)),
        "eprop": ("presynaptic rates", "symmetric", False, ("rate", "lif", "alif"), ("torch", "lava")),
        "eprop_online": ("presynaptic rates", "symmetric", True, ("rate",), ("torch", "lava")),
        "eprop_random": ("presynaptic rates", "random", False, ("rate", "lif", "alif"), ("torch", "lava")),
        "rflo": ("presynaptic rates", "random", True, ("rate",), ("torch", "lava")),
        "trunc1": ("whole previous state", "symmetric", False, ("rate",), ("torch",)),
        "rtrl": ("nothing", "symmetric", True, ("rate",), ("torch",)),
        "snap1": ("other units' rates", "symmetric", True, ("rate",), ("torch",)),
        "uoro": ("nothing", "symmetric", True, ("rate",), ("torch",)),
        "kf_rtrl": ("nothing", "symmetric", True, ("rate",), ("torch",)),
    }
    estimators = {name: (r.estimator.rpartition(".")[2], r.stochastic) for name, r in nr.rules().items()
                  if r.estimator}
    assert estimators == {"rtrl": ("rtrl:RTRL", False), "snap1": ("snap1:SnAp1", False), "uoro": ("uoro:UORO", True),
                          "kf_rtrl": ("kf_rtrl:KFRTRL", True)}
    for r in nr.rules().values():
        if r.citation:
            assert nr.citation(r.citation).startswith("@")  # a key of neurorate.provenance


def test_tables_are_derived_from_the_registry():
    from neurorate.backends.lava.backend import FEEDBACK
    from neurorate.studies.config import SPIKING_RULES

    # the literal tables these replace
    assert nr.RULES == ("bptt", "eprop", "eprop_online", "eprop_random", "rflo", "trunc1", "rtrl", "snap1", "uoro",
                        "kf_rtrl")
    assert G.AUTOGRAD_RULES == {"bptt": (False, False), "eprop": (True, False), "eprop_random": (True, False),
                                "trunc1": (False, True)}
    assert G.ONLINE_RULES == ("eprop_online", "rflo") and G.RANDOM_FEEDBACK == ("eprop_random", "rflo")
    assert FEEDBACK == {"eprop": "symmetric", "eprop_online": "symmetric", "eprop_random": "random",
                        "rflo": "random"}
    assert LIF_RULES == SPIKING_RULES == ("bptt", "eprop", "eprop_random") == rule_names(neuron="lif")
    assert rule_names(backend="lava") == tuple(FEEDBACK)


def test_unknown_rule_lists_the_choices():
    with pytest.raises(NeurorateError, match="unknown rule 'nope'; choose one of bptt, eprop, eprop_online"):
        get_rule("nope")
    with pytest.raises(NeurorateError, match="does not train lif networks; for lif choose one of bptt, eprop, "
                                             "eprop_random"):
        check_rule("rflo", neuron="lif")
    with pytest.raises(NeurorateError, match="not available on the lava backend"):
        check_rule("trunc1", backend="lava")
    assert get_rule(get_rule("eprop")) is get_rule("eprop")


@pytest.mark.parametrize("fields,words", [
    (dict(detach="everything"), "detach must be one of"),
    (dict(feedback="mirror"), "feedback must be one of"),
    (dict(detach="nothing", online=True), "forward traces compute the 'presynaptic rates' truncation"),
    (dict(neurons=("izhikevich",)), "neurons must be a non-empty subset"),
    (dict(forms=()), "forms must be a non-empty subset"),
    (dict(name="not a name"), "must be an identifier"),
])
def test_rule_descriptions_are_validated(fields, words):
    base = dict(name="x", summary="s", detach="presynaptic rates", feedback="symmetric")
    with pytest.raises(NeurorateError, match=words):
        Rule(**{**base, **fields})


def test_cli_help_and_study_config_come_from_the_registry():
    from neurorate.studies.config import StudyConfig

    code = "from neurorate.cli.app import main\nmain(['run', '--help'])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "400"}).stdout
    assert " | ".join(rule_names()) in " ".join(out.split())
    with pytest.raises(Exception, match="rflo cannot train lif networks; spiking networks support bptt, eprop, "
                                        "eprop_random"):
        StudyConfig(name="x", rules=["rflo"], neurons=["lif"], flossing=[False])


def test_docs_table_matches_the_registry():
    text = (ROOT / "docs" / "rules.md").read_text()
    assert rules_table() in text, "regenerate the table: python -c 'import neurorate.learning as r; " \
                                  "print(r.rules_table())'"


# ---------------------------------------------------------------- one feedback recipe
def _lif_data(t=30, b=4, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.as_tensor(rng.uniform(0, 2, (t, b, n_in))), torch.as_tensor(rng.standard_normal((t, b, n_out))),
            torch.as_tensor(rng.uniform(0, 1, (t, b, n_out))))


def test_one_feedback_recipe_for_rate_and_spiking_networks():
    drawn = nr.NetworkSpec.random(n_in=3, n_hidden=12, n_out=2, gain=1.5, seed=7, alpha=0.2)
    bare = drawn.replace(feedback=None)  # e.g. a network built from user arrays: B comes from the seed
    recipe = feedback_matrix(bare)
    np.testing.assert_array_equal(recipe, drawn.feedback)  # the draw of NetworkSpec.random
    fourth = lambda: np.random.default_rng(np.random.SeedSequence(7).spawn(4)[3])  # noqa: E731
    np.testing.assert_array_equal(recipe, fourth().uniform(-1 / np.sqrt(12), 1 / np.sqrt(12), (12, 2)))
    gauss = nr.NetworkSpec.random(n_in=3, n_hidden=12, n_out=2, seed=7, feedback_init="gaussian").feedback
    np.testing.assert_array_equal(gauss, fourth().standard_normal((12, 2)) / np.sqrt(2))
    np.testing.assert_array_equal(stack([bare], torch.float64, torch.device("cpu")).feedback[0].numpy(), recipe)
    from neurorate.backends.lava import feedback_matrix as lava_feedback

    np.testing.assert_array_equal(lava_feedback(bare), recipe)

    x, target, mask = _lif_data()
    lif = lambda spec: [LIFNetwork(spec, threshold=0.5, kappa=0.6)]  # noqa: E731
    for grads in (autograd_gradients, online_gradients):
        g_rand = grads(lif(bare), x, target, mask, rule="eprop_random")
        g_sym = grads(lif(bare), x, target, mask, rule="eprop")
        g_same = grads(lif(bare.replace(feedback=recipe)), x, target, mask, rule="eprop_random")
        # random feedback is not W_out^T (it was, for a spec without feedback) ...
        assert (g_rand["w_rec"] - g_sym["w_rec"]).abs().max() > 1e-3 * g_sym["w_rec"].abs().max()
        # ... it is the rate backends' matrix
        for name in g_rand:
            torch.testing.assert_close(g_rand[name], g_same[name], rtol=0, atol=0)


# ---------------------------------------------------------------- a third-party rule: one module + entry point
TOY_MODULE = '''
"""A toy rule: the whole previous state detached and the error sent through the random feedback matrix."""
from neurorate.learning import Rule

TOY = Rule("toy", "one-step truncation with random feedback", detach="whole previous state", feedback="random",
           forms=("A",))
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """Install the toy rule as a distribution on sys.path: its module and a dist-info with the entry point."""
    (tmp_path / "toy_rules.py").write_text(textwrap.dedent(TOY_MODULE))
    info = tmp_path / "toy_rules-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-rules\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[neurorate.rules]\ntoy = toy_rules:TOY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("toy_rules", "toy_rules_bad", "toy_rules_broken"):
        sys.modules.pop(name, None)


def _oracle_grads(spec, x, target, mask):
    """Autograd on a hand-written form A network and loss: state detached at every step, readout error sent to
    the rates through B (``y = V r.detach() + c + B^T r - (B^T r).detach()``)."""
    p = {k: torch.tensor(getattr(spec, k), dtype=torch.float64, requires_grad=True)
         for k in ("w_in", "w_rec", "w_out", "b", "b_out")}
    fb = torch.tensor(spec.feedback, dtype=torch.float64)
    a = torch.zeros(x.shape[1], spec.n_hidden, dtype=torch.float64)
    total = 0.0
    for t in range(x.shape[0]):
        prev = a.detach()
        a = (1 - spec.alpha) * prev + spec.alpha * (torch.tanh(prev) @ p["w_rec"].T + x[t] @ p["w_in"].T + p["b"])
        r = torch.tanh(a)
        y = r.detach() @ p["w_out"].T + p["b_out"] + r @ fb - (r @ fb).detach()
        total = total + (mask[t] * (y - target[t]) ** 2).sum()
    loss = 0.5 * total / mask.sum().clamp_min(1.0)
    return dict(zip(p, torch.autograd.grad(loss, list(p.values()))))


def test_third_party_rule_from_an_entry_point_trains_with_its_gradient(toy_plugin):
    assert "toy" in nr.rules() and "toy" not in nr.RULES  # RULES: the built-ins
    toy = get_rule("toy")
    assert (toy.detach, toy.feedback, toy.online) == ("whole previous state", "random", False)
    assert "`toy`" in rules_table()

    spec = nr.NetworkSpec.random(n_in=1, n_hidden=10, n_out=2, gain=1.5, seed=3)
    task = nr.make_task("romo", batch_size=3, seed=0)
    lr = 0.05
    res = nr.train(spec, task, rule="toy", backend="torch", iterations=1, lr=lr, optimizer="sgd", lyapunov=False,
                   dtype="float64", device="cpu", progress=False)
    xb, target, mask = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in task.batch(0))
    oracle = _oracle_grads(spec, xb, target, mask)
    assert oracle["w_rec"].abs().max() > 1e-4
    for name, g in oracle.items():
        trained = np.asarray(getattr(res.spec, name)).reshape(g.shape)
        np.testing.assert_allclose((getattr(spec, name).reshape(g.shape) - trained) / lr, g.numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)

    # the combination is new: neither trunc1 (symmetric feedback) nor eprop_random (presynaptic detach)
    ens = stack([spec], torch.float64, torch.device("cpu"))
    x4 = xb.unsqueeze(0)
    g_toy = G.gradients(ens, "toy", "mse", x4, target, mask)[2]["w_rec"][0]
    torch.testing.assert_close(g_toy, oracle["w_rec"], rtol=1e-9, atol=1e-12)
    for other in ("trunc1", "eprop_random"):
        g = G.gradients(ens, other, "mse", x4, target, mask)[2]["w_rec"][0]
        assert (g - g_toy).abs().max() > 1e-3 * g_toy.abs().max(), other

    # what the rule does not declare is refused with one line
    with pytest.raises(NeurorateError, match="not available on the lava backend"):
        check_rule("toy", backend="lava")
    with pytest.raises(NeurorateError, match="supports the forms A, not form 'B'"):
        nr.train(nr.NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, form="B"), task, rule="toy", iterations=1,
                 lyapunov=False, progress=False)
    with pytest.raises(NeurorateError, match="supports the rules bptt, eprop, eprop_random, not 'toy'"):
        nr.train(spec, task, rule="toy", neuron="lif", iterations=1, lyapunov=False, progress=False)


@pytest.mark.parametrize("entry,words", [("toy = toy_rules:NOT_A_RULE", "is not a neurorate.learning.Rule"),
                                         ("toy = toy_rules:MISSING", "cannot be loaded"),
                                         ("other = toy_rules:TOY", "names a Rule called 'toy'"),
                                         ("eprop = toy_rules:EPROP", "redefines the built-in rule 'eprop'"),
                                         ("toy = toy_rules_bad:TOY", "'toy_rules_bad:TOY': rule 'bad': detach must"),
                                         ("toy = toy_rules_broken:TOY", "cannot be loaded: ZeroDivisionError")])
def test_bad_rule_entry_points_are_one_line_errors(toy_plugin, entry, words):
    with open(toy_plugin / "toy_rules.py", "a") as fh:
        fh.write('NOT_A_RULE = "toy"\nEPROP = Rule("eprop", "mine", "nothing", "random")\n')
    (toy_plugin / "toy_rules_bad.py").write_text('from neurorate.learning import Rule\n'
                                                 'TOY = Rule("bad", "s", "all", "random")\n')
    (toy_plugin / "toy_rules_broken.py").write_text("TOY = 1 / 0\n")
    (toy_plugin / "toy_rules-0.1.dist-info" / "entry_points.txt").write_text(f"[neurorate.rules]\n{entry}\n")
    with pytest.raises(NeurorateError, match=words) as info:
        rules()
    assert "\n" not in str(info.value)


def test_builtin_entry_points_name_the_registry_rules(toy_plugin):
    import tomllib

    from neurorate.learning import BUILTIN_RULES, registry

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["neurorate.rules"]
    resolved = {name: getattr(registry, value.partition(":")[2]) for name, value in declared.items()}
    assert resolved == {r.name: r for r in BUILTIN_RULES}
    # an installed copy of these entry points is accepted (same objects), next to a plugin's rule
    lines = "".join(f"{name} = {value}\n" for name, value in declared.items())
    (toy_plugin / "toy_rules-0.1.dist-info" / "entry_points.txt").write_text(
        f"[neurorate.rules]\n{lines}toy = toy_rules:TOY\n")
    assert list(rules()) == sorted([*declared, "toy"]) and rules()["eprop"] is registry.EPROP


def test_a_broken_rule_plugin_leaves_the_cli_help_and_fails_a_run_with_one_line(toy_plugin, tmp_path):
    (toy_plugin / "toy_rules_broken.py").write_text("TOY = 1 / 0\n")
    (toy_plugin / "toy_rules-0.1.dist-info" / "entry_points.txt").write_text(
        "[neurorate.rules]\ntoy = toy_rules_broken:TOY\n")
    env = {**os.environ, "PYTHONPATH": str(toy_plugin), "COLUMNS": "400"}

    def cli(*args):
        code = f"from neurorate.cli.app import main\nmain({list(args)!r})\n"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)

    helped = cli("run", "--help")
    assert helped.returncode == 0 and "a rule plugin failed to load" in " ".join(helped.stdout.split())
    failed = cli("run", "--rule", "eprop", "--iterations", "1", "--hidden", "4", "--no-lyapunov",
                 "--out", str(tmp_path / "run"))
    assert failed.returncode == 2 and not (tmp_path / "run").exists()
    assert failed.stderr.startswith("error: rule entry point 'toy'") and len(failed.stderr.strip().splitlines()) == 1
