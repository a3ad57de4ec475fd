"""Property-based fuzz suite over every input a user gives neurorate (docs/testing.md, "Fuzz suite").

The options of ``neurorate run``, ``lyapunov``, ``profiles show``, ``study``, ``report``, ``import-nir`` and
``export-nir``, study config TOML, hardware-profile TOML and saved spec (``.npz``) / NIR files are drawn from
strategies that mix valid values, boundary values (0, negative, nan, inf, huge, empty strings, paths with ``..``,
unicode) and wrong types. Every drawn input must either work or end with exit code 2 and exactly one ``error:``
line on stderr: never a traceback, never a usage box, never a file outside the chosen output directory, and
nothing at all created when it fails. Each case runs in a fresh sandbox directory as the current directory;
everything created in the sandbox is compared with what the command was allowed to write.

The CLI is called in-process (``neurorate.cli.main``) with tiny sizes (hidden <= 8, iterations <= 3,
batch <= 4); the inputs that ask for huge resources run in a subprocess under a memory limit and a timeout.
Examples are derandomized (the same cases on every run, no example database); ``NEURORATE_FUZZ_SCALE`` multiplies
the number of examples, ``NEURORATE_FUZZ_RANDOM=1`` draws new ones on each run and ``NEURORATE_FUZZ_SHRINK=0``
reports failures as drawn, without shrinking them to a minimal case.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402

pytestmark = pytest.mark.fuzz

# Hypothesis keeps caches in ./.hypothesis by default: keep them out of the repository.
_HOME = tempfile.mkdtemp(prefix="neurorate-fuzz-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

SCALE = float(os.environ.get("NEURORATE_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("NEURORATE_FUZZ_RANDOM", "") not in ("", "0")
SHRINK = os.environ.get("NEURORATE_FUZZ_SHRINK", "1") not in ("", "0")
PHASES = tuple(Phase) if SHRINK else (Phase.explicit, Phase.reuse, Phase.generate)


def fuzz(examples: int):
    """Hypothesis settings of one fuzz test: ``examples`` cases (times NEURORATE_FUZZ_SCALE), no deadline."""
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, derandomize=not RANDOM,
                    database=None, print_blob=RANDOM, phases=PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ------------------------------------------------------------------------------------------------ harness
@dataclass
class Outcome:
    """What one CLI call did: exit code, output, and the paths it created in the sandbox."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    created: list[Path] = field(default_factory=list)


def _tree(root: Path) -> set[Path]:
    return {Path(dirpath) / name for dirpath, dirs, files in os.walk(root) for name in (*dirs, *files)}


class Sandbox:
    """A fresh directory tree ``root/a/cwd`` (``..`` and ``../..`` stay inside ``root``) used as the current
    directory of one CLI call."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="neurorate-fuzz-")).resolve()
        self.cwd = self.root / "a" / "cwd"
        self.cwd.mkdir(parents=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path(self, relative: str | Path) -> Path:
        """``relative`` (as the CLI sees it, from the sandbox's cwd) as an absolute, normalised path."""
        return Path(os.path.normpath(self.cwd / relative))

    def call(self, argv: list[str]) -> Outcome:
        """``neurorate <argv>`` in-process with the sandbox as cwd. An exception other than SystemExit (a
        traceback for the user) propagates, so hypothesis reports it with its origin."""
        from neurorate.cli import main

        before = _tree(self.root)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(list(argv))
                except SystemExit as exc:
                    code = 0 if exc.code is None else exc.code
        finally:
            os.chdir(old)
        created = sorted(_tree(self.root) - before)
        if currently_in_test_context():  # --hypothesis-show-statistics tells how many cases worked
            hypothesis.event(f"{argv[0]}: exit {code}")
        return Outcome(list(argv), code, out.getvalue(), err.getvalue(), created)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def expect_clean(res: Outcome, allowed: list[Path]) -> None:
    """The fuzz property: exit 0 with files only under ``allowed``, or exit 2 with one ``error:`` line and nothing
    created. Each assertion is its own line so that hypothesis reports each kind of failure separately."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if res.code == 0:
        stray = [str(p) for p in res.created if not _under(p, allowed)
                 and not (p.is_dir() and any(p in a.parents for a in allowed))]  # parents of --out may be made
        assert not stray, f"{res.argv}: exit 0 but wrote outside {[str(a) for a in allowed]}: {stray[:4]}"
        return
    assert "Traceback" not in res.stderr, f"{res.argv}: traceback: {lines[-1:]}"
    assert res.code == 2, f"{res.argv}: exit code {res.code!r} (want 0 or 2); stderr: {lines[-3:]}"
    assert not any(line.startswith("Usage:") for line in lines), f"{res.argv}: a usage box, not one line: {lines}"
    assert lines and lines[-1].startswith("error: "), f"{res.argv}: exit 2 without an 'error:' line: {lines[-3:]}"
    assert len(lines) == 1, f"{res.argv}: more than one line on stderr: {lines[:4]}"
    assert not res.created, f"{res.argv}: exit 2 but created {[str(p) for p in res.created[:4]]}"


# ------------------------------------------------------------------------------------------------ strategies
JUNK = ["", " ", "0", "-1", "nan", "inf", "-inf", "1e308", "1.5", "abc", "..", "../x", "~", "é", "日本", "\u202e",
        "--", "-x", "None", "true", "[1]", "1,2"]
"""Strings every option meets now and then: empty, boundary numbers, wrong types, paths, unicode."""

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


def mostly(valid: st.SearchStrategy, bad: st.SearchStrategy, one_in: int = 10) -> st.SearchStrategy:
    """``valid`` most of the time, ``bad`` about once in ``one_in`` draws (so that a case with several options
    still often works and the success path is fuzzed too)."""
    return rarely(one_in).flatmap(lambda odd: bad if odd else valid)


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``one_in`` draws (hypothesis favours the ends of a range, so the odd value sits in the
    middle of it)."""
    return st.integers(0, 2 * one_in - 1).map(lambda i: i == one_in)


def choice(valid, *, one_in: int = 10) -> st.SearchStrategy[str]:
    """Mostly ``valid`` (a list of strings or a strategy), now and then a boundary/wrong-type string or text."""
    base = st.sampled_from(valid) if isinstance(valid, (list, tuple)) else valid
    return mostly(base, st.sampled_from(JUNK) | text, one_in)


def ints(lo: int, hi: int) -> st.SearchStrategy[str]:
    """A small valid integer, or 0/negative/float/wrong-type."""
    return mostly(st.integers(lo, hi).map(str),
                  st.sampled_from(["0", "-1", "-2147483648", "2.0", "3e0"]) | st.sampled_from(JUNK) | text)


BAD_FLOATS = st.one_of(st.sampled_from(["0", "-0.0", "nan", "inf", "-inf", "-1", "1e308", "1e-320", "5e-324",
                                        "1e3", "abc", "", "1,5", "0x1p3", "NaN", "+inf", "Infinity"]),
                       st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr))
FLOATS = mostly(st.sampled_from(["1", "0.5", "1.5", "3", "2e-3", "0.01", "0.1"]), BAD_FLOATS, 6)
"""A number option: a plausible value, or about one in six a boundary, non-finite, tiny, huge or non-number."""

