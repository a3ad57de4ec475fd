"""The initial-gain study: config validation, best-lr selection, claim statistics on data with known answers,
SIGKILL + resume exactness, the submitit executor, rich/lazy metrics and the report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from neurorate.errors import NeurorateError
from neurorate.studies.config import StudyConfig, embedded_configs, load_config

torch.set_num_threads(1)

TINY = {"name": "tiny", "tasks": ["romo"], "rules": ["bptt", "eprop"], "gains": [0.5, 1.5], "lrs": [1e-2],
        "seeds": [0, 1], "flossing": [False, True], "floss_iterations": 3, "iterations": 20, "hidden": 8, "batch": 4,
        "lyapunov_k": 2, "probe_batch": 8, "log_every": 5}


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize("change, field", [
    ({"rules": ["eprop", "backprop"]}, "rules"),
    ({"lrs": [1e-3, -1.0]}, "lrs"),
    ({"gains": [0.5, 0.5]}, "gains"),
    ({"iterations": 0}, "iterations"),
    ({"ranks": [0, 99]}, "ranks"),
    ({"tau": {"dms": 100.0}}, "tau"),
    ({"flossing": [True], "floss_iterations": 0}, "floss_iterations"),
    ({"learning_rates": [1e-3]}, "learning_rates"),
    ({"tasks": ["mnist"]}, "tasks"),
])
def test_config_errors_name_the_field(change, field):
    with pytest.raises(NeurorateError, match=f"field '{field}'") as err:
        load_config({**TINY, **change})
    assert "\n" not in str(err.value)


def test_config_toml_and_embedded(tmp_path):
    assert {"paper", "quick"} <= set(embedded_configs())
    paper, quick = load_config(None), load_config("quick")
    assert paper.name == "paper" and len(paper.seeds) >= 5 and len(paper.gains) >= 3
    assert quick.hidden <= 32 and len(quick.seeds) == 2 and len(quick.gains) == 3 and len(quick.lrs) == 2
    path = tmp_path / "s.toml"
    path.write_text('[study]\ngains = [1.5, 0.5]\nranks = ["full", 2]\nprofiles = ["none"]\nhidden = 8\n')
    cfg = load_config(path)
    assert cfg.gains == [0.5, 1.5] and cfg.ranks == [None, 2] and cfg.profiles == [None]
    path.write_text("[study\n")
    with pytest.raises(NeurorateError, match="malformed TOML"):
        load_config(path)


def test_embedded_hardware_config_validates():
    from neurorate.studies.runner import plan

    cfg = load_config("hardware")
    assert "hardware" in embedded_configs()
    assert cfg.backends == ["torch", "lava"] and cfg.profiles == [None, "loihi2"]
    assert cfg.optimizer == "sgd" and cfg.rules == ["eprop"] and len(cfg.seeds) >= 3 and len(cfg.gains) >= 3
    assert [j.key.split("|")[-2:] for j in plan(cfg)] == [["torch", "none"], ["torch", "loihi2"],
                                                         ["lava", "none"], ["lava", "loihi2"]]


# ---------------------------------------------------------------------- best lr and claims
def _run(gain, lr, seed, loss, rule="eprop", flossing=False, task="romo", status="ok", **extra):
    return {"run_id": f"{task}{rule}{flossing}{gain}{lr}{seed}", "task": task, "rule": rule, "flossing": flossing,
            "rank": None, "backend": "torch", "profile": "none", "gain": gain, "lr": lr, "seed": seed,
            "final_loss": loss, "auc": loss, "status": status, **extra}


def test_best_lr_by_mean_final_loss_with_divergence():
    from neurorate.studies.claims import best_lr

    runs = [_run(0.5, 1e-3, 0, 0.010), _run(0.5, 1e-3, 1, 0.012),      # mean 0.011
            _run(0.5, 1e-2, 0, 0.002), _run(0.5, 1e-2, 1, 0.030),      # mean 0.016 (lower min, higher mean)
            _run(1.5, 1e-3, 0, 0.005), _run(1.5, 1e-3, 1, 0.005),
            _run(1.5, 1e-2, 0, 0.001), _run(1.5, 1e-2, 1, math.nan, status="diverged")]
    best = best_lr(runs)
    assert best[("romo", "eprop", False, None, "torch", "none", 0.5)] == 1e-3
    assert best[("romo", "eprop", False, None, "torch", "none", 1.5)] == 1e-3  # a diverged seed disqualifies


def _synthetic(effect: float, rng, seeds=6, gains=(0.25, 0.5, 1.0, 1.5)):
    runs = []
    for g in gains:
        for s in range(seeds):
            loss = 0.02 - effect * 0.01 * math.log(g / 0.25) + 0.0005 * rng.standard_normal()
            lam_b = -0.5 + 0.3 * g + 0.01 * rng.standard_normal()
            for rule, scale in (("bptt", 0.5), ("eprop", 1.0)):
                runs.append(_run(g, 1e-3, s, loss * scale, rule=rule, lambda_max_before=lam_b,
                                 lambda_max_after=0.005 * rng.standard_normal(), best_loss=0.04 * loss * scale,
                                 alpha=0.5))
            improvement = 0.008 if g == gains[0] else 0.0
            runs.append(_run(g, 1e-3, s, loss - improvement + 0.0002 * rng.standard_normal(), flossing=True,
                             lambda_max_before=lam_b, lambda_max_after=0.0))
    return runs


def test_claims_hold_on_data_with_a_gain_effect():
    from neurorate.studies.claims import check_claims

    claims = check_claims(_synthetic(1.0, np.random.default_rng(0)))
    verdicts = {(c["claim"], c["scope"]): c["verdict"] for c in claims}
    for key in [("C1", "romo bptt"), ("C1", "romo eprop"), ("C6", "romo eprop"), ("C2", "romo"), ("C4b", "romo"),
                ("C4a", "romo eprop"), ("C4c", "romo eprop"), ("C5", "romo eprop")]:
        assert verdicts[key] == "holds", (key, verdicts)
    c1 = next(c for c in claims if c["claim"] == "C1" and c["scope"] == "romo eprop")
    assert c1["p"] < 1e-6 and c1["n"] == 6


def test_claims_not_supported_without_effect_and_flagged_with_two_seeds():
    from neurorate.studies.claims import check_claims, gain_effect

    rng = np.random.default_rng(1)
    flat = check_claims(_synthetic(0.0, rng))
    c1 = [c for c in flat if c["claim"] == "C1"]
    assert c1 and all(c["verdict"] == "not supported" for c in c1)
    two = check_claims(_synthetic(1.0, np.random.default_rng(2), seeds=2))
    assert all("indicative" in c["verdict"] for c in two if c["claim"] == "C1")
    e = gain_effect({0.5: [3.0, 4.0, 5.0], 1.5: [1.0, 2.0, 3.0]})  # Welch t = 2/sqrt(2/3) = 2.449, d = 2
    assert e["t"] == pytest.approx(2.449489743, rel=1e-6) and e["d"] == pytest.approx(2.0)
    assert e["rho"] == pytest.approx(-0.7921180343813395, rel=1e-9)



def test_claims_and_report_table_name_each_backend_profile_slice(tmp_path):
    """With several (backend, profile) slices the claims are checked on each (scope ends in [backend/profile])
    and the report's table says which slice a row belongs to (before: claims on the first slice only, and rows
    of different slices were indistinguishable)."""
    from neurorate.studies.claims import best_runs, check_claims
    from neurorate.studies.report import _markdown

    effect = _synthetic(1.0, np.random.default_rng(0))
    flat = [{**r, "run_id": r["run_id"] + "lava", "backend": "lava", "profile": "loihi2"}
            for r in _synthetic(0.0, np.random.default_rng(1))]
    runs = effect + flat
    verdicts = {(c["claim"], c["scope"]): c["verdict"] for c in check_claims(runs)}
    assert verdicts[("C1", "romo eprop [torch/none]")] == "holds"
    assert verdicts[("C1", "romo eprop [lava/loihi2]")] == "not supported"
    assert check_claims(effect)[0]["scope"] == "romo bptt"  # one slice: scopes unchanged
    cfg = StudyConfig(gains=[0.25, 0.5, 1.0, 1.5]).model_dump(mode="json")
    text = _markdown(cfg, runs, best_runs(runs), check_claims(runs), [], tmp_path, "final_loss")
    assert "| backend | profile | rank | gain |" in text
    assert "| romo | eprop | False | lava | loihi2 | full | 0.25 |" in text
    assert "| romo | eprop | False | torch | none | full | 0.25 |" in text


# ---------------------------------------------------------------------- rich/lazy
def test_richlazy_metrics_known_values():
    from neurorate.analysis.richlazy import gram_alignment, last_decision_step, relative_weight_change
    from neurorate.model.spec import NetworkSpec

    a = NetworkSpec.random(n_hidden=8, gain=1.0, seed=0)
    b = a.replace(w_rec=a.w_rec * 1.5)
    assert relative_weight_change(a, b) == pytest.approx(0.5)
    h = np.random.default_rng(0).standard_normal((5, 4))
    assert gram_alignment(h, 3 * h) == pytest.approx(1.0)
    e1, e2 = np.array([[1.0, 0], [0, 0]]), np.array([[0, 0], [0, 1.0]])
    assert gram_alignment(e1, e2) == pytest.approx(0.0)
    mask = np.zeros((10, 3))
    mask[6:8] = 1
    assert last_decision_step(mask) == 7


# ---------------------------------------------------------------------- kill + resume
KILLED = textwrap.dedent("""
    import json, sys, time, torch
    torch.set_num_threads(1)
    import neurorate.studies.runner as st
    original = st._record
    def slow_record(out, manifest, job, rows, wall):
        original(out, manifest, job, rows, wall)
        time.sleep(120)  # the parent SIGKILLs us here, after the first ensemble is recorded
    st._record = slow_record
    st.study(json.loads(sys.argv[1]), out=sys.argv[2], progress=False)
