"""Run summaries, best-learning-rate selection and the statistical checks of claims C1-C6 (docs/theory.md §6).

Every function works on plain run dicts (one per network: the run-level columns of the study table), so the
statistics can be tested on constructed data with known answers.

Best learning rate: for each (task, rule, flossing, rank, backend, profile, gain), the lr with the lowest mean
over seeds of the run's ``final_loss`` (mean training loss over the last 10% of iterations; ``best_lr="auc"``
uses the mean over all iterations). Diverged runs (``status == "diverged"``) are left out of that mean; the lrs
are ranked first by how many seeds diverged, so an lr at which any seed diverged loses to every lr at which fewer
did, and among lrs with as many divergences the lowest mean over the other seeds wins (an lr at which every seed
diverged is chosen only when every lr is so). With selection seeds (the study's ``selection_seeds``) the lr is
chosen on those seeds and the claims are tested on the others (held out).

The claims (docs/study.md, "Claims"): diverged best-lr runs stay in and rank worst; comparisons across gains
pair by seed (:func:`compare`, :func:`trend_test`); every test is one-sided with a one-sided bound (C4a is an
equivalence test, :func:`tost`); Holm's adjustment runs over the whole claims table (:func:`holm`).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

ALPHA = 0.05
RUN_FIELDS = ("run_id", "task", "rule", "neuron", "flossing", "rank", "backend", "profile", "gain", "lr", "seed",
              "final_loss", "auc", "best_loss", "time_to_solve", "unlearned", "alpha", "base_task", "diverged_at",
              "final_accuracy", "lambda_max_before", "lambda_max_flossed", "lambda_max_after",
              "status", "wall_time", "weight_change", "erank_before", "erank_after", "repr_alignment",
              "kernel_alignment", "kernel_alignment_eprop", "spike_rate", "grad_alignment")
SETTING = ("task", "rule", "flossing", "rank", "backend", "profile")


SOLVED_LOSS = 1e-3  # a run has solved the task once its running-mean loss is below this (config solved_loss)
BEST_WINDOW = 50  # iterations of the running mean behind best_loss and time_to_solve (config best_window)


def running_mean(losses, window: int) -> np.ndarray:
    """Trailing running mean over full windows: element ``i`` is the mean of ``losses[i : i + window]`` (the mean
    of all of them when there are fewer than ``window``). A window with a non-finite value is NaN."""
    a = np.asarray(losses, dtype=float)
    if a.size == 0:
        return a
    w = max(1, min(int(window), a.size))
    c = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(a), a, 0.0))])
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(a))])
    out = (c[w:] - c[:-w]) / w
    return np.where(bad[w:] - bad[:-w] > 0, np.nan, out)


def best_so_far(losses, window: int = BEST_WINDOW) -> float:
    """Best-so-far loss: the minimum over training of the running mean of ``window`` iterations (NaN if no window
    is finite). Unlike the final loss it does not forget a solution the run later lost."""
    m = running_mean(losses, window)
    return float(np.nanmin(m)) if np.isfinite(m).any() else math.nan


def time_to_solve(losses, threshold: float = SOLVED_LOSS, window: int = BEST_WINDOW, step: int = 1) -> float:
    """Time to solve: iterations done when the running mean of ``window`` iterations first fell below
    ``threshold`` (the window's last iteration, 1-based; NaN if it never did). ``step``: iterations per element
    of ``losses`` (``log_every`` for a logged curve of block means)."""
    m = running_mean(losses, window)
    hit = np.flatnonzero(m < threshold)
    if hit.size == 0:
        return math.nan
    w = max(1, min(int(window), len(np.asarray(losses))))
    return float((hit[0] + w) * step)


def unlearned(best: float, final: float, threshold: float = SOLVED_LOSS) -> bool:
    """A run *unlearned* when it reached ``best < threshold`` and ended (final loss) above it."""
    return bool(math.isfinite(best) and best < threshold and not (math.isfinite(final) and final < threshold))


def solved(run: dict, threshold: float = SOLVED_LOSS) -> bool:
    """Whether a run solved its task: its best-so-far loss went below ``threshold`` (diverged runs: no)."""
    v = run.get("best_loss")
    return not diverged(run) and v is not None and math.isfinite(v) and v < threshold


def run_summaries(table, solved_loss: float = SOLVED_LOSS, window: int = BEST_WINDOW,
                  alphas: dict[str, float] | None = None,
                  accuracy_targets: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """One dict per run (the run-level columns) from the long-format study table.

    Tables written before a column existed stay readable: ``best_loss``, ``time_to_solve`` and ``unlearned`` are
    computed from the logged curve (block means of ``log_every`` iterations, so the window is rounded to whole
    blocks) and the run gets ``metrics_from_log = True``; ``alpha`` comes from ``alphas`` (task -> leak, from the
    stored config) or is NaN; ``base_task`` is the task.

    ``accuracy_targets`` (task -> the accuracy criterion, :func:`neurorate.tasks.bayes.accuracy_criterion`) adds
    ``accuracy_target`` and ``time_to_accuracy`` to each run of those tasks: the iterations until the running mean
    (``window`` iterations, in whole logged blocks) of the logged decision accuracy first reached the target, up
    to the run's divergence (NaN: never)."""
    cols = [c for c in RUN_FIELDS if c in table.column_names]
    seen: dict[str, dict] = {}
    for row in table.select(cols).to_pylist():
        if row.get("neuron") is None:  # studies from before the neuron axis: rate networks
            row["neuron"] = "rate"
        seen.setdefault(row["run_id"], row)
    runs = list(seen.values())
    old = [r for r in runs if r.get("best_loss") is None]  # parts written before these columns existed
    if old:
        want = {r["run_id"] for r in old}
        curves: dict[str, list] = defaultdict(list)
        for row in table.select(["run_id", "iteration", "loss"]).to_pylist():
            if row["run_id"] in want:
                curves[row["run_id"]].append((row["iteration"], row["loss"]))
        for r in old:
            pts = sorted(curves[r["run_id"]])
            its = np.array([p[0] for p in pts], dtype=float)
            loss = np.array([math.nan if p[1] is None else p[1] for p in pts], dtype=float)
            step = int(its[0]) if its.size and its[0] > 0 else 1
            blocks = max(1, round(window / step))
            r["best_loss"] = best_so_far(loss, blocks)
            r["time_to_solve"] = time_to_solve(loss, solved_loss, blocks, step)
            r["unlearned"] = unlearned(r["best_loss"], r.get("final_loss", math.nan), solved_loss)
            r["metrics_from_log"] = True
    for r in runs:
        r.setdefault("base_task", r["task"])
        if r.get("alpha") is None:
            r["alpha"] = (alphas or {}).get(r["task"], math.nan)
    targets = {t: v for t, v in (accuracy_targets or {}).items() if v is not None and math.isfinite(v)}
    if targets and "accuracy" in table.column_names:
        curves = defaultdict(list)
        want = {r["run_id"] for r in runs if r["task"] in targets}
        for row in table.select(["run_id", "iteration", "accuracy"]).to_pylist():
            if row["run_id"] in want:
                curves[row["run_id"]].append((row["iteration"], row["accuracy"]))
        for r in runs:
            if r["run_id"] in want:
                r["accuracy_target"] = targets[r["task"]]
                r["time_to_accuracy"] = time_to_accuracy(sorted(curves[r["run_id"]]), targets[r["task"]], window,
                                                         r.get("diverged_at"))
    return runs


def time_to_accuracy(curve, target: float, window: int = BEST_WINDOW, diverged_at: int | None = None) -> float:
    """Iterations until the running mean of a logged accuracy curve ``[(iteration, accuracy), ...]`` (block means)
    first reached ``target``: the running mean spans ``window`` iterations in whole blocks, and the time is the
    iteration that ends its last block (NaN if it never did, or only after the run's divergence at
    ``diverged_at``; a block with no decision step, NaN, counts as not reached)."""
    if not curve:
        return math.nan
    its = np.array([c[0] for c in curve], dtype=float)
    acc = np.array([math.nan if c[1] is None else c[1] for c in curve], dtype=float)
    if diverged_at is not None and diverged_at >= 0:
        keep = its <= diverged_at  # blocks that end before the diverged iteration (0-based) is done
        its, acc = its[keep], acc[keep]
        if its.size == 0:
            return math.nan
    step = int(its[0]) if its[0] > 0 else 1
    blocks = max(1, min(round(window / step), its.size))
    m = running_mean(acc, blocks)
    with np.errstate(invalid="ignore"):
        hit = np.flatnonzero(m >= target)
    return float(its[hit[0] + blocks - 1]) if hit.size else math.nan


def diverged(run: dict) -> bool:
    """Whether a run diverged (its ``status``; excluded from means, counted per setting)."""
    return run.get("status") == "diverged"


def diverged_by_setting(runs: Iterable[dict]) -> dict[tuple, int]:
    """``{(task, rule, flossing, rank, backend, profile, gain, lr[, neuron]): diverged runs}`` (settings with at
    least one; the neuron is appended for spiking networks only)."""
    out: dict[tuple, int] = defaultdict(int)
    for r in runs:
        if diverged(r):
            out[_setting_key(r)[:7] + (r["lr"],) + _setting_key(r)[7:]] += 1
    return dict(out)


def _score(run: dict, criterion: str) -> float:
    v = run.get(criterion)
    return math.inf if run.get("status") == "diverged" or v is None or not math.isfinite(v) else float(v)


def best_lr(runs: Iterable[dict], criterion: str = "final_loss",
            selection_seeds: Iterable[int] = ()) -> dict[tuple, float]:
    """``{(task, rule, flossing, rank, backend, profile, gain[, neuron]): best lr}`` by the mean over seeds of
    ``criterion`` (the neuron is appended for spiking networks only, so rate keys keep their original form); with
    ``selection_seeds``, over those seeds only."""
    chosen = set(selection_seeds)
    groups: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if not chosen or r["seed"] in chosen:
            groups[_setting_key(r)][r["lr"]].append(r)

    def rank(rs: list[dict]) -> tuple[int, float]:
        kept = [_score(r, criterion) for r in rs if not diverged(r)]
        return len(rs) - len(kept), float(np.mean(kept)) if kept else math.inf

    return {key: min(sorted(by_lr), key=lambda lr: rank(by_lr[lr])) for key, by_lr in groups.items()}


def best_runs(runs: list[dict], criterion: str = "final_loss", selection_seeds: Iterable[int] = ()) -> list[dict]:
    """The runs at their setting's best learning rate: all seeds, or with ``selection_seeds`` the held-out seeds
    (the others) at the lr chosen on the selection seeds (diverged runs included: callers decide)."""
    chosen = set(selection_seeds)
    best = best_lr(runs, criterion, chosen)
    return [r for r in runs if best.get(_setting_key(r)) == r["lr"] and r["seed"] not in chosen]


def _setting_key(r: dict) -> tuple:
    neuron = r.get("neuron") or "rate"
    return tuple(r[k] for k in SETTING) + (r["gain"],) + (() if neuron == "rate" else (neuron,))


def _cap_infinite(y: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Diverged runs (+inf) ranked worst: replaced by 10x the largest finite absolute value (1 when none is finite).
    Every finite-finite difference is then smaller than any difference between a capped and a finite value, so a
    rank test sees them as the worst; the value itself never enters a mean or an interval."""
    ref = np.asarray(y if reference is None else reference, dtype=float)
    finite = np.abs(ref[np.isfinite(ref)])
    cap = 10 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return np.where(np.isfinite(y), y, cap)


def _verdict(ok: bool, p: float | None, n_min: int) -> str:
    if p is not None and not math.isfinite(p):
        return "insufficient data"
    if n_min < 2:
        return "insufficient data"
    word = "holds" if ok else "not supported"
    return word + (" (indicative: < 3 seeds per gain)" if n_min < 3 else "")


def gain_effect(by_gain: dict[float, list[float]]) -> dict[str, float]:
    """Spearman of value vs gain over all points, Welch t-test smallest vs largest gain (one-sided: small > large),
    Cohen's d, and Kendall's tau (one-sided, decreasing): the independent-samples description of a gain effect
    (the claims use :func:`compare` and :func:`trend_test`, which pair by seed)."""
    from scipy import stats

    gains = list(by_gain)
    x = np.concatenate([[g] * len(v) for g, v in by_gain.items()]) if gains else np.array([])
    y = np.concatenate([by_gain[g] for g in gains]) if gains else np.array([])
    y = _cap_infinite(y)
    out = {"rho": math.nan, "p_rho": math.nan, "t": math.nan, "p_t": math.nan, "d": math.nan, "tau": math.nan,
           "p_tau": math.nan, "diff": math.nan, "ci_lo": math.nan, "ci_hi": math.nan,
           "n_min": min((len(v) for v in by_gain.values()), default=0)}
    if len(gains) < 2 or len(set(y.tolist())) < 2:
        return out
    out["rho"], out["p_rho"] = (float(v) for v in stats.spearmanr(x, y, alternative="less"))
    out["tau"], out["p_tau"] = (float(v) for v in stats.kendalltau(x, y, alternative="less"))
    small, large = np.asarray(by_gain[gains[0]]), np.asarray(by_gain[gains[-1]])
    if len(small) >= 2 and len(large) >= 2:
        small_f, large_f = _cap_infinite(small, y), _cap_infinite(large, y)
        res = stats.ttest_ind(small_f, large_f, equal_var=False, alternative="greater")
        out["t"], out["p_t"] = float(res.statistic), float(res.pvalue)
        pooled = math.sqrt((small_f.var(ddof=1) + large_f.var(ddof=1)) / 2)
        out["d"] = float((small_f.mean() - large_f.mean()) / pooled) if pooled > 0 else math.inf
        out["diff"], out["ci_lo"], out["ci_hi"] = welch_ci(small_f, large_f)
    return out


def welch_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its two-sided Welch t-based confidence interval
    (Welch-Satterthwaite degrees of freedom; the interval of ``scipy.stats.ttest_ind(a, b, equal_var=False)``)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff, diff - half, diff + half


def paired_ci(d, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences ``d`` and its two-sided t-based confidence interval (n - 1 degrees of
    freedom; the interval of ``scipy.stats.ttest_1samp(d, 0)``); NaN bounds for fewer than 2 pairs. The figures'
    error bars; a claim's one-sided test reports a one-sided bound instead (:func:`compare`)."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan
    se = d.std(ddof=1) / math.sqrt(len(d))
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * se
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def per_tau(lam_per_step: float, alpha: float) -> float:
    """A Lyapunov exponent per step of the discrete map expressed per unit time constant tau: one tau is
    ``1 / alpha`` steps, so ``lambda_tau = lambda_step / alpha`` (independent of the leak chosen)."""
    return lam_per_step / alpha if alpha and math.isfinite(alpha) and alpha > 0 else math.nan


# ---------------------------------------------------------------------------------------------- the tests used
def holm(pvalues) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values: sorted ascending, the i-th (0-based) of m is multiplied
    by ``m - i``, made non-decreasing and capped at 1. Entries that are None or NaN are not part of the family and
    are returned as they are. Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha."""
    vals = [None if p is None else float(p) for p in pvalues]
    idx = [i for i, p in enumerate(vals) if p is not None and math.isfinite(p)]
    m = len(idx)
    out: list[float | None] = list(vals)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: vals[k])):
        running = max(running, min(1.0, (m - rank) * vals[i]))
        out[i] = running
    return out