NONFINITE = {"nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def is_nonfinite(value: str) -> bool:
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def out_paths(sandbox_abs: bool = True) -> st.SearchStrategy[str]:
    """``--out`` values: fresh relative names, nested, ``..``, ``.``, empty, an existing file, unicode, an
    absolute path inside the sandbox (``@ABS/``) and an unwritable one."""
    names = st.sampled_from(["o", "out/run", "x y", "ü-ñ", "日本/r", "../sib", "../../top", "a/../b", "./c",
                             "@ABS/abs"])
    specials = st.sampled_from(["", ".", "..", "taken", "taken/sub", "/proc/forbidden/x", "old"])
    return mostly(names, specials, 5)


def resolve_out(sb: Sandbox, value: str) -> str:
    """The argv form of an ``out_paths`` value (``@ABS/`` becomes the sandbox root)."""
    return str(sb.root / value[len("@ABS/"):]) if value.startswith("@ABS/") else value


def prepare(sb: Sandbox) -> None:
    """Things a case may name: a file ``taken`` and a non-empty directory ``old`` in the cwd."""
    (sb.cwd / "taken").write_text("not a directory\n")
    (sb.cwd / "old").mkdir()
    (sb.cwd / "old" / "keep.txt").write_text("kept\n")


def _profiles() -> list[str]:
    from neurorate.hardware.profiles import available_profiles

    return available_profiles()


@st.composite
def run_argv(draw):
    """Options of ``neurorate run`` (each present with some probability), sizes tiny."""
    opts: dict[str, str | None] = {}
    maybe = lambda: draw(st.booleans())  # noqa: E731
    opts["--hidden"] = draw(ints(1, 8))
    opts["--iterations"] = draw(ints(1, 3))
    opts["--batch"] = draw(ints(1, 4))
    if maybe():
        opts["--backend"] = draw(choice(["torch"] * 8 + ["lava", "tpu", "Torch"]))
    if maybe():
        opts["--task"] = draw(mostly(st.sampled_from(["romo", "2af", "dms"]),
                                     choice(["neurogym:nope", "neurogym:", "ROMO", "romo:x"], one_in=3), 8))
    if maybe():
        opts["--rule"] = draw(choice(["bptt", "eprop", "eprop_online", "eprop_random", "rflo", "trunc1"]))
    if maybe():
        opts["--gain"] = draw(FLOATS)
    if maybe():
        opts["--lr"] = draw(FLOATS)
    if maybe():
        opts["--seed"] = draw(mostly(st.sampled_from(["0", "1", "7"]),
                                     st.sampled_from(["-1", str(2**32), str(2**63), str(2**64), "x", ""]), 5))
    if maybe():
        opts["--optimizer"] = draw(choice(["adam", "sgd"]))
    if draw(rarely(5)):
        opts["--profile"] = draw(choice(_profiles() + ["loihi9", "/etc/passwd", "../x.toml", "taken"]))
    if draw(rarely(4)):
        opts["--floss-iterations"] = draw(ints(0, 2))
        opts["--floss-mode"] = draw(choice(["state", "onestep", "full"]))
        if maybe():
            opts["--floss-every"] = draw(ints(1, 2))
    if maybe():
        opts["--form"] = draw(choice(["A", "B", "C"]))
    if maybe():
        opts["--activation"] = draw(choice(["relu", "tanh", "identity"]))
    if draw(rarely(4)):
        opts["--tau"] = draw(mostly(st.sampled_from(["1", "3", "200", "400"]), BAD_FLOATS, 4))
    if maybe():
        opts["--device"] = draw(choice(["auto", "cpu", "cpu", "auto", "cuda"]))
    if draw(rarely(6)):
        opts["--neuron"] = draw(choice(["rate", "lif", "alif", "izhikevich"]))
    flags = draw(st.lists(st.sampled_from(["--json", "--no-lyapunov", "--lyapunov", "--input-bias",
                                           "--no-input-bias", "--no-progress"]), max_size=3, unique=True))
    if "--lyapunov" not in flags:  # Lyapunov spectra cost most of a tiny run: measure them now and then
        flags.append("--no-lyapunov")
    out = draw(st.none() | out_paths())
    if draw(rarely(25)):  # an unknown option or a stray argument
        flags.append(draw(st.sampled_from(["--bogus", "stray", "--hidden"])))
    return opts, flags, out


def _argv(command: list[str], opts: dict, flags: list[str], out: str | None, sb: Sandbox) -> list[str]:
    argv = list(command)
    for k, v in opts.items():
        argv += [k, v]
    if out is not None:
        argv += ["--out", resolve_out(sb, out)]
    return argv + flags


def allowed_run_dirs(sb: Sandbox, out: str | None) -> list[Path]:
    """Where a run may write: its ``--out`` or, without one, under ``runs/`` of the cwd."""
    if out is None:
        return [sb.cwd / "runs"]
    return [sb.path(resolve_out(sb, out))]


def probe(out: str | None = "o", flags: tuple[str, ...] = ("--no-lyapunov",), **opts: str):
    """An explicit ``neurorate run`` case (tiny sizes unless given): options as ``gain="inf"``, ``floss_every=1``."""
    base = {"--hidden": "4", "--iterations": "2", "--batch": "2"}
    base.update({"--" + k.replace("_", "-"): v for k, v in opts.items()})
    return base, list(flags), out


@fuzz(30)
@hypothesis.given(case=run_argv())
def test_run_options(case):
    """``neurorate run``: any options work or end in one ``error:`` line; non-finite numbers and an empty
    ``--out`` are refused."""
    opts, flags, out = case
    with Sandbox() as sb:
        prepare(sb)
        res = sb.call(_argv(["run"], opts, flags, out, sb))
        expect_clean(res, allowed_run_dirs(sb, out))
        nonfinite = [k for k in ("--gain", "--lr", "--tau") if k in opts and is_nonfinite(opts[k])]
        assert not (nonfinite and res.code == 0), f"{res.argv}: non-finite {nonfinite} accepted"
        assert not (out == "" and res.code == 0), f"{res.argv}: an empty --out was accepted"
        if res.code == 0 and "--json" in flags:
            summary = json.loads(res.stdout)
            assert sb.path(summary["run_dir"]) == allowed_run_dirs(sb, out)[0] or out is None


@st.composite
def lyapunov_argv(draw):
    opts: dict[str, str] = {"--hidden": draw(ints(1, 8)), "--streams": draw(ints(1, 3))}
    maybe = lambda: draw(st.booleans())  # noqa: E731
    seeds = mostly(st.sampled_from(["0", "3"]), st.sampled_from(["-1", str(2**63), "x"]), 5)
    for key, strat in (("--gain", FLOATS), ("--task", choice(["romo", "2af", "dms", "neurogym:nope"])),
                       ("--seed", seeds), ("--k", ints(1, 10)),
                       ("--steps", ints(1, 40)), ("--units", choice(["step", "tau", "second"])),
                       ("--form", choice(["A", "B", "C"])), ("--activation", choice(["tanh", "relu", "identity"]))):
        if maybe():
            opts[key] = draw(strat)
    flags = draw(st.lists(st.sampled_from(["--json"]), max_size=1))
    return opts, flags, draw(st.none() | out_paths())


@fuzz(25)
@hypothesis.given(case=lyapunov_argv())
def test_lyapunov_options(case):
    """``neurorate lyapunov``: any options work or end in one ``error:`` line, files only in ``--out``."""
    opts, flags, out = case
    with Sandbox() as sb:
        prepare(sb)
        res = sb.call(_argv(["lyapunov"], opts, flags, out, sb))
        expect_clean(res, allowed_run_dirs(sb, out))
        assert not ("--gain" in opts and is_nonfinite(opts["--gain"]) and res.code == 0), \
            f"{res.argv}: a non-finite gain was accepted"
        assert not (out == "" and res.code == 0), f"{res.argv}: an empty --out was accepted"


# ------------------------------------------------------------------------------------------------ TOML files
def toml_value(v) -> str:
    """One TOML value (strings, numbers incl. nan/inf, booleans, arrays, inline tables; TOML has no null, so
    None, a value of the wrong type wherever it is drawn, is written as an empty inline table)."""
    if v is None:
        return "{}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: dict, prefix: str = "") -> str:
    """A TOML document of ``data``: scalars first, then one ``[table]`` per nested dict."""
    scalars = [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    lines = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{json.dumps(str(k))}" if prefix else json.dumps(str(k))
            lines.append(to_toml(v, name) if v else f"[{name}]")
    return "\n".join(lines) + "\n"


SCALARS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 8, 24, 30, 48, 49, 64, 2**63, -(2**63), 10**30, 0.0, -0.5, 0.5, 1e308,
                     math.nan, math.inf, -math.inf, True, False, "", "none", "int", "float", "fixed", "nearest",
                     "shared_exponent", "float16", "linear", "..", "/abs", "é", [], [1], ["a"], {}]),
    st.integers(-100, 100), text)


def mutate(data: dict, draw, rounds: int) -> dict:
    """``data`` (nested dicts) with up to ``rounds`` keys deleted, set to a drawn value or added."""
    data = json.loads(json.dumps(data))
    for _ in range(rounds):
        tables = [data] + [v for v in _tables(data) if v is not data]
        table = draw(st.sampled_from(tables))
        keys = sorted(table)
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if action == "delete" and keys:
            del table[draw(st.sampled_from(keys))]
        elif action == "set" and keys:
            key = draw(st.sampled_from(keys))
            table[key] = draw(mostly(_near(table[key]), SCALARS, 3))
        else:
            table[draw(st.sampled_from(["bogus", "Name", "bits", "extra.key"]))] = draw(SCALARS)
    return data


