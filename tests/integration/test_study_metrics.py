"""Per-run study metrics (best-so-far loss, time to solve, unlearned), effect sizes with confidence intervals
against scipy, lambda per tau, C4a on solved networks, C3 per leak, task variants and the report's figure data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurorate.errors import NeurorateError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _curve():
    # 100 iterations on the plateau, 100 solved, 100 back above the threshold
    return np.array([0.02] * 100 + [5e-4] * 100 + [0.01] * 100)


def test_best_so_far_and_time_to_solve_on_a_hand_made_curve():
    from neurorate.studies.claims import best_so_far, running_mean, time_to_solve, unlearned

    c = _curve()
    assert running_mean([1.0, 2.0, 3.0, 4.0], 2).tolist() == [1.5, 2.5, 3.5]
    assert running_mean([1.0, 2.0], 5).tolist() == [1.5]  # fewer than a window: the mean of all
    assert best_so_far(c, 50) == pytest.approx(5e-4)
    # a window of 50 holding k plateau values has mean (0.02 k + 5e-4 (50 - k)) / 50 < 1e-3 only for k <= 1:
    # the first such window starts at index 99 and ends at iteration 99 + 50 = 149
    assert time_to_solve(c, 1e-3, 50) == 149.0
    assert time_to_solve(c, 1e-5, 50) != time_to_solve(c, 1e-5, 50)  # never: NaN
    assert time_to_solve(c[::10], 1e-3, 5, step=10) == 150.0  # a logged curve of block means
    final = float(np.mean(c[-30:]))
    assert unlearned(best_so_far(c, 50), final) is True
    assert unlearned(5e-4, 8e-4) is False and unlearned(2e-3, 0.01) is False and unlearned(math.nan, 0.01) is False
    with_nan = c.copy()
    with_nan[150] = math.nan  # every window holding the NaN is left out
    assert best_so_far(with_nan, 50) == pytest.approx(5e-4)
    assert time_to_solve(with_nan, 1e-3, 50) == 149.0
    assert math.isnan(best_so_far([math.nan] * 5, 2))


def test_old_tables_get_the_metrics_from_their_logged_curves():
    import pyarrow as pa

    from neurorate.studies.claims import run_summaries

    c = _curve()
    blocks = c.reshape(-1, 10).mean(axis=1)
    n = len(blocks)
    table = pa.table({"run_id": ["a"] * n, "task": ["romo"] * n, "rule": ["eprop"] * n, "gain": [1.0] * n,
                      "lr": [1e-3] * n, "seed": [0] * n, "final_loss": [float(np.mean(c[-30:]))] * n,
                      "status": ["ok"] * n, "iteration": list(range(10, 301, 10)), "loss": blocks.tolist()})
    (run,) = run_summaries(table, solved_loss=1e-3, window=50, alphas={"romo": 0.5})
    assert run["metrics_from_log"] and run["alpha"] == 0.5 and run["base_task"] == "romo"
    assert run["best_loss"] == pytest.approx(5e-4)
    assert run["time_to_solve"] == 150.0 and run["unlearned"] is True  # 5 blocks of 10: resolution 10


def test_welch_and_paired_confidence_intervals_match_scipy():
    from scipy import stats

    from neurorate.studies.claims import gain_effect, paired_ci, welch_ci

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.02, 0.004, 5), rng.normal(0.01, 0.001, 7)
    diff, lo, hi = welch_ci(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean()) and (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
    d = rng.normal(0.003, 0.002, 6)
    m, lo, hi = paired_ci(d)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert m == pytest.approx(d.mean()) and (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert math.isnan(paired_ci([0.1])[1])
    e = gain_effect({0.25: a.tolist(), 1.5: b.tolist()})
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (e["ci_lo"], e["ci_hi"]) == pytest.approx((ref.low, ref.high), rel=1e-10)


def test_lambda_per_tau():
    from neurorate.studies.claims import per_tau

    assert per_tau(-0.05, 0.5) == pytest.approx(-0.1)
    assert per_tau(-0.05, 0.1) == pytest.approx(-0.5)
    assert per_tau(0.02, 1.0) == pytest.approx(0.02)
    assert math.isnan(per_tau(0.1, math.nan)) and math.isnan(per_tau(0.1, 0.0))


def _run(task, rule, gain, seed, loss, best, lam_after, alpha, base=None, flossing=False):
    return {"run_id": f"{task}{rule}{gain}{seed}{flossing}", "task": task, "base_task": base or task, "rule": rule,
            "flossing": flossing, "rank": None, "backend": "torch", "profile": "none", "gain": gain, "lr": 1e-3,
            "seed": seed, "final_loss": loss, "auc": loss, "best_loss": best, "status": "ok",
            "lambda_max_before": -0.4 + 0.3 * gain, "lambda_max_after": lam_after, "alpha": alpha}


def test_c4a_is_tested_per_tau_on_solved_networks_and_reports_the_unsolved():
    from neurorate.studies.claims import check_claims

    runs = []
    for s in range(4):
        runs.append(_run("romo", "eprop", 0.25, s, 0.015, 0.012, -0.3 - 0.01 * s, 0.5))  # unsolved, far below 0
        runs.append(_run("romo", "eprop", 1.5, s, 5e-4, 3e-4, 0.01 * (s - 1.5), 0.5))  # solved, near 0
    claims = {(c["claim"], c["scope"]): c for c in check_claims(runs)}
    c4a, apart = claims[("C4a", "romo eprop")], claims[("C4a", "romo eprop, unsolved")]
    assert c4a["verdict"] == "holds" and c4a["n"] == 4  # the unsolved networks do not enter the test
    assert apart["verdict"] == "reported" and apart["n"] == 4 and "-0.63" in apart["statistic"]  # -0.315 / 0.5
    # the same per-step exponents at alpha = 0.1 are five times larger per tau: no longer "about 0"
    slow = [dict(r, alpha=0.1, lambda_max_after=r["lambda_max_after"] + 0.02) for r in runs]
    c4a_slow = next(c for c in check_claims(slow) if (c["claim"], c["scope"]) == ("C4a", "romo eprop"))
    assert c4a_slow["verdict"] == "not supported"


def test_c3_is_checked_once_per_leak_on_learning_speed():
    """C3 is tested on the area under the loss curve (learning speed), once per leak; C1 and C6 are Romo's claims
    (before: C3 was C1's final-loss test on 2AF/DMS, where the final loss sits at the noise floor at every gain)."""
    from neurorate.studies.claims import check_claims

    rng = np.random.default_rng(0)
    runs = []
    for task, base, alpha, effect in (("2af", "2af", 1.0, 0.0), ("2af-tau200", "2af", 0.5, 0.01)):
        for g in (0.25, 1.5):
            for s in range(5):
                loss = 0.02 - (effect if g == 1.5 else 0.0) + 0.001 * rng.standard_normal()
                runs.append(_run(task, "eprop", g, s, loss, loss * 0.9, 0.0, alpha, base))  # auc = loss here
    claims = check_claims(runs)
    c3 = {c["scope"]: c["verdict"] for c in claims if c["claim"] == "C3"}
    assert c3 == {"2af eprop, area under the loss curve": "not supported",
                  "2af-tau200 eprop, area under the loss curve": "holds",
                  "2af (alpha=1)": "not supported", "2af-tau200 (alpha=0.5)": "holds"}
    assert not [c for c in claims if c["claim"] in ("C1", "C6")]
    row = next(c for c in claims if c["scope"] == "2af-tau200 eprop, area under the loss curve")
    assert "one-sided 95% bound" in row["statistic"] and row["test"].startswith("paired t-test (paired by seed)")


def test_task_variants_are_validated_and_built():
    from neurorate.studies.config import load_config

    cfg = load_config({"tasks": ["2af", "2af-tau200"], "variants": {"2af-tau200": {"task": "2af", "tau": 200.0}}})
    assert cfg.make_task("2af").alpha == 1.0 and cfg.make_task("2af-tau200").alpha == 0.5
    assert cfg.base_task("2af-tau200") == "2af" and cfg.base_task("2af") == "2af"
    assert load_config({"name": "x"}).digest() == load_config({"name": "x", "variants": {}}).digest()
    for bad, what in [({"tasks": ["romo"], "variants": {"slow": {"task": "romo", "tau": 2.0}}}, "not in tasks"),
                      ({"tasks": ["slow"], "variants": {"slow": {"task": "nope"}}}, "needs task"),
                      ({"tasks": ["romo"], "variants": {"romo": {"task": "romo"}}}, "new plain name"),
                      ({"tasks": ["slow"], "variants": {"slow": {"task": "romo", "tau": -1.0}}}, "positive"),
                      ({"tasks": ["slow"]}, "unknown task")]:
        with pytest.raises(NeurorateError, match=what) as err:
            load_config(bad)
        assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    import neurorate as nr

    out = tmp_path_factory.mktemp("metrics") / "s"
    cfg = {"name": "tiny", "tasks": ["romo", "romo-slow"], "variants": {"romo-slow": {"task": "romo", "tau": 2.5}},
           "rules": ["eprop"], "gains": [0.5, 1.5], "lrs": [1e-3], "seeds": [0, 1, 2], "flossing": [False, True],
           "floss_iterations": 3, "iterations": 20, "hidden": 8, "batch": 4, "log_every": 5, "best_window": 10,
           "richlazy": False, "input_bias": False, "activation": "relu"}
    table = nr.study(cfg, out=out, progress=False, workers=1)
    return out, table


def test_tiny_study_writes_the_metrics_and_the_variant(tiny_study):
    from neurorate.studies.claims import best_so_far

    out, table = tiny_study
    for col in ("best_loss", "time_to_solve", "unlearned", "alpha", "base_task"):
        assert col in table.column_names
    rows = table.to_pylist()
    slow = {r["alpha"] for r in rows if r["task"] == "romo-slow"}
    assert len(slow) == 1 and slow.pop() == pytest.approx(0.2) and {r["base_task"] for r in rows} == {"romo"}
    # best_loss is computed from the per-iteration losses: never above the best logged block of 5 (window 10)
    run = [r for r in rows if r["run_id"] == rows[0]["run_id"]]
    blocks = [r["loss"] for r in run]
    assert run[0]["best_loss"] <= best_so_far(blocks, 2) + 1e-12


def test_report_figures_leave_blown_up_and_diverged_runs_out_of_the_mean(tiny_study):
    from neurorate.studies.claims import best_runs, diverged, run_summaries
    from neurorate.studies.report import curve_data, flossing_data, lambda_points, report

    out, table = tiny_study
    path = report(out)
    text = path.read_text()
    assert "Solved (best-so-far loss" in text and "unlearned" in text and "| best-so-far loss |" in text
    for name in ("curves_romo", "curves_romo-slow", "final_loss_vs_gain", "lambda_vs_gain", "flossing_vs_gain"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    runs = run_summaries(table)
    runs[0]["status"] = "diverged"  # a diverged run is not among the plotted best-lr runs
    best = [r for r in best_runs(runs) if not diverged(r)]
    assert runs[0]["run_id"] not in {r["run_id"] for r in best}
    key_run = next(r for r in best if r["task"] == "romo" and not r["flossing"] and r["gain"] == 1.5)
    data = curve_data(table, best, "romo", exclude={key_run["run_id"]})
    d = data[("eprop", False, "rate", 1.5)]
    assert key_run["run_id"] in d["excluded"]
    others = [r["run_id"] for r in best if r["task"] == "romo" and not r["flossing"] and r["gain"] == 1.5
              and r["run_id"] != key_run["run_id"]]
    assert d["n"] == len(others)
    first = [r["loss"] for r in table.to_pylist() if r["run_id"] in others and r["iteration"] == 5]
    assert d["loss"][0] == pytest.approx(np.mean(first))
    pts = lambda_points(best, 1e-3)
    slow = [p for p in pts if p["task"] == "romo-slow"]
    ref = next(r for r in best if r["task"] == "romo-slow" and not r["flossing"])
    match = next(p for p in slow if (p["gain"], p["seed"]) == (ref["gain"], ref["seed"]))
    assert match["after"] == pytest.approx(ref["lambda_max_after"] / 0.2)
    fl = flossing_data(best)
    assert set(fl) == {("romo", "eprop"), ("romo-slow", "eprop")}
    assert all(v[3] >= 1 for v in fl[("romo", "eprop")].values())


def test_c1_on_the_time_to_solve_counts_unsolved_runs_as_slowest():
    from scipy import stats

    from neurorate.studies.claims import check_claims

    runs = []
    for s in range(5):  # every BPTT network solves; the small gain needs ~3x the iterations
        runs.append(dict(_run("romo", "bptt", 0.25, s, 1e-5, 1e-5, -0.1, 0.5), time_to_solve=400.0 + 20 * s))
        runs.append(dict(_run("romo", "bptt", 1.5, s, 2e-5, 1e-5, -0.1, 0.5), time_to_solve=130.0 + 10 * s))
        # e-prop: no small-gain network solves, 2 of 5 large-gain ones do, and one gain in between never solves
        runs.append(_run("romo", "eprop", 0.25, s, 0.012, 0.011, -0.3, 0.5))
        runs.append(dict(_run("romo", "eprop", 1.5, s, 0.002, 0.0015 if s > 1 else 8e-4, 0.0, 0.5),
                         time_to_solve=2000.0 + s if s < 2 else math.nan))
        runs.append(_run("romo", "rflo", 0.25, s, 0.013, 0.012, -0.3, 0.5))  # nobody solves: no time-to-solve row
        runs.append(_run("romo", "rflo", 1.5, s, 0.011, 0.010, -0.3, 0.5))
    claims = {(c["claim"], c["scope"]): c for c in check_claims(runs)}
    bptt = claims[("C1", "romo bptt, time to solve")]
    assert bptt["verdict"] == "holds" and bptt["n"] == 5 and bptt["test"].startswith("paired t-test (paired by seed)")
    # every run solved (finite times): the paired t-test by seed decides
    assert bptt["p"] == pytest.approx(stats.ttest_rel([400.0 + 20 * s for s in range(5)],
                                                      [130.0 + 10 * s for s in range(5)], alternative="greater").pvalue)
    assert "median iterations to solve 440 at g=0.25 (5/5 solved) vs 150 at g=1.5 (5/5 solved)" in bptt["statistic"]
    assert "5/5 pairs higher at g=0.25" in bptt["statistic"]
    eprop = claims[("C1", "romo eprop, time to solve")]
    # never solved (5 at g = 0.25) is slower than the 2 solved at g = 1.5 (seeds 0, 1); the 3 pairs where neither
    # solved tie at 0 and drop out: Wilcoxon signed-rank on 2 positive differences, p = 1/4
    assert eprop["test"].startswith("Wilcoxon signed-rank (paired by seed)")
    assert eprop["p"] == pytest.approx(1 / 4) and eprop["verdict"] == "not supported"
    assert "never at g=0.25 (0/5 solved)" in eprop["statistic"] and "2/5 pairs higher" in eprop["statistic"]
    assert ("C1", "romo rflo, time to solve") not in claims
    # the same runs with different seeds at the two gains (no pairing): the independent rank test, Mann-Whitney U
    # from its permutation distribution. Never solved (5 at g = 0.25) ranks behind the 2 solved at g = 1.5:
    # U = 5*2 + 5*3/2 = 17.5 of 25; U >= 17.5 whenever both solved runs fall in the large-gain group:
    # C(5, 2) / C(10, 2) = 10/45 (the normal approximation, scipy's default with ties, would say 0.09)
    apart = [dict(r, seed=r["seed"] + 10) if r["gain"] == 1.5 else r for r in runs]
    eprop = next(c for c in check_claims(apart) if c["scope"] == "romo eprop, time to solve")
    assert eprop["test"].startswith("Mann-Whitney U (independent by seed)")
    assert eprop["p"] == pytest.approx(10 / 45) and "P(higher at g=0.25)=0.70" in eprop["statistic"]
    assert "independent: the seeds differ between the groups" in eprop["statistic"]
    three = [dict(r, time_to_solve=2002.0, best_loss=8e-4) if r["rule"] == "eprop" and r["gain"] == 1.5
             and r["seed"] == 12 else r for r in apart]
    c1 = next(c for c in check_claims(three) if c["scope"] == "romo eprop, time to solve")
    assert c1["p"] == pytest.approx(stats.mannwhitneyu([9e9] * 5, [2000, 2001, 2002, 9e9, 9e9], alternative="greater",
                                                       method=stats.PermutationMethod()).pvalue)
    assert c1["p"] == pytest.approx(1 / 12) and c1["verdict"] == "not supported"  # C(5,3)/C(10,3) = 10/120
