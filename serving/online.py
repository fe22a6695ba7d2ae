"""Online feature lookup for the transformer: the Feast SDK locally, the feature server over HTTP.

Both read the feature service ``mlops.features.FEATURE_SERVICE`` (the same one the training set is
joined from) for the entity keys of the request rows, under a timeout.

A Feast read costs milliseconds of Python whatever its size (the SDK resolves the registry on every
call), so ``OnlineFeatures`` keeps each entity's row (per feature view: origin, tail number,
carrier) and reads Feast in batches:

* a row younger than ``fresh_s`` is served from memory;
* a row between ``fresh_s`` and ``max_stale_s`` old is served from memory and queued for a
  background refresh; queued keys are read together ``refresh_delay_s`` later (stale-while-
  revalidate), so a hot entity costs no read on the request path and at most one read per
  ``fresh_s``;
* a missing or too old row is a miss: the request waits for it, and the misses of every request in
  the same event-loop turn share one read (a key already being read is not read twice);
* ``preload()`` loads the rows of known entity keys at start-up (``entity_keys_of_repo`` lists them
  from the feature views' batch sources), so the first requests do not pay for misses.

A served row is therefore at most ``max_stale_s`` (plus one read) older than the online store.
``fresh_s=0`` turns the cache off: every row is read per request.

The real-time views (``F.REALTIME_VIEWS``, written by pushes at every scheduled departure) have
their own, short bounds: ``realtime_fresh_s`` (1 s) and ``realtime_max_stale_s`` (5 s), so a
pushed row reaches requests within about 5 s, small against the one-minute resolution of
departure times and the 15-minute staleness bound. Stale-while-revalidate matters here: keyed by
tail number they are read for nearly every request, and reading each expired key on the request
path cost 4x the throughput (bench_serving: 253 against ~1,100 requests/s); refreshed in the
background they cost about two reads a second. ``realtime_fresh_s=0`` reads them on every
request.

Staleness policy (``Lookup``): every request row has a prediction moment (the request's
``event_timestamp``, else the server's clock). A real-time view's row stamped more than
``F.REALTIME_MAX_AGE_MINUTES`` before that moment (the feed stopped) or after it (a value that
could not be known at the moment: leakage) is served as missing, as the model saw a missing
value in training, and reported in ``Lookup.stale_views``. Ages reported are the moment minus the
values' event timestamp, cache included.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from mlops import features as F
from mlops import telemetry as T

log = logging.getLogger(__name__)

# Each view's features, in contract order (its join keys are ``F.VIEW_KEYS[view]``).
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    view: tuple(f.name for f in F.FEAST_FEATURES if f.source == view) for view in F.VIEW_KEYS
}
MISSING_POLICIES = ("impute", "reject")
# Why a real-time row was served as missing (the ``reason`` label of the stale counter).
TOO_OLD, FUTURE = T.STALE_REASONS
REALTIME_MAX_AGE_S = F.REALTIME_MAX_AGE_MINUTES * 60.0
# A key that no entity has: pads the join keys an entity row does not need.
_PAD_KEY = "\x00pad"

# An entity key: the values of the view's join keys, in ``F.VIEW_KEYS[view]`` order.
Key: TypeAlias = tuple[str, ...]
KeysByView = dict[str, list[Key]]
Rows = dict[str, dict[Key, "ViewRow"]]
Placement = dict[tuple[str, Key], int]


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


def missing_row(view: str) -> ViewRow:
    """The row of an entity the online store does not hold."""
    return ViewRow(values={n: None for n in VIEW_FEATURES[view]}, event_ts=None)


class RawSource(Protocol):
    """Reads the feature service for entity keys; returns ``{view: {key: ViewRow}}``."""

    async def read(self, keys: KeysByView) -> Rows: ...


def entity_key(view: str, row: dict[str, Any]) -> Key:
    """The key of ``view`` in a request row (which carries every join key)."""
    return tuple(str(row[name]) for name in F.VIEW_KEYS[view])


def entity_rows(keys: KeysByView) -> tuple[list[dict[str, str]], Placement]:
    """Entity rows covering ``keys`` in one read, and the row each ``(view, key)`` is read from.

    One Feast read needs every join key of the service in every row. Views are packed side by
    side: a key goes to a row that already holds its join-key values (the weather and the
    origin's departures of one origin share a row) or whose join keys it needs are still free;
    join keys no view needs in a row are padded. A read costs about max(len(keys)) rows instead
    of one read per view. Views with more join keys are placed first, so the free slots single-
    key views fill are never half taken.
    """
    rows: list[dict[str, str]] = []
    placement: Placement = {}
    exact: dict[tuple[tuple[str, ...], Key], int] = {}
    free: dict[str, list[int]] = {name: [] for name in F.ENTITY_KEYS}  # rows with the key unset
    cursor: dict[str, int] = dict.fromkeys(F.ENTITY_KEYS, 0)
    views = sorted(keys, key=lambda v: -len(F.VIEW_KEYS[v]))
    for view in views:
        names = F.VIEW_KEYS[view]
        for key in keys[view]:
            at = exact.get((names, key))
            if at is None and len(names) == 1:
                slots, i = free[names[0]], cursor[names[0]]
                while i < len(slots) and names[0] in rows[slots[i]]:
                    i += 1
                cursor[names[0]] = i
                if i < len(slots):
                    at = slots[i]
                    cursor[names[0]] = i + 1
            if at is None:
                at = len(rows)
                rows.append({})
                for name in F.ENTITY_KEYS:
                    if name not in names:
                        free[name].append(at)
            for name, value in zip(names, key, strict=True):
                rows[at][name] = value
                exact.setdefault(((name,), (value,)), at)
            exact[(names, key)] = at
            placement[(view, key)] = at
    for row in rows:
        for name in F.ENTITY_KEYS:
            row.setdefault(name, _PAD_KEY)
    return rows, placement


def _rows_to_views(
    keys: KeysByView,
    placement: Placement,
    values: list[dict[str, Any]],
    stamps: list[dict[str, float | None]],
) -> Rows:
    """Per-row feature values and event timestamps back to ``{view: {key: ViewRow}}``."""
    out: Rows = {}
    for view, vkeys in keys.items():
        names = VIEW_FEATURES[view]
        rows: dict[Key, ViewRow] = {}
        for key in vkeys:
            i = placement[(view, key)]
            present = [t for t in (stamps[i].get(n) for n in names) if t]
            rows[key] = ViewRow(
                values={n: values[i].get(n) for n in names},
                event_ts=max(present) if present else None,
            )
        out[view] = rows
    return out


class FeastSdkSource:
    """The Feast SDK on a local repository (SQLite online store); reads run in a worker thread.

    Reads go to the online store's ``online_read`` per feature view, with the views resolved once
    here. ``FeatureStore.get_online_features`` resolves the feature service and its views from the
    registry protos on every call: about 8 ms of CPU here whatever the read's size, 30 times the
    store read itself for a single request's keys, and with the real-time views re-read every
    second it held the GIL that the event loop serves requests with. What is read and returned
    is the same (values converted by Feast's own ``feast_value_type_to_python_type``, event
    timestamps as the SDK's); ``tests/integration/test_online_cache.py`` checks it against
    ``get_online_features``. A changed feature definition is picked up at the next start, as the
    served model's feature set is fixed anyway.
    """

    def __init__(self, repo_path: Path) -> None:
        from feast import FeatureStore  # heavy import kept out of module import

        self.repo_path = Path(repo_path)
        self.store = FeatureStore(repo_path=str(repo_path))
        self.service = self.store.get_feature_service(F.FEATURE_SERVICE)
        served = {p.name for p in self.service.feature_view_projections}
        missing = sorted(set(F.VIEW_KEYS) - served)
        if missing:
            raise FeatureLookupError(
                f"feature service {F.FEATURE_SERVICE!r} of {repo_path} lacks views {missing}"
            )
        self._views = {view: self.store.get_feature_view(view) for view in F.VIEW_KEYS}
        # The provider's ``online_read`` is the store read ``get_online_features`` makes; the
        # FeatureStore has no public accessor for its provider.
        self._provider = self.store._get_provider()

    def read_sync(self, keys: KeysByView) -> Rows:
        """Read the service's features for ``keys`` (blocking)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type as to_python

        out: Rows = {}
        for view, vkeys in keys.items():
            names, features = F.VIEW_KEYS[view], VIEW_FEATURES[view]
            entity_keys = [
                EntityKey(join_keys=list(names), entity_values=[Value(string_val=v) for v in key])
                for key in vkeys
            ]
            read = self._provider.online_read(
                self.store.config, self._views[view], entity_keys, list(features)
            ) if vkeys else []  # fmt: skip
            rows: dict[Key, ViewRow] = {}
            for key, (ts, found) in zip(vkeys, read, strict=True):
                if ts is None or found is None:
                    rows[key] = missing_row(view)
                    continue
                rows[key] = ViewRow(
                    values={n: to_python(found[n]) if n in found else None for n in features},
                    event_ts=_epoch_s(ts),
                )
            out[view] = rows
        return out

    async def read(self, keys: KeysByView) -> Rows:
        return await asyncio.get_running_loop().run_in_executor(None, self.read_sync, keys)


def _epoch_s(ts: datetime) -> float:
    """Epoch seconds of an online store's event timestamp (naive means UTC, as Feast writes it)."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def entity_keys_of_repo(store: Any, limit: int = 20_000) -> KeysByView:
    """Distinct entity keys of each batch view of the service, from the views' batch sources.

    The online store holds (at most) the entities the batch sources have; reading these keys at
    start-up fills the cache before the first request. At most ``limit`` keys per view. The
    real-time views are left out: their rows change with every push and are cached for about a
    second, so a warm-up would be stale before the first request.
    """
    import pandas as pd

    keys: KeysByView = {}
    for view, names in F.VIEW_KEYS.items():
        if view in F.REALTIME_VIEWS:
            continue
        source = store.get_feature_view(view).batch_source
        path = getattr(source, "path", None) or source.batch_source.path  # a push source's batch
        frame = pd.read_parquet(path, columns=list(names)).dropna().astype(str)
        unique = frame.drop_duplicates()
        keys[view] = [tuple(r) for r in unique.itertuples(index=False, name=None)][:limit]
    return keys


def _proto_value(value: Any) -> Any:
    # Feast 0.47's `feast serve` answers plain JSON values (1.0, "x", null); older servers sent
    # MessageToDict's {"double_val": 1.0}, {"string_val": "x"} or {}.
    if not isinstance(value, dict):
        return value
    for key in ("double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val"):
        if key in value:
            v = value[key]
            return int(v) if key == "int64_val" else v
    return None


class FeastHttpSource:
    """The Feast feature server (``feast serve``) over HTTP: ``POST /get-online-features``.

    A read is idempotent, so a connection failure or a 5xx answer is retried (``retries`` more
    times, ``backoff_s`` apart, doubling) while ``OnlineFeatures``' deadline allows; a 4xx, a
    malformed answer or the deadline itself fails the read with a ``FeatureLookupError`` that names
    the cause (never the client's internal objects), and the request gets a 503.
    """

    def __init__(
        self, url: str, timeout_s: float, retries: int = 1, backoff_s: float = 0.01
    ) -> None:
        import httpx

        self.url = url.rstrip("/") + "/get-online-features"
        self.client = httpx.AsyncClient(timeout=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s

    async def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = await self.client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                raise FeatureLookupError(f"feature server {self.url}: timed out") from err
            except httpx.TransportError as err:
                if last:
                    raise FeatureLookupError(
                        f"feature server {self.url}: connection failed ({type(err).__name__})"
                    ) from err
            else:
                if resp.status_code < 500 or last:
                    break
            await asyncio.sleep(delay)
            delay *= 2
        if resp.status_code != 200:
            raise FeatureLookupError(f"feature server {self.url}: HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError as err:
            raise FeatureLookupError(f"feature server {self.url}: answer is not JSON") from err

    async def read(self, keys: KeysByView) -> Rows:
        rows, placement = entity_rows(keys)
        if not rows:
            return {view: {} for view in keys}
        entities = {key: [r[key] for r in rows] for key in F.ENTITY_KEYS}
        body = {"feature_service": F.FEATURE_SERVICE, "entities": entities}
        payload = await self._post(body)
        try:
            return self._parse(keys, rows, placement, payload)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise FeatureLookupError(
                f"feature server {self.url}: unexpected answer ({type(err).__name__}: {err})"
            ) from err

    @staticmethod
    def _parse(
        keys: KeysByView, rows: list[dict[str, str]], placement: Placement, payload: Any
    ) -> Rows:
        names = payload["metadata"]["feature_names"]
        values: list[dict[str, Any]] = [{} for _ in rows]
        stamps: list[dict[str, float | None]] = [{} for _ in rows]
        for name, result in zip(names, payload["results"], strict=True):
            if name in F.ENTITY_KEYS:
                continue
            statuses = result.get("statuses", ["PRESENT"] * len(rows))
            times = result.get("event_timestamps", [None] * len(rows))
            for i in range(len(rows)):
                values[i][name] = _proto_value(result["values"][i])
                stamp = times[i]
                stamps[i][name] = (
                    datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                    if statuses[i] == "PRESENT" and stamp
                    else None
                )
        return _rows_to_views(keys, placement, values, stamps)


@dataclass
class Lookup:
    """The Feast features of one request row and what the lookup saw.

    Attributes:
        features: Every Feast feature of the contract (``None`` where absent or stale).
        missing_views: Views whose entity the online store does not hold.
        staleness_s: Age of each present view's values at the prediction moment (the moment minus
            their event timestamp; negative for a row from after the moment), seconds.
        stale_views: Real-time views whose row was served as missing, with the reason
            (``TOO_OLD`` or ``FUTURE``), by the staleness policy.
    """

    features: dict[str, Any]
    missing_views: list[str]
    staleness_s: dict[str, float]
    stale_views: dict[str, str] = field(default_factory=dict)


@dataclass
class CacheStats:
    """Counters of the entity cache (per view row, not per request)."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    reads: int = 0
    rows_read: int = 0
    read_errors: int = 0


class OnlineFeatures:
    """Online lookups with a per-entity cache, batched reads, a timeout and a missing-entity policy.

    Args:
        source: Where rows are read from.
        timeout_s: Deadline of one read; past it the waiting requests fail with
            ``FeatureLookupError`` (a background refresh keeps the old row).
        fresh_s: Age up to which a cached row is served without a read; 0 disables the cache.
        max_stale_s: Age up to which a cached row is still served while it is refreshed in the
            background; older rows are misses.
        refresh_delay_s: How long stale keys gather before their background read.
        max_entries: Bound of the cache; the oldest-written rows are evicted first.
        realtime_fresh_s: ``fresh_s`` of the real-time views; 0 reads them on every request.
        realtime_max_stale_s: ``max_stale_s`` of the real-time views.
    """

    def __init__(
        self,
        source: RawSource,
        timeout_s: float = 0.2,
        fresh_s: float = 30.0,
        max_stale_s: float = 300.0,
        refresh_delay_s: float = 0.5,
        max_entries: int = 100_000,
        realtime_fresh_s: float = 1.0,
        realtime_max_stale_s: float = 5.0,
    ) -> None:
        if fresh_s > max_stale_s:
            raise ValueError("fresh_s must not exceed max_stale_s")
        if not 0 <= realtime_fresh_s <= realtime_max_stale_s:
            raise ValueError("realtime_fresh_s must be >= 0 and not exceed realtime_max_stale_s")
        self.source = source
        self.timeout_s = timeout_s
        self.fresh_s = fresh_s
        self.max_stale_s = max_stale_s
        self.refresh_delay_s = refresh_delay_s
        self.max_entries = max_entries
        self.realtime_fresh_s = realtime_fresh_s
        # (fresh, max stale) per view: a real-time row changes with every push.
        self._bounds = {
            view: (realtime_fresh_s, realtime_max_stale_s)
            if view in F.REALTIME_VIEWS
            else (fresh_s, max_stale_s)
            for view in F.VIEW_KEYS
        }
        self.stats = CacheStats()
        self._cache: dict[tuple[str, Key], tuple[float, ViewRow]] = {}
        self._inflight: dict[tuple[str, Key], asyncio.Future[ViewRow]] = {}
        # Keys (ordered sets) of the next read and of the next background refresh.
        self._pending: dict[str, dict[Key, None]] = {}
        self._read_scheduled = False
        self._stale: dict[str, dict[Key, None]] = {}
        self._refresh_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def caching(self) -> bool:
        """Whether the batch views are cached (and worth a warm-up)."""
        return self.fresh_s > 0

    def _store(self, view: str, key: Key, row: ViewRow, at: float) -> None:
        if self._bounds[view][0] <= 0:
            return
        self._cache.pop((view, key), None)
        self._cache[(view, key)] = (at, row)
        while len(self._cache) > self.max_entries:
            del self._cache[next(iter(self._cache))]

    async def _read(self, keys: KeysByView) -> Rows:
        self.stats.reads += 1
        self.stats.rows_read += sum(len(v) for v in keys.values())
        try:
            return await asyncio.wait_for(self.source.read(keys), self.timeout_s)
        except TimeoutError as err:
            raise FeatureLookupError(
                f"online feature lookup exceeded {self.timeout_s * 1000:.0f} ms"
            ) from err
        except FeatureLookupError:
            raise
        except Exception as err:  # the store's own errors: report as a lookup failure
            raise FeatureLookupError(
                f"online feature lookup failed: {type(err).__name__}: {err}"
            ) from err

    def _want(self, view: str, key: Key, queue: dict[str, dict[Key, None]]) -> None:
        """Queue a read of ``key`` unless one is under way or queued.

        A key waiting for a (delayed) background refresh that a request now needs moves to the
        next read, so no request waits for the refresh delay.
        """
        if (view, key) not in self._inflight:
            fut: asyncio.Future[ViewRow] = asyncio.get_running_loop().create_future()
            # A background refresh's failure has no waiter: mark it retrieved.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._inflight[(view, key)] = fut
            queue.setdefault(view, {})[key] = None
        elif queue is self._pending and key in self._stale.get(view, {}):
            del self._stale[view][key]
            self._pending.setdefault(view, {})[key] = None

    async def _run_read(self, keys: KeysByView) -> None:
        started = time.monotonic()
        futures = {(v, k): self._inflight.pop((v, k)) for v, ks in keys.items() for k in ks}
        try:
            result = await self._read(keys)
        except FeatureLookupError as err:
            # Waiting requests get the error; rows being refreshed keep their old value.
            self.stats.read_errors += 1
            log.warning("online feature read of %d keys failed: %s", len(futures), err)
            for fut in futures.values():
                if not fut.done():
                    fut.set_exception(err)
            return
        for (view, key), fut in futures.items():
            row = result.get(view, {}).get(key) or missing_row(view)
            self._store(view, key, row, started)
            if not fut.done():
                fut.set_result(row)

    def _read_pending(self) -> None:
        queue, self._pending, self._read_scheduled = self._pending, {}, False
        self._launch(queue)

    def _refresh_stale(self) -> None:
        queue, self._stale, self._refresh_scheduled = self._stale, {}, False
        self._launch(queue)

    def _launch(self, queue: dict[str, dict[Key, None]]) -> None:
        keys = {view: list(ks) for view, ks in queue.items() if ks}
        if not keys:
            return
        task = asyncio.get_running_loop().create_task(self._run_read(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def lookup(
        self, rows: list[dict[str, Any]], moments: list[float] | None = None
    ) -> list[Lookup]:
        """Return the Feast features for each request row (which carries the entity keys).

        Args:
            rows: Request rows, each with every join key of ``F.ENTITY_KEYS``.
            moments: Prediction moment of each row (epoch seconds); default the clock now. The
                staleness policy of the real-time views is applied against it.

        Raises:
            FeatureLookupError: A read this request waits for failed or exceeded the timeout.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        found: list[dict[str, ViewRow]] = [{} for _ in rows]
        waits: list[tuple[int, str, asyncio.Future[ViewRow]]] = []
        for i, row in enumerate(rows):
            for view in F.VIEW_KEYS:
                key = entity_key(view, row)
                fresh_s, max_stale_s = self._bounds[view]
                hit = self._cache.get((view, key)) if fresh_s > 0 else None
                age = now - hit[0] if hit is not None else math.inf
                if hit is not None and age <= max_stale_s:
                    found[i][view] = hit[1]
                    if age <= fresh_s:
                        self.stats.hits += 1
                    else:
                        self.stats.stale_hits += 1
                        self._want(view, key, self._stale)
                    continue
                self.stats.misses += 1
                self._want(view, key, self._pending)
                waits.append((i, view, self._inflight[(view, key)]))
        if self._stale and not self._refresh_scheduled:
            self._refresh_scheduled = True
            loop.call_later(self.refresh_delay_s, self._refresh_stale)
        if self._pending and not self._read_scheduled:
            self._read_scheduled = True
            loop.call_soon(self._read_pending)
        if waits:
            # asyncio.wait, not gather: a cancelled request must not cancel a shared read.
            await asyncio.wait({w[2] for w in waits})
            for i, view, fut in waits:
                found[i][view] = fut.result()  # raises the read's FeatureLookupError
        wall = time.time()
        if moments is None:
            moments = [wall] * len(rows)
        return [_lookup_of(views, at) for views, at in zip(found, moments, strict=True)]

    def preload(
        self, read: Callable[[KeysByView], Rows], keys: KeysByView, chunk: int = 2_000
    ) -> int:
        """Fill the cache with ``read(keys)`` in chunks, before serving; return the rows loaded."""
        if not self.caching:
            return 0
        loaded = 0
        width = max((len(ks) for ks in keys.values()), default=0)
        for start in range(0, width, chunk):
            part = {v: ks[start : start + chunk] for v, ks in keys.items() if ks[start:]}
            started = time.monotonic()
            for view, rows in read(part).items():
                for key, row in rows.items():
                    self._store(view, key, row, started)
                    loaded += 1
        return loaded

    async def close(self) -> None:
        """Wait for reads under way (tests and shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))


def _lookup_of(views: dict[str, ViewRow], moment: float) -> Lookup:
    """One row's features with the staleness policy applied at its prediction moment."""
    feats: dict[str, Any] = {}
    missing: list[str] = []
    ages: dict[str, float] = {}
    stale: dict[str, str] = {}
    for view, vrow in views.items():
        if vrow.missing:
            missing.append(view)
            feats.update(vrow.values)
            continue
        age = moment - float(vrow.event_ts or 0.0)
        ages[view] = age
        if view in F.REALTIME_VIEWS and (age > REALTIME_MAX_AGE_S or age < 0):
            # The model saw a missing value where the real-time row was absent: serve that.
            stale[view] = TOO_OLD if age > 0 else FUTURE
            feats.update(dict.fromkeys(vrow.values))
        else:
            feats.update(vrow.values)
    return Lookup(features=feats, missing_views=missing, staleness_s=ages, stale_views=stale)
