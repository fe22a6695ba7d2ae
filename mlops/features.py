"""The one feature contract of the platform.

Feature names, the label, entity keys, slice keys and the feature views they come from are defined
here once. The Feast repository, the ingest component, the TFT ``preprocessing_fn``, the trainer,
the evaluator and the KServe transformer import these names; nothing else spells them.

Only what is known before departure may be a feature: ``dep_time``, ``dep_delay``, ``arr_time``
and ``air_time`` leak the label and never enter the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["categorical", "numeric"]


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: Column name in the training set and the request.
        kind: ``categorical`` (string, vocabulary) or ``numeric`` (float).
        source: ``request`` when the caller sends it, else the Feast feature view it comes from.
        description: One line for docs and the schema.
    """

    name: str
    kind: Kind
    source: str
    description: str


# Entity join keys: the Feast entities of the repository.
ORIGIN = "origin"
TAILNUM = "tailnum"
CARRIER = "carrier"
ENTITY_KEYS: tuple[str, ...] = (ORIGIN, TAILNUM, CARRIER)

# Columns of the entity/label table that are not features.
FLIGHT_ID = "flight_id"
EVENT_TIMESTAMP = "event_timestamp"
SPAN = "span"

# The label: arrival delay over 15 minutes (the US DOT on-time definition).
LABEL = "is_delayed"
DELAY_THRESHOLD_MINUTES = 15.0

# Feast feature view names.
WEATHER_VIEW = "origin_weather_hourly"
PLANE_VIEW = "plane_attributes"
CARRIER_STATS_VIEW = "carrier_delay_stats"
# Real-time views (issue #15): rows emitted at prediction moments from departure events before
# them; see mlops.realtime for the definitions and docs/features.md for availability times.
ORIGIN_RT_VIEW = "origin_departures_rt"
CARRIER_ORIGIN_RT_VIEW = "carrier_origin_departures_rt"
AIRCRAFT_RT_VIEW = "aircraft_rotation_rt"
REALTIME_VIEWS: tuple[str, ...] = (ORIGIN_RT_VIEW, CARRIER_ORIGIN_RT_VIEW, AIRCRAFT_RT_VIEW)
FEATURE_SERVICE = "flight_delay_v2"

# Staleness policy of the real-time views: a row stamped more than this before the prediction
# moment describes a feed that stopped, and serving treats it as missing (and counts it).
REALTIME_MAX_AGE_MINUTES = 15

# The entity join keys of each feature view (its Feast entities' join keys, in order).
VIEW_KEYS: dict[str, tuple[str, ...]] = {
    WEATHER_VIEW: (ORIGIN,),
    PLANE_VIEW: (TAILNUM,),
    CARRIER_STATS_VIEW: (CARRIER,),
    ORIGIN_RT_VIEW: (ORIGIN,),
    CARRIER_ORIGIN_RT_VIEW: (CARRIER, ORIGIN),
    AIRCRAFT_RT_VIEW: (TAILNUM,),
}

# Rolling aggregate settings: a carrier's delay rate over the last 7 days, published only once
# every flight in its window can have arrived (see mlops.data for the bound that justifies 48 h).
ROLLING_WINDOW_DAYS = 7
ROLLING_PUBLISH_LAG_HOURS = 48

SCHED_DEP_HOUR = "sched_dep_hour"

REQUEST_FEATURES: tuple[Feature, ...] = (
    Feature(CARRIER, "categorical", "request", "Two-letter carrier code."),
    Feature(ORIGIN, "categorical", "request", "Origin airport (EWR, JFK, LGA)."),
    Feature("dest", "categorical", "request", "Destination airport FAA code."),
    Feature("distance", "numeric", "request", "Great-circle distance in miles."),
    Feature(SCHED_DEP_HOUR, "numeric", "request", "Scheduled departure hour, local time."),
    Feature("day_of_week", "numeric", "request", "Day of week of the departure, Monday = 0."),
    Feature("month", "numeric", "request", "Month of the departure, 1-12."),
)

WEATHER_FEATURES: tuple[Feature, ...] = (
    Feature("temp", "numeric", WEATHER_VIEW, "Temperature at the origin, F."),
    Feature("dewp", "numeric", WEATHER_VIEW, "Dew point at the origin, F."),
    Feature("humid", "numeric", WEATHER_VIEW, "Relative humidity at the origin, %."),
    Feature("wind_dir", "numeric", WEATHER_VIEW, "Wind direction, degrees."),
    Feature("wind_speed", "numeric", WEATHER_VIEW, "Wind speed, mph."),
    Feature("wind_gust", "numeric", WEATHER_VIEW, "Wind gust speed, mph (often absent)."),
    Feature("precip", "numeric", WEATHER_VIEW, "Precipitation, inches."),
    Feature("pressure", "numeric", WEATHER_VIEW, "Sea level pressure, millibars."),
    Feature("visib", "numeric", WEATHER_VIEW, "Visibility, miles."),
)

