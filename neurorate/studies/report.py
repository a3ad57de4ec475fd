"""``neurorate report DIR``: figures and a markdown report (claims C1-C6 with statistics) of a finished study.

Figures (PNG, in ``DIR/figures``), all at each setting's best learning rate (see :mod:`neurorate.studies.claims`):

* ``curves_<task>.png``: loss (top) and decision accuracy (bottom) by gain, one column per rule (and flossing),
  mean +- s.e.m. over seeds (n in the legend), per-panel y-limits fitted to the mean curves, dashed lines at the
  Romo no-memory plateau and at chance; blown-up runs (:func:`exploded_runs`) drawn apart and left out of the mean;
* ``final_loss_vs_gain.png``: final and best-so-far loss vs gain per task and rule, mean +- s.e.m.;
* ``lambda_vs_gain.png``: lambda_max per tau before and after training, every run a point, solved and unsolved
  networks distinguished;
* ``flossing_vs_gain.png``: improvement (no flossing - flossing final loss, paired by seed) vs gain with t-based
  95 % CIs (rules with flossing only);
* ``richlazy_vs_gain.png``: relative weight change and representation alignment vs gain;
* ``accuracy_by_profile.png``: final accuracy per backend/hardware profile (only when those axes vary);
* ``alignment_vs_gain.png``: the alignment of each rule's update with the exact gradient (cosine of the recurrent
  weights' update, single draw, mean over the iterations measured with ``grad_alignment_every``) vs gain, per rule
  (only when the study measured it).

The paper's figures, each in the paper's layout (:func:`paper_figures`; a figure whose data the study lacks is
skipped and the report says so), under "The paper's figures" in ``report.md``:

* ``fig1_romo.png`` (Fig. 1B): Romo training loss vs iteration, one panel per rule (BPTT, e-prop, RFLO), one line
  per gain, mean +- s.e.m. band, log y, dashed no-memory plateau;
* ``fig2_2af_dms.png`` (Fig. 2): the same for 2AF and DMS (rows: tasks, their variants as extra rows; columns:
  rules), dashed chance level (:func:`reference_loss`);
* ``fig3_lambda.png`` (Fig. 3): lambda_max per tau before and after training vs gain (Romo), mean +- s.e.m., after
  split solved / not solved, a line at 0;
* ``fig4_flossing.png`` (Fig. 4): learning curves with (dashed) and without (solid) flossing per gain, and the
  improvement vs gain with 95 % CIs;
* ``fig5_gains.png`` (Fig. 5): final and best-so-far loss vs gain per rule, every gain of the study.

They reuse the data functions of the per-topic figures (:func:`curve_data`, :func:`lambda_points`,
:func:`flossing_data`, :func:`gain_stats`) and their drawing helpers; blown-up runs are marked and left out of
every mean, each panel gets :func:`robust_ylim` limits.

The header counts solved and unlearned runs (:mod:`neurorate.studies.claims`, metrics per run); the table shows the
final and the best-so-far loss. Diverged runs (``status == "diverged"``) are left out of every mean and figure,
counted per setting in the report's header (:func:`neurorate.studies.claims.diverged_by_setting`) and per gain at
the best lr (:func:`diverged_by_gain`); the claims keep them and rank them worst. With ``selection_seeds`` in the
config, the best lr is chosen on those seeds and the tables, figures and claims use the held-out seeds. The claims
table gives the raw and the Holm-adjusted p of every test, and a table says, per claim, what the paper plotted and
what neurorate tests (:data:`CLAIM_QUANTITIES`). The header also says which ensembles
of the config have not finished (an interrupted study) and whether ``results.parquet`` had to be rebuilt from
the parts. A corrupt part, ``config.json`` or ``manifest.json`` is a one-line error naming the file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from neurorate.studies.claims import (
    BEST_WINDOW,
    SOLVED_LOSS,
    best_runs,
    check_claims,
    diverged,
    diverged_by_setting,
    run_summaries,
)


def accuracy_targets(cfg: dict) -> dict[str, float | None]:
    """Task -> the accuracy criterion of C3's iterations to criterion (``accuracy_criterion`` of the way from chance
    to the task's Bayes-optimal accuracy, :func:`neurorate.tasks.bayes.accuracy_criterion`; None when the task has
    no Bayes-optimal accuracy or cannot be built here)."""
    from neurorate.studies.config import StudyConfig
    from neurorate.tasks.bayes import accuracy_criterion

    try:
        c = StudyConfig.model_validate(cfg)
    except Exception:  # noqa: BLE001 - a stored config this version cannot read: no criterion, C3 on the area only
        return {}
    out = {}
    for t in c.tasks:
        try:
            out[t] = accuracy_criterion(c.make_task(t, batch_size=1, seed=0), c.accuracy_criterion)
        except Exception:  # noqa: BLE001 - a task that cannot be built here has no criterion
            out[t] = None
    return out


def _alphas(cfg: dict) -> dict[str, float]:
    """Task -> network leak of a stored config (for tables written before the ``alpha`` column)."""
    from neurorate.studies.config import StudyConfig

    try:
        c = StudyConfig.model_validate(cfg)
        return {t: c.make_task(t, batch_size=1, seed=0).alpha for t in c.tasks}
    except Exception:  # noqa: BLE001 - a task that cannot be built here leaves alpha unknown (NaN)
        return {}


def _sem(v) -> float:
    v = np.asarray([x for x in v if x is not None and math.isfinite(x)], dtype=float)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _mean(v) -> float:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _label(rule: str, flossing: bool, neuron: str | None = "rate") -> str:
    return rule + (" + floss" if flossing else "") + ("" if neuron in (None, "rate") else f" ({neuron})")


def _neuron(r: dict) -> str:
    return r.get("neuron") or "rate"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ROMO_PLATEAU = 0.0165  # Romo's "no working memory" loss plateau (docs/study.md)
CHANCE = 0.5  # decision accuracy at chance: Romo, 2AF and DMS each have two choices


def curve_data(table, best: list[dict], task: str, exclude: set[str] = frozenset()) -> dict[tuple, dict]:
    """What :func:`_curves` plots for ``task``: ``{(rule, flossing, neuron, gain): {"iteration", "loss",
    "loss_sem", "accuracy", "accuracy_sem", "n", "excluded"}}``, means and s.e.m. over the seeds of ``best`` (the
    best-lr runs, diverged ones already left out) except the run ids in ``exclude`` (blown-up runs), which are
    listed under ``excluded`` with their curves."""
    keep = {r["run_id"] for r in best if r["task"] == task}
    cols = ["run_id", "rule", "flossing", "gain", "iteration", "loss", "accuracy"]
    cols += ["neuron"] if "neuron" in table.column_names else []
    rows = [r for r in table.select(cols).to_pylist() if r["run_id"] in keep]
    by: dict[tuple, dict] = defaultdict(lambda: {"runs": defaultdict(list)})
    for r in rows:
        key = (r["rule"], r["flossing"], _neuron(r), r["gain"])
        by[key]["runs"][r["run_id"]].append((r["iteration"], r["loss"], r["accuracy"]))
    out = {}
    for key in sorted(by, key=lambda k: (str(k[:3]), k[3])):
        runs = by[key]["runs"]
        kept = {rid: sorted(v) for rid, v in runs.items() if rid not in exclude}
        its = sorted({p[0] for v in kept.values() for p in v})
        loss = {i: [] for i in its}
        acc = {i: [] for i in its}
        for v in kept.values():
            for i, lo, ac in v:
                loss[i].append(lo)
                acc[i].append(ac)
        out[key] = {"iteration": np.array(its), "loss": np.array([_mean(loss[i]) for i in its]),
                    "loss_sem": np.array([_sem(loss[i]) for i in its]),
                    "accuracy": np.array([_mean(acc[i]) for i in its]),
                    "accuracy_sem": np.array([_sem(acc[i]) for i in its]), "n": len(kept),
                    "excluded": {rid: sorted(v) for rid, v in runs.items() if rid in exclude}}
    return out


def robust_ylim(curves: list[np.ndarray], log: bool = True) -> tuple[float, float] | None:
    """Y-limits that show every mean curve: from the smallest value to the largest, on a log scale padded by a
    factor 1.5 (a blown-up run, left out of the means, is then clipped instead of squashing the others)."""
    vals = np.concatenate([c[np.isfinite(c) & ((c > 0) if log else True)] for c in curves]) if curves else []
    if len(vals) == 0:
        return None
    lo, hi = float(np.min(vals)), float(np.max(vals))
    return (lo / 1.5, hi * 1.5) if log else (lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))


def _save(fig, path: Path, title: str, fontsize: float = 9) -> Path:
    """Suptitle, tight layout, ``path`` written at 110 dpi, the figure closed; returns ``path``."""
    plt = _plt()
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _gain_colors(gains) -> dict[float, tuple]:
    """One viridis colour per gain, the smallest dark, the largest yellow (the same in every figure)."""
    cmap = _plt().get_cmap("viridis")
    gains = sorted(gains)
    return {g: cmap(i / max(1, len(gains) - 1)) for i, g in enumerate(gains)}


def _loss_lines(ax, data: dict, panel: tuple, colors: dict, field: str = "loss", ls: str = "-", tag: str = "",
                band: bool = True, log: bool = True) -> list[np.ndarray]:
    """Draw the ``field`` ("loss" or "accuracy") curves of ``curve_data``'s ``panel`` (rule, flossing, neuron):
    one line per gain (mean, ``ls``) with a +- s.e.m. band, labelled ``g=.. (n=..)``; the blown-up runs it lists
    as excluded thin, grey and dotted (loss only). Returns the plotted mean curves (for :func:`robust_ylim`)."""
    means = []
    for g, color in colors.items():
        d = data.get((*panel, g))
        if d is None:
            continue
        its, m, s = d["iteration"], d[field], d[f"{field}_sem"]
        ax.plot(its, m, color=color, ls=ls, label=f"g={g:g}{tag} (n={d['n']})")
        if band:
            ax.fill_between(its, np.maximum(m - s, 1e-12) if log else m - s, m + s, color=color, alpha=0.25)
        means.append(m)
        if field == "loss":
            for v in d["excluded"].values():
                ax.plot([q[0] for q in v], [q[1] for q in v], color="0.6", lw=0.6, ls=":")
    return means


def _log_ylim(ax, means: list[np.ndarray], ref: tuple[float, str] | None) -> None:
    """Log y scale, limits from :func:`robust_ylim` over ``means`` (and the reference line's value)."""
    ax.set_yscale("log")
    lim = robust_ylim(means + ([np.array([ref[0]])] if ref else []))
    if lim:
        ax.set_ylim(*lim)
    if ref:
        ax.axhline(ref[0], color="k", ls="--", lw=0.8, label=ref[1])


def _curves(table, best: list[dict], task: str, path: Path, exclude: set[str] = frozenset()) -> Path:
    """Loss (top, log scale) and decision accuracy (bottom) against iteration, one column per rule (and
    flossing), one line per gain: mean +- s.e.m. over seeds at the best lr (n in the legend); blown-up runs are
    drawn thin and grey and left out of the mean; dashed lines at the Romo no-memory plateau and at chance."""
    plt = _plt()
    data = curve_data(table, best, task, exclude)
    panels = list(dict.fromkeys(k[:3] for k in data))
    colors = _gain_colors({k[3] for k in data})
    base = next((r.get("base_task") or r["task"] for r in best if r["task"] == task), task)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.2), squeeze=False)
    for col, (rule, floss, neuron) in enumerate(panels):
        ax_l, ax_a = axes[0][col], axes[1][col]
        means = _loss_lines(ax_l, data, (rule, floss, neuron), colors)
        _loss_lines(ax_a, data, (rule, floss, neuron), colors, field="accuracy", log=False)
        _log_ylim(ax_l, means, (ROMO_PLATEAU, "no-memory plateau") if base == "romo" else None)
        ax_a.axhline(CHANCE, color="k", ls="--", lw=0.8, label="chance")
        ax_a.set_ylim(0.3, 1.02)
        ax_l.set_title(f"{task}: {_label(rule, floss, neuron)}")
        ax_a.set_xlabel("iteration")
    axes[0][0].set_ylabel("training loss")
    axes[1][0].set_ylabel("decision accuracy")
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    return _save(fig, path, f"{task}: mean +- s.e.m. over seeds (n per gain in the legend) at the best lr; "
                 "grey dotted: blown-up runs, not in the mean")