""")


@pytest.fixture(scope="module")
def resumed_study(tmp_path_factory):
    from neurorate.studies.runner import plan

    out = tmp_path_factory.mktemp("study")
    cfg = dict(TINY)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, json.dumps(cfg), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = out / "manifest.json"
    deadline = time.time() + 90
    while time.time() < deadline and not (manifest.exists() and json.loads(manifest.read_text())["finished"]):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = json.loads(manifest.read_text())["finished"]
    assert len(finished) == 1
    jobs = plan(load_config(cfg))
    first = out / "results" / jobs[0].part_name
    first_bytes = first.read_bytes()
    (out / "results" / jobs[1].part_name).write_bytes(b"half-written part of a killed run")
    with pytest.raises(NeurorateError, match="resume"):
        __import__("neurorate").study(cfg, out=out, progress=False)
    import neurorate as nr

    table = nr.study(cfg, out=out, resume=True, progress=False)
    return out, cfg, jobs, first_bytes, table


def test_sigkill_resume_loses_and_repeats_nothing(resumed_study):
    out, cfg, jobs, first_bytes, table = resumed_study
    assert len(jobs) == 3  # bptt, eprop, eprop + flossing
    assert (out / "results" / jobs[0].part_name).read_bytes() == first_bytes
    runs_per_ensemble = 2 * 1 * 2
    rows_per_run = cfg["iterations"] // cfg["log_every"]
    assert table.num_rows == 3 * runs_per_ensemble * rows_per_run
    ids = table.column("run_id").to_pylist()
    assert len(set(ids)) == 3 * runs_per_ensemble
    ens = table.column("ensemble").to_pylist()
    assert [ens.count(j.key) for j in jobs] == [runs_per_ensemble * rows_per_run] * 3
    manifest = json.loads((out / "manifest.json").read_text())["finished"]
    assert sorted(manifest) == sorted(j.key for j in jobs)
    assert set(table.column("status").to_pylist()) == {"ok"}


def test_report_from_resumed_study(resumed_study):
    from neurorate.studies.report import report

    out = resumed_study[0]
    path = report(out)
    text = path.read_text()
    for claim in ("C1", "C2", "C4a", "C4b", "C4c", "C5"):
        assert f"| {claim} |" in text
    assert "indicative" in text  # 2 seeds
    claims = json.loads((out / "claims.json").read_text())
    c4b = next(c for c in claims if c["claim"] == "C4b")
    assert 0 <= c4b["p"] <= 1
    for name in ("curves_romo", "final_loss_vs_gain", "lambda_vs_gain", "flossing_vs_gain"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    # the paper's figures: a Romo-only study with flossing makes all but Fig. 2, and the report embeds those
    section = text[text.index("## The paper's figures"):text.index("## Figures by topic")]
    for name in ("fig1_romo", "fig3_lambda", "fig4_flossing", "fig5_gains"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"![{name}](figures/{name}.png)" in section
    assert not (out / "figures" / "fig2_2af_dms.png").exists()
    assert "`fig2_2af_dms.png` (the study has no 2AF or DMS task)" in section


def test_diverged_rows_are_recorded():
    from neurorate.io.results import TrainResult
    from neurorate.model.spec import NetworkSpec
    from neurorate.studies.runner import EnsembleJob, _rows

    spec = NetworkSpec.random(n_hidden=4, seed=0)
    losses = np.array([1.0, 2.0, np.nan, np.nan])
    res = TrainResult(losses=losses, accuracy=np.full(4, 0.5), spec=spec, spec_initial=spec, rule="bptt",
                      backend="torch", lr=1.0, optimizer="adam", iterations=4, diverged=True, diverged_at=2)
    cfg = StudyConfig(**{**TINY, "iterations": 4, "log_every": 2})
    table = _rows(cfg, EnsembleJob(0, "romo", "bptt", False, None, "torch", None), [(1.0, 1.0, 0)], [res], [{}], 1.0)
    rows = table.to_pylist()
    assert next(r["loss"] for r in rows) == pytest.approx(1.5) and math.isnan(rows[1]["loss"])
    assert {r["status"] for r in rows} == {"diverged"} and rows[0]["diverged_at"] == 2
    assert math.isnan(rows[0]["final_loss"])


def test_submitit_debug_executor_matches_local(tmp_path):
    import neurorate as nr

    cfg = {**TINY, "rules": ["bptt"], "flossing": [False], "iterations": 10, "richlazy": False}
    local = nr.study(cfg, out=tmp_path / "local", progress=False)
    debug = nr.study(cfg, out=tmp_path / "debug", progress=False, executor="submitit:debug")
    assert debug.column("final_loss").to_pylist() == local.column("final_loss").to_pylist()
    assert (tmp_path / "debug" / "submitit").is_dir()
    with pytest.raises(NeurorateError, match="executor"):
        nr.study(cfg, out=tmp_path / "x", executor="ray")


def _jacrev_features(spec, x, step, kernel):
    """Reference: each output at ``step`` differentiated with respect to W_rec by torch.func.jacrev."""
    import torch

    from neurorate.model import dynamics as dyn

    f, _ = dyn.activation(spec.activation)
    xt = torch.as_tensor(x[: step + 1], dtype=torch.float64)
    t64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731

    def outputs(w_rec):
        drive = xt @ t64(spec.w_in).T + t64(spec.b)
        state = torch.zeros(x.shape[1], spec.n_hidden, dtype=torch.float64)
        for t in range(step + 1):
            state, _ = dyn.step(state, drive[t], w_rec, spec.alpha, spec.form, f, detach_pre=kernel == "eprop")
        return (dyn.rate(state, spec.form, f) @ t64(spec.w_out).T + t64(spec.b_out)).reshape(-1)

    return torch.func.jacrev(outputs)(t64(spec.w_rec)).reshape(x.shape[1] * spec.n_out, -1).numpy()


@pytest.mark.parametrize("form,activation", [("A", "relu"), ("A", "tanh"), ("B", "tanh"), ("C", "relu")])
def test_tangent_features_of_an_ensemble_equal_jacrev_per_network(form, activation):
    import neurorate as nr
    from neurorate.analysis.richlazy import tangent_features

    specs = [nr.NetworkSpec.random(n_in=2, n_hidden=7, n_out=3, gain=g, seed=s, form=form, activation=activation,
                                   alpha=a) for g, s, a in ((0.5, 0, 0.5), (1.5, 1, 0.2), (1.0, 2, 1.0))]
    x = np.random.default_rng(4).standard_normal((12, 4, 2))
    for kernel in ("bptt", "eprop"):
        j = tangent_features(specs, x, 10, kernel)
        assert j.shape == (3, 4 * 3, 49)
        for m, spec in enumerate(specs):
            ref = _jacrev_features(spec, x, 10, kernel)
            np.testing.assert_allclose(j[m], ref, rtol=1e-12, atol=1e-13 * np.abs(ref).max())


def test_tangent_features_match_finite_differences_and_kernel_alignment_properties():
    import neurorate as nr
    from neurorate.analysis.richlazy import kernel_alignment, tangent_features

    spec = nr.NetworkSpec.random(n_hidden=6, gain=1.2, seed=3, activation="tanh", alpha=0.5)
    x = np.random.default_rng(0).standard_normal((9, 3, 1))
    j = tangent_features(spec, x, step=8)
    assert j.shape == (3 * 2, 36)
    from neurorate.backends.torch import TorchBackend

    be = TorchBackend(dtype="float64")
    eps = 1e-6
    for idx in (0, 7, 20, 35):
        w = spec.w_rec.copy().reshape(-1)
        w[idx] += eps
        yp = be.simulate([spec.replace(w_rec=w.reshape(6, 6))], x).outputs[0, 8].reshape(-1)
        w[idx] -= 2 * eps
        ym = be.simulate([spec.replace(w_rec=w.reshape(6, 6))], x).outputs[0, 8].reshape(-1)
        np.testing.assert_allclose(j[:, idx], (yp - ym) / (2 * eps), atol=1e-8)
    assert kernel_alignment(spec, spec, x, 8) == pytest.approx(1.0)
    zero = spec.replace(w_rec=np.zeros((6, 6)))
    # at W_rec = 0 the e-prop pseudo-derivative equals the exact one (no recurrent path to cut)
    np.testing.assert_allclose(tangent_features(zero, x, 8, "eprop"), tangent_features(zero, x, 8), atol=1e-14)
    assert not np.allclose(tangent_features(spec, x, 8, "eprop"), j)
    other = spec.replace(w_rec=spec.w_rec + 0.5 * np.random.default_rng(1).standard_normal((6, 6)))
    assert 0 < kernel_alignment(spec, other, x, 8) < 1.0


# ---------------------------------------------------------------------- the neuron axis (rate, LIF, ALIF)
@pytest.mark.parametrize("change, message", [
    ({"neurons": ["lif"], "rules": ["eprop", "rflo"]}, "rflo cannot train lif networks"),
    ({"neurons": ["rate", "alif"], "flossing": [False, True]}, "gradient flossing is not defined for alif"),
    ({"neurons": ["lif"], "flossing": [False], "backends": ["lava"]}, "lava does not train lif networks"),
    ({"neurons": ["lif"], "flossing": [False], "profiles": ["loihi2"]}, "full precision only"),
    ({"neurons": ["rate", "spike"]}, "unknown neuron 'spike'"),
    ({"lif": {"kappa": 1.5}}, "lif.kappa"),
    ({"lif": {"tau_a": 3.0}}, "lif.tau_a"),
])
def test_spiking_config_errors_are_one_line(change, message):
    with pytest.raises(NeurorateError, match=message) as err:
        load_config({**TINY, **change})
    assert "\n" not in str(err.value)


def test_neuron_fields_enter_the_digest_only_when_set():
    """Existing configs keep their digest (and their results directories stay resumable)."""
    assert load_config("quick").digest() == "bebfab415b2454f5"  # as before the neuron axis existed
    base = load_config({**TINY, "flossing": [False]})
    assert load_config({**TINY, "flossing": [False], "neurons": ["rate"]}).digest() == base.digest()
    lif = load_config({**TINY, "flossing": [False], "neurons": ["rate", "lif"]})
    assert lif.digest() != base.digest()
    assert load_config({**TINY, "flossing": [False], "neurons": ["rate", "lif"], "lif": {"threshold": 0.7}}).digest() \
        != lif.digest()
    assert lif.spiking("lif")["beta_a"] == 0.0 and lif.spiking("alif")["beta_a"] == lif.lif.beta_a > 0


@pytest.fixture(scope="module")
def neuron_study(tmp_path_factory):
    import neurorate as nr

    out = tmp_path_factory.mktemp("neurons")
    cfg = {**TINY, "flossing": [False], "neurons": ["rate", "lif", "alif"], "iterations": 10,
           "lif": {"threshold": 0.5, "alpha": 0.25, "rho": 0.9}}
    return out, nr.study(cfg, out=out / "s", progress=False)


def test_study_with_rate_and_spiking_neurons_end_to_end(neuron_study):
    from neurorate.model.spiking_learning import train_lif

    out, table = neuron_study
    runs = {}
    for r in table.to_pylist():
        runs.setdefault(r["run_id"], r)
    by_neuron = {n: [r for r in runs.values() if r["neuron"] == n] for n in ("rate", "lif", "alif")}
    assert all(len(v) == 2 * 2 * 2 for v in by_neuron.values())  # rules x gains x seeds
    for r in by_neuron["lif"] + by_neuron["alif"]:
        assert math.isnan(r["lambda_max_before"]) and math.isnan(r["kernel_alignment"])
        assert r["weight_change"] > 0 and 0 < r["spike_rate"] < 1 and r["status"] == "ok"
        assert r["ensemble"].endswith("|" + r["neuron"])
    assert all(math.isfinite(r["lambda_max_before"]) for r in by_neuron["rate"])
    # one ALIF network of the study equals train_lif on its own task stream with the config's constants
    cfg = load_config(json.loads((out / "s" / "config.json").read_text())["config"])
    row = next(r for r in by_neuron["alif"] if r["rule"] == "eprop" and r["gain"] == 1.5 and r["seed"] == 1)
    import neurorate as nr

    task = nr.make_task("romo", batch_size=cfg.batch, seed=1)
    spec = nr.NetworkSpec.random(n_in=1, n_hidden=cfg.hidden, n_out=2, gain=1.5, seed=1, alpha=0.25,
                                 activation="tanh", input_bias=cfg.input_bias, dt=task.dt_seconds)
    ref = train_lif([spec], task, rule="eprop", iterations=10, lr=1e-2, **cfg.spiking("alif"))
    curve = [r["loss"] for r in table.to_pylist() if r["run_id"] == row["run_id"]]
    np.testing.assert_allclose(curve, ref["losses"][:, 0].reshape(-1, 5).mean(1), rtol=1e-6)
    assert row["final_loss"] == pytest.approx(float(ref["losses"][-1, 0]), rel=1e-6)


def test_report_with_spiking_neurons_says_na(neuron_study):
    from neurorate.studies.report import report

    out = neuron_study[0] / "s"
    text = report(out).read_text()
    assert "neurons ['rate', 'lif', 'alif']" in text
    lif_rows = [line for line in text.splitlines() if line.startswith("| romo | eprop (lif) |")]
    assert len(lif_rows) == 2 and all("| n/a | n/a |" in line for line in lif_rows)
    claims = json.loads((out / "claims.json").read_text())
    scopes = {(c["claim"], c["scope"]) for c in claims}
    expected = {("C1", "romo eprop (lif)"), ("C1", "romo bptt (alif)"), ("C2", "romo (alif)"), ("C1", "romo eprop")}
    assert expected <= scopes
    assert not any(c["claim"].startswith("C4") and "(" in c["scope"] for c in claims)  # no Lyapunov claims for spikes
    assert (out / "figures" / "curves_romo.png").stat().st_size > 1000