PLANE_FEATURES: tuple[Feature, ...] = (
    Feature("plane_year", "numeric", PLANE_VIEW, "Year the plane was manufactured."),
    Feature("plane_seats", "numeric", PLANE_VIEW, "Number of seats."),
    Feature("plane_engines", "numeric", PLANE_VIEW, "Number of engines."),
    Feature("plane_manufacturer", "categorical", PLANE_VIEW, "Plane manufacturer."),
    Feature("plane_engine", "categorical", PLANE_VIEW, "Engine type."),
)

CARRIER_STATS_FEATURES: tuple[Feature, ...] = (
    Feature(
        "carrier_delay_rate_7d",
        "numeric",
        CARRIER_STATS_VIEW,
        "Share of the carrier's flights delayed > 15 min over 7 days, published 48 h later.",
    ),
    Feature(
        "carrier_flights_7d",
        "numeric",
        CARRIER_STATS_VIEW,
        "Number of the carrier's completed flights in that window.",
    ),
)

# Real-time features. T is the prediction moment (the flight's scheduled departure, its
# EVENT_TIMESTAMP); a departure event is a flight's actual departure (scheduled + dep_delay); only
# events strictly before T count. "Delayed" means dep_delay > DELAY_THRESHOLD_MINUTES.
ORIGIN_RT_FEATURES: tuple[Feature, ...] = (
    Feature(
        "origin_deps_60m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Departures from the origin with actual departure in [T-60 min, T).",
    ),
    Feature(
        "origin_dep_delay_60m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Mean departure delay of those departures, minutes; missing when none.",
    ),
    Feature(
        "origin_delayed_share_60m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Share of those departures delayed > 15 min; missing when none.",
    ),
    Feature(
        "origin_deps_180m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Departures from the origin with actual departure in [T-180 min, T).",
    ),
    Feature(
        "origin_dep_delay_180m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Mean departure delay of those departures, minutes; missing when none.",
    ),
    Feature(
        "origin_delayed_share_180m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Share of those departures delayed > 15 min; missing when none.",
    ),
    Feature(
        "origin_pending_60m",
        "numeric",
        ORIGIN_RT_VIEW,
        "Flights scheduled at the origin in [T-60 min, T) not departed by T (cancelled included).",
    ),
)

CARRIER_ORIGIN_RT_FEATURES: tuple[Feature, ...] = (
    Feature(
        "carrier_origin_deps_120m",
        "numeric",
        CARRIER_ORIGIN_RT_VIEW,
        "The carrier's departures from the origin with actual departure in [T-120 min, T).",
    ),
    Feature(
        "carrier_origin_dep_delay_120m",
        "numeric",
        CARRIER_ORIGIN_RT_VIEW,
        "Mean departure delay of those departures, minutes; missing when none.",
    ),
    Feature(
        "carrier_origin_delayed_share_120m",
        "numeric",
        CARRIER_ORIGIN_RT_VIEW,
        "Share of those departures delayed > 15 min; missing when none.",
    ),
)

AIRCRAFT_RT_FEATURES: tuple[Feature, ...] = (
    Feature(
        "tail_prev_dep_delay",
        "numeric",
        AIRCRAFT_RT_VIEW,
        "Departure delay of the aircraft's latest departure before T on the same local day.",
    ),
    Feature(
        "tail_hours_since_prev_dep",
        "numeric",
        AIRCRAFT_RT_VIEW,
        "Hours from that departure to T; missing when none.",
    ),
    Feature(
        "tail_deps_today",
        "numeric",
        AIRCRAFT_RT_VIEW,
        "The aircraft's departures before T on the same local day (America/New_York).",
    ),
)

REALTIME_FEATURES: tuple[Feature, ...] = (
    ORIGIN_RT_FEATURES + CARRIER_ORIGIN_RT_FEATURES + AIRCRAFT_RT_FEATURES
)

FEAST_FEATURES: tuple[Feature, ...] = (
    WEATHER_FEATURES + PLANE_FEATURES + CARRIER_STATS_FEATURES + REALTIME_FEATURES
)
FEATURES: tuple[Feature, ...] = REQUEST_FEATURES + FEAST_FEATURES

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "categorical")
NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "numeric")

# Features the serving request must carry; the rest are looked up in the Feast online store.
REQUEST_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in REQUEST_FEATURES)

# Entity columns the request must carry so the online lookup can find the Feast features.
REQUEST_ENTITY_KEYS: tuple[str, ...] = ENTITY_KEYS