def lambda_points(best: list[dict], solved_loss: float) -> list[dict]:
    """What :func:`_lambda_fig` plots: one point per best-lr run without flossing, ``lambda_max`` before and
    after per tau (:func:`~neurorate.studies.claims.per_tau`) and whether the run solved its task."""
    from neurorate.studies.claims import per_tau, solved

    return [{"task": r["task"], "rule": r["rule"], "gain": r["gain"], "seed": r["seed"],
             "before": per_tau(r["lambda_max_before"], r.get("alpha", math.nan)),
             "after": per_tau(r["lambda_max_after"], r.get("alpha", math.nan)), "solved": solved(r, solved_loss)}
            for r in best if not r["flossing"] and _finite(r.get("lambda_max_after"))
            and _finite(r.get("lambda_max_before"))]


def _lambda_fig(best: list[dict], path: Path, solved_loss: float) -> Path:
    """lambda_max per tau before (grey) and after training (filled: solved, hollow: not solved), one panel per
    (task, rule), every run a point (slightly jittered in gain)."""
    plt = _plt()
    pts = lambda_points(best, solved_loss)
    panels = list(dict.fromkeys((p["task"], p["rule"]) for p in pts))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.8 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (task, rule) in zip(axes[0], panels):
        mine = [p for p in pts if (p["task"], p["rule"]) == (task, rule)]
        jit = {p["seed"]: 0.02 * (k - 2) for k, p in enumerate(sorted({q["seed"]: q for q in mine}.values(),
                                                                      key=lambda q: q["seed"]))}
        ax.scatter([p["gain"] + jit[p["seed"]] for p in mine], [p["before"] for p in mine], color="0.6", s=14,
                   label="before")
        for flag, face, name in ((True, "C0", "after, solved"), (False, "none", "after, not solved")):
            sel = [p for p in mine if p["solved"] == flag]
            if sel:
                ax.scatter([p["gain"] + jit[p["seed"]] for p in sel], [p["after"] for p in sel], s=22,
                           facecolors=face, edgecolors="C0", label=f"{name} (n={len(sel)})")
        ax.axhline(0, color="k", ls="--", lw=0.8)
        ax.set_title(f"{task} {rule}")
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("lambda_max (1/tau)")
    return _save(fig, path, f"lambda_max per tau, every best-lr run a point; solved = best-so-far loss < "
                 f"{solved_loss:g}")


