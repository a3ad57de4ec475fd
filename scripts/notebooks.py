"""Execute the tutorial notebooks of docs/tutorials/ (``make notebooks``; the test tests/integration/test_notebooks.py).

    python scripts/notebooks.py               # every tutorial at full size -> build/tutorials/*.ipynb, with outputs
    python scripts/notebooks.py --small       # the sizes CI runs (NEURORATE_NOTEBOOK_SMALL=1)
    python scripts/notebooks.py docs/tutorials/02-gain-study.ipynb --out build/one

The stored notebooks carry no outputs; the executed copies (and what the tutorials write, under ``tutorial-output/``)
go to ``--out`` (default ``build/tutorials``, git-ignored), so running them never changes a tracked file. Each
notebook runs in a fresh kernel with the output folder as its working directory; the time of each is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"
SMALL_ENV = "NEURORATE_NOTEBOOK_SMALL"


def notebooks() -> list[Path]:
    """The tutorial notebooks, in order."""
    return sorted(TUTORIALS.glob("[0-9][0-9]-*.ipynb"))


def kernel_manager():
    """A kernel manager that starts this Python (``sys.executable`` with ipykernel), whatever kernels named
    "python3" are installed elsewhere: the notebooks run against the neurorate of this environment."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = get_kernel_dict()
            return KernelSpec(resource_dir="", name=kernel_name, argv=spec["argv"],
                              display_name=spec["display_name"], language=spec["language"])

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def execute(path: str | Path, workdir: str | Path, *, small: bool = False, timeout: int = 600,
            save: str | Path | None = None) -> float:
    """Run every cell of the notebook ``path`` in a fresh kernel whose working directory is ``workdir`` (the sizes of
    its "parameters" cell chosen by ``small``), stop at the first error (``nbclient`` raises it with the cell and
    the traceback); ``timeout`` limits each cell in seconds. Save the executed notebook to ``save`` if given.
    Returns the wall time in seconds."""
    import nbclient
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(SMALL_ENV)
    os.environ[SMALL_ENV] = "1" if small else "0"  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(nb, km=kernel_manager(), timeout=timeout,
                                resources={"metadata": {"path": str(workdir)}}).execute()
        took = time.perf_counter() - start
    finally:
        if before is None:
            os.environ.pop(SMALL_ENV, None)
        else:
            os.environ[SMALL_ENV] = before
    if save is not None:
        nbformat.write(nb, str(save))
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: docs/tutorials/*.ipynb)")
    parser.add_argument("--small", action="store_true", help="the small sizes CI runs")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "tutorials",
                        help="folder for the executed notebooks and what they write (default build/tutorials)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    todo = args.notebooks or notebooks()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in todo:
        try:
            took = execute(path, args.out, small=args.small, timeout=args.timeout, save=args.out / Path(path).name)
        except Exception as exc:  # noqa: BLE001 - report which notebook failed, with nbclient's message
            print(f"{path}: FAILED\n{exc}", file=sys.stderr)
            return 1
        total += took
        print(f"{Path(path).name}: {took:.1f} s -> {args.out / Path(path).name}", flush=True)
    print(f"{len(todo)} notebooks in {total:.1f} s ({'small' if args.small else 'full'} sizes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