# Fields of one serving request instance: the request features and the plane's entity key
# (origin and carrier are request features already).
REQUEST_FIELDS: tuple[str, ...] = (*REQUEST_FEATURE_NAMES, TAILNUM)

# Hard inclusive ranges of the request's numeric features; a schema's float domains (padded by
# the schema inference) can only narrow them.
REQUEST_RANGES: dict[str, tuple[float, float]] = {
    "distance": (1.0, 10_000.0),
    SCHED_DEP_HOUR: (0.0, 23.0),
    "day_of_week": (0.0, 6.0),
    "month": (1.0, 12.0),
}

# A score at or above this is a "delayed" decision: accuracy, precision and recall in evaluation
# and monitoring, and the outcome label of served predictions.
DECISION_THRESHOLD = 0.5

# Slices for evaluation and monitoring. `sched_hour_band` is derived by slice_values().
HOUR_BAND = "sched_hour_band"
SLICE_KEYS: tuple[str, ...] = (CARRIER, ORIGIN, HOUR_BAND)

# Bounded label sets for per-slice Prometheus metrics; anything else is reported as "other".
SLICE_ALLOWLIST: dict[str, tuple[str, ...]] = {
    CARRIER: ("UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX"),
    ORIGIN: ("EWR", "JFK", "LGA"),
    HOUR_BAND: ("night", "morning", "afternoon", "evening"),
}
OTHER_SLICE = "other"

# Placeholder for a missing categorical value (absent plane record, unknown tail number).
MISSING_CATEGORY = "__missing__"


def feast_feature_refs() -> list[str]:
    """Return the ``view:feature`` references of every Feast feature, in contract order."""
    return [f"{f.source}:{f.name}" for f in FEAST_FEATURES]


def hour_band(hour: float) -> str:
    """Map a scheduled departure hour (0-23, local) to its slice band."""
    if hour < 6:
        return "night"
    if hour < 12:
        return "morning"
    if hour < 18:
        return "afternoon"
    return "evening"


def bounded_slice_value(key: str, value: str) -> str:
    """Return ``value`` if it is on the allow-list of slice ``key``, else ``"other"``."""
    return value if value in SLICE_ALLOWLIST.get(key, ()) else OTHER_SLICE


def _hour(value: object) -> float | None:
    """The hour as a float, or None when it is missing or not a number (as ``pd.to_numeric``)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        hour = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(hour) else hour


def slice_values(row: Mapping[str, object], bounded: bool = False) -> dict[str, str]:
    """The value of every slice key of one row (a request instance or a data row).

    ``sched_hour_band`` comes from ``sched_dep_hour`` through :func:`hour_band`. A missing value
    (absent, None, NaN, or an hour that is not a number) becomes ``MISSING_CATEGORY``, so missing
    rows form their own slice in evaluation and count as ``"other"`` once bounded for metrics.
    :func:`slice_frame` is the same derivation for a DataFrame.

    Args:
        row: Field name to value.
        bounded: Map values off the allow-lists to ``"other"`` (for Prometheus labels).
    """
    out: dict[str, str] = {}
    for key in SLICE_KEYS:
        if key == HOUR_BAND:
            hour = _hour(row.get(SCHED_DEP_HOUR))
            out[key] = MISSING_CATEGORY if hour is None else hour_band(hour)
        else:
            value = row.get(key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            out[key] = MISSING_CATEGORY if missing else str(value)
    if bounded:
        return {key: bounded_slice_value(key, value) for key, value in out.items()}
    return out


def slice_frame(df: pd.DataFrame, bounded: bool = False) -> pd.DataFrame:
    """One string column per slice key, derived as :func:`slice_values` derives one row.

    Args:
        df: Rows with the slice keys' source columns (``sched_dep_hour`` for the hour band).
        bounded: Map values off the allow-lists to ``"other"`` (for Prometheus labels).

    Returns:
        A frame with the index of ``df`` and the columns ``SLICE_KEYS``.
    """
    import numpy as np
    import pandas as pd

    out = {}
    for key in SLICE_KEYS:
        if key == HOUR_BAND:
            hours = pd.to_numeric(df[SCHED_DEP_HOUR], errors="coerce").to_numpy(dtype=float)
            bands = np.select(
                [hours < 6, hours < 12, hours < 18],
                ["night", "morning", "afternoon"],
                default="evening",
            ).astype(object)
            bands[np.isnan(hours)] = MISSING_CATEGORY
            col = pd.Series(bands, index=df.index)
        else:
            col = df[key].astype(object).where(df[key].notna(), MISSING_CATEGORY).astype(str)
        if bounded:
            allowed = SLICE_ALLOWLIST.get(key, ())
            col = col.where(col.isin(allowed), OTHER_SLICE)
        out[key] = col.to_numpy(dtype=object)
    return pd.DataFrame(out, index=df.index)
