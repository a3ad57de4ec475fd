"""``neurorate report DIR``: figures and a markdown report (claims C1-C6 with statistics) of a finished study.

Figures (PNG, in ``DIR/figures``), all at each setting's best learning rate (see :mod:`neurorate.studies.claims`):

* ``curves_<task>.png``: learning curves by gain, one panel per rule (and flossing), mean +- s.e.m. over seeds;
* ``final_loss_vs_gain.png``: final loss vs gain per task and rule, mean +- s.e.m.;
* ``lambda_vs_gain.png``: lambda_max before and after training vs gain;
* ``flossing_vs_gain.png``: final loss with and without flossing by gain (rules with flossing only);
* ``richlazy_vs_gain.png``: relative weight change and representation alignment vs gain;
* ``accuracy_by_profile.png``: final accuracy per backend/hardware profile (only when those axes vary).

Diverged runs (``status == "diverged"``) are left out of every mean, figure and claim and counted per setting in
the report's header (:func:`neurorate.studies.claims.diverged_by_setting`). The header also says which ensembles
of the config have not finished (an interrupted study) and whether ``results.parquet`` had to be rebuilt from
the parts. A corrupt part, ``config.json`` or ``manifest.json`` is a one-line error naming the file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from neurorate.studies.claims import best_runs, check_claims, diverged, diverged_by_setting, run_summaries


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


def _curves(table, best: list[dict], task: str, path: Path) -> Path:
    plt = _plt()
    keep = {r["run_id"] for r in best if r["task"] == task}
    cols = ["run_id", "rule", "flossing", "gain", "iteration", "loss"] + (["neuron"] if "neuron" in table.column_names
                                                                           else [])
    rows = [r for r in table.select(cols).to_pylist() if r["run_id"] in keep]
    for r in rows:
        r["neuron"] = _neuron(r)
    panels = list(dict.fromkeys((r["rule"], r["flossing"], r["neuron"]) for r in rows))
    gains = sorted({r["gain"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, (rule, floss, neuron) in zip(axes[0], panels):
        for gi, g in enumerate(gains):
            by_it = defaultdict(list)
            for r in rows:
                if (r["rule"], r["flossing"], r["neuron"], r["gain"]) == (rule, floss, neuron, g):
                    by_it[r["iteration"]].append(r["loss"])
            its = sorted(by_it)
            m = np.array([_mean(by_it[i]) for i in its])
            s = np.array([_sem(by_it[i]) for i in its])
            color = cmap(gi / max(1, len(gains) - 1))
            ax.plot(its, m, color=color, label=f"g={g:g}")
            ax.fill_between(its, np.maximum(m - s, 1e-12), m + s, color=color, alpha=0.25)
        ax.set_yscale("log")
        ax.set_title(f"{task}: {_label(rule, floss, neuron)}")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("training loss (mean +- s.e.m.)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vs_gain(best: list[dict], fields: list[tuple[str, str]], path: Path, ylabel: str, log: bool = False,
             only_floss_rules: bool = False) -> Path:
    plt = _plt()
    tasks = list(dict.fromkeys(r["task"] for r in best))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
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
                ax.errorbar(g, [_mean(by_gain[x]) for x in g], yerr=[_sem(by_gain[x]) for x in g], marker="o",
                            capsize=3, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("initial gain g")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
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
    all_runs = run_summaries(table)
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
    made = [_curves(table, best_main, t, figs / f"curves_{t}.png") for t in dict.fromkeys(r["task"] for r in runs)]
    made.append(_vs_gain(best_main, [("final_loss", "")], figs / "final_loss_vs_gain.png", "final loss", log=True))
    if any(_finite(r.get("lambda_max_before")) for r in best_main):  # none for spiking-only studies
        made.append(_vs_gain(best_main, [("lambda_max_before", "before"), ("lambda_max_after", "after")],
                             figs / "lambda_vs_gain.png", "lambda_max (1/step)"))
    if any(r["flossing"] for r in runs):
        made.append(_vs_gain(best_main, [("final_loss", "")], figs / "flossing_vs_gain.png", "final loss",
                             log=True, only_floss_rules=True))
    if any(r.get("weight_change") is not None and math.isfinite(r["weight_change"]) for r in runs):
        made.append(_vs_gain([r for r in best_main if not r["flossing"]], [("weight_change", "dW/W0")],
                             figs / "richlazy_vs_gain.png", "relative weight change"))
    if len({(r["backend"], r["profile"]) for r in runs}) > 1:
        made.append(_by_profile(best, figs / "accuracy_by_profile.png"))
    claims = check_claims(all_runs, criterion)
    exploded = exploded_runs(table, runs)
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
             f"input bias {cfg['input_bias']}. {_divergence_text(runs)}{blow_text}"), "",
             (f"Best learning rate per (task, rule, flossing, gain): lowest mean over seeds of `{criterion}` "
             f"(mean loss over the last {cfg['final_fraction']:.0%} of iterations for final_loss)."), "",
             "## Claims (docs/theory.md §6)", "", claims_markdown(claims), "",
             "Tests are one-sided at alpha = 0.05 on the best-lr runs"
             + (" of each [backend/profile] slice. " if multi else ". ")
             + ("With fewer than 3 seeds per gain, every p-value is indicative only." if seeds < 3 else ""), "",
             "## Final loss at the best learning rate (mean +- s.e.m. over seeds)", "",
             "| task | rule | flossing | " + ("backend | profile | rank | " if multi else "") + "gain | best lr | "
             "final loss | s.e.m. | final accuracy | lambda_max before | after | dW/W0 | RA | KA (exact) | "
             "KA (e-prop) |",
             "|---|---|---|" + ("---|---|---|" if multi else "") + "---|---|---|---|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for r in best:
        groups[(r["task"], r["rule"], r["flossing"], r["rank"], r["backend"], r["profile"], r["gain"],
                _neuron(r))].append(r)
    for key, rs in groups.items():
        axes = f"{key[4]} | {key[5]} | {'full' if key[3] is None else key[3]} | " if multi else ""
        lines.append(f"| {key[0]} | {_label(key[1], False, key[7])} | {key[2]} | {axes}{key[6]:g} | {rs[0]['lr']:g} | "
                     f"{_mean([r['final_loss'] for r in rs]):.4g} | {_sem([r['final_loss'] for r in rs]):.2g} | "
                     f"{_fixed(_mean([r.get('final_accuracy') for r in rs]))} | "
                     f"{_fixed(_mean([r['lambda_max_before'] for r in rs]))} | "
                     f"{_fixed(_mean([r['lambda_max_after'] for r in rs]))} | "
                     f"{_fmt(_mean([r.get('weight_change') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('repr_alignment') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('kernel_alignment') for r in rs]))} | "
                     f"{_fmt(_mean([r.get('kernel_alignment_eprop') for r in rs]))} |")
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"
