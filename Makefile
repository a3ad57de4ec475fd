# Two commands for a fresh machine (Python 3.11): both set up .venv idempotently first.
#   make run   -> trains a network with `neurorate run` on its embedded default and says where results are
#   make test  -> runs the whole test suite (every extra the tests use is installed by scripts/setup.sh)
#   make docs  -> builds the documentation site into site/ (mkdocs build --strict: a broken link fails it)
#   make notebooks -> runs the tutorial notebooks at full size into build/tutorials/ (with their outputs)
.PHONY: setup run test test-fast bench lint docs notebooks

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/neurorate run

test: setup
	OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -q

test-fast: setup
	OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -q -m "not slow"

bench: setup
	OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ensemble.py

lint: setup
	.venv/bin/ruff check neurorate backends tasks tests benchmarks

docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

notebooks: setup
	OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/notebooks.py
