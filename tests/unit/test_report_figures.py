"""The report's paper figures (fig1-5) on a hand-made results table: which are made or skipped as the data allow,
a blown-up run left out of every plotted mean (checked on the lines of the figure objects), the reference lines
and the report's section naming the made figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pa = pytest.importorskip("pyarrow")

ITS = np.arange(10, 101, 10)
GAINS = (0.5, 1.0, 1.5)
SEEDS = (0, 1, 2)
BLOWN = ("romo", "eprop", False, 1.5, 2)  # (task, rule, flossing, gain, seed) of the blown-up run


def _curve(task, rule, floss, gain, seed):
    """A loss curve per run: decays faster at a larger gain, BPTT faster than e-prop, flossing a bit faster; the
    BLOWN run grows from 0.02 to 200 (finite: not diverged, a blow-up)."""
    if (task, rule, floss, gain, seed) == BLOWN:
        return 0.02 * 10.0 ** (4 * (ITS - ITS[0]) / (ITS[-1] - ITS[0]))
    rate = gain * (2.0 if rule == "bptt" else 1.0) * (1.3 if floss else 1.0) * (1 + 0.1 * seed) / 40
    return (0.02 if task == "romo" else 0.2) * np.exp(-rate * ITS)


def _settings(tasks, flossing):
    for task in tasks:
        for rule in ("bptt", "eprop"):
            for floss in ((False, True) if flossing and rule == "eprop" else (False,)):
                for gain in GAINS:
                    for seed in SEEDS:
                        yield task, rule, floss, gain, seed


def _table(tasks=("romo", "2af"), flossing=True, lyapunov=True):
    cols: dict[str, list] = {k: [] for k in (
        "run_id", "task", "base_task", "rule", "neuron", "flossing", "backend", "profile", "gain", "lr", "seed",
        "status", "alpha", "final_loss", "best_loss", "time_to_solve", "unlearned", "final_accuracy",
        "lambda_max_before", "lambda_max_after", "iteration", "loss", "accuracy")}
    for task, rule, floss, gain, seed in _settings(tasks, flossing):
        c = _curve(task, rule, floss, gain, seed)
        run = {"run_id": f"{task}-{rule}-{floss}-{gain}-{seed}", "task": task, "base_task": task, "rule": rule,
               "neuron": "rate", "flossing": floss, "backend": "torch", "profile": "none", "gain": gain, "lr": 1e-3,
               "seed": seed, "status": "ok", "alpha": 0.5, "final_loss": float(c[-1]), "best_loss": float(c.min()),
               "time_to_solve": math.nan, "unlearned": False, "final_accuracy": 0.9,
               "lambda_max_before": (math.log(gain) if lyapunov else None),
               "lambda_max_after": (0.01 * seed - 0.05 * gain if lyapunov else None)}
        for i, lo in zip(ITS, c):
            for k, v in run.items():
                cols[k].append(v)
            cols["iteration"].append(int(i))
            cols["loss"].append(float(lo))
            cols["accuracy"].append(0.5 + 0.4 * (1 - lo / c[0]))
    table = pa.table(cols)
    return table.append_column("rank", pa.array([None] * table.num_rows, type=pa.int64()))


def _cfg(tasks=("romo", "2af"), flossing=True):
    from neurorate.studies.config import StudyConfig

    return StudyConfig.model_validate({"name": "synthetic", "tasks": list(tasks), "rules": ["bptt", "eprop"],
                                       "gains": list(GAINS), "lrs": [1e-3], "seeds": list(SEEDS),
                                       "flossing": [False, True] if flossing else [False],
                                       "floss_rules": ["eprop"]}).model_dump(mode="json")


def _inputs(table):
    from neurorate.studies.claims import best_runs, run_summaries
    from neurorate.studies.report import exploded_runs

    runs = run_summaries(table)
    return runs, best_runs(runs), exploded_runs(table, runs)


def _made(paper):
    return {name: path for name, _, _, path, _ in paper if path is not None}


def test_every_paper_figure_is_made_when_the_study_has_its_data(tmp_path):
    from neurorate.studies.report import PAPER_FIGURES, paper_figures

    table = _table()
    _, best, blown = _inputs(table)
    assert [r["run_id"] for r in blown] == ["romo-eprop-False-1.5-2"]
    paper = paper_figures(table, best, _cfg(), tmp_path, blown)
    assert [p[0] for p in paper] == [f[0] for f in PAPER_FIGURES]
    assert set(_made(paper)) == {"fig1_romo.png", "fig2_2af_dms.png", "fig3_lambda.png", "fig4_flossing.png",
                                 "fig5_gains.png"}
    for path in _made(paper).values():
        assert path.parent == tmp_path and path.stat().st_size > 5000


@pytest.mark.parametrize("tasks, flossing, lyapunov, made", [
    (("romo",), False, True, {"fig1_romo.png", "fig3_lambda.png", "fig5_gains.png"}),
    (("romo",), True, False, {"fig1_romo.png", "fig4_flossing.png", "fig5_gains.png"}),
    (("2af", "dms"), True, True, {"fig2_2af_dms.png"}),
])
def test_a_figure_whose_data_the_study_lacks_is_skipped_with_the_reason(tmp_path, tasks, flossing, lyapunov, made):
    from neurorate.studies.report import paper_figures

    table = _table(tasks, flossing, lyapunov)
    _, best, blown = _inputs(table)
    paper = paper_figures(table, best, _cfg(tasks, flossing), tmp_path, blown)
    assert set(_made(paper)) == made
    assert {p.name for p in tmp_path.iterdir()} == made
    why = {name: reason for name, _, _, path, reason in paper if path is None}
    assert set(why) == {p[0] for p in paper} - made
    if "fig2_2af_dms.png" in why:
        assert why["fig2_2af_dms.png"] == "the study has no 2AF or DMS task"
    if "fig4_flossing.png" in why:
        assert why["fig4_flossing.png"] == ("the study has no Romo task" if "romo" not in tasks
                                            else "no flossing on Romo")
    if "fig3_lambda.png" in why:
        assert why["fig3_lambda.png"] == ("the study has no Romo task" if "romo" not in tasks
                                          else "no Lyapunov exponents on Romo: spiking units only")


def _lines(ax, label):
    return [ln for ln in ax.get_lines() if ln.get_label() == label]


def _errorbar(ax, label):
    """The data line of the error-bar series labelled ``label`` (matplotlib labels the container)."""
    (c,) = [c for c in ax.containers if c.get_label() == label]
    return c.lines[0]


def _xy(line):
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def test_fig1_draws_the_mean_of_the_other_seeds_and_the_blown_up_run_apart():
    from neurorate.studies.report import ROMO_PLATEAU, paper_fig1

    table = _table(("romo",))
    _, best, blown = _inputs(table)
    fig, title = paper_fig1(table, best, "romo", (ROMO_PLATEAU, "no-memory plateau"), {r["run_id"] for r in blown})
    bptt, eprop = fig.axes
    assert [bptt.get_title(), eprop.get_title()] == ["romo: BPTT", "romo: e-prop"]
    assert "mean +- s.e.m." in title and "n=2-3 per gain" in title
    (line,) = _lines(eprop, "g=1.5 (n=2)")  # seed 2 is blown up: two seeds left in the mean
    oracle = np.mean([_curve("romo", "eprop", False, 1.5, s) for s in (0, 1)], axis=0)
    np.testing.assert_allclose(line.get_xdata(), ITS)
    np.testing.assert_allclose(line.get_ydata(), oracle, rtol=1e-12)
    (full,) = _lines(bptt, "g=1.5 (n=3)")
    np.testing.assert_allclose(full.get_ydata(), np.mean([_curve("romo", "bptt", False, 1.5, s) for s in SEEDS],
                                                         axis=0), rtol=1e-12)
    grey = [ln for ln in eprop.get_lines() if ln.get_linestyle() == ":"]
    assert len(grey) == 1 and grey[0].get_ydata()[-1] == pytest.approx(200.0)
    # the blown-up curve (up to 200) does not set the y-limits: they fit the means and the plateau line
    lo, hi = eprop.get_ylim()
    assert hi < 0.03 and lo < oracle.min() and hi > ROMO_PLATEAU
    assert eprop.get_yscale() == "log"
    (plateau,) = _lines(eprop, "no-memory plateau")
    assert plateau.get_ydata()[0] == ROMO_PLATEAU and plateau.get_linestyle() == "--"


def test_fig3_fig4_and_fig5_leave_the_blown_up_run_out_of_their_means():
    from neurorate.studies.report import (
        ROMO_PLATEAU,
        flossing_data,
        lambda_points,
        lambda_stats,
        paper_fig3,
        paper_fig4,
        paper_fig5,
    )

    table = _table(("romo",))
    _, best, blown = _inputs(table)
    ids = {r["run_id"] for r in blown}
    clean = [r for r in best if r["run_id"] not in ids]
    ref = (ROMO_PLATEAU, "no-memory plateau")

    fig5, _ = paper_fig5(clean, "romo", ref, blown)
    eprop = fig5.axes[1]
    final = _errorbar(eprop, "final (n=2-3)")
    oracle = [np.mean([_curve("romo", "eprop", False, g, s)[-1] for s in SEEDS if (g, s) != (1.5, 2)])
              for g in GAINS]
    np.testing.assert_allclose(_xy(final)[0], GAINS)
    np.testing.assert_allclose(_xy(final)[1], oracle, rtol=1e-12)
    assert eprop.get_ylim()[1] < 1.0  # the blown-up final loss 200 is marked, not scaled to
    assert [c.get_label() for c in eprop.collections if "blown" in c.get_label()] == \
        ["blown up (n=1, not in the means)"]

    stats = lambda_stats([p for p in lambda_points(clean, 1e-3) if p["rule"] == "eprop"])
    # synthetic after = 0.01 seed - 0.05 g, per tau (alpha 0.5): x 2, solved and unsolved pooled per gain
    after = {name: v for name, v in stats.items() if name.startswith("after")}
    pooled = {g: [2 * (0.01 * s - 0.05 * g) for s in SEEDS if (g, s) != (1.5, 2)] for g in GAINS}
    for g in GAINS:
        n = sum(v[g][2] for v in after.values() if g in v)
        mean = sum(v[g][0] * v[g][2] for v in after.values() if g in v) / n
        assert n == len(pooled[g]) and mean == pytest.approx(np.mean(pooled[g]))
    assert stats["before"][1.5] == (pytest.approx(2 * math.log(1.5)), pytest.approx(0.0), 2)
    fig3, _ = paper_fig3(clean, "romo", 1e-3, blown)
    labels = [c.get_label() for c in fig3.axes[1].containers]
    assert "before (n=2-3)" in labels
    for name, by_gain in after.items():  # the plotted series are lambda_stats
        label = next(lab for lab in labels if lab.startswith(name + " ("))
        np.testing.assert_allclose(_xy(_errorbar(fig3.axes[1], label))[1], [by_gain[g][0] for g in sorted(by_gain)],
                                   rtol=1e-12)

    fig4, title = paper_fig4(table, best, "romo", ref, ids)
    curves, improvement = fig4.axes
    (solid,) = _lines(curves, "g=1.5 (n=2)")
    (dashed,) = _lines(curves, "g=1.5 floss (n=3)")
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    np.testing.assert_allclose(dashed.get_ydata(), np.mean([_curve("romo", "eprop", True, 1.5, s) for s in SEEDS],
                                                           axis=0), rtol=1e-12)
    imp = flossing_data(clean)[("romo", "eprop")]
    assert imp[1.5][3] == 2  # paired by seed: the blown-up seed has no pair
    np.testing.assert_allclose(_xy(_errorbar(improvement, "e-prop: no-floss - floss"))[1],
                               [imp[g][0] for g in GAINS], rtol=1e-12)
    diff = [_curve("romo", "eprop", False, 1.5, s)[-1] - _curve("romo", "eprop", True, 1.5, s)[-1] for s in (0, 1)]
    assert imp[1.5][0] == pytest.approx(np.mean(diff))
    assert "95 % CI" in title


def test_reference_lines_are_the_plateau_and_the_guessing_chance_level():
    from neurorate.studies.report import ROMO_PLATEAU, reference_loss

    cfg = _cfg(("romo", "2af", "dms"))
    assert reference_loss(cfg, "romo", "romo") == (ROMO_PLATEAU, "no-memory plateau")
    # neurogym defaults at dt = 100 ms (docs/tasks.md): 2AF 22 steps, 1 of them the decision; DMS 32 steps, 9
    # decision steps; every step masked (fixate): a network fixating right and guessing pays ln 2 on those steps
    assert reference_loss(cfg, "2af", "2af")[0] == pytest.approx(math.log(2) / 22)
    assert reference_loss(cfg, "dms", "dms")[0] == pytest.approx(math.log(2) * 9 / 32)
    assert reference_loss(cfg, "nope", "nope") is None


def test_the_report_section_embeds_the_made_figures_and_names_the_skipped(tmp_path):
    from neurorate.studies.report import _markdown, paper_figures

    table = _table(("romo",), flossing=False)
    runs, best, blown = _inputs(table)
    cfg = _cfg(("romo",), flossing=False)
    paper = paper_figures(table, best, cfg, tmp_path, blown)
    text = _markdown(cfg, runs, best, [], [], tmp_path, "final_loss", blown, paper=paper)
    section = text[text.index("## The paper's figures"):text.index("## Figures by topic")]
    for name in ("fig1_romo", "fig3_lambda", "fig5_gains"):
        assert f"![{name}](figures/{name}.png)" in section
    assert "**Fig. 1B**" in section and "**Fig. 3**" in section and "**Fig. 5**" in section
    assert "![fig2_2af_dms]" not in section and "![fig4_flossing]" not in section
    assert ("Not made, the study lacks their data: `fig2_2af_dms.png` (the study has no 2AF or DMS task); "
            "`fig4_flossing.png` (no flossing on Romo).") in section
    assert "Made: `fig1_romo.png`, `fig3_lambda.png`, `fig5_gains.png`." in section
