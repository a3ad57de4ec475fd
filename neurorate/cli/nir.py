"""``neurorate export-nir`` and ``neurorate import-nir``: trained networks to and from NIR files (docs/nir.md).

The main CLI calls :func:`register`. Bad input raises :class:`~neurorate.errors.NeurorateError`, which the
main CLI prints as one line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from neurorate.errors import FileFormatError, NeurorateError


def load_network(source: Path):
    """The network in ``source``: a run directory (its ``spec_final.npz``) or a spec ``.npz`` file.

    Spiking networks saved by :func:`neurorate.model.spiking.LIFNetwork.save` are recognised by their header.
    """
    source = Path(source)
    path = source / "spec_final.npz" if source.is_dir() else source
    if not path.is_file():
        hint = " (a run directory must contain spec_final.npz)" if source.is_dir() else ""
        raise FileFormatError(f"{path}: no such spec file{hint}")
    try:
        from neurorate.model import spiking
    except ImportError:  # pragma: no cover - spiking support not installed in this tree
        spiking = None
    if spiking is not None and spiking.is_lif_file(path):
        return spiking.LIFNetwork.load(path)
    from neurorate.model.spec import NetworkSpec

    return NetworkSpec.load(path)


def check_output(out: Path, overwrite: bool = False) -> None:
    """A one-line error unless ``out`` may be written: a directory never, an existing file only with
    ``overwrite`` (``--overwrite``); checked before anything is read or written, so a refused file is untouched."""
    out = Path(out)
    if out.is_dir():
        raise NeurorateError(f"{out} is a directory; give the file to write")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise NeurorateError(f"{out} exists; pass --overwrite to replace it")


def export_nir(source: Path, out: Path, dt: float | None = None, overwrite: bool = False) -> Path:
    """Write the network of ``source`` (run directory or spec ``.npz``) to the NIR file ``out`` (an existing
    ``out`` only with ``overwrite``)."""
    from neurorate.io.nir import write_nir

    check_output(out, overwrite)
    if dt is not None and not dt > 0:
        raise NeurorateError(f"--dt must be positive (seconds), got {dt}")
    return write_nir(load_network(source), out, dt=dt)


def import_nir(source: Path, out: Path, dt: float | None = None, overwrite: bool = False) -> Path:
    """Read the NIR file ``source`` and save the network as a neurorate spec ``.npz`` at ``out`` (an existing
    ``out`` only with ``overwrite``)."""
    from neurorate.io.nir import from_nir

    check_output(out, overwrite)
    if dt is not None and not dt > 0:
        raise NeurorateError(f"--dt must be positive (seconds), got {dt}")
    net = from_nir(Path(source), dt=dt)
    out = Path(out)
    if not out.parent.is_dir():
        raise NeurorateError(f"{out}: the directory {out.parent} does not exist")
    return net.save(out)


def register(app: typer.Typer) -> None:
    """Add ``export-nir`` and ``import-nir`` to ``app``."""

    @app.command("export-nir")
    def export_cmd(
        run_dir: Path = typer.Argument(..., help="run directory (uses spec_final.npz) or a spec .npz file"),
        out: Path = typer.Argument(..., help="NIR file to write (HDF5), e.g. net.nir"),
        dt: float | None = typer.Option(None, help="Euler step in seconds (tau = dt/alpha); default: the "
                                                    "spec's dt, else the nominal 1e-3 s"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists (else refused)"),
    ):
        """Export a trained network to NIR: LI + recurrent Linear (rate) or LIF + recurrent Linear (spiking)."""
        path = export_nir(run_dir, out, dt, overwrite)
        typer.echo(f"wrote {path}")

    @app.command("import-nir")
    def import_cmd(
        nir_file: Path = typer.Argument(..., help="NIR file (HDF5) with one recurrent LI/LIF layer"),
        out: Path = typer.Argument(..., help="spec .npz to write"),
        dt: float | None = typer.Option(None, help="Euler step in seconds for alpha = dt/tau (default: the "
                                                    "file's neurorate.dt, else 1e-3 s)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists (else refused)"),
    ):
        """Import a NIR graph as a neurorate spec .npz (usable as a trained network)."""
        path = import_nir(nir_file, out, dt, overwrite)
        typer.echo(f"wrote {path}")