def _near(value) -> st.SearchStrategy:
    """A value of the same type as ``value`` (a plausible edit of a config field)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(max(0, value - 8), value + 8)
    if isinstance(value, float):
        return st.sampled_from([value, value * 2, value / 2, 0.0, 1.0])
    return st.just(value)


def _tables(d: dict):
    yield d
    for v in d.values():
        if isinstance(v, dict):
            yield from _tables(v)


class Blob(bytes):
    """File contents with a short description as its repr (hypothesis prints it for a failing case)."""

    recipe: str = ""

    def __repr__(self) -> str:
        return f"<{self.recipe or 'file'}: {len(self)} bytes>"

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis' pretty printer
        p.text(repr(self))


class Described:
    """A drawn object with a short description as its repr."""

    def __init__(self, value, recipe: str):
        self.value, self.recipe = value, recipe

    def __repr__(self) -> str:
        return f"<{self.recipe or 'unchanged'}>"

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis' pretty printer
        p.text(repr(self))


def blob(raw: bytes, recipe: list[str] | str) -> Blob:
    out = Blob(raw)
    out.recipe = recipe if isinstance(recipe, str) else "; ".join(recipe) or "unchanged"
    return out


def mangle_text(text_: str, draw) -> tuple[bytes, str]:
    """Raw damage to a file's text (truncated, an invalid UTF-8 byte, a NUL, a BOM, or none) and its name."""
    raw = text_.encode("utf-8")
    how = draw(mostly(st.just("keep"), st.sampled_from(["truncate", "not-utf8", "nul", "bom"]), 5))
    if how == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "not-utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\xff\xfe" + raw[at:]
    elif how == "nul":
        raw = raw + b"\x00"
    elif how == "bom":
        raw = b"\xef\xbb\xbf" + raw
    return raw, ("" if how == "keep" else f"file: {how}; ")


def _profile_data(name: str) -> dict:
    import tomllib

    from neurorate.hardware.profiles import profile_text

    return tomllib.loads(profile_text(name)[1])


@st.composite
def profile_files(draw):
    """A profile TOML: a shipped one with a few fields deleted/changed/added, sometimes damaged as text."""
    name = draw(st.sampled_from(_profiles()))
    data = mutate(_profile_data(name), draw, draw(st.sampled_from([0, 1, 1, 2])))
    stem = draw(mostly(st.just(name), st.sampled_from([str(data.get("name", name)), "other", "é"]), 6))
    raw, damage = mangle_text(to_toml(data), draw)
    return stem, blob(raw, f"{damage}{name} with {_changes(_profile_data(name), data)}")


