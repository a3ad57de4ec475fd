"""``neurorate profiles list|show``: the hardware profiles shipped in ``hardware_profiles/``.

The main CLI calls :func:`register`. Bad input raises :class:`~neurorate.errors.NeurorateError`, which the
main CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import json

import typer

from neurorate.hardware.profiles import HardwareProfile, NumberFormat, available_profiles, load_profile, profile_text


def describe_format(fmt: NumberFormat) -> str:
    """A short human label of a number format, e.g. ``int8 (shared_exponent)``, ``int24 (Q.16)``, ``bfloat16``."""
    if fmt.format == "float":
        return str(fmt.dtype)
    sign = "int" if fmt.signed else "uint"
    scale = f"Q.{fmt.frac_bits or 0}" if fmt.scale == "none" else fmt.scale
    return f"{sign}{fmt.bits} ({scale})"


def profile_rows() -> list[dict[str, str]]:
    """One row per shipped profile: name, display name, kind, confidence, weight and state formats."""
    rows = []
    for name in available_profiles():
        p = load_profile(name)
        rows.append({"name": p.name, "display_name": p.display_name, "kind": p.kind, "confidence": p.confidence,
                         "weights": describe_format(p.weights), "state": describe_format(p.state)})
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """Left-aligned plain-text table with a header line."""
    if not rows:
        return "(no profiles)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys).rstrip()]
    lines += ["  ".join(r[k].ljust(widths[k]) for k in keys).rstrip() for r in rows]
    return "\n".join(lines)


def _show(profile: HardwareProfile, text: str, as_json: bool) -> str:
    if as_json:
        return json.dumps(profile.model_dump(mode="json"), indent=2)
    return text.rstrip("\n")


def register(app: typer.Typer) -> None:
    """Add the ``profiles`` sub-command group to ``app``."""
    profiles_app = typer.Typer(no_args_is_help=True, help="Hardware precision profiles (hardware_profiles/*.toml).")

    @profiles_app.command("list")
    def list_profiles(as_json: bool = typer.Option(False, "--json", help="print a JSON list instead of a table")):
        """List the shipped profiles with their confidence and weight/state formats."""
        rows = profile_rows()
        typer.echo(json.dumps(rows, indent=2) if as_json else format_table(rows))

    @profiles_app.command("show")
    def show_profile(
        name: str = typer.Argument(..., help="a profile name (see `neurorate profiles list`) or a .toml path"),
        as_json: bool = typer.Option(False, "--json", help="print the validated fields (with defaults) as JSON"),
    ):
        """Print a profile's TOML (validated first) or, with --json, its validated fields."""
        profile = load_profile(name)
        _, text = profile_text(name)
        typer.echo(_show(profile, text, as_json))

    app.add_typer(profiles_app, name="profiles")