def flossing_data(runs: list[dict]) -> dict[tuple, dict[float, tuple]]:
    """What :func:`_flossing_fig` plots: ``{(task, rule): {gain: (mean, ci_lo, ci_hi, n)}}`` of the improvement
    ``final_loss(no flossing) - final_loss(flossing)`` paired by seed at the best lr of each, with the t-based 95 %
    confidence interval (:func:`~neurorate.studies.claims.paired_ci`)."""
    from neurorate.studies.claims import _pairs, paired_ci

    out: dict[tuple, dict] = {}
    for task, rule in dict.fromkeys((r["task"], r["rule"]) for r in runs if r["flossing"]):
        pairs = _pairs(runs, "final_loss", task, {"rule": rule, "flossing": False}, {"rule": rule, "flossing": True})
        out[(task, rule)] = {g: (*paired_ci([a - b for a, b in v]), len(v)) for g, v in pairs.items()}
    return out


def _improvement(ax, by_gain: dict[float, tuple], label: str) -> None:
    """Draw one entry of :func:`flossing_data`: mean improvement vs gain with its 95 % CI as error bars, n per
    gain written next to each point, a dashed line at 0."""
    g = sorted(by_gain)
    m = np.array([by_gain[x][0] for x in g])
    lo = np.array([by_gain[x][1] for x in g])
    hi = np.array([by_gain[x][2] for x in g])
    ax.errorbar(g, m, yerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], marker="o", capsize=3, label=label)
    for x in g:
        ax.annotate(f"n={by_gain[x][3]}", (x, by_gain[x][0]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="k", ls="--", lw=0.8)
    ax.set_xlabel("initial gain g")


def _flossing_fig(runs: list[dict], path: Path) -> Path:
    plt = _plt()
    data = flossing_data(runs)
    fig, axes = plt.subplots(1, max(1, len(data)), figsize=(max(5.0, 4.2 * len(data)), 3.6), squeeze=False)
    for ax, ((task, rule), by_gain) in zip(axes[0], data.items()):
        _improvement(ax, by_gain, f"{rule}: no-floss - floss")
        ax.set_title(task)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("final-loss improvement by flossing")
    return _save(fig, path, "no-floss minus floss final loss, paired by seed at each\nsetting's best lr: mean and "
                 "t-based 95 % CI", fontsize=8)


def gain_stats(runs: list[dict], field: str) -> dict[float, tuple[float, float, int]]:
    """``{gain: (mean, s.e.m., n)}`` of ``field`` over ``runs`` (one setting's runs; n counts the finite values,
    which alone enter the mean)."""
    by_gain = defaultdict(list)
    for r in runs:
        by_gain[r["gain"]].append(r.get(field))
    return {g: (_mean(v), _sem(v), sum(1 for x in v if _finite(x))) for g, v in sorted(by_gain.items())}


def _n_text(ns) -> str:
    ns = sorted(set(ns))
    return f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"


def _errorbar_gain(ax, stats: dict[float, tuple], label: str, **kw) -> np.ndarray:
    """Draw :func:`gain_stats` as mean +- s.e.m. error bars vs gain, labelled with n; returns the means."""
    g = sorted(stats)
    m = np.array([stats[x][0] for x in g])
    ax.errorbar(g, m, yerr=[stats[x][1] for x in g], marker=kw.pop("marker", "o"), capsize=3,
                label=f"{label} ({_n_text(stats[x][2] for x in g)})".lstrip(), **kw)
    return m


def _vs_gain(best: list[dict], fields: list[tuple[str, str]], path: Path, ylabel: str, log: bool = False,
             only_floss_rules: bool = False) -> Path:
    plt = _plt()
    tasks = list(dict.fromkeys(r["task"] for r in best))
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(5.0, 4.2 * len(tasks)), 3.8), squeeze=False)
    floss_rules = {r["rule"] for r in best if r["flossing"]}
    for ax, task in zip(axes[0], tasks):
        settings = list(dict.fromkeys((r["rule"], r["flossing"], _neuron(r)) for r in best if r["task"] == task))
        if only_floss_rules:
            settings = [s for s in settings if s[0] in floss_rules]
        for field, tag in fields:
            for rule, floss, neuron in settings:
                if field == "lambda_max_before" and (floss or rule != settings[0][0] or neuron != settings[0][2]):
                    continue  # lambda_before does not depend on the rule: draw it once
                stats = gain_stats([r for r in best if (r["task"], r["rule"], r["flossing"], _neuron(r))
                                    == (task, rule, floss, neuron)], field)
                if not any(math.isfinite(v[0]) for v in stats.values()):
                    continue  # e.g. no Lyapunov exponents for spiking networks
                label = tag if field == "lambda_max_before" else f"{_label(rule, floss, neuron)} {tag}".strip()
                _errorbar_gain(ax, stats, label)
        if log:
            ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    return _save(fig, path, "mean +- s.e.m. over seeds at each setting's best lr (n seeds in\nthe legend); diverged "
                 "and blown-up runs left out", fontsize=8)


def _by_profile(runs: list[dict], path: Path) -> Path:
    plt = _plt()
    groups = defaultdict(list)
    for r in runs:
        groups[f"{r['backend']}/{r['profile']}\n{r['task']} {r['rule']}"].append(r.get("final_accuracy"))
    keys = sorted(groups)
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(keys)), 3.4))
    ax.bar(range(len(keys)), [_mean(groups[k]) for k in keys], yerr=[_sem(groups[k]) for k in keys], capsize=3)
    ax.set_xticks(range(len(keys)), keys, fontsize=7, rotation=30)
    ax.set_ylabel("final accuracy")
    return _save(fig, path, "final accuracy per backend/profile: mean +- s.e.m. over the best-lr runs")