def _changes(old: dict, new: dict, prefix: str = "") -> str:
    """The keys that differ between two nested dicts, as ``a.b = value`` / ``no a.b``."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        where = f"{prefix}{key}"
        if key not in new:
            out.append(f"no {where}")
        elif isinstance(old.get(key), dict) and isinstance(new[key], dict):
            inner = _changes(old[key], new[key], where + ".")
            if inner != "no change":
                out.append(inner)
        elif key not in old or old[key] != new[key] or type(old[key]) is not type(new[key]):
            if not (isinstance(new[key], float) and math.isnan(new[key]) and old.get(key) != old.get(key)):
                out.append(f"{where} = {new[key]!r}")
    return ", ".join(out) or "no change"


def profile_case(name: str, damage: str = "", **changes) -> tuple[str, Blob]:
    """An explicit profile case: shipped profile ``name`` with dotted-key ``changes`` (``state__frac_bits=30``)."""
    data = _profile_data(name)
    for key, value in changes.items():
        *tables, last = key.split("__")
        target = data
        for t in tables:
            target = target.setdefault(t, {})
        target[last] = value
    return name, blob(to_toml(data).encode(), f"{name} with {_changes(_profile_data(name), data)}")


def _formats(profile) -> list:
    fmts = [profile.weights, profile.state, profile.traces, profile.messages]
    fmts += [profile.weights.for_matrix(n) for n in profile.weights.overrides]
    return fmts


@fuzz(80)
@hypothesis.given(case=profile_files(), as_json=st.booleans())
def test_profile_toml(case, as_json):
    """``neurorate profiles show <file.toml>``: a mutated profile is shown or refused in one line naming it; an
    accepted profile has consistent formats (fractional bits below the width)."""
    stem, raw = case
    with Sandbox() as sb:
        path = sb.cwd / f"{stem}.toml"
        path.write_bytes(raw)
        res = sb.call(["profiles", "show", str(path)] + (["--json"] if as_json else []))
        expect_clean(res, [])
        if res.code == 2:
            assert path.name in res.stderr, f"{res.argv}: the error does not name the file: {res.stderr!r}"
        else:
            from neurorate.hardware.profiles import load_profile

            for fmt in _formats(load_profile(path)):  # docs/hardware_profiles.md: fractional bits fit the width
                assert fmt.format == "float" or not fmt.signed or fmt.bits >= 2, \
                    f"{res.argv}: accepted a signed {fmt.bits}-bit format (no magnitude bit)"
                if fmt.format != "float" and fmt.frac_bits is not None:
                    top = fmt.bits - 1 if fmt.signed else fmt.bits
                    assert fmt.frac_bits <= top, f"{res.argv}: accepted frac_bits={fmt.frac_bits} for a " \
                                                 f"{'signed' if fmt.signed else 'unsigned'} {fmt.bits}-bit format"


@fuzz(30)
@hypothesis.given(name=choice(["loihi2", "int8", "fp32", "xylo"]) | st.sampled_from(
    ["loihi9", "../hardware_profiles/loihi2", "/etc/passwd", "/dev/null", "taken", "old", "x.toml", ".toml"]))
def test_profile_names(name):
    """``neurorate profiles show <name>``: shipped names work, anything else is one line."""
    with Sandbox() as sb:
        prepare(sb)
        expect_clean(sb.call(["profiles", "show", name]), [])


# ------------------------------------------------------------------------------------------------ studies
TINY_STUDY = {"study": {"name": "fz", "tasks": ["romo"], "rules": ["eprop"], "gains": [1.0], "lrs": [1e-3],
                        "seeds": [0], "iterations": 2, "hidden": 4, "batch": 2, "lyapunov": False,
                        "lyapunov_k": 2, "richlazy": False, "probe_batch": 2, "log_every": 1, "floss_iterations": 1,
                        "floss_k": 2}}

STUDY_VALUES = {
    "name": st.sampled_from(["fz", "", " ", ".", "..", "../../escape", "a/b", "@ABS", "~x", "é", "x\ty", "results"]),
    "tasks": st.sampled_from([["romo"], ["2af"], ["dms"], [], ["nope"], ["romo", "romo"], "romo", [1]]),
    "rules": st.sampled_from([["bptt"], ["eprop", "rflo"], ["trunc1"], [], ["hebb"], "eprop", [None]]),
    "gains": st.sampled_from([[0.0], [1.0, 1.5], [], [math.nan], [math.inf], [-1.0], ["1"], 1.0, [1e6]]),
    "lrs": st.sampled_from([[1e-3], [0.0], [-1e-3], [math.nan], [math.inf], [], [1e3], [True]]),
    "seeds": st.sampled_from([[0], [0, 1], [-1], [], [2**63], [1.5], ["0"]]),
    "iterations": st.sampled_from([1, 3, 0, -1, 2.5, "2", True]),
    "hidden": st.sampled_from([1, 2, 8, 0, -4, 4.0, "4", None]),
    "batch": st.sampled_from([1, 4, 0, -1, "2"]),
    "flossing": st.sampled_from([[True], [False, True], [], [1], "yes"]),
    "floss_iterations": st.sampled_from([0, 1, 2, -1]),
    "ranks": st.sampled_from([[0], ["full"], [1], [9], [-1], [], ["x"], [1.5]]),
    "backends": st.sampled_from([["torch"], ["tpu"], [], ["torch", "torch"], "torch"]),
    "profiles": st.sampled_from([["none"], ["int8"], ["loihi9"], ["/etc/passwd"], [], ["none", "none"]]),
    "neurons": st.sampled_from([["rate"], ["lif"], ["alif"], ["izh"], []]),
    "tau": st.sampled_from([{}, {"romo": 0.0}, {"romo": -1.0}, {"romo": math.nan}, {"dms": 1.0}, {"romo": 1e-9}]),
    "form": st.sampled_from(["A", "B", "C", "D", 1]),
    "activation": st.sampled_from(["relu", "tanh", "sigmoid", {"romo": "relu"}, {"romo": "x"}, ""]),
    "device": st.sampled_from(["cpu", "cuda", "auto", "tpu"]),
    "dtype": st.sampled_from(["float32", "float64", "float16"]),
    "final_fraction": st.sampled_from([0.1, 1.0, 0.0, 2.0, math.nan]),
    "lif": st.sampled_from([{}, {"threshold": 0.0}, {"kappa": 1.0}, {"bogus": 1}]),
}


@st.composite
def study_configs(draw):
    """A tiny study config with a few fields changed (from a per-field pool), deleted or added; sometimes
    without its ``[study]`` table, empty, or damaged as text."""
    data = json.loads(json.dumps(TINY_STUDY))
    table = data["study"]
    for key in draw(st.lists(st.sampled_from(sorted(STUDY_VALUES)), max_size=3, unique=True)):
        table[key] = draw(STUDY_VALUES[key])
    shape = draw(st.sampled_from(["ok"] * 8 + ["no-table", "empty", "empty-table", "extra-top", "random"]))
    if shape == "no-table":
        data = table
    elif shape == "empty":
        data = {}
    elif shape == "empty-table":
        data = {"study": {}}
    elif shape == "extra-top":
        data["other"] = {"x": 1}
    elif shape == "random":
        data = mutate(data, draw, 2)
    return Described(data, f"{_changes(TINY_STUDY, data)}"), draw(st.sampled_from(["keep"] * 9 + ["half, not utf-8"]))


def _study_text(data: dict, sb: Sandbox) -> str:
    table = data.get("study")
    if isinstance(table, dict) and table.get("name") == "@ABS":
        table["name"] = str(sb.root / "abs-study")
    return to_toml(data)


def study_case(**changes) -> tuple[Described, str]:
    """An explicit study case: the tiny config with ``changes`` in its ``[study]`` table."""
    data = json.loads(json.dumps(TINY_STUDY))
    data["study"].update(changes)
    return Described(data, _changes(TINY_STUDY, data)), "keep"


@fuzz(30)
@hypothesis.given(case=study_configs(),
                  override=st.fixed_dictionaries({}, optional={
                      "--backend": choice(["torch", "lava,torch", "tpu", ","]),
                      "--profile": choice(["none", "int8", "loihi9", "none,none"]),
                      "--neurons": choice(["rate", "lif", "x"]),
                      "--iterations": ints(1, 2)}),
                  out=st.none() | out_paths(), report=st.integers(0, 7))
def test_study_config(case, override, out, report):
    """``neurorate study --config <file.toml>``: any config and overrides run or end in one ``error:`` line,
    writing only into ``--out`` (or ``results/<name>`` of the cwd)."""
    described, damage = case
    with Sandbox() as sb:
        prepare(sb)
        text_ = _study_text(json.loads(json.dumps(described.value)), sb)
        raw = text_.encode() if damage == "keep" else text_.encode()[: len(text_) // 2] + b"\xff"
        (sb.cwd / "cfg.toml").write_bytes(raw)
        argv = ["study", "--config", "cfg.toml", "--workers", "1", "--no-progress"]
        argv += ["--report"] if report == 0 else ["--no-report"]
        for k, v in override.items():
            argv += [k, v]
        if out is not None:
            argv += ["--out", resolve_out(sb, out)]
        res = sb.call(argv)
        allowed = [sb.cwd / "results"] if out is None else [sb.path(resolve_out(sb, out))]
        expect_clean(res, allowed)
        assert not (out == "" and res.code == 0), f"{res.argv}: an empty --out was accepted"


@fuzz(20)
@hypothesis.given(config=st.sampled_from(["quick", "paper", "lif", "hardware", "nope", "", "..", "/etc/passwd",
                                          "taken", "old", "cfg.toml", "missing.toml"]),
                  out=out_paths(), resume=st.booleans())
def test_study_config_names(config, out, resume):
    """``neurorate study --config <name>`` with an embedded name, an unknown one or a path that is not a config,
    and an invalid override (``--iterations 0``): refused in one line before anything is written."""
    with Sandbox() as sb:
        prepare(sb)
        (sb.cwd / "cfg.toml").write_text("[study]\nname = 'x'\nhidden = 0\n")
        argv = ["study", "--config", config, "--iterations", "0", "--out", resolve_out(sb, out), "--workers", "1"]
        res = sb.call(argv + (["--resume"] if resume else []))
        assert res.code == 2, f"{res.argv}: --iterations 0 was not refused (exit {res.code})"
        expect_clean(res, [])


@pytest.fixture(scope="module")
def study_dir():
    """A finished tiny study directory (with its report), built once for the report fuzzing."""
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml(TINY_STUDY))
        res = sb.call(["study", "--config", "cfg.toml", "--workers", "1", "--no-progress", "--no-report",
                       "--out", "st"])
        assert res.code == 0, res.stderr
        keep = Path(tempfile.mkdtemp(prefix="neurorate-fuzz-study-"))
        shutil.copytree(sb.cwd / "st", keep / "st")
    yield keep / "st"
    shutil.rmtree(keep, ignore_errors=True)


def _damage_file(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(raw[: len(raw) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "junk":
        path.write_bytes(b"\xff\x00junk" * 7)
    elif how == "json-list":
        path.write_text("[1, 2]")
    elif how == "json-wrong":
        data = json.loads(raw) if path.suffix == ".json" else None
        if isinstance(data, dict) and data:
            data[sorted(data)[0]] = None
            path.write_text(json.dumps(data))
        else:
            path.write_text('{"x": 1}')


@fuzz(15)
@hypothesis.given(target=st.sampled_from(["config.json", "manifest.json", "results.parquet", "part", "results",
                                          "none"]),
                  how=st.sampled_from(["delete", "truncate", "empty", "junk", "json-list", "json-wrong"]),
                  second=st.booleans())
def test_report_on_damaged_study(study_dir, target, how, second):
    """``neurorate report <dir>`` on a study directory with a deleted, truncated or corrupt file: a report or one
    line naming the problem; it writes only inside the study directory."""
    with Sandbox() as sb:
        d = sb.cwd / "st"
        shutil.copytree(study_dir, d)
        parts = sorted((d / "results").glob("*.parquet"))
        if target == "part":
            _damage_file(parts[0], how)
        elif target == "results":
            shutil.rmtree(d / "results")
        elif target != "none":
            _damage_file(d / target, how)
        if second and target != "config.json":
            _damage_file(d / "config.json", "json-wrong")
        res = sb.call(["report", "st"])
        expect_clean(res, [d])


@fuzz(15)
@hypothesis.given(directory=st.sampled_from(["", ".", "..", "missing", "taken", "old", "/proc/forbidden", "é",
                                             "old/keep.txt"]))
def test_report_on_non_study(directory):
    """``neurorate report`` on something that is not a study directory: one line, nothing written."""
    with Sandbox() as sb:
        prepare(sb)
        expect_clean(sb.call(["report", directory]), [])


# ------------------------------------------------------------------------------------------------ spec / NIR
def _spec(seed: int = 0, n: int = 3):
    from neurorate.model.spec import NetworkSpec

    return NetworkSpec.random(n_in=2, n_hidden=n, n_out=2, gain=1.0, seed=seed, dt=0.01)


ARRAY_VALUES = st.sampled_from(["transpose", "scalar", "empty", "3d", "int", "bool", "complex", "str", "bytes",
                                "nan", "inf", "huge", "drop", "extra"])
META_VALUES = st.sampled_from([0, -1, 0.5, 1.0, 2.0, math.nan, "A", "C", "Z", "", "tanh", "relu", "x", None, True,
                               [], [1], {}, {"seed": "x"}, 1e308, "0.5"])


def _bad_array(arr: np.ndarray, how: str) -> np.ndarray:
    return {
        "transpose": lambda: arr.T.copy(), "scalar": lambda: np.array(1.0), "empty": lambda: np.zeros((0, 2)),
        "3d": lambda: arr.reshape(1, *arr.shape) if arr.ndim else arr, "int": lambda: arr.astype(np.int64),
        "bool": lambda: arr > 0, "complex": lambda: arr + 1j, "str": lambda: arr.astype(str),
        "bytes": lambda: np.array([b"ab", b"c"]), "nan": lambda: arr * np.nan, "inf": lambda: arr + np.inf,
        "huge": lambda: arr * 1e308 * 10,
    }[how]()


@st.composite
def spec_files(draw):
    """A saved spec ``.npz``: valid, with arrays or header fields changed, the header not JSON / not a dict, or
    the file damaged byte-wise."""
    spec = _spec(draw(st.integers(0, 3)))
    arrays = {n: getattr(spec, n) for n in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")}
    meta = spec.meta()
    recipe: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["array", "meta", "meta", "header"]))
        if what == "array":
            name, how = draw(st.sampled_from(sorted(arrays))), draw(ARRAY_VALUES)
            recipe.append(f"{name}: {how}")
            if how == "drop":
                arrays.pop(name, None)
            elif how == "extra":
                arrays["bogus"] = np.zeros(2)
            elif name in arrays:
                with np.errstate(all="ignore"):
                    arrays[name] = _bad_array(arrays[name], how)
        elif what == "meta" and isinstance(meta, dict):
            key = draw(st.sampled_from(["alpha", "form", "activation", "dt", "init", "bogus", "w_rec",
                                        "neurorate_lif", "neurorate_spec_version"]))
            if draw(st.booleans()) and key in meta:
                del meta[key]
                recipe.append(f"header: no {key}")
            else:
                meta[key] = draw(META_VALUES)
                recipe.append(f"header: {key} = {meta[key]!r}")
        else:
            meta = draw(st.sampled_from(["not json", "[1, 2]", "3", "null", '"x"', "\xff"]))
            recipe.append(f"header text {meta!r}")
    header = json.dumps(meta) if isinstance(meta, dict) else meta
    buf = io.BytesIO()
    header_arr = draw(st.sampled_from(["uint8"] * 6 + ["float", "missing", "2d"]))
    h = np.frombuffer(header.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if header_arr != "uint8":
        recipe.append(f"header array: {header_arr}")
    extra = {"__meta__": h} if header_arr == "uint8" else {"__meta__": h.astype(float)} if header_arr == "float" \
        else {"__meta__": h.reshape(1, -1)} if header_arr == "2d" else {}
    np.savez(buf, **extra, **arrays)
    raw = buf.getvalue()
    damage = draw(st.sampled_from(["keep"] * 5 + ["truncate", "flip", "zip-junk", "empty"]))
    if damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]
    elif damage == "zip-junk":
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as zf:
            zf.writestr("__meta__.npy", b"junk")
        raw = zbuf.getvalue()
    elif damage == "empty":
        raw = b""
    if damage != "keep":
        recipe.append(f"file: {damage}")
    return blob(raw, recipe)


def spec_case(**meta_changes) -> Blob:
    """An explicit saved-spec case: a valid spec whose header has ``meta_changes``."""
    spec = _spec()
    buf = io.BytesIO()
    header = json.dumps({**spec.meta(), **meta_changes}).encode()
    arrays = {n: getattr(spec, n) for n in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")}
    np.savez(buf, __meta__=np.frombuffer(header, dtype=np.uint8), **arrays)
    return blob(buf.getvalue(), [f"header: {k} = {v!r}" for k, v in meta_changes.items()])


@fuzz(80)
@hypothesis.given(raw=spec_files(), dt=st.none() | FLOATS, as_dir=st.booleans())
def test_export_nir_of_spec_files(raw, dt, as_dir):
    """``neurorate export-nir <spec.npz | run dir> net.nir``: any saved spec exports or gives one line; what
    exports imports back to the same weights."""
    pytest.importorskip("nir")
    with Sandbox() as sb:
        if as_dir:
            (sb.cwd / "run").mkdir()
            (sb.cwd / "run" / "spec_final.npz").write_bytes(raw)
            source = "run"
        else:
            (sb.cwd / "spec.npz").write_bytes(raw)
            source = "spec.npz"
        argv = ["export-nir", source, "net.nir"] + ([] if dt is None else ["--dt", dt])
        res = sb.call(argv)
        expect_clean(res, [sb.cwd / "net.nir"])
        assert not (dt is not None and is_nonfinite(dt) and res.code == 0), f"{argv}: a non-finite --dt accepted"
        if res.code == 0:
            back = sb.call(["import-nir", "net.nir", "back.npz"])
            expect_clean(back, [sb.cwd / "back.npz"])
            assert back.code == 0, f"an exported network does not import: {back.stderr!r}"
            from neurorate.cli.nir import load_network
            from neurorate.model.spec import NetworkSpec

            original, again = load_network(sb.cwd / source), load_network(sb.cwd / "back.npz")
            if isinstance(original, NetworkSpec):
                for name in ("w_in", "w_rec", "w_out", "b", "b_out"):
                    np.testing.assert_array_equal(getattr(again, name), getattr(original, name), err_msg=name)


NIR_EDITS = ["tau", "r", "v_leak", "w_rec", "w_in", "w_out", "bias", "drop-node", "drop-edge", "add-edge",
             "meta-form", "meta-activation", "meta-alpha", "meta-dt", "meta-init", "meta-feedback", "meta-nominal",
             "lif", "nested"]
NIR_VALUES = st.sampled_from(["zero", "negative", "nan", "inf", "short", "2d", "scalar", "str", "huge", "empty"])


def _bad_param(arr, how: str):
    arr = np.asarray(arr, dtype=np.float64)
    return {"zero": lambda: np.zeros_like(arr), "negative": lambda: -np.abs(arr) - 1, "nan": lambda: arr * np.nan,
            "inf": lambda: arr + np.inf, "short": lambda: arr.reshape(-1)[:1].copy(),
            "2d": lambda: arr.reshape(1, -1) if arr.ndim == 1 else arr.T.copy(), "scalar": lambda: np.array(2.0),
            "str": lambda: np.array(["a"] * max(1, arr.size)), "huge": lambda: arr * 1e308 * 10,
            "empty": lambda: np.zeros((0,))}[how]()


@st.composite
def nir_graphs(draw):
    """A NIR graph of a tiny rate network with a few nodes, edges, parameters or metadata changed."""
    import nir

    from neurorate.io.nir import to_nir

    graph = to_nir(_spec(draw(st.integers(0, 3))), dt=draw(st.sampled_from([None, 0.01, 1e-3])))
    nodes, edges, meta = dict(graph.nodes), list(graph.edges), dict(graph.metadata)
    recipe = []
    for edit in draw(st.lists(st.sampled_from(NIR_EDITS), max_size=2, unique=True)):
        how = draw(NIR_VALUES)
        recipe.append(f"{edit}: {how}")
        li = nodes.get("li")
        with np.errstate(all="ignore"), contextlib.suppress(Exception):  # an edit nir refuses is skipped
            if edit in ("tau", "r", "v_leak") and isinstance(li, nir.LI):
                params = {k: getattr(li, k) for k in ("tau", "r", "v_leak")}
                params[edit] = _bad_param(params[edit], how)
                nodes["li"] = nir.LI(**params, metadata=li.metadata)
            elif edit in ("w_rec", "w_in", "w_out") and edit in nodes:
                node = nodes[edit]
                w = _bad_param(node.weight, how)
                nodes[edit] = nir.Affine(weight=w, bias=node.bias) if isinstance(node, nir.Affine) \
                    else nir.Linear(weight=w)
            elif edit == "bias" and "w_in" in nodes:
                nodes["w_in"] = nir.Affine(weight=nodes["w_in"].weight, bias=_bad_param(nodes["w_in"].bias, how))
            elif edit == "drop-node":
                victim = draw(st.sampled_from(sorted(nodes)))
                nodes.pop(victim)
                edges = [e for e in edges if victim not in e]
            elif edit == "drop-edge" and edges:
                edges.pop(draw(st.integers(0, len(edges) - 1)))
            elif edit == "add-edge" and nodes:
                edges.append((draw(st.sampled_from(sorted(nodes))), draw(st.sampled_from(sorted(nodes)))))
            elif edit.startswith("meta-"):
                key = "neurorate." + edit[5:].replace("nominal", "dt_nominal")
                value = draw(st.sampled_from(["Z", "", "abc", "{", "[1]", "nan", 0.0, -1.0, 2.0, math.nan, 7]))
                if edit == "meta-feedback":
                    value = _bad_param(meta.get(key, np.zeros((3, 2))), how)
                meta[key] = value
                recipe[-1] = f"{key} = {value!r}"
                if isinstance(li, nir.LI) and draw(st.booleans()):
                    nodes["li"] = nir.LI(tau=li.tau, r=li.r, v_leak=li.v_leak, metadata={**li.metadata, key: value})
            elif edit == "lif" and isinstance(li, nir.LI):
                n = np.asarray(li.tau).size
                nodes["li"] = nir.LIF(tau=li.tau, r=li.r, v_leak=li.v_leak,
                                      v_threshold=_bad_param(np.ones(n), how) if draw(st.booleans()) else np.ones(n))
            elif edit == "nested":
                nodes["sub"] = nir.NIRGraph(nodes={"i": nir.Input(input_type={"input": np.array([1])})}, edges=[])
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
    except Exception:  # noqa: BLE001 - the nir library refuses to build this graph: not a file a user can have
        hypothesis.reject()
    return Described(graph, "; ".join(recipe))


@fuzz(80)
@hypothesis.given(graph=nir_graphs(), dt=st.none() | FLOATS,
                  damage=st.sampled_from(["keep"] * 6 + ["truncate", "flip", "empty", "text"]))
def test_import_nir_files(graph, dt, damage):
    """``neurorate import-nir <file.nir> out.npz``: a mutated or damaged NIR file imports or gives one line; an
    imported spec loads back."""
    nir = pytest.importorskip("nir")
    with Sandbox() as sb:
        path = sb.cwd / "net.nir"
        try:
            nir.write(path, graph.value)
        except Exception:  # noqa: BLE001 - the nir library cannot even write this graph: not a user's file
            hypothesis.assume(False)
        raw = path.read_bytes()
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "flip":
            raw = raw[:600] + bytes(b ^ 0x5A for b in raw[600:1200]) + raw[1200:]
        elif damage == "empty":
            raw = b""
        elif damage == "text":
            raw = b"not an HDF5 file\n"
        path.write_bytes(raw)
        out = "spec.npz"
        argv = ["import-nir", "net.nir", out] + ([] if dt is None else ["--dt", dt])
        res = sb.call(argv)
        expect_clean(res, [sb.cwd / out])
        assert not (dt is not None and is_nonfinite(dt) and res.code == 0), f"{argv}: a non-finite --dt accepted"
        if res.code == 0:
            from neurorate.cli.nir import load_network

            load_network(sb.cwd / out)


@fuzz(20)
@hypothesis.given(source=st.sampled_from(["missing.nir", "", ".", "..", "taken", "old", "/dev/null", "é.nir"]),
                  out=st.sampled_from(["o.npz", "", ".", "..", "missing/o.npz", "taken/o.npz", "old", "/proc/x.npz",
                                       "taken"]),
                  command=st.sampled_from(["import-nir", "export-nir"]))
def test_nir_paths(source, out, command):
    """``import-nir`` / ``export-nir`` with paths that are missing, directories, unreadable or unwritable."""
    with Sandbox() as sb:
        prepare(sb)
        if command == "export-nir" and source == "é.nir":
            _spec().save(sb.cwd / "é.nir")  # a valid spec under an odd name: this one exports
        res = sb.call([command, source, out])
        allowed = [sb.path(out)] if out not in ("", ".", "..", "old") else []
        expect_clean(res, allowed)


# ------------------------------------------------------------------------------------------------ resources
HUGE = {
    "run --hidden 1e6": ["run", "--hidden", "1000000"], "run --hidden 1e5": ["run", "--hidden", "100000"],
    "run --iterations 1e12": ["run", "--iterations", "1000000000000"],
    "run --batch 1e9": ["run", "--batch", "1000000000"], "run --hidden 2**40": ["run", "--hidden", str(2**40)],
    "lyapunov --hidden 1e6": ["lyapunov", "--hidden", "1000000"],
    "lyapunov --steps 1e12": ["lyapunov", "--hidden", "4", "--steps", "1000000000000"],
    "lyapunov --streams 1e9": ["lyapunov", "--hidden", "4", "--streams", "1000000000"],
    "study hidden = 1e6": ["study", "--config", "huge.toml", "--workers", "1", "--no-report"],
    "study batch = 1e9": ["study", "--config", "huge-batch.toml", "--workers", "1", "--no-report"],
}


@pytest.mark.parametrize("argv", list(HUGE.values()), ids=list(HUGE))
def test_huge_sizes_are_refused_before_writing(tmp_path, argv):
    """A size no machine can hold is refused in one line before anything is written, within seconds (run in a
    subprocess under a 6 GiB address-space limit so that a missing check fails the test, not the machine)."""
    if argv[0] == "run":
        base = {"--hidden": "4", "--iterations": "2", "--batch": "2", "--out": "o"}
        base.update(dict(zip(argv[1::2], argv[2::2])))
        argv = ["run", "--no-lyapunov"] + [x for kv in base.items() for x in kv]
    elif argv[0] == "lyapunov":
        argv = argv + ["--out", "o"]
    else:
        for name, change in (("huge.toml", {"hidden": 10**6}), ("huge-batch.toml", {"batch": 10**9})):
            (tmp_path / name).write_text(to_toml({"study": {**TINY_STUDY["study"], **change}}))
        argv = argv + ["--out", "o"]
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from neurorate.cli import main
        main({argv!r})
    """)
    before = _tree(tmp_path)
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"neurorate {' '.join(argv)}: still running after 60 s (no resource check)")
    res = Outcome(argv, p.returncode, p.stdout, p.stderr, sorted(_tree(tmp_path) - before))
    assert res.code == 2, f"{argv}: exit {res.code}; stderr: {res.stderr.splitlines()[-1:]}"
    expect_clean(res, [])


