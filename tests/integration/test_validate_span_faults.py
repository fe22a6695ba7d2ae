"""Faults confined to one span, built from the real 2013 data, stop at the validation gate.

Each fault here passes the schema (TFDV's whole-window statistics stay inside every bound), which
is how such spans used to be trained on, blessed and pushed; the span checks block each with a
named reason in the verdict, the Markdown report and the gate's error. Every clean month of 2013
passes the same checks.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.integration

TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]
WEATHER = [f.name for f in F.WEATHER_FEATURES]
SPAN_KINDS = {"duplicated keys", "row count change", "missing-value jump", "label collapsed",
              "label rate out of range", "label rate jump"}  # fmt: skip


@pytest.fixture(scope="module")
def year(training_set: TrainingSet) -> pd.DataFrame:
    """All of 2013, both splits, in one frame (one ingest for the whole module)."""
    train, evaluation = training_set("2013-01", "2013-12")
    return pd.concat([train, evaluation], ignore_index=True)


def month(year: pd.DataFrame, span: str) -> pd.DataFrame:
    return year[year[F.SPAN] == span].reset_index(drop=True)


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def schema_anomalies(df: pd.DataFrame) -> list[str]:
    """The features TFDV's schema validation alone flags (what validation did before)."""
    import tensorflow_data_validation as tfdv

    from components.validate.core import load_schema, stats_from_dataframe

    proto = tfdv.validate_statistics(stats_from_dataframe(df), load_schema())
    return sorted(proto.anomaly_info)


def blocked_at_gate(out: Path, reason: str) -> str:
    """The gate's error for the verdict in ``out``; it must name ``reason``."""
    from components.gate.core import InvalidDataError, check_verdict

    with pytest.raises(InvalidDataError) as err:
        check_verdict(out)
    assert reason in str(err.value), str(err.value)
    return str(err.value)


def test_every_clean_month_of_2013_passes(year: pd.DataFrame, tmp_path: Path) -> None:
    from components.validate.core import validate

    whole = validate(write(year, tmp_path / "year.parquet"), tmp_path / "year")
    assert whole.ok, whole.report_markdown()
    assert sorted(whole.spans) == [f"2013-{m:02d}" for m in range(1, 13)]
    first = validate(write(year[year[F.SPAN] <= "2013-02"], tmp_path / "jf.parquet"),
                     tmp_path / "jf")  # fmt: skip
    assert first.ok, first.report_markdown()
    previous: Path | None = None
    for span in sorted(year[F.SPAN].unique()):
        data = write(month(year, span), tmp_path / f"{span}.parquet")
        # Against the month before (the calibration's own comparison) ...
        verdict = validate(data, tmp_path / span, previous_stats_path=previous)
        assert verdict.ok, verdict.report_markdown()
        # ... and against the pipeline's first window, January-February, months later.
        later = validate(data, tmp_path / f"vs-jf-{span}", previous_stats_path=tmp_path / "jf")
        assert later.ok, later.report_markdown()
        previous = tmp_path / span
    report = (tmp_path / "2013-12" / "report.md").read_text()
    assert "| 2013-12 | 27020 |" in report and "| ok |" in report


def test_repeated_rows_are_blocked(year: pd.DataFrame, tmp_path: Path) -> None:
    from components.validate.core import STATS_FILE, validate

    feb, mar = month(year, "2013-02"), month(year, "2013-03")
    validate(write(feb, tmp_path / "feb.parquet"), tmp_path / "feb")
    repeated = mar.sample(frac=0.3, random_state=13)
    bad = pd.concat([mar, repeated], ignore_index=True).sort_values(F.EVENT_TIMESTAMP)
    assert schema_anomalies(bad) == []  # the schema alone lets the span through

    verdict = validate(write(bad, tmp_path / "mar.parquet"), tmp_path / "mar",
                       previous_stats_path=tmp_path / "feb" / STATS_FILE)  # fmt: skip
    assert not verdict.ok
    found = {a.kind: a for a in verdict.anomalies}
    assert set(found) == {"duplicated keys", "row count change"}, verdict.summary()
    dup = found["duplicated keys"]
    assert dup.feature == F.FLIGHT_ID and dup.span == "2013-03"
    assert f"{repeated[F.FLIGHT_ID].nunique()} {F.FLIGHT_ID} values" in dup.description
    assert str(int(repeated[F.FLIGHT_ID].min())) in dup.description  # examples of the keys
    change = len(bad) / len(feb) * 28 / 31 - 1  # rows per day of March against February's
    assert f"{change:+.1%}, over the ±10.1% limit" in found["row count change"].description
    report = (tmp_path / "mar" / "report.md").read_text()
    assert report.startswith("# Data validation: FAILED")
    assert f"| {F.FLIGHT_ID} | duplicated keys |" in report
    assert "| (rows) | row count change | span 2013-03:" in report
    assert "**duplicated keys, row count change**" in report  # the span table marks the span
    blocked_at_gate(tmp_path / "mar", "flight_id values appear more than once")

    # Without a baseline the key check alone still blocks, and the row count is compared with
    # the months of 2013.
    alone = validate(tmp_path / "mar.parquet", tmp_path / "mar-alone")
    assert {a.kind for a in alone.anomalies} == {"duplicated keys", "row count change"}