def signed_rank_p(d) -> float:
    """One-sided Wilcoxon signed-rank p-value for ``median(d) > 0`` (scipy; zero differences dropped, Wilcoxon's
    convention): exact when no two absolute differences tie, else from the permutation distribution (exact up to
    13 pairs, 9,999 seeded sign flips beyond). NaN when every difference is 0."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ties = np.unique(np.abs(d)).size < d.size
    method = stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(0)) if ties else "exact"
    return float(stats.wilcoxon(d, alternative="greater", method=method).pvalue)


def rank_sum_p(a, b) -> tuple[float, float]:
    """One-sided Mann-Whitney U p-value for ``a`` stochastically larger than ``b`` from the permutation distribution
    (exact up to 9,999 splits, e.g. 252 at 5 + 5; ties, such as runs that all diverged or never solved, are then
    handled exactly, where scipy's default normal approximation understates p at a few seeds), and the effect size
    P(a > b) + P(a = b) / 2."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    res = stats.mannwhitneyu(a, b, alternative="greater",
                             method=stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(0)))
    return float(res.pvalue), float(res.statistic) / (len(a) * len(b))


def sign_flip_p(d, n_resamples: int = 2 ** 16, seed: int = 0) -> float:
    """One-sided sign-flip permutation p-value for ``mean(d) > 0``: the fraction of the 2^n sign assignments of the
    paired differences whose mean is at least the observed one (exact enumeration up to n = 16; beyond, ``n_resamples``
    seeded random assignments, the observed one counted). NaN for no differences."""
    d = np.asarray(d, dtype=float)
    n = d.size
    if n == 0:
        return math.nan
    obs = d.mean()
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= 16:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)  # every assignment, (2^n, n)
        return float(np.mean((signs * np.abs(d)).mean(1) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, n))
    return float((1 + np.sum((signs * np.abs(d)).mean(1) >= obs - tol)) / (n_resamples + 1))