# ------------------------------------------------------------------------------------------------ found cases
# Minimal inputs the fuzzing above found in the spec and NIR loaders (each was a traceback), kept as plain tests.
def _saved_spec(tmp_path: Path, meta_changes: dict | None = None, header=None, **arrays) -> Path:
    spec = _spec()
    data = {n: getattr(spec, n) for n in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")}
    data.update(arrays)
    meta = {**spec.meta(), **(meta_changes or {})}
    text_ = json.dumps(meta) if header is None else header
    path = tmp_path / "found.npz"
    np.savez(path, __meta__=np.frombuffer(text_.encode(), dtype=np.uint8), **data)
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(header="[1, 2]"), "its header is a list, not a JSON object"),
    (dict(meta_changes={"alpha": "abc"}), "alpha = dt/tau must be a number"),
    (dict(meta_changes={"alpha": [0.5]}), "alpha = dt/tau must be a number"),
    (dict(meta_changes={"dt": "x"}), "dt must be a number"),
    (dict(meta_changes={"dt": math.inf}), "dt must be positive and finite"),
    (dict(meta_changes={"init": 3}), "init must be a dict"),
    (dict(meta_changes={"form": []}), "unknown form"),
    (dict(w_in=np.zeros((3, 2)) + 1j), "w_in must hold real numbers, got dtype complex128"),
    (dict(b=np.array(["a", "b", "c"])), "b must hold real numbers"),
])
def test_spec_file_with_wrong_types_is_a_file_error(tmp_path, kwargs, message):
    from neurorate.errors import FileFormatError
    from neurorate.model.spec import NetworkSpec

    path = _saved_spec(tmp_path, **kwargs)
    with pytest.raises(FileFormatError, match="found.npz") as info:
        NetworkSpec.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def _graph_with(**changes):
    import nir

    from neurorate.io.nir import to_nir

    graph = to_nir(_spec(), dt=0.01)
    nodes, meta = dict(graph.nodes), dict(graph.metadata)
    li = nodes["li"]
    if "tau" in changes:
        nodes["li"] = nir.LI(tau=changes.pop("tau"), r=li.r, v_leak=li.v_leak, metadata=li.metadata)
    if "w_rec" in changes:
        nodes["w_rec"] = nir.Linear(weight=changes.pop("w_rec"))
    extra = {f"neurorate.{k}": v for k, v in changes.items()}
    meta.update(extra)
    node = nodes["li"]
    nodes["li"] = nir.LI(tau=node.tau, r=node.r, v_leak=node.v_leak, metadata={**node.metadata, **extra})
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=meta, type_check=False)


