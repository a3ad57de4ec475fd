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
* ``accuracy_by_profile.png``: final accuracy per backend/hardware profile (only when those axes vary).

The header counts solved and unlearned runs (:mod:`neurorate.studies.claims`, metrics per run); the table shows the
final and the best-so-far loss. Diverged runs (``status == "diverged"``) are left out of every mean, figure and
claim and counted per setting in
the report's header (:func:`neurorate.studies.claims.diverged_by_setting`). The header also says which ensembles
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


def _curves(table, best: list[dict], task: str, path: Path, exclude: set[str] = frozenset()) -> Path:
    """Loss (top, log scale) and decision accuracy (bottom) against iteration, one column per rule (and
    flossing), one line per gain: mean +- s.e.m. over seeds at the best lr (n in the legend); blown-up runs are
    drawn thin and grey and left out of the mean; dashed lines at the Romo no-memory plateau and at chance."""
    plt = _plt()
    data = curve_data(table, best, task, exclude)
    panels = list(dict.fromkeys(k[:3] for k in data))
    gains = sorted({k[3] for k in data})
    base = next((r.get("base_task") or r["task"] for r in best if r["task"] == task), task)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.2), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for col, (rule, floss, neuron) in enumerate(panels):
        ax_l, ax_a = axes[0][col], axes[1][col]
        means = []
        for gi, g in enumerate(gains):
            d = data.get((rule, floss, neuron, g))
            if d is None:
                continue
            color = cmap(gi / max(1, len(gains) - 1))
            its, m, s = d["iteration"], d["loss"], d["loss_sem"]
            ax_l.plot(its, m, color=color, label=f"g={g:g} (n={d['n']})")
            ax_l.fill_between(its, np.maximum(m - s, 1e-12), m + s, color=color, alpha=0.25)
            ax_a.plot(its, d["accuracy"], color=color, label=f"g={g:g} (n={d['n']})")
            ax_a.fill_between(its, d["accuracy"] - d["accuracy_sem"], d["accuracy"] + d["accuracy_sem"],
                              color=color, alpha=0.25)
            means.append(m)
            for v in d["excluded"].values():
                ax_l.plot([p[0] for p in v], [p[1] for p in v], color="0.6", lw=0.6, ls=":")
        ax_l.set_yscale("log")
        lim = robust_ylim(means)
        if lim:
            ax_l.set_ylim(*lim)
        if base == "romo":
            ax_l.axhline(ROMO_PLATEAU, color="k", ls="--", lw=0.8, label="no-memory plateau")
        ax_a.axhline(CHANCE, color="k", ls="--", lw=0.8, label="chance")
        ax_a.set_ylim(0.3, 1.02)
        ax_l.set_title(f"{task}: {_label(rule, floss, neuron)}")
        ax_a.set_xlabel("iteration")
    axes[0][0].set_ylabel("training loss")
    axes[1][0].set_ylabel("decision accuracy")
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    fig.suptitle(f"{task}: mean +- s.e.m. over seeds (n per gain in the legend) at the best lr; "
                 "grey dotted: blown-up runs, not in the mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.suptitle(f"lambda_max per tau, every best-lr run a point; solved = best-so-far loss < {solved_loss:g}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def _flossing_fig(runs: list[dict], path: Path) -> Path:
    plt = _plt()
    data = flossing_data(runs)
    fig, axes = plt.subplots(1, max(1, len(data)), figsize=(max(5.0, 4.2 * len(data)), 3.6), squeeze=False)
    for ax, ((task, rule), by_gain) in zip(axes[0], data.items()):
        g = sorted(by_gain)
        m = np.array([by_gain[x][0] for x in g])
        lo = np.array([by_gain[x][1] for x in g])
        hi = np.array([by_gain[x][2] for x in g])
        ax.errorbar(g, m, yerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], marker="o", capsize=3,
                    label=f"{rule}: no-floss - floss")
        for x in g:
            ax.annotate(f"n={by_gain[x][3]}", (x, by_gain[x][0]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.axhline(0, color="k", ls="--", lw=0.8)
        ax.set_title(task)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("final-loss improvement by flossing")
    fig.suptitle("no-floss minus floss final loss, paired by seed at each\nsetting's best lr: mean and t-based 95 % CI",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
                by_gain = defaultdict(list)
                for r in best:
                    if (r["task"], r["rule"], r["flossing"], _neuron(r)) == (task, rule, floss, neuron):
                        by_gain[r["gain"]].append(r.get(field))
                if not any(math.isfinite(_mean(v)) for v in by_gain.values()):
                    continue  # e.g. no Lyapunov exponents for spiking networks
                g = sorted(by_gain)
                label = tag if field == "lambda_max_before" else f"{_label(rule, floss, neuron)} {tag}".strip()
                ns = sorted({sum(1 for v in by_gain[x] if _finite(v)) for x in by_gain})
                label += f" (n={ns[0]})" if len(ns) == 1 else f" (n={ns[0]}-{ns[-1]})"
                ax.errorbar(g, [_mean(by_gain[x]) for x in g], yerr=[_sem(by_gain[x]) for x in g], marker="o",
                            capsize=3, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle("mean +- s.e.m. over seeds at each setting's best lr (n seeds in\nthe legend); diverged and "
                 "blown-up runs left out", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    """The claims table in markdown."""
    lines = ["| claim | scope | test | statistic | p | n (seeds/pairs) | verdict |", "|---|---|---|---|---|---|---|"]
    for c in claims:
        stat = c["statistic"] + (f"; {c['note']}" if c.get("note") else "")
        lines.append(f"| {c['claim']} | {c['scope']} | {c['test']} | {stat} | {_fmt(c['p'])} | {c['n']} | "
                     f"**{c['verdict']}** |")
    return "\n".join(lines)


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
    all_runs = run_summaries(table, cfg.get("solved_loss", SOLVED_LOSS), cfg.get("best_window", BEST_WINDOW),
                             _alphas(cfg))
    runs = [r for r in all_runs if not diverged(r)]
    best = [r for r in best_runs(all_runs, criterion) if not diverged(r)]
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
    claims = check_claims(all_runs, criterion)
    text = _markdown(cfg, all_runs, best, claims, made, out, criterion, exploded, missing=missing, rebuilt=rebuilt)
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


def _divergence_text(runs: list[dict]) -> str:
    """``Diverged runs (...): n`` and, when there are any, the count per setting and learning rate."""
    counts = diverged_by_setting(runs)
    text = (f"Diverged runs (status diverged: the loss became non-finite or grew past the divergence factor, "
            f"docs/cli.md; left out of every mean and claim): {sum(counts.values())}")
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


_PAPER_FIGURES = ("The paper's figures: Fig. 1 (Romo learning curves by gain, BPTT and e-prop) = `curves_romo.png`; "
                  "Fig. 2 (2AF, DMS) = `curves_2af.png`, `curves_dms.png` (and their slower-leak variants); Fig. 3 "
                  "(lambda_max before/after) = `lambda_vs_gain.png`; Fig. 4 (flossing) = `flossing_vs_gain.png`; "
                  "Fig. 5 (intermediate gains) = `final_loss_vs_gain.png` (and `curves_romo.png` of the fig5 config). "
                  "Each file is written where its data exist.")


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


def _markdown(cfg, runs, best, claims, figures, out: Path, criterion: str, exploded: list[dict] = (),
              missing: list[str] = (), rebuilt: str | None = None) -> str:
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
             "## Claims (docs/theory.md §6)", "", claims_markdown(claims), "",
             "Tests are one-sided at alpha = 0.05 on the best-lr runs"
             + (" of each [backend/profile] slice. " if multi else ". ")
             + ("With fewer than 3 seeds per gain, every p-value is indicative only." if seeds < 3 else ""), "",
             "## Final loss at the best learning rate (mean +- s.e.m. over seeds)", "",
             "| task | rule | flossing | " + ("backend | profile | rank | " if multi else "") + "gain | best lr | "
             "final loss | s.e.m. | best-so-far loss | solved | time to solve | final accuracy | lambda_max before | "
             "after | dW/W0 | RA | KA (exact) | KA (e-prop) |",
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
              "solved (iterations until the running mean first fell below it).", "", "## Figures", "",
              _PAPER_FIGURES, ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"
