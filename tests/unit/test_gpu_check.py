"""benchmarks/gpu_check.py --dry-run: the GPU check's every step on the CPU with tiny sizes (a script check)."""

from __future__ import annotations


def test_gpu_check_dry_run_runs_every_step(tmp_path, capsys, benchmark_script):
    out = tmp_path / "gpu.md"
    assert benchmark_script("gpu_check").main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert "FAILED" not in text and "skipped" not in text
    assert "test_gpu.py** on cpu: 1 passed" in text
    for rule in ("eprop", "bptt", "rflo"):
        assert f"| {rule} | 8 | 2 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| blocked") or line.startswith("| one read")]
    assert len(rows) == 2 and all(float(r.split("|")[3]) == 0.0 for r in rows)  # no sync op per iteration
    assert "**Study slice** (paper" in text and capsys.readouterr().out.strip().endswith("s.")


def test_gpu_check_without_cuda_is_a_one_line_error(capsys, benchmark_script):
    import torch

    if torch.cuda.is_available():
        return
    assert benchmark_script("gpu_check").main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no CUDA device")