@pytest.mark.parametrize("changes, message", [
    (dict(alpha="Z"), "metadata neurorate.alpha must be a number, got 'Z'"),
    (dict(dt="abc"), "metadata neurorate.dt must be a number"),
    (dict(alpha=math.nan), "metadata neurorate.alpha must be finite"),
    (dict(init="{"), "metadata neurorate.init is not JSON"),
    (dict(init="[1]"), "metadata neurorate.init must be a JSON object"),
    (dict(feedback=np.array(["a", "b"])), "feedback must hold real numbers"),
    (dict(tau=np.zeros(3), alpha=None), "time constants tau must be finite and > 0"),
    (dict(w_rec=np.array([["a"] * 3] * 3)), "NIR graph: the Linear weight must hold real numbers, got dtype <U1"),
    (dict(w_rec=np.ones((2, 2))), "the graph is not a valid neurorate network"),
])
def test_nir_graph_with_wrong_values_is_a_file_error(changes, message):
    pytest.importorskip("nir")
    from neurorate.errors import FileFormatError
    from neurorate.io.nir import from_nir

    graph = _graph_with(**changes)
    if "alpha" in changes and changes["alpha"] is None:
        graph.metadata.pop("neurorate.alpha")
        graph.nodes["li"].metadata.pop("neurorate.alpha", None)
    with pytest.raises(FileFormatError) as info:
        from_nir(graph)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("dt", [math.inf, math.nan, 0.0, -1e-3])
def test_nir_refuses_a_non_finite_or_non_positive_dt(dt):
    pytest.importorskip("nir")
    from neurorate.errors import NeurorateError
    from neurorate.io.nir import from_nir, to_nir

    with pytest.raises(NeurorateError, match="dt must be positive and finite"):
        to_nir(_spec(), dt=dt)
    with pytest.raises(NeurorateError, match="dt must be positive and finite"):
        from_nir(to_nir(_spec()), dt=dt)


