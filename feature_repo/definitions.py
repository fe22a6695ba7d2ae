"""Feast definitions of the flight-delay platform: entities, sources, feature views, service.

Feature names and view names come from the one feature contract (`mlops.features`); the data
files are written by `mlops prepare` into `data/` beside this file.

The offline store is a configuration: `feature_store.yaml` (DuckDB, the default) or
`feature_store.spark.yaml` (Spark), chosen as Feast chooses its yaml (`feast -f FILE` or
FEAST_FS_YAML_FILE_PATH). The batch sources follow it: Spark reads only SparkSource, DuckDB only
FileSource; everything else is the same objects under the same names.
"""

from datetime import timedelta
from pathlib import Path

import click
import yaml
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.types import Float64, String
from feast.utils import get_default_yaml_file_path

from mlops import features as F

_REPO = Path(__file__).resolve().parent
# The DuckDB offline store reads a FileSource path as given (not relative to the repo), so the
# sources are anchored here. In a cluster the same definitions point at object storage instead.
_DATA = _REPO / "data"

_TYPES = {"numeric": Float64, "categorical": String}


def _offline_store_type() -> str:
    """The offline store type of the yaml Feast is loading this repository with.

    Feast imports this file without passing its configuration, so it is found as Feast found it:
    the CLI's `-f` (kept on the click context of the running `feast` command), else Feast's
    FEAST_FS_YAML_FILE_PATH, else `feature_store.yaml` here.
    """
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and "FS_YAML_FILE" in obj:
        path = Path(obj["FS_YAML_FILE"])
    else:
        path = get_default_yaml_file_path(_REPO)
    with path.open() as f:
        return str(((yaml.safe_load(f) or {}).get("offline_store") or {}).get("type", "dask"))


_OFFLINE_STORE = _offline_store_type()


def _batch_source(name: str, file: str) -> DataSource:
    """A parquet file of `data/` as the batch source the configured offline store reads."""
    if _OFFLINE_STORE == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(
            name=name,
            path=str(_DATA / file),
            file_format="parquet",
            timestamp_field=F.EVENT_TIMESTAMP,
        )
    return FileSource(
        name=name,
        path=str(_DATA / file),
        file_format=ParquetFormat(),
        timestamp_field=F.EVENT_TIMESTAMP,
    )


def _schema(features: tuple[F.Feature, ...]) -> list[Field]:
    return [Field(name=f.name, dtype=_TYPES[f.kind], description=f.description) for f in features]


# Entities ------------------------------------------------------------------------------------

# An origin airport: the weather features hang off it.
origin = Entity(
    name="origin",
    join_keys=[F.ORIGIN],
    value_type=ValueType.STRING,
    description="Origin airport FAA code.",
)
# A plane by tail number: its static attributes.
tailnum = Entity(
    name="tailnum",
    join_keys=[F.TAILNUM],
    value_type=ValueType.STRING,
    description="Plane tail number.",
)
# A carrier: its recent on-time record.
carrier = Entity(
    name="carrier",
    join_keys=[F.CARRIER],
    value_type=ValueType.STRING,
    description="Two-letter carrier code.",
)

# Sources -------------------------------------------------------------------------------------

# Hourly weather observations per origin airport (UTC observation hour).
weather_source = _batch_source("weather", "weather.parquet")
# Plane attributes, valid from before the first flight of the data.
planes_source = _batch_source("planes", "planes.parquet")
# Carrier 7-day delay rates, stamped when the whole window has landed.
carrier_stats_source = _batch_source("carrier_stats", "carrier_stats.parquet")


def _push_source(view: str) -> PushSource:
    """The push source of a real-time view: pushed online by a stream job (`mlops stream`),
    backed offline by the rows `mlops prepare` wrote for the point-in-time join."""
    return PushSource(
        name=f"{view}_push",
        batch_source=_batch_source(f"{view}_batch", f"{view}.parquet"),
        description=f"Rows of {view}, emitted at prediction moments from earlier departures.",
    )


# Feature views -------------------------------------------------------------------------------

# Weather at the origin: an observation older than 3 h is too stale to describe a departure.
origin_weather_hourly = FeatureView(
    name=F.WEATHER_VIEW,
    entities=[origin],
    ttl=timedelta(hours=3),
    schema=_schema(F.WEATHER_FEATURES),
    source=weather_source,
    online=True,
)
# Plane attributes never expire within the data.
plane_attributes = FeatureView(
    name=F.PLANE_VIEW,
    entities=[tailnum],
    ttl=timedelta(days=3650),
    schema=_schema(F.PLANE_FEATURES),
    source=planes_source,
    online=True,
)
# A carrier's recent delay rate: published daily, stale after 3 days without a new value.
carrier_delay_stats = FeatureView(
    name=F.CARRIER_STATS_VIEW,
    entities=[carrier],
    ttl=timedelta(days=3),
    schema=_schema(F.CARRIER_STATS_FEATURES),
    source=carrier_stats_source,
    online=True,
)

# Real-time views: one row per prediction moment T of the entity, computed from departures
# strictly before T. The ttl is the serving staleness bound (F.REALTIME_MAX_AGE_MINUTES), so the
# offline join treats a row older than that as missing, as serving does. Every flight has a row
# stamped at its own T (ttl never drops a training value); the ttl only matters for a moment
# between the entity's scheduled departures. Feast applies ttl in the offline join only; serving
# enforces the same bound on online reads itself.
_RT_TTL = timedelta(minutes=F.REALTIME_MAX_AGE_MINUTES)

origin_departures_rt = FeatureView(
    name=F.ORIGIN_RT_VIEW,
    entities=[origin],
    ttl=_RT_TTL,
    schema=_schema(F.ORIGIN_RT_FEATURES),
    source=_push_source(F.ORIGIN_RT_VIEW),
    online=True,
)
carrier_origin_departures_rt = FeatureView(
    name=F.CARRIER_ORIGIN_RT_VIEW,
    entities=[carrier, origin],
    ttl=_RT_TTL,
    schema=_schema(F.CARRIER_ORIGIN_RT_FEATURES),
    source=_push_source(F.CARRIER_ORIGIN_RT_VIEW),
    online=True,
)
aircraft_rotation_rt = FeatureView(
    name=F.AIRCRAFT_RT_VIEW,
    entities=[tailnum],
    ttl=_RT_TTL,
    schema=_schema(F.AIRCRAFT_RT_FEATURES),
    source=_push_source(F.AIRCRAFT_RT_VIEW),
    online=True,
)

# Feature service -----------------------------------------------------------------------------

# The one set of features that training (offline join) and serving (online read) both use.
flight_delay_v2 = FeatureService(
    name=F.FEATURE_SERVICE,
    features=[
        origin_weather_hourly,
        plane_attributes,
        carrier_delay_stats,
        origin_departures_rt,
        carrier_origin_departures_rt,
        aircraft_rotation_rt,
    ],
    description="Features of the flight delay model, shared by training and serving.",
)
