"""The single-run figure (``learning_curve.png``): its title says which run it is, and a dashed reference line
(the study figures' values) shows what "not learned" looks like, checked on the figure objects, not on pixels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import neurorate as nr  # noqa: E402
from neurorate.io.plots import learning_curve, learning_curve_figure, reference_line  # noqa: E402
from neurorate.io.results import TrainResult  # noqa: E402
from neurorate.studies.report import CHANCE, ROMO_PLATEAU, reference_loss  # noqa: E402


def _result(task: str, *, profile=None, backend="torch", rule="eprop", lam=(0.031, -0.012), status_diverged=False):
    t = nr.make_task(task, batch_size=4, seed=0)
    spec = nr.NetworkSpec.random(n_in=t.n_in, n_hidden=16, n_out=t.n_out, gain=1.25, seed=7, alpha=t.alpha)
    losses = np.geomspace(0.05, 0.001, 40)
    return TrainResult(losses=losses, accuracy=np.linspace(0.5, 0.95, 40), spec=spec, spec_initial=spec, rule=rule,
                       backend=backend, lr=3e-4, optimizer="adam", iterations=40, diverged=status_diverged,
                       diverged_at=12 if status_diverged else None, lambda_max_before=lam[0],
                       lambda_max_after=lam[1], lyapunov_unit="step",
                       config={"task": t.config(), "rule": rule, "backend": backend, "profile": profile})


def _dashed(ax) -> list[float]:
    return [float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_the_title_names_the_run_and_lambda_carries_its_unit():
    fig = learning_curve_figure([_result("romo", profile="loihi2", backend="lava")])
    title = fig._suptitle.get_text()
    for part in ("romo", "eprop", "N=16", "g=1.25", "seed 7", "adam lr=0.0003", "lava / loihi2",
                 "λ_max per step: before +0.031, after -0.012"):
        assert part in title, (part, title)
    assert "status" not in title  # an ok run says nothing about its status
    diverged = learning_curve_figure([_result("romo", status_diverged=True)])._suptitle.get_text()
    assert "status diverged at iteration 12" in diverged


def test_romo_draws_the_no_memory_plateau_of_the_study_figures():
    fig = learning_curve_figure([_result("romo")])
    ax_loss, ax_acc = fig.axes
    assert _dashed(ax_loss) == [ROMO_PLATEAU]
    assert _dashed(ax_acc) == [CHANCE]
    assert any("no-memory plateau" in t.get_text() for t in ax_loss.get_legend().get_texts())


@pytest.mark.parametrize("task,options", [("2af", {}), ("dms", {}), ("dms", {"timing": "short"})])
def test_a_cross_entropy_task_draws_the_chance_level_of_its_own_timing(task, options):
    r = _result(task)
    if options:
        t = nr.make_task(task, batch_size=4, **options)
        r.config["task"] = t.config()
    want, label = reference_loss({"tasks": [task], "task_options": {task: options}}, task, task)
    assert reference_line(r.config) == (want, label)
    ax_loss = learning_curve_figure([r]).axes[0]
    assert _dashed(ax_loss) == pytest.approx([want])


def test_a_task_without_a_reference_draws_no_line_and_the_png_is_written(tmp_path):
    r = _result("romo")
    r.config["task"] = {**r.config["task"], "name": "my-mse-task"}  # an MSE plugin task: no known plateau
    assert reference_line(r.config) is None
    fig = learning_curve_figure([r])
    assert _dashed(fig.axes[0]) == [] and _dashed(fig.axes[1]) == []
    path = learning_curve([r], tmp_path / "curve.png")
    assert path.stat().st_size > 1000


def test_the_figure_leaves_the_callers_matplotlib_alone(tmp_path):
    """A notebook keeps its backend: the figure is made without pyplot (the backend is never switched to Agg)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        sys.path.insert(0, {str(tmp_path)!r})
        from test_plots_helper import make
        from neurorate.io.plots import learning_curve
        learning_curve([make()], {str(tmp_path / "c.png")!r})
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
    """)
    (tmp_path / "test_plots_helper.py").write_text(textwrap.dedent("""
        import numpy as np
        import neurorate as nr
        from neurorate.io.results import TrainResult

        def make():
            t = nr.make_task("romo", batch_size=2)
            s = nr.NetworkSpec.random(n_in=1, n_hidden=4, n_out=2, seed=0)
            return TrainResult(losses=np.ones(5), accuracy=np.ones(5), spec=s, spec_initial=s, rule="eprop",
                               backend="torch", lr=1e-3, optimizer="adam", iterations=5, config={"task": t.config()})
    """))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