def tost(x, margin: float) -> dict[str, float]:
    """Two one-sided t-tests (TOST) of equivalence: is the mean of ``x`` within ``(-margin, +margin)``?
    ``p_lower`` tests mean > -margin, ``p_upper`` mean < +margin, and ``p = max(p_lower, p_upper)``: equivalence
    is shown at level alpha when p < alpha, i.e. when the (1 - 2 alpha) confidence interval (``ci_lo``, ``ci_hi``:
    90 % at alpha = 0.05) lies inside the margin."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    out = {"mean": float(x.mean()) if x.size else math.nan, "p_lower": math.nan, "p_upper": math.nan,
           "p": math.nan, "ci_lo": math.nan, "ci_hi": math.nan, "n": int(x.size)}
    if x.size < 2 or np.ptp(x) == 0:
        return out
    out["p_lower"] = float(stats.ttest_1samp(x, -margin, alternative="greater").pvalue)
    out["p_upper"] = float(stats.ttest_1samp(x, margin, alternative="less").pvalue)
    out["p"] = max(out["p_lower"], out["p_upper"])
    half = float(stats.t.ppf(1 - ALPHA, x.size - 1)) * x.std(ddof=1) / math.sqrt(x.size)
    out["ci_lo"], out["ci_hi"] = out["mean"] - half, out["mean"] + half
    return out


def compare(a: dict, b: dict, paired: bool | None = None) -> dict[str, Any]:
    """One-sided test that the values ``a`` are larger (worse: a loss, an area under the loss curve, a number of
    iterations) than the values ``b``: ``{key: value}`` with ``+inf`` for a run ranked worst (diverged, or never
    solved).

    Design: **paired** by key (a seed: the same initial matrix, input and readout weights and batches at every
    gain) when ``a`` and ``b`` have the same keys, at least two (or ``paired=True``); otherwise **independent**
    (``paired=False``, or the keys differ: the row says so). Test: when every value is finite, the t-test (paired t
    on the differences, or Welch's t) with its one-sided 95 % lower confidence bound on the mean difference;
    when any value is infinite the t-test has no value to use, and the rank test decides (Wilcoxon signed-rank on
    the paired differences, or Mann-Whitney U), the infinite values ranked worst (:func:`_cap_infinite`). The other
    test's p is reported too (``p_rank`` or ``p_t``). Returns the p-value ``p`` of the deciding test, its name
    ``test``, ``design``, ``n`` (pairs, or the smaller group), ``diff`` and ``bound`` (finite data), ``d`` (Cohen's
    d: d_z for pairs), ``worse`` (pairs with a > b) or ``p_worse`` (P(a > b), independent), ``inf_a``, ``inf_b``.
    """
    from scipy import stats

    keys_match = bool(a) and set(a) == set(b) and len(a) >= 2
    paired = keys_match if paired is None else (paired and keys_match)
    if paired:
        keys = sorted(a)
        va, vb = np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)
    else:
        va, vb = np.array(list(a.values()), float), np.array(list(b.values()), float)
    out: dict[str, Any] = {"design": "paired" if paired else "independent", "p": math.nan, "p_t": math.nan,
                           "p_rank": math.nan, "diff": math.nan, "bound": math.nan, "d": math.nan,
                           "n": len(va) if paired else min(len(va), len(vb)), "n_a": len(va), "n_b": len(vb),
                           "inf_a": int(np.isinf(va).sum()), "inf_b": int(np.isinf(vb).sum()),
                           "worse": None, "p_worse": math.nan, "keys_differ": bool(a) and bool(b) and not keys_match}
    if out["n"] < 2:
        out["test"] = "paired t-test" if paired else "Welch t-test"
        return out
    both = np.concatenate([va, vb])
    finite = bool(np.isfinite(both).all())
    ca, cb = _cap_infinite(va, both), _cap_infinite(vb, both)
    if paired:
        dd = ca - cb
        out["worse"] = int((dd > 0).sum())
        out["p_rank"] = signed_rank_p(dd)
        if finite and np.ptp(dd) > 0:
            res = stats.ttest_rel(va, vb, alternative="greater")
            out["p_t"] = float(res.pvalue)
            out["diff"], out["bound"] = float(dd.mean()), float(res.confidence_interval(1 - ALPHA).low)
            out["d"] = float(dd.mean() / dd.std(ddof=1))
        elif finite:
            out["diff"] = float(dd.mean())
    else:
        out["p_rank"], out["p_worse"] = rank_sum_p(ca, cb)
        spread = va.var(ddof=1) + vb.var(ddof=1) if len(va) > 1 and len(vb) > 1 else 0.0
        if finite and spread > 0:
            res = stats.ttest_ind(va, vb, equal_var=False, alternative="greater")
            out["p_t"] = float(res.pvalue)
            out["diff"], out["bound"] = float(va.mean() - vb.mean()), float(res.confidence_interval(1 - ALPHA).low)
            out["d"] = float((va.mean() - vb.mean()) / math.sqrt(spread / 2))
        elif finite:
            out["diff"] = float(va.mean() - vb.mean())
    use_t = math.isfinite(out["p_t"])
    out["p"] = out["p_t"] if use_t else out["p_rank"]
    out["test"] = ({True: "paired t-test", False: "Welch t-test"} if use_t else
                   {True: "Wilcoxon signed-rank", False: "Mann-Whitney U"})[paired]
    return out


def trend_test(by_gain: dict[float, dict], increasing: bool = False) -> dict[str, Any]:
    """One-sided test of a monotonic trend of a value with the gain (``increasing`` or decreasing), values ``{gain:
    {seed: value}}`` with ``+inf`` ranked worst. **Paired** (every gain has the same seeds, at least two): Page's L
    test (``scipy.stats.page_trend_test``), the trend test for a blocked design (ranks within each seed across the
    gains; exact without ties within a seed, else its normal approximation), or with two gains :func:`compare`;
    **independent** otherwise: Kendall's tau over all points. Returns ``p``, ``test``, ``design``, ``stat``,
    ``n`` (seeds per gain, the smallest)."""
    from scipy import stats

    gains = sorted(by_gain)
    seeds = [set(v) for v in by_gain.values()]
    n = min((len(s) for s in seeds), default=0)
    out: dict[str, Any] = {"p": math.nan, "stat": math.nan, "n": n}
    if len(gains) < 2 or n < 1:
        out.update(test="trend", design="independent")
        return out
    if all(s == seeds[0] for s in seeds) and n >= 2:
        if len(gains) == 2:
            lo, hi = (by_gain[gains[1]], by_gain[gains[0]]) if increasing else (by_gain[gains[0]], by_gain[gains[1]])
            res = compare(lo, hi, paired=True)
            out.update(p=res["p"], stat=res["diff"], design="paired", test=f"{res['test']} (two gains)")
            return out
        keys = sorted(seeds[0])
        data = np.array([[by_gain[g][k] for g in gains] for k in keys], dtype=float)
        data = _cap_infinite(data.reshape(-1)).reshape(data.shape)
        ranks = np.arange(1, len(gains) + 1) if increasing else np.arange(len(gains), 0, -1)
        ties = any(np.unique(row).size < row.size for row in data)
        if any(np.ptp(row) > 0 for row in data):
            res = stats.page_trend_test(data, predicted_ranks=ranks, method="asymptotic" if ties else "auto")
            out.update(p=float(res.pvalue), stat=float(res.statistic))
        out.update(design="paired", test="Page's L trend test")
        return out
    x = np.concatenate([[g] * len(by_gain[g]) for g in gains])
    y = _cap_infinite(np.concatenate([list(by_gain[g].values()) for g in gains]).astype(float))
    if np.ptp(y) > 0:
        tau, p = stats.kendalltau(x, y, alternative="greater" if increasing else "less")
        out.update(p=float(p), stat=float(tau))
    out.update(design="independent", test="Kendall tau")
    return out


# ---------------------------------------------------------------------------------------------- the claims
def _row(claim, scope, test, statistic, p, n, n_min=None, cond: bool = True, note: str = "",
         verdict: str | None = None) -> dict[str, Any]:
    """A claims-table row. Rows with a p-value enter the Holm family; their verdict is set after the adjustment
    (``cond``: the claim's other conditions); a row with a fixed ``verdict`` ("reported", "insufficient data")
    does not."""
    return {"claim": claim, "scope": scope, "test": test, "statistic": statistic, "p": p, "p_holm": None, "n": n,
            "verdict": verdict, "note": note, "_cond": cond, "_n_min": n if n_min is None else n_min,
            "_fixed": verdict is not None}


def check_claims(runs: list[dict], criterion: str = "final_loss",
                 selection_seeds: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Claims C1-C6 on the best-lr runs, per (rank, backend, profile) slice and neuron type; with more than one
    slice each claim's scope ends in ``[backend/profile]`` (``, rank r``). Spiking networks (no Lyapunov spectra,
    no flossing) get C1, C2, C3 and C6 only.

    Diverged runs are kept and ranked worst (their losses, areas and times count as +inf: :func:`compare`,
    :func:`trend_test`). With ``selection_seeds`` the best lr of each setting and gain is chosen on those seeds and
    the claims are tested on the other seeds (:func:`best_runs`). Every row with a p-value belongs to one family:
    ``p`` is the raw p-value, ``p_holm`` Holm's adjusted one (:func:`holm`), and the verdict "holds" needs
    ``p_holm < 0.05`` (and the claim's other conditions)."""
    if not runs:
        return []
    best = best_runs(runs, criterion, selection_seeds)
    slices = list(dict.fromkeys((r["rank"], r["backend"], r["profile"]) for r in runs))
    claims: list[dict] = []
    for rank, backend, profile in slices:
        part = [r for r in best if (r["rank"], r["backend"], r["profile"]) == (rank, backend, profile)]
        found = []
        for neuron in dict.fromkeys(r.get("neuron", "rate") for r in part):
            suffix = "" if neuron == "rate" else f" ({neuron})"
            found.extend(_neuron_claims([r for r in part if r.get("neuron", "rate") == neuron], suffix))
        if len(slices) > 1:  # several backends/profiles/ranks: name the slice each claim was checked on
            tag = f"{backend}/{profile or 'none'}" + ("" if rank is None else f", rank {rank}")
            for c in found:
                c["scope"] = f"{c['scope']} [{tag}]"
        claims.extend(found)
    return _finish(claims)


def _finish(claims: list[dict]) -> list[dict]:
    """Holm over every row with a p-value, the verdicts, then the C3 summaries from their member rows."""
    adjusted = holm([None if c["_fixed"] else c["p"] for c in claims])
    for c, pa in zip(claims, adjusted):
        if c["_fixed"]:
            continue
        c["p_holm"] = pa
        ok = pa is not None and math.isfinite(pa) and pa < ALPHA and c["_cond"]
        c["verdict"] = _verdict(ok, pa if pa is not None else math.nan, c["_n_min"])
    for c in claims:
        members = c.pop("_members", None)
        if members is None:
            continue
        verdicts = [m["verdict"] for m in members]
        held = sum(v.startswith("holds") for v in verdicts)
        c["statistic"] = f"{held}/{len(members)} hold (after Holm)"
        c["n"] = len(members)
        if members and all(v == "insufficient data" for v in verdicts):
            c["verdict"] = "insufficient data"
        else:
            c["verdict"] = "holds" if members and held == len(members) else "not supported"
    for c in claims:
        for k in ("_cond", "_n_min", "_fixed"):
            c.pop(k, None)
    return claims


LOSS_FIELDS = ("final_loss", "best_loss", "auc")
TIME_FIELDS = ("time_to_solve", "time_to_accuracy")


def _by_gain_seed(runs, field, **where) -> dict[float, dict]:
    """``{gain: {seed: value}}`` for the runs matching ``where``. Losses and areas of a diverged run are +inf; a
    time of a run that diverged or never got there is +inf; other fields leave diverged runs and missing values
    out."""
    out: dict[float, dict] = defaultdict(dict)
    for r in runs:
        if not all(r[k] == v for k, v in where.items()):
            continue
        v = r.get(field)
        if field in LOSS_FIELDS + TIME_FIELDS and (diverged(r) or (field in TIME_FIELDS and not _finite(v))):
            v = math.inf
        elif diverged(r) or not _finite(v):
            continue
        out[r["gain"]][r["seed"]] = float(v)
    return dict(sorted(out.items()))


def _diverged_text(runs, gains, **where) -> str:
    """``"; diverged (ranked worst): 1 of 5 at g=1.5"`` for the gains with diverged runs ("" when none)."""
    parts = []
    for g in gains:
        rs = [r for r in runs if r["gain"] == g and all(r[k] == v for k, v in where.items())]
        k = sum(diverged(r) for r in rs)
        if k:
            parts.append(f"{k} of {len(rs)} at g={g:g}")
    return f"; diverged (ranked worst): {', '.join(parts)}" if parts else ""


def _effect_text(res: dict, g0=None, g1=None) -> str:
    """The effect and the other test of a :func:`compare` result, for the statistic column."""
    at = "" if g0 is None else f" at g={g0:g}"
    if math.isfinite(res["bound"]):
        text = f"diff={res['diff']:.4g} [one-sided 95% bound > {res['bound']:.4g}], d={res['d']:.2f}"
    elif math.isfinite(res["diff"]):
        text = f"diff={res['diff']:.4g}"
    else:
        text = ""
    if res["design"] == "paired":
        text += ("; " if text else "") + f"{res['worse']}/{res['n']} pairs higher{at}"
        other = ("Wilcoxon signed-rank", res["p_rank"]) if res["test"] == "paired t-test" else ("paired t", res["p_t"])
    else:
        text += ("; " if text else "") + f"P(higher{at})={res['p_worse']:.2f}"
        other = ("Mann-Whitney U", res["p_rank"]) if res["test"] == "Welch t-test" else ("Welch t", res["p_t"])
    if math.isfinite(other[1]):
        text += f"; {other[0]} p={other[1]:.3g}"
    if res["design"] == "independent":
        text += "; independent: " + ("the seeds differ between the groups" if res.get("keys_differ")
                                     else "fewer than 2 pairs")
    return text


def _gain_row(claim, scope, by, what, runs, where, tag_test="") -> dict:
    """The smallest gain worse than the largest (one-sided, :func:`compare`) on ``by`` = {gain: {seed: value}}."""
    g0, g1 = min(by), max(by)
    res = compare(by[g0], by[g1])
    means = [np.mean([v for v in by[g].values() if math.isfinite(v)] or [math.nan]) for g in (g0, g1)]
    stat = _effect_text(res, g0, g1) + _diverged_text(runs, (g0, g1), **where)
    return _row(claim, scope, f"{res['test']} ({res['design']} by seed), {what} g={g0:g} > g={g1:g}{tag_test} "
                "(one-sided)", stat, res["p"], res["n"],
                note=f"mean {what} (finite runs) {means[0]:.4g} vs {means[1]:.4g}")


def _trend_row(claim, scope, by, what, runs, where) -> dict:
    res = trend_test(by, increasing=False)
    means = [np.mean([v for v in by[g].values() if math.isfinite(v)] or [math.nan]) for g in by]
    ordered = sum(a >= b for a, b in itertools.pairwise(means))
    stat = (f"{'L' if res['test'].startswith('Page') else 'tau'}={res['stat']:.4g}; {ordered}/{len(means) - 1} "
            f"adjacent gains ordered (means of finite runs)") + _diverged_text(runs, list(by), **where)
    return _row(claim, scope, f"{res['test']} ({res['design']} by seed), {what} decreasing in gain (one-sided)",
                stat, res["p"], res["n"])


def _neuron_claims(runs: list[dict], suffix: str) -> list[dict[str, Any]]:
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    rules = list(dict.fromkeys(r["rule"] for r in runs))
    claims: list[dict] = []
    c3: dict[Any, tuple[list[str], list[dict]]] = {}
    alpha_of = {t: _alpha(runs, t) for t in tasks}
    base = {r["task"]: r.get("base_task") or r["task"] for r in runs}
    for task in tasks:
        for rule in rules:
            where = {"task": task, "rule": rule, "flossing": False}
            if base[task] == "romo":  # C1 and C6: the paper's Romo figures (1B and 5)
                for field, what, tag in (("final_loss", "final loss", ""),
                                         ("best_loss", "best-so-far loss", ", best-so-far")):
                    by = _by_gain_seed(runs, field, **where)
                    if len(by) < 2:
                        continue
                    claims.append(_gain_row("C1", f"{task} {rule}{suffix}{tag}", by, what, runs, where))
                    if len(by) >= 3:
                        claims.append(_trend_row("C6", f"{task} {rule}{suffix}{tag}", by, what, runs, where))
                speed = _time_to_solve_claim(runs, task, rule, suffix)
                if speed is not None:
                    claims.append(speed)
            else:  # C3: the gain effect on learning speed on the other tasks (the paper's Fig. 2)
                rows = _c3_rows(runs, task, rule, suffix)
                claims.extend(rows)
                if rows:
                    key = alpha_of[task] if math.isfinite(alpha_of[task]) else "nan"
                    group = c3.setdefault(key, ([], []))
                    if task not in group[0]:
                        group[0].append(task)
                    group[1].append(rows[0])
        if "bptt" in rules and "eprop" in rules:
            claims.append(_paired_rules(runs, "C2", task, "eprop", "bptt", "e-prop - BPTT final loss > 0", suffix))
        claims.extend(_lyapunov_claims(runs, task, rules))
        for rule in rules:
            if any(r["flossing"] for r in runs if r["task"] == task and r["rule"] == rule):
                claims.extend(_flossing_claims(runs, task, rule))
    for alpha, (group, members) in c3.items():  # once per leak (neurogym default and slower)
        at = "" if alpha == "nan" else f" (alpha={alpha:g})"
        row = _row("C3", ", ".join(group) + suffix + at,
                   "the gain effect on learning speed (area under the loss curve) holds on every (task, rule)",
                   "", None, len(members), verdict="pending")
        row["_members"] = members
        claims.append(row)
    return claims


def _c3_rows(runs, task, rule, suffix) -> list[dict]:
    """C3 on (task, rule): the smallest gain learns more slowly than the largest, as the area under the loss curve
    (the mean training loss over every iteration: the paper's Fig. 2 curves) and as the iterations until the
    running-mean decision accuracy reaches the task's criterion (a fraction of the way from chance to the
    Bayes-optimal accuracy, :func:`neurorate.tasks.bayes.accuracy_criterion`; never = slowest)."""
    where = {"task": task, "rule": rule, "flossing": False}
    rows = []
    by = _by_gain_seed(runs, "auc", **where)
    if len(by) >= 2:
        rows.append(_gain_row("C3", f"{task} {rule}{suffix}, area under the loss curve", by,
                              "area under the loss curve", runs, where))
    targets = {r.get("accuracy_target") for r in runs if r["task"] == task and _finite(r.get("accuracy_target"))}
    times = _by_gain_seed(runs, "time_to_accuracy", **where)
    if targets and len(times) >= 2:
        target = targets.pop()
        g0, g1 = min(times), max(times)
        what = f"iterations to accuracy {target:.3f}"
        if not any(math.isfinite(v) for g in (g0, g1) for v in times[g].values()):
            rows.append(_row("C3", f"{task} {rule}{suffix}, iterations to criterion", f"{what}, g={g0:g} > g={g1:g}",
                             f"no run at g={g0:g} or g={g1:g} reached accuracy {target:.3f}", None,
                             min(len(times[g0]), len(times[g1])), verdict="insufficient data"))
        else:
            row = _gain_row("C3", f"{task} {rule}{suffix}, iterations to criterion", times, what, runs, where)
            reached = [sum(math.isfinite(v) for v in times[g].values()) for g in (g0, g1)]
            row["note"] = (f"reached: {reached[0]}/{len(times[g0])} at g={g0:g}, {reached[1]}/{len(times[g1])} at "
                           f"g={g1:g}; never = slowest")
            rows.append(row)
    return rows


def solve_times(runs, **where) -> dict[float, list[float]]:
    """``{gain: [time to solve over seeds]}`` for the runs matching ``where``; a run that never solved counts as
    ``+inf``, slower than every run that did, and so does a diverged run (ranked worst, as in every claim)."""
    out: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        if all(r[k] == v for k, v in where.items()):
            t = r.get("time_to_solve")
            out[r["gain"]].append(float(t) if _finite(t) and not diverged(r) else math.inf)
    return dict(sorted(out.items()))


def _time_to_solve_claim(runs, task, rule, suffix: str = "") -> dict | None:
    """C1 on the time to solve: the smallest gain needs more iterations than the largest (:func:`compare`; runs that
    never solved or diverged rank slowest, so censoring is respected without inventing a time, and the rank test
    decides whenever one did). Only for a (task, rule) where a run at either extreme gain solved; otherwise the
    final loss is the only evidence (no row)."""
    where = {"task": task, "rule": rule, "flossing": False}
    by = _by_gain_seed(runs, "time_to_solve", **where)
    if len(by) < 2:
        return None
    g0, g1 = min(by), max(by)
    small, large = np.array(list(by[g0].values())), np.array(list(by[g1].values()))
    if not (np.isfinite(small).any() or np.isfinite(large).any()):
        return None

    def median_text(v):
        med = float(np.median(v))
        return "never" if not math.isfinite(med) else f"{med:.0f}"

    stat = (f"median iterations to solve {median_text(small)} at g={g0:g} ({int(np.isfinite(small).sum())}/"
            f"{len(small)} solved) vs {median_text(large)} at g={g1:g} ({int(np.isfinite(large).sum())}/"
            f"{len(large)} solved)")
    res = compare(by[g0], by[g1])
    if res["n"] < 2:
        return _row("C1", f"{task} {rule}{suffix}, time to solve", "iterations to solve", stat, None, res["n"],
                    verdict="insufficient data")
    return _row("C1", f"{task} {rule}{suffix}, time to solve",
                f"{res['test']} ({res['design']} by seed), iterations to solve g={g0:g} > g={g1:g} (one-sided; "
                "never solved or diverged = slowest)",
                f"{stat}; {_effect_text(res, g0, g1)}" + _diverged_text(runs, (g0, g1), **where), res["p"], res["n"])


def _alpha(runs, task) -> float:
    """The leak of ``task``'s networks (NaN when the table does not say)."""
    vals = {r.get("alpha") for r in runs if r["task"] == task}
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return float(vals[0]) if vals else math.nan


def _pairs(runs, field, task, where_a: dict, where_b: dict) -> dict[float, list[tuple[float, float]]]:
    """``{gain: [(a, b) per seed]}``: the runs matching ``where_a`` and ``where_b`` paired by (gain, seed), both
    finite and not diverged (the figures' paired improvements)."""
    index = {}
    for r in runs:
        if r["task"] == task and all(r[k] == v for k, v in where_b.items()):
            index[(r["gain"], r["seed"])] = r
    out: dict[float, list] = defaultdict(list)
    for r in runs:
        if r["task"] == task and all(r[k] == v for k, v in where_a.items()) and (r["gain"], r["seed"]) in index:
            a, b = _score(r, field), _score(index[(r["gain"], r["seed"])], field)
            if math.isfinite(a) and math.isfinite(b):
                out[r["gain"]].append((a, b))
    return dict(sorted(out.items()))


def _paired_rules(runs, claim, task, rule_a, rule_b, what, suffix: str = "") -> dict:
    """C2: ``rule_a`` worse than ``rule_b`` paired by (gain, seed) (:func:`compare`; diverged = worst)."""
    def values(rule):
        by = _by_gain_seed(runs, "final_loss", task=task, rule=rule, flossing=False)
        return {(g, s): v for g, d in by.items() for s, v in d.items()}

    a, b = values(rule_a), values(rule_b)
    res = compare(a, b)
    if res["n"] < 2 or not math.isfinite(res["p"]):
        return _row(claim, task + suffix, f"{what} (paired by gain and seed)", "-", None, res["n"],
                    verdict="insufficient data")
    div_a, div_b = res["inf_a"], res["inf_b"]
    extra = f"; diverged (ranked worst): {div_a} {rule_a}, {div_b} {rule_b}" if div_a or div_b else ""
    return _row(claim, task + suffix, f"{res['test']} ({res['design']} by gain and seed), {what} (one-sided)",
                _effect_text(res) + extra, res["p"], res["n"])


C4A_MARGIN = 0.1  # per tau: the equivalence margin of C4a, |mean lambda_after| < 0.1/tau (0.05/step at alpha 0.5)
C4A_TOL = C4A_MARGIN  # the name of this margin before C4a became an equivalence test


def _lyapunov_claims(runs, task, rules, margin: float = C4A_MARGIN) -> list[dict]:
    out = []
    before: dict[float, dict] = defaultdict(dict)
    for r in runs:
        if r["task"] == task and not r["flossing"] and _finite(r.get("lambda_max_before")):
            before[r["gain"]][r["seed"]] = r["lambda_max_before"]  # the same network under every rule
    if len(before) >= 2:
        before = dict(sorted(before.items()))
        res = trend_test(before, increasing=True)
        out.append(_row("C4b", task, f"{res['test']} ({res['design']} by seed), lambda_before increasing in gain "
                        "(one-sided)", f"{'L' if res['test'].startswith('Page') else 'stat'}={res['stat']:.4g}",
                        res["p"], res["n"]))
    for rule in rules:
        mine = [r for r in runs if r["task"] == task and r["rule"] == rule and not r["flossing"]]
        if not any(_finite(r.get("lambda_max_after")) for r in mine):
            continue
        out.extend(_c4a(runs, task, rule, margin))
        change: dict[float, dict] = defaultdict(dict)
        for r in mine:
            a, b = r.get("lambda_max_after"), r.get("lambda_max_before")
            if not diverged(r) and _finite(a) and _finite(b):
                change[r["gain"]][r["seed"]] = abs(a - b)
        if len(change) >= 2:
            change = dict(sorted(change.items()))
            res = trend_test(change, increasing=False)
            largest_at = max(change, key=lambda g: np.mean(list(change[g].values())))
            left = sum(diverged(r) for r in mine)
            out.append(_row("C4c", f"{task} {rule}", f"{res['test']} ({res['design']} by seed), abs(lambda_after - "
                            "lambda_before) decreasing in gain (one-sided), and the largest mean change at the "
                            "smallest gain", f"stat={res['stat']:.4g}; largest mean change at g={largest_at:g}"
                            + (f"; {left} diverged runs have no lambda_after" if left else ""),
                            res["p"], res["n"], cond=largest_at == min(change)))
    return out


def _c4a(runs, task, rule, margin: float) -> list[dict]:
    """C4a per tau on the networks that solved the task (best-so-far loss below the solved threshold): an
    equivalence test (:func:`tost`) that the mean lambda_after per tau lies within +-``margin``; the unsolved
    ones are reported in a row of their own (not a test of the claim: the paper's networks learned)."""
    rows = [r for r in runs if r["task"] == task and r["rule"] == rule and not r["flossing"]
            and not diverged(r) and _finite(r.get("lambda_max_after"))]
    lam = {id(r): per_tau(r["lambda_max_after"], r.get("alpha", math.nan)) for r in rows}
    if rows and not any(math.isfinite(v) for v in lam.values()):  # no leak recorded: per step as before
        lam = {id(r): r["lambda_max_after"] / 0.5 for r in rows}
    done = [r for r in rows if solved(r)]
    not_done = [r for r in rows if not solved(r)]
    test = f"TOST equivalence, solved networks: mean lambda_after within +-{margin:g}/tau"
    out = []
    if len(done) >= 2:
        vals = np.array([lam[id(r)] for r in done])
        res = tost(vals, margin)
        gains = sorted({r["gain"] for r in done})
        out.append(_row("C4a", f"{task} {rule}", test,
                        f"mean lambda_after={res['mean']:.3f}/tau [90% CI {res['ci_lo']:.3f}, {res['ci_hi']:.3f}], "
                        f"mean abs {np.abs(vals).mean():.3f}, max abs {np.abs(vals).max():.3f}; p(> -{margin:g})="
                        f"{res['p_lower']:.3g}, p(< +{margin:g})={res['p_upper']:.3g}; {len(done)} solved at "
                        f"g={', '.join(f'{g:g}' for g in gains)}", res["p"], len(done)))
    else:
        out.append(_row("C4a", f"{task} {rule}", test,
                        "no network solved the task" if not done else "1 network solved the task", None, len(done),
                        verdict="insufficient data"))
    if not_done:
        vals = np.array([lam[id(r)] for r in not_done])
        out.append(_row("C4a", f"{task} {rule}, unsolved", "reported, not tested: networks that did not solve",
                        f"mean lambda_after={np.nanmean(vals):.3f}/tau (min {np.nanmin(vals):.3f}, max "
                        f"{np.nanmax(vals):.3f}); {len(not_done)} unsolved", None, len(not_done),
                        verdict="reported"))
    return out


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _flossing_claims(runs, task, rule) -> list[dict]:
    """C5 on (task, rule): (1) flossing improves the final loss at the smallest gain (no flossing - flossing > 0,
    paired by seed, :func:`compare`); (2) the gain x flossing interaction: it improves more at the smallest gain
    than at the largest, the difference in differences ``D_s = (nf - f)(g_min) - (nf - f)(g_max)`` per seed > 0
    (a one-sample t-test on D when every run is finite, with the exact sign-flip permutation p beside it; the
    sign-flip permutation test decides when a diverged run is involved, its loss ranked worst)."""
    from scipy import stats

    nf = _by_gain_seed(runs, "final_loss", task=task, rule=rule, flossing=False)
    fl = _by_gain_seed(runs, "final_loss", task=task, rule=rule, flossing=True)
    gains = sorted(set(nf) & set(fl))
    if not gains or len(nf[gains[0]]) < 2:
        return [_row("C5", f"{task} {rule}", "no flossing - flossing final loss > 0", "-", None, 0,
                     verdict="insufficient data")]
    g0, g1 = gains[0], gains[-1]
    res = compare(nf[g0], fl[g0])
    where_div = {"task": task, "rule": rule}
    out = [_row("C5", f"{task} {rule}", f"{res['test']} ({res['design']} by seed), no-floss - floss final loss > 0 at "
                f"g={g0:g} (one-sided)", _effect_text(res) + _diverged_text(runs, (g0,), **where_div),
                res["p"], res["n"])]
    if g1 == g0:
        return out
    seeds = set(nf[g0]) & set(fl[g0]) & set(nf[g1]) & set(fl[g1])
    scope = f"{task} {rule}, gain x flossing"
    what = f"interaction: improvement at g={g0:g} > at g={g1:g}, difference in differences by seed (one-sided)"
    if len(seeds) < 2:
        return out + [_row("C5", scope, what, "fewer than 2 seeds in all four arms", None, len(seeds),
                           verdict="insufficient data")]
    keys = sorted(seeds)
    arms = np.array([[nf[g0][k], fl[g0][k], nf[g1][k], fl[g1][k]] for k in keys], dtype=float)
    finite = bool(np.isfinite(arms).all())
    capped = _cap_infinite(arms.reshape(-1)).reshape(arms.shape)
    dd = (capped[:, 0] - capped[:, 1]) - (capped[:, 2] - capped[:, 3])
    p_perm = sign_flip_p(dd)
    p_t = math.nan
    if finite and np.ptp(dd) > 0:
        t_res = stats.ttest_1samp(dd, 0.0, alternative="greater")
        p_t, bound = float(t_res.pvalue), float(t_res.confidence_interval(1 - ALPHA).low)
    use_t = math.isfinite(p_t)
    p = p_t if use_t else p_perm
    stat = (f"mean D={dd.mean():.4g}" + (f" [one-sided 95% bound > {bound:.4g}]" if use_t else "")
            + f"; {int((dd > 0).sum())}/{len(dd)} seeds improve more at g={g0:g}"
            + (f"; sign-flip permutation p={p_perm:.3g}" if use_t else
               (f"; t-test on D p={p_t:.3g}" if math.isfinite(p_t) else ""))
            + ("" if finite else "; diverged runs ranked worst"))
    test = ("one-sample t-test on D" if use_t else "exact sign-flip permutation test on D") + f", {what}"
    return out + [_row("C5", scope, test, stat, p, len(dd))]
