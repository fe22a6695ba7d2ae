"""Online feature lookup for the transformer: the Feast SDK locally, the feature server over HTTP.

Both read the feature service ``mlops.features.FEATURE_SERVICE`` (the same one the training set is
joined from) for the entity keys of each request row, under a timeout. Rows are cached per entity
(origin, tail number, carrier) for ``cache_ttl_s`` seconds: the hot entities are few (3 origins,
16 carriers) and a Feast SDK read costs milliseconds. A cached row is at most ``cache_ttl_s``
older than the online store; the staleness metric reports the age of the feature values
themselves (now minus their event timestamp), cache included.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from mlops import features as F

# Which entity key each view hangs off, and its features, in contract order.
VIEW_KEYS: dict[str, str] = {
    F.WEATHER_VIEW: F.ORIGIN,
    F.PLANE_VIEW: F.TAILNUM,
    F.CARRIER_STATS_VIEW: F.CARRIER,
}
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    view: tuple(f.name for f in F.FEAST_FEATURES if f.source == view) for view in VIEW_KEYS
}
MISSING_POLICIES = ("impute", "reject")


class FeatureLookupError(RuntimeError):
    """The online store did not answer in time or answered with an error."""


@dataclass(frozen=True)
class ViewRow:
    """One entity's features of one view.

    Attributes:
        values: Feature name to value (``None`` when absent).
        event_ts: Event timestamp of the values (epoch seconds), ``None`` if the entity is missing.
    """

    values: dict[str, Any]
    event_ts: float | None

    @property
    def missing(self) -> bool:
        return self.event_ts is None


class RawSource(Protocol):
    """Reads the feature service for entity rows; returns one ``{view: ViewRow}`` per row."""

    async def read(self, rows: list[dict[str, str]]) -> list[dict[str, ViewRow]]: ...


def _split_views(values: dict[str, Any], timestamps: dict[str, float | None]) -> dict[str, ViewRow]:
    out = {}
    for view, names in VIEW_FEATURES.items():
        ts = [timestamps.get(n) for n in names]
        present = [t for t in ts if t]
        out[view] = ViewRow(
            values={n: values.get(n) for n in names}, event_ts=max(present) if present else None
        )
    return out


class FeastSdkSource:
    """The Feast SDK on a local repository (SQLite online store); reads run in a worker thread."""

    def __init__(self, repo_path: Path) -> None:
        from feast import FeatureStore  # heavy import kept out of module import

        self.store = FeatureStore(repo_path=str(repo_path))
        self.service = self.store.get_feature_service(F.FEATURE_SERVICE)

    def read_sync(self, rows: list[dict[str, str]]) -> list[dict[str, ViewRow]]:
        """Read the service's features for ``rows`` (blocking)."""
        resp = self.store.get_online_features(features=self.service, entity_rows=rows)
        data = resp.to_dict(include_event_timestamps=True)
        out = []
        for i in range(len(rows)):
            values = {n: data[n][i] for n in VIEW_FEATURES[F.WEATHER_VIEW] + VIEW_FEATURES[
                F.PLANE_VIEW] + VIEW_FEATURES[F.CARRIER_STATS_VIEW]}  # fmt: skip
            ts = {n: float(data[f"{n}__ts"][i]) or None for n in values}
            out.append(_split_views(values, ts))
        return out

    async def read(self, rows: list[dict[str, str]]) -> list[dict[str, ViewRow]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.read_sync, rows)


def _proto_value(value: dict[str, Any]) -> Any:
    # MessageToDict renders a Feast Value as {"double_val": 1.0}, {"string_val": "x"} or {}.
    for key in ("double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val"):
        if key in value:
            v = value[key]
            return int(v) if key == "int64_val" else v
    return None


