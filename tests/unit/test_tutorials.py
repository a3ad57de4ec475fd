"""The tutorial notebooks as stored and the documentation site's configuration: notebooks without outputs, a first
code cell tagged "parameters" that reads the small sizes from NEURORATE_NOTEBOOK_SMALL, every notebook in the
tutorials page and in the site's navigation, every page of the navigation present, and every public name of
``import neurorate`` in the API reference page (running the notebooks: tests/integration/test_notebooks.py;
building the site: ``make docs``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import neurorate

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((DOCS / "tutorials").glob("[0-9][0-9]-*.ipynb"))


def test_there_are_the_five_tutorials():
    assert [p.stem for p in NOTEBOOKS] == ["01-first-run", "02-gain-study", "03-your-task-and-rule", "04-hardware",
                                           "05-gradient-alignment"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    stored = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not stored, f"{path.name}: code cells {stored} carry outputs; store notebooks without them"
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "the first code cell is not tagged parameters"
    assert "NEURORATE_NOTEBOOK_SMALL" in "".join(first["source"])
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_every_notebook_is_in_the_tutorials_page_and_the_site_navigation():
    readme = (DOCS / "tutorials" / "README.md").read_text()
    nav = (ROOT / "mkdocs.yml").read_text()
    for path in NOTEBOOKS:
        assert f"]({path.name})" in readme, path.name
        assert f"tutorials/{path.name}" in nav, path.name


def test_every_page_of_the_site_navigation_exists_and_every_doc_page_is_in_it():
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    pages = re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.(?:md|ipynb))\s*$", nav, flags=re.M)
    assert pages, "no pages in the navigation"
    for page in pages:
        assert (DOCS / page).is_file(), page
    listed = set(pages)
    for md in DOCS.glob("*.md"):
        assert md.name in listed, f"docs/{md.name} is not in the navigation of mkdocs.yml"


def test_every_public_name_is_in_the_api_reference():
    text = (DOCS / "reference.md").read_text()
    documented = {line.split(".")[-1].strip() for line in text.splitlines() if line.startswith("::: ")}
    missing = sorted(set(neurorate.__all__) - {"__version__"} - documented)
    assert not missing, f"docs/reference.md lacks {missing}"


def test_the_reference_reads_name_colon_text_entries_as_descriptions():
    """scripts/griffe_docstrings.py (the site's griffe extension): ``name : text`` becomes ``name`` with ``text`` as
    its description, roles become code, prose after the entries becomes a Notes section."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_docstrings", ROOT / "scripts" / "griffe_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = ("Train.\n\nParameters\n----------\nspec : a :class:`NetworkSpec` or a list\n    of them : shared.\n"
           "a, b : two numbers.\nOther parameters are as in :func:`~neurorate.train`.\n\nReturns\n-------\nx : y\n")
    assert module.rewrite(doc).splitlines() == [
        "Train.", "", "Parameters", "----------", "spec", "    a `NetworkSpec` or a list", "    of them : shared.",
        "a, b", "    two numbers.", "Notes", "-----", "Other parameters are as in `train`.", "", "Returns", "-------",
        "x : y"]