# ------------------------------------------------------------------------------------------ the paper's figures
_RULE_ORDER = ("bptt", "eprop", "rflo")
_RULE_NAMES = {"bptt": "BPTT", "eprop": "e-prop", "rflo": "RFLO"}
PAPER_FIGURES = (("fig1_romo.png", "Fig. 1B", "Romo learning curves by initial gain, one panel per rule"),
                 ("fig2_2af_dms.png", "Fig. 2", "2AF and DMS learning curves (rows: tasks, columns: rules)"),
                 ("fig3_lambda.png", "Fig. 3", "lambda_max before and after training vs gain, Romo"),
                 ("fig4_flossing.png", "Fig. 4", "e-prop with and without local flossing, Romo"),
                 ("fig5_gains.png", "Fig. 5", "final and best-so-far loss vs gain, all gains of the study, Romo"))


def _rule_key(panel: tuple) -> tuple:
    """Panels (rule, flossing, neuron) in the paper's order: BPTT, e-prop, RFLO, then the others; rate first."""
    rule, floss, neuron = panel
    return (_RULE_ORDER.index(rule) if rule in _RULE_ORDER else len(_RULE_ORDER), rule, neuron != "rate",
            neuron, floss)


def _rule_title(rule: str, floss: bool = False, neuron: str = "rate") -> str:
    return _label(_RULE_NAMES.get(rule, rule), floss, neuron)


def _base(best: list[dict], task: str) -> str:
    return next((r.get("base_task") or r["task"] for r in best if r["task"] == task), task)


def romo_task(best: list[dict]) -> str | None:
    """The task the paper's Romo figures (1, 3, 4, 5) show: ``romo`` when the study has it, else its first
    variant of Romo (e.g. ``romo-alpha0.2``), else None."""
    tasks = [t for t in dict.fromkeys(r["task"] for r in best) if _base(best, t) == "romo"]
    return "romo" if "romo" in tasks else (tasks[0] if tasks else None)


def reference_loss(cfg: dict, task: str, base: str) -> tuple[float, str] | None:
    """The loss a network without the task's memory reaches, drawn dashed in the paper's figures: Romo's
    no-memory plateau (:data:`ROMO_PLATEAU`); for a cross-entropy task (2AF, DMS and their variants) the chance
    level of a network that gets every fixation step right and guesses the choice (ln 2 on each masked step whose
    label is a choice: ``ln 2 * masked choice steps / masked steps`` of the task's batch 0, 256 trials); None when
    the task cannot be built here."""
    if base == "romo":
        return ROMO_PLATEAU, "no-memory plateau"
    from neurorate.studies.config import StudyConfig

    try:
        t = StudyConfig.model_validate(cfg).make_task(task, batch_size=256, seed=0)
        if t.loss_kind != "ce":
            return None
        _, labels, mask = t.batch(0)
    except Exception:  # noqa: BLE001 - a task that cannot be built here has no reference line
        return None
    mask = np.asarray(mask, dtype=float)
    return float(math.log(2) * (mask * (np.asarray(labels) > 0)).sum() / mask.sum()), "chance (choice guessed)"