class FeastHttpSource:
    """The Feast feature server (``feast serve``) over HTTP: ``POST /get-online-features``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import httpx

        self.url = url.rstrip("/") + "/get-online-features"
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def read(self, rows: list[dict[str, str]]) -> list[dict[str, ViewRow]]:
        import httpx

        entities = {key: [r[key] for r in rows] for key in F.ENTITY_KEYS}
        body = {"feature_service": F.FEATURE_SERVICE, "entities": entities}
        try:
            resp = await self.client.post(self.url, json=body)
            resp.raise_for_status()
        except httpx.HTTPError as err:
            raise FeatureLookupError(f"feature server {self.url}: {err!r}") from err
        payload = resp.json()
        names = payload["metadata"]["feature_names"]
        out: list[dict[str, ViewRow]] = []
        for i in range(len(rows)):
            values: dict[str, Any] = {}
            ts: dict[str, float | None] = {}
            for name, result in zip(names, payload["results"], strict=True):
                if name in F.ENTITY_KEYS:
                    continue
                values[name] = _proto_value(result["values"][i])
                status = result.get("statuses", ["PRESENT"] * len(rows))[i]
                stamp = result.get("event_timestamps", [None] * len(rows))[i]
                ts[name] = (
                    datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                    if status == "PRESENT" and stamp
                    else None
                )
            out.append(_split_views(values, ts))
        return out


@dataclass
class Lookup:
    """The Feast features of one request row and what the lookup saw.

    Attributes:
        features: Every Feast feature of the contract (``None`` where absent).
        missing_views: Views whose entity the online store does not hold.
        staleness_s: Age of each present view's values (now minus event timestamp), seconds.
    """

    features: dict[str, Any]
    missing_views: list[str]
    staleness_s: dict[str, float]


class OnlineFeatures:
    """Online lookups with a per-entity TTL cache, a timeout and a missing-entity policy.

    Args:
        source: Where rows are read from.
        timeout_s: Deadline of one lookup; past it the request fails with ``FeatureLookupError``.
        cache_ttl_s: How long an entity's row is reused; 0 disables the cache.
        max_cache_entries: Bound of the cache (cleared when full: simple, and entities are few).
    """

    def __init__(
        self,
        source: RawSource,
        timeout_s: float = 0.2,
        cache_ttl_s: float = 5.0,
        max_cache_entries: int = 50_000,
    ) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        self.max_cache_entries = max_cache_entries
        self._cache: dict[tuple[str, str], tuple[float, ViewRow]] = {}
        self.hits = 0
        self.misses = 0

    def _cached(self, view: str, key: str, now: float) -> ViewRow | None:
        hit = self._cache.get((view, key))
        if hit is None or now - hit[0] > self.cache_ttl_s:
            return None
        return hit[1]

    async def lookup(self, rows: list[dict[str, Any]]) -> list[Lookup]:
        """Return the Feast features for each request row (which carries the entity keys).

        Raises:
            FeatureLookupError: The source failed or exceeded the timeout.
        """
        now = time.monotonic()
        found: list[dict[str, ViewRow]] = []
        todo: list[int] = []
        for i, row in enumerate(rows):
            views = {}
            for view, key in VIEW_KEYS.items():
                hit = self._cached(view, row[key], now) if self.cache_ttl_s > 0 else None
                if hit is not None:
                    views[view] = hit
            found.append(views)
            if len(views) < len(VIEW_KEYS):
                todo.append(i)
        self.hits += len(rows) - len(todo)
        self.misses += len(todo)
        if todo:
            entity_rows = [{k: rows[i][k] for k in F.ENTITY_KEYS} for i in todo]
            try:
                read = await asyncio.wait_for(self.source.read(entity_rows), self.timeout_s)
            except TimeoutError as err:
                raise FeatureLookupError(
                    f"online feature lookup exceeded {self.timeout_s * 1000:.0f} ms"
                ) from err
            except FeatureLookupError:
                raise
            except Exception as err:  # the store's own errors: report as a lookup failure
                raise FeatureLookupError(f"online feature lookup failed: {err!r}") from err
            if len(self._cache) > self.max_cache_entries:
                self._cache.clear()
            for i, views in zip(todo, read, strict=True):
                for view, vrow in views.items():
                    found[i][view] = vrow
                    if self.cache_ttl_s > 0:
                        self._cache[(view, rows[i][VIEW_KEYS[view]])] = (now, vrow)
        wall = time.time()
        out = []
        for views in found:
            feats: dict[str, Any] = {}
            missing: list[str] = []
            stale: dict[str, float] = {}
            for view, vrow in views.items():
                feats.update(vrow.values)
                if vrow.missing:
                    missing.append(view)
                else:
                    stale[view] = max(0.0, wall - float(vrow.event_ts or 0.0))
            out.append(Lookup(features=feats, missing_views=missing, staleness_s=stale))
        return out


def is_missing(value: Any) -> bool:
    """Whether a feature value counts as missing (``None`` or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
