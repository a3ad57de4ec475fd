"""Does the small-gain penalty of e-prop survive Loihi 2's learning engine? (docs/hardware_profiles.md)

The gain study (Romo, e-prop, SGD, batch 1, N = 64, gains 0.5 / 1.0 / 1.5, seeds 0-2) on the torch backend at
full precision and under the engine view (profile ``loihi2-engine``) at the chip's widths and at wider what-if
widths (trace / tag / weight bits), plus the chip's widths with one random number per synapse instead of Lava's
shared one. Each condition is one ensemble of 9 networks; conditions run one after the other.

    OPENBLAS_NUM_THREADS=1 python benchmarks/loihi_engine_gain.py --out results/loihi-engine [--trials 10000]

``--lava-slice TRIALS`` adds single networks (g = 0.5 and 1.5, seed 0) on the Lava loihi graph in fixed point
next to the torch engine view (``<out>/lava-slice.json``: are the weights equal after TRIALS trials?).

Writes ``<out>/<condition>.npz`` (loss and accuracy per trial and network, and each network's divergence trial or
-1), ``<out>/summary.json`` (per condition and gain: mean and sd over the seeds that did not diverge of the last
10 % of trials' loss and accuracy, how many diverged, the penalty acc(1.5) - acc(0.5) with a Welch 95 % CI on the
networks that did not diverge, wall time, the frozen engine scales) and ``docs/figures/loihi-engine/gain.png``
with ``--figure``. A network diverges by the rule of ``neurorate.train`` (``neurorate.training.divergence_iteration``:
a non-finite loss, or 1000x its own best loss so far, never below its floor); its accuracy after divergence means
nothing, so it is counted per gain (``diverged``), never averaged.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from neurorate.backends.torch import TorchBackend
from neurorate.hardware.profiles import load_profile
from neurorate.model.spec import NetworkSpec
from neurorate.tasks.romo import RomoTask
from neurorate.training import baseline_loss, divergence_iteration

GAINS = (0.5, 1.0, 1.5)
SEEDS = (0, 1, 2)
# a wider engine keeps the fraction of a small update: 16 accumulator bits below the LSB and scales down to 2^-16
WIDE = dict(state_frac=16, message_frac=12, frac_bits=16, exponent_min=-16)
CONDITIONS = {
    "float": None,
    "engine-7-8": {},
    "engine-7-8-independent": {"rounding": "independent"},
    "engine-10-12": dict(WIDE, trace_bits=10, tag_bits=12, trace_frac=9),
    "engine-16-24": dict(WIDE, trace_bits=16, tag_bits=24, trace_frac=14),
    "engine-16-24-w16": dict(WIDE, trace_bits=16, tag_bits=24, trace_frac=14, weight_bits=16),
    "engine-7-8-w16": dict(WIDE, weight_bits=16),
}
LABELS = {
    "float": "torch, full precision",
    "engine-7-8": "engine, chip: traces 7, tag 9, weights 9 bits",
    "engine-7-8-independent": "engine, chip widths, independent rounding",
    "engine-10-12": "engine, traces 10, tag 13 bits",
    "engine-16-24": "engine, traces 16, tag 25 bits",
    "engine-16-24-w16": "engine, traces 16, tag 25, weights 17 bits",
    "engine-7-8-w16": "engine, traces 7, tag 9, weights 17 bits",
}


def run(name: str, trials: int, n: int, lr: float, out: Path) -> dict:
    specs = [NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=g, seed=s, activation="relu", input_bias=False)
             for g in GAINS for s in SEEDS]
    over = CONDITIONS[name]
    profile = None
    if over is not None:
        base = load_profile("loihi2-engine")
        profile = base.model_copy(update={"engine": base.engine.model_copy(update=over)})
    t0 = time.perf_counter()
    runs = TorchBackend(dtype="float64").train(specs, RomoTask(batch_size=1, seed=123), "eprop", iterations=trials,
                                               lr=lr, optimizer="sgd", profile=profile, progress=False)
    wall = time.perf_counter() - t0
    loss = np.array([r.losses for r in runs])
    acc = np.array([r.accuracy for r in runs])
    reference = baseline_loss(RomoTask(batch_size=1, seed=123))
    diverged_at = np.array([_diverged_at(r, reference) for r in runs])
    np.savez(out / f"{name}.npz", loss=loss, acc=acc, gains=np.repeat(GAINS, len(SEEDS)),
             seeds=np.tile(SEEDS, len(GAINS)), diverged_at=diverged_at)
    return dict(label=LABELS[name], wall_s=round(wall, 1), trials=trials, n=n, lr=lr,
                **summarise(loss, acc, diverged_at),
                engine=runs[0].extra.get("engine") if over is not None else None)


def _diverged_at(run, reference: float) -> int:
    """A network's divergence trial by neurorate.train's rule (and the backend's own non-finite check), or -1."""
    ours = divergence_iteration(run.losses, reference=reference)
    found = [v for v in (run.diverged_at if run.diverged else None, ours) if v is not None]
    return min(found) if found else -1


def summarise(loss: np.ndarray, acc: np.ndarray, diverged_at: np.ndarray) -> dict:
    """Per gain (networks ordered gain-major, ``len(SEEDS)`` per gain): mean and sd of the last 10 % of trials' loss
    and accuracy over the networks that did not diverge (``diverged_at < 0``), how many diverged, and the penalty
    acc(largest gain) - acc(smallest gain) with a Welch 95 % CI on the networks that did not diverge (NaN where a
    side has fewer than 2)."""
    trials = loss.shape[1]
    tail = max(1, trials // 10)
    fin_acc, fin_loss = acc[:, -tail:].mean(axis=1), loss[:, -tail:].mean(axis=1)
    ok = np.asarray(diverged_at) < 0
    per_gain, kept = {}, []
    for i, g in enumerate(GAINS):
        sl = np.zeros(len(ok), dtype=bool)
        sl[i * len(SEEDS):(i + 1) * len(SEEDS)] = True
        a, lo_ = fin_acc[sl & ok], fin_loss[sl & ok]
        kept.append(a)
        per_gain[str(g)] = dict(acc_mean=_stat(a, np.mean), acc_sd=_stat(a, np.std, ddof=1),
                                loss_mean=_stat(lo_, np.mean), loss_sd=_stat(lo_, np.std, ddof=1),
                                acc_runs=a.round(4).tolist(), diverged=int((sl & ~ok).sum()), n=int(sl.sum()))
    hi, lo = kept[-1], kept[0]
    if len(hi) < 2 or len(lo) < 2:
        diff = float(hi.mean() - lo.mean()) if len(hi) and len(lo) else float("nan")
        return dict(per_gain=per_gain, penalty=dict(diff=diff, ci95=[float("nan"), float("nan")]))
    diff = float(hi.mean() - lo.mean())
    se2 = hi.var(ddof=1) / len(hi) + lo.var(ddof=1) / len(lo)
    if se2 > 0:
        dof = se2 ** 2 / ((hi.var(ddof=1) / len(hi)) ** 2 / (len(hi) - 1) + (lo.var(ddof=1) / len(lo)) ** 2
                          / (len(lo) - 1))
        half = float(stats.t.ppf(0.975, dof) * np.sqrt(se2))
    else:
        half = 0.0
    return dict(per_gain=per_gain, penalty=dict(diff=diff, ci95=[diff - half, diff + half]))


def _stat(v: np.ndarray, fn, **kw) -> float:
    """``fn(v)`` as a float, NaN when ``v`` has too few values (none; one for an sd)."""
    return float(fn(v, **kw)) if len(v) > kw.get("ddof", 0) else float("nan")


def lava_slice(trials: int, n: int, lr: float, gains=(0.5, 1.5), seed: int = 0) -> dict:
    """The chip-width engine view of single networks on the torch backend and on the Lava loihi graph in fixed point
    (``backends/lava/loihi_engine.py``), the same trials: final weights equal?, losses, wall times."""
    import copy

    import torch

    from neurorate.backends.lava import loihi_engine
    from neurorate.backends.torch import engine_profile as ep
    from neurorate.backends.torch import stack

    task = RomoTask(batch_size=1, seed=123)
    res = {}
    for g in gains:
        spec = NetworkSpec.random(n_in=1, n_hidden=n, n_out=2, gain=g, seed=seed, activation="relu",
                                  input_bias=False)
        ens = stack([spec], torch.float64, torch.device("cpu"))
        nets = ep.EngineNetworks(ens, load_profile("loihi2-engine").engine, "eprop")
        x, t, k = (a[None, :, 0] for a in task.batch(0))
        nets.calibrate(x, t, k, np.array([lr]), np.maximum(k.sum(), 1.0)[None])
        start = copy.deepcopy(nets)
        t0 = time.perf_counter()
        loss_t = np.zeros(trials)
        for i in range(trials):
            x, t, k = task.batch(i)
            y = nets.trial(x[None, :, 0], t[None, :, 0], k[None, :, 0])[0]
            loss_t[i] = 0.5 * float((k[:, 0] * (y - t[:, 0]) ** 2).sum()) / max(float(k[:, 0].sum()), 1.0)
        wall_t = time.perf_counter() - t0
        loss_l = np.zeros((1, trials))
        t0 = time.perf_counter()
        lava = loihi_engine.train(start, task, trials, losses=loss_l)[0]
        wall_l = time.perf_counter() - t0
        same = {name: bool(np.array_equal(lava[name], getattr(nets, name)[0]))
                for name in ("w_in", "w_rec", "w_out", "b", "b_out")}
        res[str(g)] = dict(trials=trials, weights_equal=same, losses_equal=bool(np.array_equal(loss_l[0], loss_t)),
                           loss_first=float(loss_t[:10].mean()), loss_last=float(loss_t[-10:].mean()),
                           wall_torch_s=round(wall_t, 2), wall_lava_s=round(wall_l, 1))
        print("lava slice g", g, res[str(g)], flush=True)
    return res


def figure(out: Path, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for res in summary.values():
        m = [res["per_gain"][str(g)]["acc_mean"] for g in GAINS]
        s = [res["per_gain"][str(g)]["acc_sd"] for g in GAINS]
        ax1.errorbar(GAINS, m, yerr=s, marker="o", capsize=3, label=res["label"])
    ax1.axhline(0.5, color="grey", ls="--", lw=0.8)
    ax1.set_xlabel("initial gain g")
    ax1.set_ylabel("decision accuracy, last 10 % of trials")
    ax1.set_title(f"Romo, e-prop, SGD, batch 1, N = 64 (n = {len(SEEDS)} seeds, mean +- sd)", fontsize=9)
    ax1.legend(fontsize=7)
    for name, style in (("float", "-"), ("engine-7-8", ":"), ("engine-16-24-w16", "--")):
        if name not in summary:
            continue
        data = np.load(out / f"{name}.npz")
        ok = data["diverged_at"] < 0 if "diverged_at" in data else np.ones(len(data["acc"]), dtype=bool)
        for i, g in enumerate(GAINS):
            sl = slice(i * len(SEEDS), (i + 1) * len(SEEDS))
            if not ok[sl].any():
                continue
            acc = data["acc"][sl][ok[sl]].mean(axis=0)  # the networks that did not diverge
            w = max(1, acc.size // 50)
            smooth = np.convolve(acc, np.ones(w) / w, mode="valid")
            ax2.plot(np.arange(smooth.size) + w, smooth, style, color=f"C{i}",
                     label=f"g = {g}, {name}", lw=1)
    ax2.axhline(0.5, color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("trial")
    ax2.set_ylabel("accuracy (running mean over the seeds that did not diverge)")
    ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--figure", type=Path, default=None, help="write the figure here (from the saved results)")
    ap.add_argument("--lava-slice", type=int, default=0, metavar="TRIALS",
                    help="also run single networks (g = 0.5, 1.5) for TRIALS trials on the Lava loihi graph in fixed "
                         "point next to the torch engine view (summary key 'lava-slice')")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in [c for c in args.conditions.split(",") if c]:
        if name not in CONDITIONS:
            raise SystemExit(f"error: unknown condition {name!r}; choose from {', '.join(CONDITIONS)}")
        summary[name] = run(name, args.trials, args.hidden, args.lr, args.out)
        summary_path.write_text(json.dumps(summary, indent=1))
        pg = summary[name]["per_gain"]
        print(name, summary[name]["wall_s"], "s;", ", ".join(f"g {g}: {v['acc_mean']:.3f} ({v['diverged']} of "
                                                           f"{v['n']} diverged)" for g, v in pg.items()), flush=True)
    if args.lava_slice:
        slice_path = args.out / "lava-slice.json"
        slice_path.write_text(json.dumps(lava_slice(args.lava_slice, args.hidden, args.lr), indent=1))
    if args.figure is not None:
        figure(args.out, summary, args.figure)


if __name__ == "__main__":
    main()
