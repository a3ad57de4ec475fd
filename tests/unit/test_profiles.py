"""Hardware profiles: every shipped file validates with the documented numbers; malformed files are refused
with one line naming the file and the field; capacity and activation refusals say why; the CLI lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from neurorate.errors import FileFormatError, NeurorateError
from neurorate.hardware.profiles import HardwareProfile, available_profiles, load_profile, profile_text
from neurorate.model.spec import NetworkSpec

REQUIRED = {"loihi2", "loihi1", "xylo", "spinnaker2", "fp32", "bf16", "fp16", "int8"}


def test_required_profiles_are_shipped():
    assert REQUIRED <= set(available_profiles())


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_validates(name):
    p = load_profile(name)
    assert isinstance(p, HardwareProfile)
    assert p.name == name and p.schema_version == 1
    assert len(p.sources) >= 1 and all(len(s) > 10 for s in p.sources)
    assert p.confidence in ("verified", "partial", "reported")
    for matrix in ("w_in", "w_rec", "w_out", "b", "b_out", "feedback"):
        p.weights.for_matrix(matrix)  # every effective per-matrix format is valid


def test_loihi2_numbers():
    p = load_profile("loihi2")
    assert (p.weights.format, p.weights.bits, p.weights.signed, p.weights.scale) == ("int", 8, True, "shared_exponent")
    assert (p.state.bits, p.state.frac_bits, p.state.overflow) == (24, 16, "saturate")
    assert (p.state.decay, p.state.decay_bits) == ("linear", 12)
    assert (p.messages.kind, p.messages.bits) == ("graded", 24)
    assert (p.traces.bits, p.traces.frac_bits, p.traces.rounding) == (8, 7, "stochastic")
    assert (p.learning.accumulator_bits, p.learning.accumulator_frac_bits, p.learning.rounding) == (16, 7, "stochastic")
    assert p.activation.microcode == ["tanh"] and "relu" in p.activation.allowed
    assert p.capacity.neurons_per_chip == 1_000_000 and p.capacity.cores == 128


def test_other_profile_numbers():
    xylo, l1 = load_profile("xylo"), load_profile("loihi1")
    assert (xylo.weights.bits, xylo.state.bits, xylo.state.decay) == (8, 16, "pow2")
    assert (xylo.capacity.max_inputs, xylo.capacity.neurons_per_chip, xylo.capacity.max_outputs) == (16, 1000, 8)
    assert (xylo.messages.kind, xylo.messages.bits, xylo.messages.signed) == ("binary", 5, False)
    assert l1.messages.kind == "binary" and l1.capacity.neurons_per_chip == 131_072
    assert load_profile("bf16").weights.dtype == "bfloat16" and load_profile("fp16").messages.dtype == "float16"
    assert load_profile("fp32").confidence == "verified"
    int8 = load_profile("int8")
    assert (int8.weights.bits, int8.weights.scale, int8.messages.scale) == (8, "per_tensor", "per_tensor")
    assert load_profile("spinnaker2").state.dtype == "float32"


def test_weight_overrides(tmp_path):
    text = profile_text("xylo")[1].replace('rounding = "nearest"\n',
                                           'rounding = "nearest"\n[weights.overrides]\nw_out = { bits = 6 }\n', 1)
    path = tmp_path / "xylo.toml"
    path.write_text(text)
    p = load_profile(path)
    assert p.weights.for_matrix("w_out").bits == 6 and p.weights.for_matrix("w_rec").bits == 8
    with pytest.raises(NeurorateError, match="unknown weight name 'w_x'"):
        p.weights.for_matrix("w_x")


def _broken(tmp_path, old: str, new: str, name: str = "loihi2", count: int = 1):
    text = profile_text(name)[1]
    assert old in text
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, count))
    return path


@pytest.mark.parametrize("old,new,expected", [
    ("bits = 8               # 8-bit", "bits = 0  #", "loihi2.toml: weights.bits: Input should be greater than 0"),
    ("bits = 8               # 8-bit", 'bits = "eight"  #',
     "loihi2.toml: weights.bits: Input should be a valid integer"),
    ('overflow = "saturate"', 'overflow = "clip"',
     "loihi2.toml: state.overflow: Input should be 'saturate' or 'wrap'"),
    ("cores = 128", "cores = 128\ncorez = 3", "loihi2.toml: capacity.corez: Extra inputs are not permitted"),
    ('confidence = "partial"', 'confidence = "sure"', "loihi2.toml: confidence: Input should be"),
    ("decay_bits = 12 ", "# ", "loihi2.toml: state: decay 'linear' needs decay_bits"),
])
def test_malformed_profile_names_file_and_field(tmp_path, old, new, expected):
    with pytest.raises(FileFormatError) as info:
        load_profile(_broken(tmp_path, old, new))
    msg = str(info.value)
    assert msg.startswith(expected) and "\n" not in msg


def test_missing_or_empty_sources_rejected(tmp_path):
    text = profile_text("fp32")[1]
    start = text.index("sources")
    end = text.index("\n", start)
    (tmp_path / "fp32.toml").write_text(text[:start] + text[end:])
    with pytest.raises(FileFormatError, match=r"^fp32\.toml: sources: Field required$"):
        load_profile(tmp_path / "fp32.toml")
    (tmp_path / "fp32.toml").write_text(text[:start] + "sources = []" + text[end:])
    with pytest.raises(FileFormatError, match=r"^fp32\.toml: sources: List should have at least 1 item"):
        load_profile(tmp_path / "fp32.toml")


def test_bad_toml_name_mismatch_and_unknown_name(tmp_path):
    (tmp_path / "bad.toml").write_text("name = [\n")
    with pytest.raises(FileFormatError, match=r"^bad\.toml: invalid TOML"):
        load_profile(tmp_path / "bad.toml")
    (tmp_path / "other.toml").write_text(profile_text("fp32")[1])
    with pytest.raises(FileFormatError, match=r"^other\.toml: name: 'fp32' does not match the file name 'other'"):
        load_profile(tmp_path / "other.toml")
    with pytest.raises(NeurorateError, match="unknown hardware profile 'loihi3'; available: bf16"):
        load_profile("loihi3")
    with pytest.raises(FileFormatError, match="no such profile file"):
        load_profile(tmp_path / "missing.toml")
    (tmp_path / "fp32.toml").write_text(profile_text("fp32")[1].replace('dtype = "float32"', 'dtype = "float8"', 1))
    with pytest.raises(FileFormatError, match=r"^fp32\.toml: weights\.dtype: Input should be"):
        load_profile(tmp_path / "fp32.toml")


def _spec(n=64, n_in=1, n_out=2, activation="tanh"):
    return NetworkSpec.random(n_in=n_in, n_hidden=n, n_out=n_out, activation=activation, seed=0)


def test_activation_refusal_names_allowed():
    with pytest.raises(NeurorateError) as info:
        load_profile("xylo").check(_spec(n=32, activation="tanh"))
    assert "activation 'tanh' is not available (allowed: relu)" in str(info.value)
    load_profile("xylo").check(_spec(n=32, activation="relu"))  # fits: 33 <= 63 fan-in, 34 <= 64 fan-out
    load_profile("loihi2").check(_spec(n=64, activation="tanh"))  # tanh as a microcode LUT
    assert load_profile("loihi1").violations(_spec(n=8, activation="identity")) == [
        "activation 'identity' is not available (allowed: relu)"]


def test_capacity_refusal_with_numbers():
    xylo = load_profile("xylo")
    reasons = xylo.violations(_spec(n=64, n_in=17, n_out=9, activation="relu"))
    assert reasons == ["fan-in N + n_in = 81 exceeds max fan-in = 63",
                       "fan-out N + n_out = 73 exceeds max fan-out = 64",
                       "inputs = 17 exceeds input channels = 16",
                       "outputs = 9 exceeds output channels = 8"]
    with pytest.raises(NeurorateError, match=r"^profile 'xylo' \(SynSense Xylo Audio 2\) cannot run this network: "
                                             r"fan-in N \+ n_in = 81 exceeds max fan-in = 63; "):
        xylo.check(_spec(n=64, n_in=17, n_out=9, activation="relu"))
    big = NetworkSpec(w_in=np.zeros((1100, 1)), w_rec=np.zeros((1100, 1100)), w_out=np.zeros((2, 1100)),
                      b=np.zeros(1100), b_out=np.zeros(2), activation="relu")
    assert "hidden neurons = 1100 exceeds neurons per chip = 1000" in xylo.violations(big)
    assert load_profile("dynapse2").violations(_spec(n=100, activation="relu")) == [
        "fan-in N + n_in = 101 exceeds max fan-in = 64"]
    assert load_profile("fp32").violations(big) == []


def _app():
    from neurorate.cli.profiles import register

    app = typer.Typer()

    @app.callback()
    def _root():
        """root"""

    register(app)
    return app


def test_cli_list_and_show():
    runner = CliRunner()
    res = runner.invoke(_app(), ["profiles", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["name", "display_name", "kind", "confidence", "weights", "state"]
    row = next(line for line in lines if line.startswith("loihi2 "))
    assert "Intel Loihi 2" in row and "partial" in row and "int8 (shared_exponent)" in row and "int24 (Q.16)" in row
    assert len(lines) == 1 + len(available_profiles())
    rows = json.loads(runner.invoke(_app(), ["profiles", "list", "--json"]).output)
    assert {r["name"] for r in rows} == set(available_profiles())
    res = runner.invoke(_app(), ["profiles", "show", "loihi2"])
    assert res.exit_code == 0 and res.output.startswith("# Intel Loihi 2") and "decay_bits = 12" in res.output
    shown = json.loads(runner.invoke(_app(), ["profiles", "show", "xylo", "--json"]).output)
    assert shown["state"]["bits"] == 16 and shown["capacity"]["max_inputs"] == 16
    res = runner.invoke(_app(), ["profiles", "show", "nope"])
    assert isinstance(res.exception, NeurorateError) and "unknown hardware profile 'nope'" in str(res.exception)


def test_main_cli_maps_errors_to_one_line(capsys):
    from neurorate.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["profiles", "show", "loihi9"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown hardware profile 'loihi9'") and "\n" not in err


@pytest.mark.parametrize("old,new,name,expected", [
    ("frac_bits = 16         # choice: 8", "frac_bits = 30  #", "loihi2",
     "loihi2.toml: state: frac_bits = 30 must be <= 23 for a 24-bit signed format"),
    ("frac_bits = 7          # traces", "frac_bits = 8  #", "loihi2",
     "loihi2.toml: traces: frac_bits = 8 must be <= 7 for a 8-bit signed format"),
    ("bits = 8               # 8-bit", "bits = 1  #", "loihi2",
     "loihi2.toml: weights: bits = 1: a signed format needs bits >= 2"),
    ("exponent_bits = 4 ", "exponent_bits = 12 ", "loihi2",
     "loihi2.toml: weights: exponent_bits = 12 must be <= 11"),
    ("accumulator_frac_bits = 7 ", "accumulator_frac_bits = 16 ", "loihi2",
     "loihi2.toml: learning: accumulator_frac_bits = 16 must be <= accumulator_bits - 1 = 15"),
    ('rounding = "nearest"   # host', 'rounding = "nearest"\n[weights.overrides]\nw_rec = { frac_bits = 9, '
     'scale = "none" }\n#', "loihi2", "loihi2.toml: weights: overrides.w_rec: frac_bits = 9 must be <= 7"),
    ('dtype = "float16"', 'dtype = "float16"\nexponent_bits = 8', "fp16",
     "fp16.toml: weights: exponent_bits = 8 does not match dtype float16 (5 exponent bits)"),
    ('dtype = "float16"', 'dtype = "float16"\nbits = 32', "fp16",
     "fp16.toml: weights: bits = 32 does not match dtype float16 (16 bits)"),
    ('scale = "per_tensor"', 'scale = "per_tensor"\nexponent_bits = 4', "int8",
     "int8.toml: weights: exponent_bits only applies to the scales shared_exponent, per_row and pow2"),
])
def test_cross_field_checks_name_file_and_field(tmp_path, old, new, name, expected):
    with pytest.raises(FileFormatError) as info:
        load_profile(_broken(tmp_path, old, new, name=name))
    msg = str(info.value)
    assert msg.startswith(expected) and "\n" not in msg


def test_cross_field_limits_accept_the_edges(tmp_path):
    # every bit fractional is fine unsigned (loihi1's messages: a 4-bit count / 16) and sign + 23 bits signed
    assert load_profile("loihi1").messages.frac_bits == load_profile("loihi1").messages.bits == 4
    p = load_profile(_broken(tmp_path, "frac_bits = 16         # choice: 8", "frac_bits = 23  #"))
    assert p.state.frac_bits == 23
    path = _broken(tmp_path, "bits = 8               # 8-bit", "bits = 2  #")
    assert load_profile(path).weights.bits == 2
    from neurorate.hardware.profiles import NumberFormat

    assert NumberFormat(format="int", bits=1, signed=False).bits == 1  # a binary spike
    with pytest.raises(ValueError, match="signed format needs bits >= 2"):
        NumberFormat(format="int", bits=1, signed=True)
    with pytest.raises(ValueError, match="frac_bits = 2 must be <= 1 for a 1-bit unsigned"):
        NumberFormat(format="int", bits=1, signed=False, frac_bits=2)


def test_cli_show_prints_the_header_once():
    for name in available_profiles():
        header = profile_text(name)[1].splitlines()[0]
        res = CliRunner().invoke(_app(), ["profiles", "show", name])
        assert res.exit_code == 0 and res.output.count(header) == 1, name
        assert res.output.rstrip("\n") == profile_text(name)[1].rstrip("\n")


def test_a_profile_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "bf16.toml"
    path.write_bytes(b"\xff\xfe" + profile_text("bf16")[1].encode("utf-16-le"))
    with pytest.raises(FileFormatError, match=r"^bf16\.toml: not a UTF-8 text file \(byte 0: invalid start byte\)$"):
        load_profile(path)
