"""A griffe extension for the documentation site's API reference (mkdocs.yml, ``make docs``).

neurorate's docstrings are numpy-style with the description where numpy puts the type (``name : what it is``) and
Sphinx roles (``:class:`Task```). Before mkdocstrings parses a docstring, this moves each such description onto the
entry's own lines (``name`` then the indented text, which numpy reads as a description without a type) and turns the
roles into code spans, and starts a Notes section where prose follows the entries (numpy would read its words
as parameters), so the reference shows "spec: a NetworkSpec or ..." rather than that text as a type. The
docstrings themselves stay as they are.
"""

from __future__ import annotations

import re

import griffe

SECTIONS = ("Parameters", "Attributes", "Other Parameters")
ROLE = re.compile(r":(?:class|func|data|meth|mod|attr|exc|obj):`(~?)([^`]+)`")
NAME = re.compile(r"^[\w*][\w*, ]*$")  # an entry without text (its description on the next lines)
ENTRY = re.compile(r"^(?P<indent>\s*)(?P<names>[\w*][\w*, ]*?) : (?P<text>.+)$")


def _role(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def rewrite(doc: str) -> str:
    """The docstring with ``name : text`` entries of its parameter-like sections split and roles as code."""
    lines = doc.splitlines()
    out: list[str] = []
    section, base = None, ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if stripped and following and set(following) == {"-"} and len(following) >= 3:
            section, base = stripped, line[: len(line) - len(line.lstrip())]
        match = ENTRY.match(line) if section in SECTIONS else None
        at_base = stripped and line.startswith(base) and not line[len(base):].startswith((" ", "\t"))
        if section in SECTIONS and at_base and not match and not NAME.match(stripped) and set(stripped) != {"-"}:
            out += [f"{base}Notes", f"{base}-----"]  # prose after the entries: numpy would read its words as names
            section = "Notes"
        if match and match["indent"] == base:  # an entry, not a continuation line
            out.append(f"{match['indent']}{match['names']}")
            out.append(f"{match['indent']}    {match['text']}")
        else:
            out.append(line)
    return ROLE.sub(_role, "\n".join(out))


class NeurorateDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded objects with :func:`rewrite`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002 - griffe's hook signature
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
