"""The tutorial notebooks (docs/tutorials/*.ipynb) run top to bottom, at the small sizes of their "parameters"
cell (NEURORATE_NOTEBOOK_SMALL=1), each in a fresh kernel within its time budget: a tutorial that breaks fails
``make test``. ``make notebooks`` runs them at full size (docs/testing.md, "Tutorial notebooks")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 120
"""Seconds one notebook may take at its small sizes (each took 7-12 s on the 2-core development machine; the
budget leaves room for a busy CI machine and a first compilation of the CPU kernels)."""


def _runner():
    spec = importlib.util.spec_from_file_location("neurorate_notebooks", ROOT / "scripts" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


@pytest.mark.parametrize("notebook", RUNNER.notebooks(), ids=lambda p: p.stem)
def test_tutorial_runs_small_within_its_budget(notebook, tmp_path):
    executed = tmp_path / notebook.name
    took = RUNNER.execute(notebook, tmp_path, small=True, timeout=BUDGET_S, save=executed)
    assert took < BUDGET_S, f"{notebook.name} took {took:.0f} s at its small sizes (budget {BUDGET_S} s)"
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell was not executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 1, f"{notebook.name} showed no figure"
