"""The study's inference (docs/study.md, "Claims"): every test against an oracle (scipy, a hand computation, an
exhaustive enumeration, a closed form), diverged runs ranked worst instead of dropped, pairing by seed, Holm over
the claims table, held-out learning-rate selection, C3 on learning speed with the Bayes-optimal accuracy of the
tasks, C4a as an equivalence test, C5's interaction, and the hardware benchmark's count of diverged networks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# ---------------------------------------------------------------------------------------------- the tests
def test_holm_on_a_hand_computed_vector():
    from neurorate.studies.claims import holm

    # m = 4, sorted 0.005, 0.01, 0.03, 0.04: x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None / NaN are not in the family (m = 2 here): 0.02 x 2 = 0.04, 0.6 x 1 = 0.6
    out = holm([0.02, None, math.nan, 0.6])
    assert out[0] == pytest.approx(0.04) and out[1] is None and math.isnan(out[2]) and out[3] == pytest.approx(0.6)
    assert holm([0.7, 0.8]) == pytest.approx([1.0, 1.0])  # 1.4 capped at 1, and never below an earlier one
    assert holm([]) == []


def test_paired_comparison_matches_scipy():
    from neurorate.studies.claims import compare

    rng = np.random.default_rng(4)
    small = rng.normal(0.012, 0.002, 6)
    large = small - rng.normal(0.004, 0.002, 6)  # paired: the same seeds
    a, b = dict(enumerate(small)), dict(enumerate(large))
    res = compare(a, b)
    ref = stats.ttest_rel(small, large, alternative="greater")
    assert res["design"] == "paired" and res["test"] == "paired t-test" and res["n"] == 6
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["bound"] == pytest.approx(ref.confidence_interval(0.95).low, rel=1e-12)  # one-sided lower bound
    assert res["p_rank"] == pytest.approx(stats.wilcoxon(small - large, alternative="greater").pvalue, rel=1e-12)
    d = small - large
    assert res["d"] == pytest.approx(d.mean() / d.std(ddof=1))
    # the same values with the pairing broken (different seeds): Welch's t and Mann-Whitney U
    res = compare(a, {k + 10: v for k, v in b.items()})
    ref = stats.ttest_ind(small, large, equal_var=False, alternative="greater")
    assert res["design"] == "independent" and res["test"] == "Welch t-test" and res["keys_differ"]
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["bound"] == pytest.approx(ref.confidence_interval(0.95).low, rel=1e-12)
    assert res["p_rank"] == pytest.approx(stats.mannwhitneyu(small, large, alternative="greater").pvalue, rel=1e-12)


def test_a_diverged_run_is_ranked_worst_by_the_rank_test():
    from neurorate.studies.claims import compare

    small = {0: 0.010, 1: 0.011, 2: 0.012, 3: 0.013, 4: 0.014}
    large = {0: 0.002, 1: 0.0025, 2: math.inf, 3: 0.004, 4: 0.001}  # seed 2 diverged at the large gain
    res = compare(small, large)
    assert res["test"] == "Wilcoxon signed-rank" and res["inf_b"] == 1 and res["worse"] == 4
    # the diverged pair's difference is the most negative: signed ranks +1..+4 for the others, -5 for it
    assert res["p"] == pytest.approx(stats.wilcoxon([1.0, 2.0, -5.0, 3.0, 4.0], alternative="greater").pvalue)
    # W+ = 10 of 15; the sign patterns with W+ >= 10 are those whose negative ranks sum to <= 5: 10 of 32
    assert res["p"] == pytest.approx(10 / 32)
    # both diverged: a zero difference, dropped (Wilcoxon's convention)
    both = compare({**small, 2: math.inf}, large)
    assert both["p"] == pytest.approx(stats.wilcoxon([1.0, 2.0, 3.0, 4.0], alternative="greater").pvalue)


def test_sign_flip_test_against_exhaustive_enumeration_and_scipy():
    from neurorate.studies.claims import sign_flip_p

    d = np.array([0.5, 1.2, -0.3, 0.8, 0.1])
    obs = d.mean()
    count = sum(np.mean(np.array(s) * np.abs(d)) >= obs - 1e-12 for s in itertools.product((-1, 1), repeat=5))
    assert sign_flip_p(d) == pytest.approx(count / 32)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater", n_resamples=np.inf)
    assert sign_flip_p(d) == pytest.approx(ref.pvalue)
    assert sign_flip_p(np.ones(4)) == pytest.approx(1 / 16)  # only the observed assignment reaches it
    assert math.isnan(sign_flip_p([]))


def test_tost_on_a_worked_example():
    from neurorate.studies.claims import tost

    # mean 0, sd sqrt(0.025 / 4) = 0.0790569, se = 0.0353553; t = 0.1 / se = 2 sqrt(2) on 4 degrees of freedom.
    # Student's t with 4 d.f.: F(t) = 1/2 + (3/8) u (1 - u^2 / 3) with u = t / sqrt(4 + t^2) * 2 ... written out:
    # t^2 = 8, 1 + t^2/4 = 3, t / sqrt(3) = 1.632993, 1 - t^2 / (12 * 3) = 0.777778 -> F = 0.976290, p = 0.023710
    x = [-0.05, 0.0, 0.05, 0.1, -0.1]
    res = tost(x, 0.1)
    assert res["p_lower"] == pytest.approx(0.023710, abs=2e-6) and res["p_upper"] == pytest.approx(0.023710, abs=2e-6)
    assert res["p"] == pytest.approx(0.023710, abs=2e-6)
    # the 90 % interval: 0 +- t_0.95(4) * se = +-2.131847 * 0.0353553 = +-0.0753722
    assert (res["ci_lo"], res["ci_hi"]) == pytest.approx((-0.0753722, 0.0753722), abs=1e-6)
    assert tost(x, 0.05)["p"] > 0.05  # the interval reaches past +-0.05: not equivalent at that margin
    shifted = tost(np.array(x) + 0.08, 0.1)
    assert shifted["p"] == pytest.approx(stats.ttest_1samp(np.array(x) + 0.08, 0.1, alternative="less").pvalue)


def test_page_trend_test_matches_scipy_and_its_hand_statistic():
    from neurorate.studies.claims import trend_test

    # 3 seeds x 3 gains, loss falling with the gain in every seed: column ranks (descending prediction) 3, 2, 1
    by = {0.5: {0: 0.03, 1: 0.028, 2: 0.031}, 1.0: {0: 0.02, 1: 0.021, 2: 0.019}, 1.5: {0: 0.01, 1: 0.012, 2: 0.005}}
    res = trend_test(by, increasing=False)
    data = np.array([[by[g][s] for g in (0.5, 1.0, 1.5)] for s in range(3)])
    ref = stats.page_trend_test(data, predicted_ranks=[3, 2, 1])
    assert res["design"] == "paired" and res["test"] == "Page's L trend test"
    assert res["stat"] == pytest.approx(3 * (3 * 3 + 2 * 2 + 1 * 1)) == pytest.approx(ref.statistic)  # L = 42
    assert res["p"] == pytest.approx(ref.pvalue)
    # seeds that differ between gains: Kendall's tau over all points instead
    loose = {0.5: {0: 0.03, 1: 0.028}, 1.0: {2: 0.02, 3: 0.021}, 1.5: {4: 0.01, 5: 0.012}}
    res = trend_test(loose)
    ref = stats.kendalltau([0.5, 0.5, 1.0, 1.0, 1.5, 1.5], [0.03, 0.028, 0.02, 0.021, 0.01, 0.012],
                           alternative="less")
    assert res["design"] == "independent" and res["p"] == pytest.approx(ref.pvalue)


# ---------------------------------------------------------------------------------------------- claims
def _run(task, rule, gain, seed, loss, lr=1e-3, flossing=False, status="ok", **extra):
    return {"run_id": f"{task}{rule}{gain}{seed}{flossing}{lr}", "task": task, "base_task": extra.pop("base", task),
            "rule": rule, "flossing": flossing, "rank": None, "backend": "torch", "profile": "none", "gain": gain,
            "lr": lr, "seed": seed, "final_loss": loss, "auc": loss, "best_loss": loss, "status": status,
            "alpha": 0.5, **extra}


def test_diverged_runs_count_against_the_claim_instead_of_being_dropped():
    from neurorate.studies.claims import check_claims

    runs = []
    for s in range(6):
        runs.append(_run("romo", "eprop", 0.25, s, 0.012 + 0.0005 * s))
        # at g = 1.5 half the seeds diverge: dropping them would leave three low losses and C1 "holding"
        bad = s % 2 == 0
        runs.append(_run("romo", "eprop", 1.5, s, math.nan if bad else 0.002 + 0.0001 * s,
                         status="diverged" if bad else "ok"))
    c1 = next(c for c in check_claims(runs) if (c["claim"], c["scope"]) == ("C1", "romo eprop"))
    assert c1["test"].startswith("Wilcoxon signed-rank (paired by seed)") and c1["n"] == 6
    assert "diverged (ranked worst): 3 of 6 at g=1.5" in c1["statistic"]
    # differences (small - large): three +0.01.., three -(cap - 0.012..), the latter the largest in size
    assert c1["p"] == pytest.approx(stats.wilcoxon([1, 2, 3, -4, -5, -6], alternative="greater").pvalue)
    assert c1["verdict"] == "not supported"
    survivors = [r for r in runs if r["status"] != "diverged"]
    dropped = next(c for c in check_claims(survivors) if (c["claim"], c["scope"]) == ("C1", "romo eprop"))
    assert dropped["test"].startswith("Welch t-test (independent by seed)")  # the seeds no longer match


def test_claims_carry_raw_and_holm_adjusted_p_and_verdicts_follow_the_adjusted():
    from neurorate.studies.claims import check_claims, holm

    rng = np.random.default_rng(0)
    runs = []
    for s in range(5):
        base = 0.01 + 0.002 * rng.standard_normal()
        for g, shift in ((0.25, 0.004), (0.5, 0.002), (1.5, 0.0)):
            runs.append(_run("romo", "eprop", g, s, base + shift + 0.002 * rng.standard_normal()))
            runs.append(_run("romo", "bptt", g, s, 1e-4 + 1e-4 * rng.random()))
    claims = check_claims(runs)
    tested = [c for c in claims if c["p_holm"] is not None]
    assert len(tested) >= 8
    assert [c["p_holm"] for c in tested] == pytest.approx(holm([c["p"] for c in tested]))
    for c in tested:
        assert c["verdict"].startswith("holds") == (c["p_holm"] < 0.05) or c["claim"] == "C4c"
    # a raw p below 0.05 that does not survive the adjustment is "not supported"
    assert any(c["p"] < 0.05 <= c["p_holm"] and c["verdict"] == "not supported" for c in tested)


def test_held_out_seeds_choose_the_lr_and_the_claims_use_the_others():
    from neurorate.studies.claims import best_lr, best_runs, check_claims

    runs = []
    for s in range(6):
        # lr 1e-3 is better on seeds 0-2, lr 3e-3 on seeds 3-5: the selection seeds decide
        for lr, loss in ((1e-3, 0.01 if s < 3 else 0.02), (3e-3, 0.02 if s < 3 else 0.01)):
            runs.append(_run("romo", "eprop", 0.5, s, loss + 0.001 * s, lr=lr))
            runs.append(_run("romo", "eprop", 1.5, s, loss / 4 + 0.0001 * s, lr=lr))
    key = ("romo", "eprop", False, None, "torch", "none", 0.5)
    assert best_lr(runs, selection_seeds=[0, 1, 2])[key] == 1e-3
    assert best_lr(runs, selection_seeds=[3, 4, 5])[key] == 3e-3
    held = best_runs(runs, selection_seeds=[0, 1, 2])
    assert {r["seed"] for r in held} == {3, 4, 5} and {r["lr"] for r in held} == {1e-3}
    c1 = next(c for c in check_claims(runs, selection_seeds=[0, 1, 2]) if c["scope"] == "romo eprop")
    assert c1["n"] == 3  # the held-out seeds only


def test_config_selection_seeds_and_the_paper_default():
    from neurorate.errors import NeurorateError
    from neurorate.studies.config import load_config

    cfg = load_config({"seeds": [0, 1, 2, 3, 4], "selection_seeds": [0, 1]})
    assert cfg.held_out_seeds() == [2, 3, 4]
    assert load_config({"name": "x"}).digest() == load_config({"name": "x", "selection_seeds": [],
                                                                 "accuracy_criterion": 0.9}).digest()
    for bad, what in (({"selection_seeds": [9]}, "not in seeds"), ({"seeds": [0, 1, 2], "selection_seeds": [0, 1]},
                                                                   "at least 2"),
                      ({"accuracy_criterion": 1.5}, r"\(0, 1\]")):
        with pytest.raises(NeurorateError, match=what):
            load_config(bad)
    paper = load_config("paper")
    assert paper.selection_seeds and len(paper.held_out_seeds()) >= 5


def test_c3_tests_learning_speed_not_the_final_loss():
    from neurorate.studies.claims import check_claims

    runs = []
    for s in range(5):
        for g, auc, t in ((0.25, 0.30 + 0.01 * s + 0.003 * s * s, 2000.0 + 50 * s), (1.5, 0.20 + 0.01 * s,
                                                                                   900.0 + 40 * s)):
            # the final loss is at the noise floor at both gains; the area and the time to criterion differ
            runs.append(dict(_run("2af", "bptt", g, s, 0.0090 + 1e-5 * s, accuracy_target=0.856,
                                  time_to_accuracy=t), auc=auc))
        runs.append(dict(_run("2af", "eprop", 0.25, s, 0.011, accuracy_target=0.856, time_to_accuracy=math.nan),
                         auc=0.3))
        runs.append(dict(_run("2af", "eprop", 1.5, s, 0.011, accuracy_target=0.856, time_to_accuracy=math.nan),
                         auc=0.3 + 0.001 * s))
    claims = check_claims(runs)
    rows = {c["scope"]: c for c in claims if c["claim"] == "C3"}
    assert not [c for c in claims if c["claim"] == "C1"]  # C1 is Romo's claim
    auc = rows["2af bptt, area under the loss curve"]
    assert auc["test"].startswith("paired t-test") and auc["verdict"] == "holds"
    assert auc["p"] == pytest.approx(stats.ttest_rel([0.30 + 0.01 * s + 0.003 * s * s for s in range(5)],
                                                     [0.20 + 0.01 * s for s in range(5)], alternative="greater").pvalue)
    crit = rows["2af bptt, iterations to criterion"]
    assert crit["p"] == pytest.approx(stats.ttest_rel([2000.0 + 50 * s for s in range(5)],
                                                      [900.0 + 40 * s for s in range(5)], alternative="greater").pvalue)
    assert rows["2af eprop, iterations to criterion"]["verdict"] == "insufficient data"  # nobody reached 0.856
    assert rows["2af (alpha=0.5)"]["statistic"] == "1/2 hold (after Holm)"
    assert rows["2af (alpha=0.5)"]["verdict"] == "not supported"


def test_c4a_is_an_equivalence_test_with_a_stated_margin():
    from neurorate.studies.claims import C4A_MARGIN, check_claims, tost

    runs = []
    for s in range(5):
        lam = [-0.025, 0.0, 0.025, 0.05, -0.05][s]  # per step at alpha 0.5: per tau -0.05 .. 0.1
        runs.append(_run("romo", "bptt", 1.5, s, 1e-5, lambda_max_after=lam, lambda_max_before=-0.1))
        runs.append(_run("romo", "bptt", 0.25, s, 0.012, lambda_max_after=-0.4, lambda_max_before=-0.5))
    c4a = next(c for c in check_claims(runs) if (c["claim"], c["scope"]) == ("C4a", "romo bptt"))
    assert C4A_MARGIN == 0.1 and "TOST" in c4a["test"] and "+-0.1/tau" in c4a["test"]
    assert c4a["p"] == pytest.approx(tost([-0.05, 0.0, 0.05, 0.1, -0.1], 0.1)["p"]) == pytest.approx(0.02371, abs=1e-5)
    assert c4a["n"] == 5


def test_c5_interaction_is_a_difference_in_differences():
    from neurorate.studies.claims import check_claims, sign_flip_p

    runs, dd = [], []
    for s in range(5):
        imp0, imp1 = 0.004 + 0.001 * s, 0.003 + 0.0015 * s  # flossing helps at both gains, about as much
        for g, imp in ((0.25, imp0), (1.5, imp1)):
            runs.append(_run("romo", "eprop", g, s, 0.012))
            runs.append(_run("romo", "eprop", g, s, 0.012 - imp, flossing=True))
        dd.append(imp0 - imp1)
    claims = {c["scope"]: c for c in check_claims(runs) if c["claim"] == "C5"}
    assert claims["romo eprop"]["verdict"] == "holds"  # an improvement at the small gain
    inter = claims["romo eprop, gain x flossing"]
    assert inter["p"] == pytest.approx(stats.ttest_1samp(dd, 0.0, alternative="greater").pvalue)
    assert inter["verdict"] == "not supported"  # but not more than at the large gain
    assert f"sign-flip permutation p={sign_flip_p(np.array(dd)):.3g}" in inter["statistic"]
    # a diverged flossed run: the sign-flip permutation test decides
    runs[3] = dict(runs[3], final_loss=math.nan, status="diverged")
    inter = next(c for c in check_claims(runs) if c["scope"] == "romo eprop, gain x flossing")
    assert inter["test"].startswith("exact sign-flip permutation test")


# ---------------------------------------------------------------------------------------------- tasks
def test_bayes_optimal_accuracy_against_the_closed_forms():
    import neurorate as nr
    from neurorate.tasks.bayes import accuracy_criterion, bayes_accuracy, chance_accuracy

    task = nr.make_task("2af")  # 20 stimulus steps, noise sd 0.1 per step and channel
    closed = np.mean([stats.norm.cdf(c / 100 * math.sqrt(20 / 2) / 0.1) for c in task.cohs])
    assert closed == pytest.approx(0.8957, abs=1e-4)
    assert bayes_accuracy(task, n_trials=50_000) == pytest.approx(closed, abs=0.006)
    noisy = nr.make_task("dms", sigma=10.0)  # sd 1 per step, 5 sample and 5 test steps
    a = stats.norm.cdf(math.sqrt(5 / 2) / 1.0)
    assert bayes_accuracy(noisy, n_trials=50_000) == pytest.approx(a * a + (1 - a) ** 2, abs=0.006)
    assert bayes_accuracy(nr.make_task("dms")) == 1.0 and bayes_accuracy(nr.make_task("romo")) == 1.0
    clean = nr.make_task("2af", sigma=0.0)  # coherence 0 is a guess, the others are certain
    assert bayes_accuracy(clean, n_trials=50_000) == pytest.approx(0.5 / 5 + 4 / 5, abs=0.006)
    assert chance_accuracy(task) == 0.5
    assert accuracy_criterion(task, 0.9) == pytest.approx(0.5 + 0.9 * (bayes_accuracy(task) - 0.5))


def test_time_to_accuracy_on_a_hand_made_logged_curve():
    from neurorate.studies.claims import time_to_accuracy

    curve = [(10 * (i + 1), a) for i, a in enumerate([0.5, 0.6, 0.8, 0.9, 0.95, 0.9, 0.96])]
    # window 20 iterations = 2 blocks: running means 0.55, 0.7, 0.85, 0.925, 0.925, 0.93 -> first >= 0.9 ends at 50
    assert time_to_accuracy(curve, 0.9, window=20) == 50.0
    assert time_to_accuracy(curve, 0.99, window=20) != time_to_accuracy(curve, 0.99, window=20)  # never: NaN
    assert math.isnan(time_to_accuracy(curve, 0.9, window=20, diverged_at=35))  # reached only after diverging


# ---------------------------------------------------------------------------------------------- benchmark
def test_the_hardware_gain_benchmark_counts_diverged_networks(benchmark_script):
    bench = benchmark_script("loihi_engine_gain")
    n = len(bench.GAINS) * len(bench.SEEDS)
    acc = np.tile(np.linspace(0.5, 0.9, n)[:, None], (1, 20))
    loss = np.full((n, 20), 0.01)
    diverged_at = np.full(n, -1)
    diverged_at[-1] = 7  # the last network of the largest gain blew up; its accuracy must not enter the mean
    acc[-1] = 0.1
    out = bench.summarise(loss, acc, diverged_at)
    largest = out["per_gain"][str(bench.GAINS[-1])]
    k = len(bench.SEEDS)
    assert largest["diverged"] == 1 and largest["n"] == k and len(largest["acc_runs"]) == k - 1
    assert largest["acc_mean"] == pytest.approx(np.mean(acc[-k:-1, -2:]))
    smallest = out["per_gain"][str(bench.GAINS[0])]
    assert out["penalty"]["diff"] == pytest.approx(largest["acc_mean"] - smallest["acc_mean"])


# ---------------------------------------------------------------------------------------------- divergence
def test_a_diverged_run_keeps_its_metrics_up_to_its_divergence():
    from neurorate.io.results import TrainResult
    from neurorate.model.spec import NetworkSpec
    from neurorate.studies.config import StudyConfig
    from neurorate.studies.ensemble import EnsembleJob, _rows

    spec = NetworkSpec.random(n_hidden=4, seed=0)
    # a finite blow-up at iteration 6 (1e4 > 1000x the best loss so far, 0.02): the metrics use iterations 0-5
    losses = np.array([0.04, 0.03, 0.02, 0.0005, 0.0004, 0.0006, 1e4, 2e4])
    acc = np.array([0.5, 0.6, 0.7, 0.9, 1.0, 1.0, 0.0, 0.0])
    res = TrainResult(losses=losses, accuracy=acc, spec=spec, spec_initial=spec, rule="eprop", backend="torch",
                      lr=1.0, optimizer="adam", iterations=8, diverged=True, diverged_at=6)
    cfg = StudyConfig(name="d", iterations=8, log_every=2, best_window=2, solved_loss=1e-3, final_fraction=0.25)
    (row, *_) = _rows(cfg, EnsembleJob(0, "romo", "eprop", False, None, "torch", None), [(1.0, 1.0, 0)], [res],
                      [{}], 1.0).to_pylist()
    assert row["status"] == "diverged" and row["diverged_at"] == 6 and math.isnan(row["final_loss"])
    assert row["auc"] == pytest.approx(losses[:6].mean())
    assert row["best_loss"] == pytest.approx(0.00045) and row["time_to_solve"] == 5.0  # window [3, 4] ends at 5
    assert row["final_accuracy"] == pytest.approx(np.mean(acc[4:6]))  # the last 25 % of the 6 iterations before


def test_the_spiking_ensembles_use_the_one_divergence_rule(monkeypatch):
    import neurorate.model.spiking_learning as sl
    from neurorate.studies.config import load_config
    from neurorate.studies.ensemble import plan, run_ensemble
    from neurorate.training import baseline_loss, divergence_iteration

    original = sl.train_lif

    def huge_start(*args, **kwargs):  # a first loss 1e4x the zero-output loss, then learning: not a divergence
        out = original(*args, **kwargs)
        out["losses"] = np.array(out["losses"], dtype=float)
        out["losses"][0] = 1e4 * baseline_loss(args[1][0])
        out["losses"][-1] = np.nan  # and a non-finite last loss: diverged there
        return out

    monkeypatch.setattr(sl, "train_lif", huge_start)
    cfg = load_config({"name": "s", "neurons": ["lif"], "rules": ["eprop"], "gains": [1.0], "lrs": [1e-3],
                       "seeds": [0], "iterations": 4, "hidden": 8, "batch": 4, "log_every": 2, "lyapunov": False,
                       "richlazy": False})
    (row, *_) = run_ensemble(cfg, plan(cfg)[0]).to_pylist()
    assert row["status"] == "diverged" and row["diverged_at"] == 3
    assert divergence_iteration([1e4 * 0.03, 0.02, 0.02], reference=0.03) is None