def _curve_grid(table, best: list[dict], tasks: list[str], refs: dict, exclude: set[str]):
    """Rows = ``tasks``, columns = the rules without flossing (paper order): loss vs iteration per gain, log y,
    per-panel robust y-limits, a dashed reference line; returns the figure."""
    plt = _plt()
    data = {t: curve_data(table, best, t, exclude) for t in tasks}
    panels = sorted({k[:3] for d in data.values() for k in d if not k[1]}, key=_rule_key)
    colors = _gain_colors({k[3] for d in data.values() for k in d})
    fig, axes = plt.subplots(len(tasks), max(1, len(panels)), figsize=(4.0 * max(1, len(panels)),
                             3.2 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            means = _loss_lines(ax, data[task], panel, colors)
            if not means:
                ax.set_axis_off()
                continue
            _log_ylim(ax, means, refs.get(task))
            ax.set_title(f"{task}: {_rule_title(*panel)}", fontsize=9)
            ax.legend(fontsize=6)
            if col == 0:
                ax.set_ylabel("training loss")
            if row == len(tasks) - 1:
                ax.set_xlabel("iteration")
    return fig


def _n_range(data: dict) -> str:
    return _n_text(d["n"] for d in data.values()) if data else "n=0"


def paper_fig1(table, best: list[dict], task: str, ref, exclude: set[str] = frozenset()):
    """Fig. 1B: Romo training loss vs iteration, one panel per rule (BPTT, e-prop, RFLO when present), one line
    per gain (mean +- s.e.m. band over the seeds at the gain's best lr), log y, dashed no-memory plateau; blown-up
    runs grey dotted, not in the mean. Returns ``(figure, suptitle)``."""
    fig = _curve_grid(table, best, [task], {task: ref}, exclude)
    n = _n_range(curve_data(table, best, task, exclude))
    return fig, (f"{task} (paper Fig. 1B): training loss, mean +- s.e.m. over seeds ({n} per gain) at each gain's "
                 "best lr;\ndashed: no-memory plateau; grey dotted: blown-up runs, not in the mean")


def paper_fig2(table, best: list[dict], tasks: list[str], refs: dict, exclude: set[str] = frozenset()):
    """Fig. 2: the same as :func:`paper_fig1` for 2AF and DMS (and their variants, e.g. the slower leak), rows =
    tasks, columns = rules; dashed: the chance level of :func:`reference_loss`. Returns ``(figure, suptitle)``."""
    fig = _curve_grid(table, best, tasks, refs, exclude)
    n = _n_text(d["n"] for t in tasks for d in curve_data(table, best, t, exclude).values())
    return fig, (f"2AF / DMS (paper Fig. 2): training loss, mean +- s.e.m. over seeds ({n} per gain) at each "
                 "gain's best lr;\ndashed: chance (fixation right, choice guessed); grey dotted: blown-up runs")


def lambda_stats(points: list[dict]) -> dict[str, dict[float, tuple[float, float, int]]]:
    """What :func:`paper_fig3` plots per panel from :func:`lambda_points` (one task and rule): ``{"before",
    "after, solved", "after, not solved"}`` -> ``{gain: (mean, s.e.m., n)}`` of lambda_max per tau."""
    out = {}
    for name, field, sel in (("before", "before", lambda p: True), ("after, solved", "after", lambda p: p["solved"]),
                             ("after, not solved", "after", lambda p: not p["solved"])):
        by_gain = defaultdict(list)
        for p in points:
            if sel(p):
                by_gain[p["gain"]].append(p[field])
        if by_gain:
            out[name] = {g: (_mean(v), _sem(v), sum(1 for x in v if _finite(x))) for g, v in sorted(by_gain.items())}
    return out


def paper_fig3(best: list[dict], task: str, solved_loss: float, blown: list[dict] = ()):
    """Fig. 3: lambda_max per tau before and after training vs gain, one panel per rule (no flossing): mean +-
    s.e.m. over seeds of :func:`lambda_stats`, after split solved / not solved, every run a faint point, blown-up
    runs grey crosses (not in the means), a dashed line at 0. Returns ``(figure, suptitle)``."""
    plt = _plt()
    pts = [p for p in lambda_points(best, solved_loss) if p["task"] == task]
    bad = [p for p in lambda_points(list(blown), solved_loss) if p["task"] == task]
    rules = sorted(dict.fromkeys(p["rule"] for p in pts), key=lambda r: _rule_key((r, False, "rate")))
    fig, axes = plt.subplots(1, max(1, len(rules)), figsize=(4.0 * max(1, len(rules)), 3.4), squeeze=False)
    style = {"before": ("0.45", "o", "-"), "after, solved": ("C0", "o", "-"), "after, not solved": ("C3", "s", "--")}
    for ax, rule in zip(axes[0], rules):
        mine = [p for p in pts if p["rule"] == rule]
        shown = []
        for name, stats in lambda_stats(mine).items():
            color, marker, ls = style[name]
            field = "before" if name == "before" else "after"
            sel = [p for p in mine if name == "before" or p["solved"] == (name == "after, solved")]
            ax.scatter([p["gain"] for p in sel], [p[field] for p in sel], color=color, s=8, alpha=0.3)
            shown.append(_errorbar_gain(ax, stats, name, color=color, marker=marker, ls=ls))
            shown += [np.array([p[field] for p in sel])]
        mine_bad = [p for p in bad if p["rule"] == rule]
        if mine_bad:
            ax.scatter([p["gain"] for p in mine_bad], [p["after"] for p in mine_bad], color="0.5", marker="x",
                       label=f"after, blown up (n={len(mine_bad)}, not in the means)")
        lim = robust_ylim(shown + [np.array([0.0])], log=False)
        if lim:
            ax.set_ylim(*lim)
        ax.axhline(0, color="k", ls="--", lw=0.8)
        ax.set_title(f"{task}: {_rule_title(rule)}", fontsize=9)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("lambda_max (1/tau)")
    return fig, (f"{task} (paper Fig. 3): lambda_max per tau before and after training, mean +- s.e.m. over seeds "
                 f"(n per series in the legend)\nat each gain's best lr; solved = best-so-far loss < {solved_loss:g}")


def paper_fig4(table, best: list[dict], task: str, ref, exclude: set[str] = frozenset()):
    """Fig. 4: per rule with flossing on ``task`` (a row each): left, the learning curves without (solid) and
    with (dashed) flossing per gain, mean +- s.e.m. bands; right, :func:`flossing_data`'s improvement vs gain with
    95 % CIs (blown-up runs left out of both). Returns ``(figure, suptitle)``."""
    plt = _plt()
    data = curve_data(table, best, task, exclude)
    clean = [r for r in best if r["run_id"] not in exclude]
    imp = flossing_data(clean)
    rules = sorted((k[1] for k in imp if k[0] == task), key=lambda r: _rule_key((r, False, "rate")))
    colors = _gain_colors({k[3] for k in data})
    fig, axes = plt.subplots(len(rules), 2, figsize=(9.0, 3.4 * len(rules)), squeeze=False)
    for row, rule in enumerate(rules):
        ax_c, ax_i = axes[row]
        means = []
        for floss, ls, tag in ((False, "-", ""), (True, "--", " floss")):
            neuron = next((k[2] for k in data if k[:2] == (rule, floss)), "rate")
            means += _loss_lines(ax_c, data, (rule, floss, neuron), colors, ls=ls, tag=tag, band=True)
        _log_ylim(ax_c, means, ref)
        ax_c.set_title(f"{task}: {_rule_title(rule)}, solid: no flossing, dashed: flossing", fontsize=8)
        ax_c.set_xlabel("iteration")
        ax_c.set_ylabel("training loss")
        ax_c.legend(fontsize=6, ncol=2)
        _improvement(ax_i, imp[(task, rule)], f"{_rule_title(rule)}: no-floss - floss")
        ax_i.set_title(f"{task}: final-loss improvement by flossing", fontsize=8)
        ax_i.set_ylabel("no-floss - floss final loss")
        ax_i.legend(fontsize=6)
    n = _n_range(data)
    return fig, (f"{task} (paper Fig. 4): left, mean +- s.e.m. over seeds ({n} per gain); right, improvement paired "
                 "by seed,\nmean and t-based 95 % CI (n pairs per gain at the points); each setting at its best lr")


def paper_fig5(best: list[dict], task: str, ref, blown: list[dict] = ()):
    """Fig. 5: final loss (solid, circles) and best-so-far loss (dashed, squares) vs gain, one panel per rule
    without flossing, mean +- s.e.m. over seeds of :func:`gain_stats`, every gain of the study; blown-up runs grey
    crosses at their final loss, not in the means. Returns ``(figure, suptitle)``."""
    plt = _plt()
    mine = [r for r in best if r["task"] == task and not r["flossing"]]
    panels = sorted(dict.fromkeys((r["rule"], False, _neuron(r)) for r in mine), key=_rule_key)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.0 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (rule, _, neuron) in zip(axes[0], panels):
        runs = [r for r in mine if (r["rule"], _neuron(r)) == (rule, neuron)]
        means = []
        for field, name, kw in (("final_loss", "final", {"color": "C0"}),
                                ("best_loss", "best-so-far", {"color": "C1", "marker": "s", "ls": "--"})):
            stats = gain_stats(runs, field)
            m = _errorbar_gain(ax, stats, name, **kw)
            s = np.array([stats[g][1] for g in sorted(stats)])
            means += [m, m + s, m - s]  # the y-limits hold the error bars (robust_ylim drops values <= 0)
        bad = [r for r in blown if (r["task"], r["rule"], r["flossing"], _neuron(r)) == (task, rule, False, neuron)]
        if bad:
            ax.scatter([r["gain"] for r in bad], [r["final_loss"] for r in bad], color="0.5", marker="x",
                       label=f"blown up (n={len(bad)}, not in the means)")
        _log_ylim(ax, means, ref)
        ax.set_title(f"{task}: {_rule_title(rule, False, neuron)}", fontsize=9)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("loss (final: last 10 %; best-so-far)")
    return fig, (f"{task} (paper Fig. 5): final and best-so-far loss vs initial gain, mean +- s.e.m. over seeds "
                 "(n in the legend)\nat each gain's best lr; diverged runs left out, blown-up runs crosses")


def paper_figures(table, best: list[dict], cfg: dict, figs: Path, blown: list[dict] = ()) -> list[tuple]:
    """Write the paper's figures 1-5 into ``figs`` (see :data:`PAPER_FIGURES`) from the best-lr runs ``best``
    (diverged runs already left out) and the blown-up runs ``blown`` (left out of every mean, marked); returns one
    ``(file name, paper figure, what it shows, path or None, why not made)`` per figure: a figure whose data the
    study lacks (no Romo task; no 2AF/DMS; no Lyapunov exponents; no flossing on Romo) is skipped."""
    solved_loss = cfg.get("solved_loss", SOLVED_LOSS)
    ids = {r["run_id"] for r in blown}
    clean = [r for r in best if r["run_id"] not in ids]
    blown_best = [r for r in best if r["run_id"] in ids]
    romo = romo_task(best)
    ref = reference_loss(cfg, romo, "romo") if romo else None
    neuro = [t for t in dict.fromkeys(r["task"] for r in best) if _base(best, t) in ("2af", "dms")]
    neuro.sort(key=lambda t: (t != _base(best, t), _base(best, t) == "dms"))  # 2af, dms, then the variants
    has_lambda = romo and any(r["task"] == romo and not r["flossing"] and _finite(r.get("lambda_max_after"))
                              and _finite(r.get("lambda_max_before")) for r in clean)
    has_floss = romo and any(r["task"] == romo and r["flossing"] for r in clean)
    no_romo = "the study has no Romo task"
    plans = [
        (lambda: paper_fig1(table, best, romo, ref, ids)) if romo else no_romo,
        (lambda: paper_fig2(table, best, neuro, {t: reference_loss(cfg, t, _base(best, t)) for t in neuro}, ids))
        if neuro else "the study has no 2AF or DMS task",
        (lambda: paper_fig3(clean, romo, solved_loss, blown_best)) if has_lambda
        else no_romo if not romo else "no Lyapunov exponents on Romo: spiking units only",
        (lambda: paper_fig4(table, best, romo, ref, ids)) if has_floss
        else no_romo if not romo else "no flossing on Romo",
        (lambda: paper_fig5(clean, romo, ref, blown_best)) if romo else no_romo,
    ]
    out = []
    for (name, fig_name, what), plan in zip(PAPER_FIGURES, plans):
        if isinstance(plan, str):
            out.append((name, fig_name, what, None, plan))
            continue
        fig, title = plan()
        out.append((name, fig_name, what, _save(fig, figs / name, title, fontsize=8), None))
    return out


def paper_figures_markdown(made: list[tuple]) -> list[str]:
    """The report's "The paper's figures" section: each made figure embedded under its paper figure, then one
    line naming the figures not made and why."""
    lines = ["## The paper's figures", "",
             "Each at every setting's best lr, diverged runs left out, blown-up runs marked and left out of the means; "
             "error bars and n in each figure's title and legends.", ""]
    for name, fig_name, what, path, _ in made:
        if path is not None:
            lines += [f"**{fig_name}** ({what}), `{name}`:", "", f"![{Path(name).stem}](figures/{name})", ""]
    skipped = [f"`{name}` ({why})" for name, _, _, path, why in made if path is None]
    lines += [f"Made: {', '.join(f'`{m[0]}`' for m in made if m[3] is not None) or 'none'}. "
              + (f"Not made, the study lacks their data: {'; '.join(skipped)}." if skipped else ""), ""]
    return lines


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _fixed(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "n/a"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3g}"
    return str(v)


def claims_markdown(claims: list[dict]) -> str:
    """The claims table in markdown: the raw p of each test and its Holm-adjusted p (the verdict's)."""
    lines = ["| claim | scope | test | statistic | p (raw) | p (Holm) | n (seeds/pairs) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        stat = c["statistic"] + (f"; {c['note']}" if c.get("note") else "")
        lines.append(f"| {c['claim']} | {c['scope']} | {c['test']} | {stat} | {_fmt(c['p'])} | "
                     f"{_fmt(c.get('p_holm'))} | {c['n']} | **{c['verdict']}** |")
    return "\n".join(lines)


CLAIM_QUANTITIES = [
    ("C1", "Fig. 1B: Romo training loss curves by gain, BPTT and e-prop",
     "smallest vs largest gain on the final loss, the best-so-far loss and the iterations to solve (loss < "
     "solved_loss), paired by seed"),
    ("C2", "Fig. 1B (implied): e-prop's curve above BPTT's", "e-prop - BPTT final loss, paired by gain and seed"),
    ("C3", "Fig. 2: 2AF and DMS training loss curves by gain",
     "learning speed, smallest vs largest gain: the area under the loss curve (mean loss over training) and the "
     "iterations to an accuracy criterion set from the task's Bayes-optimal accuracy, paired by seed; the final loss "
     "is not used (on 2AF the input noise caps the accuracy, and every gain ends at the same floor)"),
    ("C4a", "Fig. 3: lambda_max after training near 0 at every gain",
     "equivalence (TOST) of the mean lambda_max per tau of the networks that solved the task within the margin"),
    ("C4b", "Fig. 3: lambda_max before training rising with g", "trend of lambda_max before training with the gain, "
     "paired by seed"),
    ("C4c", "Fig. 3: the change of lambda_max largest at the smallest gain",
     "trend of abs(lambda_after - lambda_before) with the gain, paired by seed, and its largest mean at the smallest "
     "gain"),
    ("C5", "Fig. 4: e-prop curves with and without local flossing, by gain",
     "the final-loss improvement by flossing at the smallest gain, and the gain x flossing interaction (difference "
     "in differences by seed)"),
    ("C6", "Fig. 5: curves ordered by gain between the extremes", "trend of the final and the best-so-far loss with "
     "the gain across every gain, paired by seed (Romo)"),
]
"""(claim, what the paper plotted, what neurorate tests): the report's table of tested quantities."""


def claim_quantities_markdown() -> list[str]:
    """The report's table of what the paper plotted and what neurorate tests, per claim."""
    return (["| claim | the paper plotted | neurorate tests |", "|---|---|---|"]
            + [f"| {c} | {paper} | {ours} |" for c, paper, ours in CLAIM_QUANTITIES])


def report(out: str | Path, criterion: str | None = None, notes: list[str] | None = None) -> Path:
    """Write ``DIR/figures/*.png`` and ``DIR/report.md`` for the study in ``DIR``; returns the report's path.

    ``notes``: a list to which what the header warns of is appended as one-line strings (``results.parquet``
    rebuilt from the parts; ensembles of the config that have not finished), for a caller to print.
    """
    import json

    from neurorate.studies.config import StudyConfig
    from neurorate.studies.runner import ensure_results_table, load_results, plan, read_manifest, read_study_config

    out = Path(out)
    cfg = read_study_config(out)
    table = load_results(out)
    rebuilt = ensure_results_table(out, table)
    finished = read_manifest(out)["finished"]
    missing = [j.key for j in plan(StudyConfig.model_validate(cfg)) if j.key not in finished]
    if notes is not None:
        notes += ([rebuilt] if rebuilt else []) + ([f"incomplete study: {len(missing)} ensembles have not finished "
                                                    f"({', '.join(missing)})"] if missing else [])
    criterion = criterion or cfg.get("best_lr", "final_loss")
    selection = cfg.get("selection_seeds") or []
    all_runs = run_summaries(table, cfg.get("solved_loss", SOLVED_LOSS), cfg.get("best_window", BEST_WINDOW),
                             _alphas(cfg), accuracy_targets(cfg))
    runs = [r for r in all_runs if not diverged(r)]
    best = [r for r in best_runs(all_runs, criterion, selection) if not diverged(r)]
    if not runs:  # every run diverged: the header says so, there is nothing to plot or test
        text = _markdown(cfg, all_runs, [], [], [], out, criterion, missing=missing, rebuilt=rebuilt)
        (out / "report.md").write_text(text)
        (out / "claims.json").write_text("[]")
        return out / "report.md"
    main = {k: all_runs[0][k] for k in ("rank", "backend", "profile")}
    best_main = [r for r in best if all(r[k] == v for k, v in main.items())]
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    exploded = exploded_runs(table, runs)
    blown = {r["run_id"] for r in exploded}
    clean = [r for r in best_main if r["run_id"] not in blown]
    solved_loss = cfg.get("solved_loss", SOLVED_LOSS)
    made = [_curves(table, best_main, t, figs / f"curves_{t}.png", blown)
            for t in dict.fromkeys(r["task"] for r in runs)]
    made.append(_vs_gain(clean, [("final_loss", "final"), ("best_loss", "best-so-far")],
                         figs / "final_loss_vs_gain.png", "loss (final: last 10 %; best-so-far)", log=True))
    if any(_finite(r.get("lambda_max_before")) for r in best_main):  # none for spiking-only studies
        made.append(_lambda_fig(best_main, figs / "lambda_vs_gain.png", solved_loss))
    if any(r["flossing"] for r in runs):
        made.append(_flossing_fig(clean, figs / "flossing_vs_gain.png"))
    if any(r.get("weight_change") is not None and math.isfinite(r["weight_change"]) for r in runs):
        made.append(_vs_gain([r for r in best_main if not r["flossing"]], [("weight_change", "dW/W0")],
                             figs / "richlazy_vs_gain.png", "relative weight change"))
    if len({(r["backend"], r["profile"]) for r in runs}) > 1:
        made.append(_by_profile(best, figs / "accuracy_by_profile.png"))
    if any(_finite(r.get("grad_alignment")) for r in best_main):
        made.append(_vs_gain(best_main, [("grad_alignment", "")], figs / "alignment_vs_gain.png",
                             "cos(update, exact gradient) of W_rec"))
    paper = paper_figures(table, best_main, cfg, figs, exploded)
    claims = check_claims(all_runs, criterion, selection)
    text = _markdown(cfg, all_runs, best, claims, made, out, criterion, exploded, missing=missing, rebuilt=rebuilt,
                     paper=paper, best_all=best_runs(all_runs, criterion, selection))
    (out / "report.md").write_text(text)
    (out / "claims.json").write_text(json.dumps(claims, indent=1, default=float))
    return out / "report.md"


EXPLODED = 1000.0  # a finite final loss this many times the first logged loss counts as a blow-up


def exploded_runs(table, runs: list[dict]) -> list[dict]:
    """Runs that are not NaN/inf (so not "diverged") but whose final loss is more than ``EXPLODED`` times their
    first logged loss: blow-ups (e.g. ReLU networks under a local rule at a large gain) that a mean hides."""
    first: dict[str, tuple[int, float]] = {}
    for row in table.select(["run_id", "iteration", "loss"]).to_pylist():
        if row["loss"] is not None and (row["run_id"] not in first or row["iteration"] < first[row["run_id"]][0]):
            first[row["run_id"]] = (row["iteration"], row["loss"])
    out = []
    for r in runs:
        start = first.get(r["run_id"], (0, math.nan))[1]
        final = r.get("final_loss")
        if (r["status"] != "diverged" and _finite(final) and _finite(start) and start > 0
                and final > EXPLODED * start):
            out.append(r)
    return out


def diverged_by_gain(best: list[dict]) -> dict[tuple, tuple[int, int]]:
    """``{(task, rule, flossing, rank, backend, profile, neuron): {gain: (diverged, runs)}}`` over the best-lr runs
    (diverged ones included), for the settings where any diverged: what the claims rank worst."""
    out: dict[tuple, dict] = defaultdict(dict)
    for r in best:
        key = (r["task"], r["rule"], r["flossing"], r["rank"], r["backend"], r["profile"], _neuron(r))
        k, n = out[key].get(r["gain"], (0, 0))
        out[key][r["gain"]] = (k + diverged(r), n + 1)
    return {key: dict(sorted(v.items())) for key, v in out.items() if any(k for k, _ in v.values())}


def _diverged_at_best_text(best: list[dict]) -> list[str]:
    """The report's lines on the diverged runs at the best lr, per gain (nothing when none diverged)."""
    per = diverged_by_gain(best)
    if not per:
        return []
    lines = ["## Diverged runs at the best learning rate, per gain", "",
             "They are left out of the means and figures above; the claims keep them and rank them worst (a loss, an "
             "area or a time of a diverged run counts as worse than every run that did not diverge).", "",
             "| task | rule | flossing | slice | diverged / runs per gain |", "|---|---|---|---|---|"]
    for (task, rule, floss, rank, backend, profile, neuron), by in per.items():
        slice_ = f"{backend}/{profile}" + ("" if rank is None else f", rank {rank}")
        lines.append(f"| {task} | {_label(rule, False, neuron)} | {floss} | {slice_} | "
                     + ", ".join(f"g={g:g}: {k}/{n}" for g, (k, n) in by.items()) + " |")
    return lines + [""]


def _divergence_text(runs: list[dict]) -> str:
    """``Diverged runs (...): n`` and, when there are any, the count per setting and learning rate."""
    counts = diverged_by_setting(runs)
    text = (f"Diverged runs (status diverged: the loss became non-finite or grew past the divergence factor over "
            f"the run's own best loss, docs/cli.md; left out of every mean and figure, ranked worst in the claims): "
            f"{sum(counts.values())}")
    if not counts:
        return text + "."
    per = []
    for key, k in sorted(counts.items(), key=lambda kv: str(kv[0])):
        task, rule, floss, rank, backend, profile, gain, lr = key[:8]
        neuron = key[8] if len(key) > 8 else "rate"
        of = sum(1 for r in runs if (r["task"], r["rule"], r["flossing"], r["rank"], r["backend"], r["profile"],
                                     r["gain"], r["lr"], r.get("neuron") or "rate")
                 == (task, rule, floss, rank, backend, profile, gain, lr, neuron))
        where = "" if (rank, backend, profile) == (None, "torch", "none") else \
            f" [{backend}/{profile}{'' if rank is None else f', rank {rank}'}]"
        per.append(f"{task} {_label(rule, floss, neuron)} g={gain:g} lr={lr:g}{where} ({k}/{of})")
    return text + ", per setting: " + ", ".join(per) + "."


def _median(v) -> float:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def _solved(r: dict, cfg: dict) -> bool:
    from neurorate.studies.claims import solved

    return solved(r, cfg.get("solved_loss", SOLVED_LOSS))


def _unlearned_text(runs: list[dict], cfg: dict) -> str:
    """How many runs solved, how many unlearned (reached the threshold and ended above it), and whether the
    metrics were computed from logged curves (older results)."""
    thr = cfg.get("solved_loss", SOLVED_LOSS)
    kept = [r for r in runs if not diverged(r)]
    n_solved = sum(_solved(r, cfg) for r in kept)
    n_un = sum(bool(r.get("unlearned")) for r in kept)
    text = (f"Solved (best-so-far loss, the minimum of the running mean over {cfg.get('best_window', BEST_WINDOW)} "
            f"iterations, < {thr:g}): {n_solved} of {len(kept)} runs; unlearned (solved, then ended with a final "
            f"loss above {thr:g}): {n_un}.")
    if any(r.get("metrics_from_log") for r in runs):
        text += (" Note: this study's results predate the best-so-far columns; best-so-far loss, time to solve and "
                 "unlearned were computed from the logged curves (means of log_every iterations).")
    return text


def _claims_footer(claims: list[dict], multi: bool, seeds: int, cfg: dict) -> str:
    """How the claims were tested: the family, the adjustment, the designs and the held-out seeds."""
    tested = sum(1 for c in claims if c.get("p_holm") is not None)
    selection = cfg.get("selection_seeds") or []
    held = [s for s in cfg["seeds"] if s not in set(selection)]
    slices = " of each [backend/profile] slice" if multi else ""
    text = (f"Every test is one-sided at alpha = 0.05 on the best-lr runs{slices}; Holm's adjustment runs over "
            f"the {tested} rows with a p-value (the verdict uses the adjusted p); a one-sided test reports a "
            "one-sided 95 % bound (C4a: the 90 % interval of its two one-sided tests). Comparisons across gains pair "
            "by seed (the same initial matrix, input and readout weights and batches at every gain) and say where "
            "they could not; a t-test decides where every value is finite, a rank or sign-flip test where a "
            "diverged or never-solved run is ranked worst (docs/study.md, \"Claims\"). ")
    text += (f"Best lr chosen on seeds {selection}; the claims, tables and figures use the held-out seeds {held}. "
             if selection else "The best lr is chosen on the same seeds the claims are tested on (no held-out seeds; "
             "`selection_seeds` in the config holds some out). ")
    if seeds < 3:
        text += "With fewer than 3 seeds per gain, every p-value is indicative only."
    return text


def _markdown(cfg, runs, best, claims, figures, out: Path, criterion: str, exploded: list[dict] = (),
              missing: list[str] = (), rebuilt: str | None = None, paper: list[tuple] = (),
              best_all: list[dict] | None = None) -> str:
    groups: dict[tuple, int] = {}
    for r in exploded:
        key = (r["task"], r["rule"], r["flossing"], r["gain"], r["lr"])
        groups[key] = groups.get(key, 0) + 1
    blow_text = ("" if not exploded else
                 f" Blown-up runs (finite final loss > {EXPLODED:g}x their first logged loss; they count in the "
                 f"means): {len(exploded)}, seeds per setting: " + ", ".join(
                     f"{t} {ru}{' floss' if fl else ''} g={g:g} lr={lr:g} ({k})"
                     for (t, ru, fl, g, lr), k in sorted(groups.items())) + ".")
    seeds = len(cfg["seeds"])
    # several (rank, backend, profile) slices: the table names each row's slice (one slice keeps the old columns)
    multi = len({(r["rank"], r["backend"], r["profile"]) for r in runs}) > 1
    lines = [f"# Study report: {cfg['name']}", ""]
    if missing:
        lines += [f"**Incomplete study**: {len(missing)} of the config's ensembles have not finished "
                  f"({', '.join(missing)}); the numbers below cover the finished ones only. Resume with "
                  "`neurorate study --config ... --out DIR --resume`.", ""]
    if rebuilt:
        lines += [f"Note: {rebuilt}.", ""]
    lines += [(f"{len(runs)} runs: tasks {cfg['tasks']}, rules {cfg['rules']}, gains {cfg['gains']}, lrs {cfg['lrs']}, "
             f"{seeds} seeds, flossing {cfg['flossing']} ({cfg['floss_iterations']} it., mode {cfg['floss_mode']}), "
             f"ranks {cfg['ranks']}, neurons {cfg.get('neurons', ['rate'])}, N={cfg['hidden']}, B={cfg['batch']}, "
             f"{cfg['iterations']} iterations, "
             f"input bias {cfg['input_bias']}. {_divergence_text(runs)}{blow_text} {_unlearned_text(runs, cfg)}"),
             "",
             (f"Best learning rate per (task, rule, flossing, gain): fewest diverged seeds, then the lowest mean over "
              f"the other seeds of `{criterion}` (final_loss: mean loss over the last {cfg['final_fraction']:.0%} of "
              f"iterations; best_loss: minimum of the running mean over {cfg.get('best_window', BEST_WINDOW)} "
              "iterations)."), "",
             "## Claims (docs/theory.md §6)", "", *claim_quantities_markdown(), "", claims_markdown(claims), "",
             _claims_footer(claims, multi, seeds, cfg), "", *_diverged_at_best_text(best_all or best),
             "## Final loss at the best learning rate (mean +- s.e.m. over seeds)", "",
             "| task | rule | flossing | " + ("backend | profile | rank | " if multi else "") + "gain | best lr | "
             "final loss | s.e.m. | best-so-far loss | solved | time to solve | final accuracy | lambda_max before "
             "(per step) | after (per step) | dW/W0 | RA | KA (exact) | KA (e-prop) |",
             "|---|---|---|" + ("---|---|---|" if multi else "") + "---|" * 14]
    groups = defaultdict(list)
    for r in best:
        groups[(r["task"], r["rule"], r["flossing"], r["rank"], r["backend"], r["profile"], r["gain"],
                _neuron(r))].append(r)
    for key, rs in groups.items():
        axes = f"{key[4]} | {key[5]} | {'full' if key[3] is None else key[3]} | " if multi else ""
        lines.append(f"| {key[0]} | {_label(key[1], False, key[7])} | {key[2]} | {axes}{key[6]:g} | {rs[0]['lr']:g} | "
                     f"{_mean([r['final_loss'] for r in rs]):.4g} | {_sem([r['final_loss'] for r in rs]):.2g} | "
                     f"{_fmt(_mean([r.get('best_loss') for r in rs]))} | "
                     f"{sum(_solved(r, cfg) for r in rs)}/{len(rs)} | "
                     f"{_fmt(_median([r.get('time_to_solve') for r in rs]))} | "
                     f"{_fixed(_mean([r.get('final_accuracy') for r in rs]))} | "
                     f"{_fixed(_mean([r['lambda_max_before'] for r in rs]))} | "
                     f"{_fixed(_mean([r['lambda_max_after'] for r in rs]))} | "
                     f"{_fmt(_mean([r.get('weight_change') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('repr_alignment') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('kernel_alignment') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('kernel_alignment_eprop') for r in rs]))} |")
    lines += ["", "Solved: best-so-far loss below the solved threshold; time to solve: median over the seeds that "
              "solved (iterations until the running mean first fell below it).", ""]
    lines += (paper_figures_markdown(paper) if paper else []) + ["## Figures by topic", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"