def test_partial_weather_outage_is_blocked_per_span(year: pd.DataFrame, tmp_path: Path) -> None:
    from components.validate.core import STATS_FILE, load_schema, validate

    window = year[year[F.SPAN].between("2013-01", "2013-03")].copy()
    local_day = window[F.EVENT_TIMESTAMP].dt.tz_convert("America/New_York").dt.day
    outage = (window[F.SPAN] == "2013-03") & local_day.between(10, 19)
    window.loc[outage, WEATHER] = np.nan
    mar = window[window[F.SPAN] == "2013-03"]
    # Presence over March, and more so over the window, stays above the schema's bounds.
    schema = {f.name: f.presence.min_fraction for f in load_schema().feature}
    for name in WEATHER:
        assert mar[name].notna().mean() > schema[name], name
    assert 0.25 < mar["temp"].isna().mean() < 0.4
    assert schema_anomalies(window) == []

    verdict = validate(write(window, tmp_path / "q1.parquet"), tmp_path / "q1")
    assert not verdict.ok
    assert [(a.feature, a.kind, a.span) for a in verdict.anomalies] == [
        (F.WEATHER_VIEW, "missing-value jump", "2013-03")
    ], verdict.summary()
    text = verdict.anomalies[0].description
    assert "temp 3" in text and "compared with 2013-02" in text
    assert "plane" not in text and "carrier_delay" not in text  # only the view that failed
    assert verdict.spans["2013-02"]["compared_with"] == "2013-01"
    report = (tmp_path / "q1" / "report.md").read_text()
    assert f"| {F.WEATHER_VIEW} | missing-value jump | span 2013-03:" in report
    page = (tmp_path / "q1" / "statistics.html").read_text()
    assert "<td>2013-03</td>" in page and f"feature view {F.WEATHER_VIEW} missing" in page
    blocked_at_gate(tmp_path / "q1", F.WEATHER_VIEW)

    # March alone against February's statistics (the production model's baseline) too.
    feb = validate(write(month(year, "2013-02"), tmp_path / "feb.parquet"), tmp_path / "feb")
    assert feb.ok
    alone = validate(write(mar, tmp_path / "mar.parquet"), tmp_path / "mar",
                     previous_stats_path=tmp_path / "feb")  # fmt: skip
    assert [a.feature for a in alone.anomalies] == [F.WEATHER_VIEW]
    assert "baseline spans 2013-02" in alone.anomalies[0].description
    # A baseline without span profiles (statistics alone): its whole-window missing rates.
    bare = tmp_path / "bare" / STATS_FILE
    bare.parent.mkdir()
    shutil.copy(tmp_path / "feb" / STATS_FILE, bare)
    stats_only = validate(tmp_path / "mar.parquet", tmp_path / "mar-bare", previous_stats_path=bare)
    assert [a.feature for a in stats_only.anomalies] == [F.WEATHER_VIEW]
    assert "baseline statistics (whole window)" in stats_only.anomalies[0].description


def test_collapsed_label_is_blocked(year: pd.DataFrame, tmp_path: Path) -> None:
    from components.validate.core import validate

    window = year[year[F.SPAN].between("2013-09", "2013-10")].copy()
    window.loc[window[F.SPAN] == "2013-10", F.LABEL] = 0
    assert schema_anomalies(window) == []

    verdict = validate(write(window, tmp_path / "so.parquet"), tmp_path / "so")
    assert not verdict.ok
    assert [(a.feature, a.kind, a.span) for a in verdict.anomalies] == [
        (F.LABEL, "label collapsed", "2013-10")
    ], verdict.summary()
    assert "all 28618 labels are 0" in verdict.anomalies[0].description
    assert verdict.spans["2013-10"]["label_rate"] == 0.0
    report = (tmp_path / "so" / "report.md").read_text()
    assert f"| {F.LABEL} | label collapsed | span 2013-10:" in report
    blocked_at_gate(tmp_path / "so", "label has a single value")


def test_serving_logs_skip_the_label_checks(year: pd.DataFrame, tmp_path: Path) -> None:
    from components.validate.core import validate

    requests = month(year, "2013-05").drop(columns=[F.LABEL])
    verdict = validate(write(requests, tmp_path / "req.parquet"), tmp_path / "req",
                       environment="SERVING")  # fmt: skip
    assert verdict.ok, verdict.report_markdown()
    assert verdict.spans["2013-05"]["label_rate"] is None
    assert not set(a.kind for a in verdict.anomalies) & SPAN_KINDS