# ------------------------------------------------------------------------------------------------ probes
# Explicit cases: the probes of the robustness review (docs/testing.md) and minimal failing inputs the fuzzing found.
# Each is its own test (so the fuzzing above still runs while one of them fails) and runs the fuzz test's body.
def _inner(test):
    return test.hypothesis.inner_test


RUN_PROBES = {"gain-inf": probe(gain="inf"), "lr-nan": probe(lr="nan"), "rule-hebb": probe(rule="hebb"),
              "out-empty": probe(out=""), "profile-loihi9": probe(profile="loihi9"),
              "profile-etc-passwd": probe(profile="/etc/passwd"), "lava-bptt": probe(backend="lava", rule="bptt"),
              "lava-adam": probe(backend="lava", optimizer="adam"), "out-non-empty-dir": probe(out="old"),
              "hidden-abc": probe(out=None, hidden="abc"), "tau-nan": probe(tau="nan"),
              "seed-2**64": probe(seed=str(2**64))}


@pytest.mark.parametrize("case", list(RUN_PROBES.values()), ids=list(RUN_PROBES))
def test_run_probe(case):
    _inner(test_run_options)(case=case)


@pytest.mark.parametrize("case", [({"--hidden": "4", "--streams": "2", "--gain": "nan"}, [], "o"),
                                  ({"--hidden": "4", "--streams": "2", "--units": "ms"}, [], "o"),
                                  ({"--hidden": "4", "--streams": "2"}, [], "")], ids=["gain-nan", "units-ms",
                                                                                      "out-empty"])
def test_lyapunov_probe(case):
    _inner(test_lyapunov_options)(case=case)


@pytest.mark.parametrize("name, changes", [("loihi2", {"state__frac_bits": 30}), ("int8", {"weights__bits": 1})],
                         ids=["frac-bits-30-of-24", "one-bit-weights"])
def test_profile_probe(name, changes):
    _inner(test_profile_toml)(case=profile_case(name, **changes), as_json=False)


STUDY_PROBES = {"seeds-2**63": study_case(seeds=[2**63]), "activation-sigmoid": study_case(activation="sigmoid"),
                "name-escape": study_case(name="../../escape"), "name-empty": study_case(name="")}


@pytest.mark.parametrize("case", list(STUDY_PROBES.values()), ids=list(STUDY_PROBES))
def test_study_probe(case):
    _inner(test_study_config)(case=case, override={}, out=None, report=1)


def test_study_probe_bad_backend_override():
    _inner(test_study_config)(case=study_case(), override={"--backend": "tpu"}, out="o", report=1)


@pytest.mark.parametrize("target, how", [("part", "junk"), ("config.json", "junk"), ("results.parquet", "junk"),
                                         ("manifest.json", "truncate")])
def test_report_probe(study_dir, target, how):
    _inner(test_report_on_damaged_study)(study_dir=study_dir, target=target, how=how, second=False)


@pytest.mark.parametrize("meta", [{"neurorate_lif": 0}, {"neurorate_lif": {"threshold": "x"}}],
                         ids=["lif-header-0", "lif-threshold-x"])
def test_spec_probe(meta):
    _inner(test_export_nir_of_spec_files)(raw=spec_case(**meta), dt=None, as_dir=False)


# ------------------------------------------------------------------------------------------------ refused inputs
# Mistakes that once ended in a traceback, a half-made directory or a silent wrong run (docs/cli.md, "Inputs that
# are refused"): each is one ``error:`` line, exit code 2 and nothing on disk.
def refused(res: Outcome, *words: str) -> str:
    """``res`` is a refusal (:func:`expect_clean` with exit code 2) whose line holds every one of ``words``."""
    assert res.code == 2, f"{res.argv}: exit {res.code}, not a refusal; stderr: {res.stderr.splitlines()[-2:]}"
    expect_clean(res, [])
    line = res.stderr.strip()
    for word in words:
        assert word in line, f"{res.argv}: {word!r} not in {line!r}"
    return line


TINY_RUN = ["run", "--hidden", "4", "--iterations", "2", "--batch", "2", "--no-lyapunov"]


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("device", ["cuda:0", "cuda", "cuda:7", "cuda:x", "mps", "auto:1"])
def test_run_device_this_machine_lacks_is_refused(device):
    """``--device`` is checked against the machine (a GPU at all, its index) and the backend before anything is
    written: no run directory marked failed, no AssertionError from torch."""
    if device in ("cuda", "cuda:0") and _gpus():
        pytest.skip("this machine has a CUDA device")
    if device == "cuda:7" and _gpus() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    with Sandbox() as sb:
        line = refused(sb.call(TINY_RUN + ["--device", device]), f"--device {device}")
        assert any(hint in line for hint in ("use --device", "choose", "as in cuda:0")), line


def test_run_spiking_device_is_checked():
    if _gpus():
        pytest.skip("this machine has a CUDA device")
    with Sandbox() as sb:
        refused(sb.call(TINY_RUN + ["--neuron", "lif", "--device", "cuda:0"]), "no CUDA device is available")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_run_device_on_a_backend_without_devices_is_refused(device):
    """The Lava backend declares no devices: ``--device cuda`` used to run on the CPU and record "cuda"."""
    with Sandbox() as sb:
        res = sb.call(TINY_RUN + ["--backend", "lava", "--optimizer", "sgd", "--device", device])
        if importlib.util.find_spec("lava") is None:
            refused(res)  # the missing extra is named first
        else:
            refused(res, f"--device {device}", "the Lava backend runs on the CPU", "--device auto or cpu")


@pytest.mark.parametrize("gain", ["1e308", "1e7"])
def test_run_gain_that_overflows_is_refused(gain):
    with Sandbox() as sb:
        refused(sb.call(TINY_RUN + ["--gain", gain]), "gain must be finite and at most 1e+06")


def test_run_lr_that_blows_up_is_diverged_not_failed():
    """A huge learning rate makes the weights inf: the run is ``diverged`` (exit 0), with no RuntimeWarning and
    no "w_rec contains NaN or inf" failure."""
    import warnings

    with Sandbox() as sb, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = sb.call(TINY_RUN + ["--lr", "1e308", "--iterations", "3", "--out", "o", "--json"])
        assert res.code == 0, res.stderr
        assert json.loads(res.stdout)["status"] == "diverged"
        assert json.loads((sb.cwd / "o" / "result.json").read_text())["status"] == "diverged"
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert "Warning" not in res.stderr, res.stderr


@pytest.mark.parametrize("variable, value", [("NEURORATE_THREADS", "abc"), ("NEURORATE_THREADS", "99999"),
                                             ("NEURORATE_THREADS", "0"), ("NEURORATE_WORKERS", "99999"),
                                             ("NEURORATE_WORKERS", "x")])
def test_study_thread_variables_are_checked_before_the_directory(monkeypatch, variable, value):
    """A bad ``NEURORATE_THREADS`` used to be found after ``.lock``, ``config.json`` and ``results/`` existed;
    99999 threads or workers were accepted silently."""
    monkeypatch.setenv(variable, value)
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml(TINY_STUDY))
        refused(sb.call(["study", "--config", "cfg.toml", "--no-report", "--out", "st"]), variable, "1 to 1024")


@pytest.mark.parametrize("argv, words", [
    (["--threads", "99999"], ("--threads must be an integer from 1 to 1024",)),
    (["--threads", "0"], ("--threads must be an integer from 1 to 1024",)),
])
def test_run_thread_count_is_range_checked(argv, words):
    with Sandbox() as sb:
        refused(sb.call(TINY_RUN + argv), *words)


def test_run_thread_variable_is_range_checked(monkeypatch):
    monkeypatch.setenv("NEURORATE_THREADS", "99999")
    with Sandbox() as sb:
        refused(sb.call(TINY_RUN), "NEURORATE_THREADS must be an integer from 1 to 1024")


def test_study_workers_are_range_checked():
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml(TINY_STUDY))
        refused(sb.call(["study", "--config", "cfg.toml", "--no-report", "--workers", "99999"]),
                "workers must be an integer from 1 to 1024")


def test_study_slurm_executor_without_slurm_is_refused():
    """``--executor submitit:slurm`` where SLURM is not reachable: one line before the study directory exists
    (it was a 55-line traceback and a directory with ``.lock``, ``config.json`` and ``results/``)."""
    if shutil.which("srun"):
        pytest.skip("SLURM is reachable here")
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml(TINY_STUDY))
        res = sb.call(["study", "--config", "cfg.toml", "--no-report", "--executor", "submitit:slurm", "--out", "st"])
        refused(res, "submitit" if importlib.util.find_spec("submitit") is None else "SLURM is not reachable")


