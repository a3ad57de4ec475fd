"""A study with grad_alignment_every: the estimator rules in `rules`, the alignment columns and the report's figure."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

import neurorate as nr
from neurorate.studies.config import StudyConfig


def test_a_study_records_the_alignment_of_each_rule_and_the_report_plots_it(tmp_path):
    cfg = StudyConfig(name="align", tasks=["romo"], rules=["eprop", "snap1", "uoro"], gains=[0.5, 1.5], lrs=[1e-3],
                      seeds=[0, 1], iterations=10, hidden=8, batch=4, lyapunov=False, richlazy=False,
                      grad_alignment_every=5, log_every=5)
    nr.study(cfg, out=tmp_path / "s", progress=False)
    rows = pq.read_table(tmp_path / "s" / "results.parquet").to_pylist()
    assert {r["rule"] for r in rows} == {"eprop", "snap1", "uoro"}
    for r in rows:  # one measurement in every logged block of 5 iterations (at iterations 0 and 5)
        assert -1 <= r["alignment"] <= 1 + 1e-9 and -1 <= r["grad_alignment"] <= 1 + 1e-9, r
    from neurorate.studies.report import report

    text = report(tmp_path / "s").read_text()
    assert (tmp_path / "s" / "figures" / "alignment_vs_gain.png").exists() and "alignment_vs_gain.png" in text


def test_without_the_option_the_columns_are_nan_and_a_bad_value_is_refused(tmp_path):
    cfg = StudyConfig(name="plain", tasks=["romo"], rules=["kf_rtrl"], gains=[1.0], lrs=[1e-3], seeds=[0],
                      iterations=4, hidden=6, batch=2, lyapunov=False, richlazy=False, log_every=2)
    nr.study(cfg, out=tmp_path / "p", progress=False)
    rows = pq.read_table(tmp_path / "p" / "results.parquet").to_pylist()
    assert rows and all(math.isnan(r["alignment"]) and math.isnan(r["grad_alignment"]) for r in rows)
    with pytest.raises(Exception, match="grad_alignment_every: must be >= 1"):
        StudyConfig(name="x", grad_alignment_every=0)