@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_study_device_is_checked_before_the_directory(device):
    if device == "cuda" and _gpus():
        pytest.skip("this machine has a CUDA device")
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml({"study": {**TINY_STUDY["study"], "device": device}}))
        refused(sb.call(["study", "--config", "cfg.toml", "--no-report", "--out", "st"]), "device")


def test_study_with_a_million_seeds_is_refused_at_once():
    """10^6 seeds: the duplicate check was quadratic and ran before the size ceiling (96 s at 100 % CPU); now a
    linear check and the ceiling (networks per ensemble) come first. 200,000 seeds took minutes before."""
    import time

    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml({"study": {**TINY_STUDY["study"], "seeds": list(range(200_000))}}))
        start = time.perf_counter()
        res = sb.call(["study", "--config", "cfg.toml", "--no-report", "--out", "st"])
        elapsed = time.perf_counter() - start
        refused(res, "networks = 200000 is above the ceiling 4096", "--allow-large")
    assert elapsed < 20, f"refusing 200,000 seeds took {elapsed:.1f} s"


def test_study_allow_large_is_an_option_of_study(monkeypatch):
    """The refusal of a too-large study names ``--allow-large``, and ``neurorate study`` accepts it."""
    from neurorate import training

    monkeypatch.setitem(training.LIMITS, "networks", 1)  # the tiny study with 2 seeds is "too large"
    monkeypatch.delenv("NEURORATE_ALLOW_LARGE", raising=False)
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml({"study": {**TINY_STUDY["study"], "seeds": [0, 1]}}))
        argv = ["study", "--config", "cfg.toml", "--workers", "1", "--no-progress", "--no-report", "--out", "st"]
        refused(sb.call(argv), "networks = 2 is above the ceiling 1", "pass --allow-large")
        res = sb.call(argv + ["--allow-large"])
        assert res.code == 0, res.stderr
        expect_clean(res, [sb.cwd / "st"])


def test_study_total_runs_ceiling(monkeypatch):
    from neurorate import training

    monkeypatch.setitem(training.LIMITS, "runs", 2)
    with Sandbox() as sb:
        (sb.cwd / "cfg.toml").write_text(to_toml({"study": {**TINY_STUDY["study"], "rules": ["eprop", "rflo"],
                                                            "seeds": [0, 1]}}))
        refused(sb.call(["study", "--config", "cfg.toml", "--no-report", "--out", "st"]),
                "runs = 4 is above the ceiling 2")


def _huge_npz(path: Path) -> Path:
    """A 2 KB spec file whose ``w_rec`` header claims a 10^6 x 10^6 float64 array (7.3 TiB)."""
    spec = _spec()
    buf = io.BytesIO()
    arrays = {n: getattr(spec, n) for n in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")}
    np.savez(buf, __meta__=np.frombuffer(json.dumps(spec.meta()).encode(), dtype=np.uint8), **arrays)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as out:
        for name in src.namelist():
            data = src.read(name)
            if name == "w_rec.npy":
                header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
                header = header.ljust(117) + "\n"
                data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)
            out.writestr(name, data)
    assert path.stat().st_size < 4096
    return path


def test_spec_file_whose_header_claims_a_huge_array_is_refused():
    """``export-nir`` (and every loader of a spec) reads the array headers first: no MemoryError traceback."""
    pytest.importorskip("nir")
    with Sandbox() as sb:
        _huge_npz(sb.cwd / "huge.npz")
        refused(sb.call(["export-nir", "huge.npz", "net.nir"]), "huge.npz", "'w_rec'", "1000000 x 1000000")


def test_spec_load_checks_array_headers(tmp_path, monkeypatch):
    from neurorate.errors import FileFormatError
    from neurorate.model.spec import NetworkSpec

    path = _huge_npz(tmp_path / "huge.npz")
    with pytest.raises(FileFormatError, match="claims 1000000 x 1000000") as info:
        NetworkSpec.load(path)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("NEURORATE_ALLOW_LARGE", "1")  # the ceiling is lifted; the memory check stays
    with pytest.raises(FileFormatError, match="of memory is available"):
        NetworkSpec.load(path)


def test_nir_file_whose_dataset_claims_a_huge_array_is_refused():
    nir = pytest.importorskip("nir")
    h5py = pytest.importorskip("h5py")
    from neurorate.io.nir import to_nir

    with Sandbox() as sb:
        nir.write(sb.cwd / "big.nir", to_nir(_spec(), dt=0.01))
        with h5py.File(sb.cwd / "big.nir", "r+") as fh:
            group = fh["node/nodes/w_rec"]
            del group["weight"]  # a dataset of 10^12 float64 whose chunks were never written: a small file
            group.create_dataset("weight", shape=(10**6, 10**6), dtype="f8", chunks=(1000, 1000), compression="gzip")
        refused(sb.call(["import-nir", "big.nir", "spec.npz"]), "big.nir", "1000000 x 1000000")


def _nir_variant(change: str):
    import nir

    from neurorate.io.nir import to_nir

    graph = to_nir(_spec(), dt=0.01)
    nodes, edges = dict(graph.nodes), list(graph.edges)
    if change == "two-li":  # a second LI node between the readout and the output
        nodes["li2"] = nir.LI(tau=np.full(2, 0.02), r=np.ones(2), v_leak=np.zeros(2))
        edges = [e for e in edges if e != ("w_out", "output")] + [("w_out", "li2"), ("li2", "output")]
    elif change == "no-recurrent":
        nodes.pop("w_rec")
        edges = [e for e in edges if "w_rec" not in e]
    elif change == "no-input":
        nodes.pop("input")
        edges = [e for e in edges if "input" not in e]
    elif change == "no-output":
        nodes.pop("output")
        edges = [e for e in edges if "output" not in e]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


@pytest.mark.parametrize("change, words", [
    ("two-li", ("expected exactly one LI node", "found 2 (li, li2)")),
    ("no-recurrent", ("expected exactly one recurrent Affine/Linear layer", "found 0")),
])
def test_nir_graph_that_is_not_one_recurrent_layer_is_refused(change, words):
    """Two LI nodes or no recurrent layer used to import silently (W_rec = 0)."""
    nir = pytest.importorskip("nir")
    with Sandbox() as sb:
        nir.write(sb.cwd / "net.nir", _nir_variant(change))
        refused(sb.call(["import-nir", "net.nir", "spec.npz"]), "net.nir", *words)


@pytest.mark.parametrize("change, words", [
    ("two-li", "expected exactly one LI node (the recurrent layer), found 2 (li, li2)"),
    ("no-recurrent", "expected exactly one recurrent Affine/Linear layer from the 'li' node back to it, found 0"),
    ("no-input", "the input layer 'w_in' is not fed by an Input node"),
    ("no-output", "the readout layer 'w_out' does not reach an Output node"),
])
def test_nir_graph_shape_is_checked_on_import(change, words):
    """``from_nir`` on a graph (``nir.read`` adds the Input and Output nodes a file lacks; a graph built in Python
    may lack them)."""
    pytest.importorskip("nir")
    from neurorate.errors import FileFormatError
    from neurorate.io.nir import from_nir

    with pytest.raises(FileFormatError) as info:
        from_nir(_nir_variant(change))
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, changes, words", [
    ("loihi2", {"state__frac_bits": -5}, ("state: frac_bits = -5 must be >= 0",)),
    ("loihi1", {"traces__frac_bits": -1}, ("traces: frac_bits = -1 must be >= 0",)),
    ("loihi2", {"weights__overrides__w_rec__scale": "none", "weights__overrides__w_rec__frac_bits": -3},
     ("weights: overrides.w_rec: frac_bits = -3 must be >= 0",)),
    ("loihi2", {"state__decay_bits": 99}, ("state.decay_bits",)),
    ("loihi2", {"learning__accumulator_bits": 1000}, ("learning.accumulator_bits",)),
    ("loihi2", {"time__dt_ms": math.inf}, ("time.dt_ms", "finite")),
    ("dynapse2", {"noise__mismatch_rel_std": 5.0}, ("noise.mismatch_rel_std",)),
    ("loihi2-engine", {"engine__weight_frac": 100}, ("engine.weight_frac:", "less than or equal to 32")),
    ("loihi2-engine", {"engine__epochs": 2**20}, ("engine.epochs",)),
])
def test_profile_number_out_of_range_is_refused(name, changes, words):
    """Every numeric profile field is range-checked; the line names the file and the field."""
    stem, raw = profile_case(name, **changes)
    with Sandbox() as sb:
        (sb.cwd / f"{stem}.toml").write_bytes(raw)
        refused(sb.call(["profiles", "show", f"./{stem}.toml"]), f"{stem}.toml", *words)
        refused(sb.call(TINY_RUN + ["--profile", f"./{stem}.toml", "--optimizer", "sgd"]), f"{stem}.toml")
