"""The online feature cache over the real Feast SDK store, and the model process.

The cache is what makes serving fast (one Feast read costs milliseconds of Python); these tests
check it never serves what it must not: rows older than ``max_stale_s``, a failed read as data,
or a stale row without refreshing it. Reads go to the real SQLite online store through
``FeastSdkSource``; ``CountingSource`` only counts them (and can be told to fail, for the error
path).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import features as F
from mlops.feast_ops import materialize
from serving.online import (
    VIEW_FEATURES,
    FeastSdkSource,
    FeatureLookupError,
    KeysByView,
    OnlineFeatures,
    Rows,
    entity_key,
    entity_keys_of_repo,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
AT = datetime(2013, 3, 1, tzinfo=UTC)


class CountingSource:
    """The real Feast SDK source, counting reads and the keys asked for."""

    def __init__(self, sdk: FeastSdkSource) -> None:
        self.sdk = sdk
        self.reads: list[KeysByView] = []
        self.fail = False

    async def read(self, keys: KeysByView) -> Rows:
        self.reads.append(keys)
        if self.fail:
            raise OSError("online store unavailable")
        return await self.sdk.read(keys)


@pytest.fixture(scope="module")
def sdk(prepared_repo: Path) -> FeastSdkSource:
    materialize(prepared_repo, datetime(2012, 12, 1, tzinfo=UTC), AT)
    return FeastSdkSource(prepared_repo)


@pytest.fixture(scope="module")
def rows(prepared_repo: Path) -> list[dict[str, str]]:
    """Entity keys of 40 real flights of the materialized window (some tail numbers repeat)."""
    flights = pd.read_parquet(prepared_repo / "data" / "flights.parquet")
    flights = flights[flights[F.EVENT_TIMESTAMP] < pd.Timestamp(AT)].tail(40)
    return [{**{k: str(r[k]) for k in F.ENTITY_KEYS}, "at": r[F.EVENT_TIMESTAMP].isoformat()}
            for r in flights.to_dict(orient="records")]  # fmt: skip


def test_cached_lookup_equals_a_direct_feast_read(sdk: FeastSdkSource, rows: list) -> None:
    """Features through the cache (cold, then warm) are the SDK's own answer for the rows."""
    entity_rows = [{k: r[k] for k in F.ENTITY_KEYS} for r in rows]
    direct = sdk.store.get_online_features(features=sdk.service, entity_rows=entity_rows).to_dict()
    online = OnlineFeatures(CountingSource(sdk), timeout_s=5.0, fresh_s=60, max_stale_s=120,
                            realtime_fresh_s=60, realtime_max_stale_s=60)  # fmt: skip
    # Each flight's own departure minute: its real-time rows are those materialized for it
    # (or older ones, which the staleness policy may serve as missing).
    moments = [datetime.fromisoformat(r["at"]).timestamp() for r in rows]

    async def run() -> tuple[list, list]:
        return await online.lookup(rows, moments), await online.lookup(rows, moments)

    cold, warm = asyncio.run(run())
    source_of = {f.name: f.source for f in F.FEAST_FEATURES}
    for i, (a, b) in enumerate(zip(cold, warm, strict=True)):
        assert a.features == b.features
        for name, value in a.features.items():
            expected = direct[name][i]
            if source_of[name] in a.stale_views:
                assert value is None, name
            else:
                assert value == expected or (value is None and expected is None), name
    # The policy let through real-time rows (the flights' own minutes were materialized).
    assert sum(len(a.stale_views) for a in cold) < len(rows) * len(F.REALTIME_VIEWS)
    assert online.stats.reads == 1  # the warm pass read nothing
    assert online.stats.hits == len(rows) * len(F.VIEW_KEYS)


def test_store_reads_equal_the_sdk_answer(sdk: FeastSdkSource, rows: list) -> None:
    """``read_sync`` (the online store, view by view) answers what ``get_online_features`` does.

    Values and each view's event timestamp, for real flights and for an entity the store does
    not hold (missing: no timestamp, every value ``None``).
    """
    unknown = {F.ORIGIN: "XXX", F.CARRIER: "ZZ", F.TAILNUM: "N0NE"}
    entity_rows = [{k: r[k] for k in F.ENTITY_KEYS} for r in rows] + [unknown]
    direct = sdk.store.get_online_features(features=sdk.service, entity_rows=entity_rows)
    expected = direct.to_dict(include_event_timestamps=True)
    keys = {v: list(dict.fromkeys(entity_key(v, r) for r in entity_rows)) for v in F.VIEW_KEYS}
    got = sdk.read_sync(keys)
    present = 0
    for i, row in enumerate(entity_rows):
        for view, names in VIEW_FEATURES.items():
            read = got[view][entity_key(view, row)]
            for name in names:
                value, want = read.values[name], expected[name][i]
                assert (
                    value == want or (value is want is None) or (np.isnan(value) and np.isnan(want))
                ), (view, name, i)
            stamps = [expected[f"{n}__ts"][i] for n in names]
            if read.missing:
                assert not any(stamps), (view, i)
            else:
                present += 1
                assert read.event_ts == max(stamps), (view, i)
    assert all(got[v][entity_key(v, unknown)].missing for v in F.VIEW_KEYS)
    assert present > len(rows) * (len(F.VIEW_KEYS) - 1)  # real flights' rows are there


def test_concurrent_misses_share_one_read(sdk: FeastSdkSource, rows: list) -> None:
    source = CountingSource(sdk)
    online = OnlineFeatures(source, timeout_s=5.0, fresh_s=60, max_stale_s=120)

    async def run() -> None:
        # 20 requests in the same event-loop turn, asking for overlapping entities.
        await asyncio.gather(*(online.lookup(rows[i : i + 5]) for i in range(20)))

    asyncio.run(run())
    assert len(source.reads) == 1
    tails = source.reads[0][F.PLANE_VIEW]
    assert len(tails) == len(set(tails)) == len({r[F.TAILNUM] for r in rows[:24]})
    # The compound key of the carrier's departures at the origin: each (carrier, origin) once.
    pairs = source.reads[0][F.CARRIER_ORIGIN_RT_VIEW]
    assert set(pairs) == {(r[F.CARRIER], r[F.ORIGIN]) for r in rows[:24]}
    assert len(pairs) == len(set(pairs))


def test_stale_rows_are_served_then_refreshed_and_expire(sdk: FeastSdkSource, rows: list) -> None:
    source = CountingSource(sdk)
    online = OnlineFeatures(
        source, timeout_s=5.0, fresh_s=0.2, max_stale_s=1.0, refresh_delay_s=0.05,
        realtime_fresh_s=60, realtime_max_stale_s=60,  # the batch views' cache is under test
    )  # fmt: skip
    few = rows[:3]
    batch_views = len(F.VIEW_KEYS) - len(F.REALTIME_VIEWS)

    async def run() -> None:
        await online.lookup(few)
        assert len(source.reads) == 1
        await asyncio.sleep(0.3)  # past fresh, within max_stale: served, refreshed after
        await online.lookup(few)
        assert online.stats.stale_hits == len(few) * batch_views
        assert len(source.reads) == 1  # the request did not wait for a read
        await asyncio.sleep(0.2)
        assert len(source.reads) == 2  # the background refresh ran
        await online.lookup(few)
        assert len(source.reads) == 2  # refreshed rows are fresh again
        # A failing store: the refresh fails, the old row is served until max_stale ...
        source.fail = True
        await asyncio.sleep(0.3)
        await online.lookup(few)
        await asyncio.sleep(0.2)
        assert online.stats.read_errors == 1
        # ... and past it the request fails instead of getting a too-old row.
        await asyncio.sleep(1.0)
        with pytest.raises(FeatureLookupError, match="online store unavailable"):
            await online.lookup(few)
        await online.close()

    asyncio.run(run())


def test_unknown_entities_are_missing_and_preload_fills_the_cache(
    sdk: FeastSdkSource, rows: list
) -> None:
    source = CountingSource(sdk)
    online = OnlineFeatures(source, timeout_s=5.0, fresh_s=60, max_stale_s=120)
    keys = entity_keys_of_repo(sdk.store)
    assert len(keys[F.PLANE_VIEW]) > 3000 and len(keys[F.WEATHER_VIEW]) == 3
    assert not set(keys) & set(F.REALTIME_VIEWS)  # rows that change per push: not preloaded
    started = time.perf_counter()
    loaded = online.preload(sdk.read_sync, keys)
    assert loaded == sum(len(v) for v in keys.values())
    assert time.perf_counter() - started < 60
    unknown = {**rows[0], F.TAILNUM: "N0NE"}

    async def run() -> list:
        return await online.lookup([*rows, unknown])

    found = asyncio.run(run())
    # Only tail numbers the planes table lacks are read among the batch views: everything else
    # was preloaded. The real-time views are read (they are not preloaded).
    known = {k[0] for k in keys[F.PLANE_VIEW]}
    expected = {r[F.TAILNUM] for r in rows if r[F.TAILNUM] not in known} | {"N0NE"}
    assert len(source.reads) == 1
    assert set(source.reads[0]) == {F.PLANE_VIEW, *F.REALTIME_VIEWS}
    assert {k[0] for k in source.reads[0][F.PLANE_VIEW]} == expected
    assert F.PLANE_VIEW in found[-1].missing_views
    assert all(found[-1].features[n] is None for n in ("plane_year", "plane_seats"))


async def call(proc: Any, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """One ``start_call``, as the predictor's batcher makes it, awaited."""
    fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()

    def done(scores: np.ndarray | None, err: BaseException | None) -> None:
        if fut.done():
            return
        if err is not None or scores is None:
            fut.set_exception(err or RuntimeError("no scores"))
        else:
            fut.set_result(scores)

    proc.start_call(numeric, categorical, done)
    return await fut


def test_model_process_scores_like_the_model_and_survives_its_child(tmp_path: Path) -> None:
    from model_fixtures import export_logistic_model

    from serving.runtime import CATEGORICAL, NUMERIC, ModelProcess, SavedModelScorer

    model_dir = str(export_logistic_model(tmp_path / "model", carrier_bonus={"UA": 0.4}))
    rng = np.random.default_rng(0)
    numeric = rng.uniform(0, 20, size=(16, len(NUMERIC))).astype(np.float32)
    numeric[3, 0] = np.nan
    categorical = np.array([[b"UA" if i % 2 else b"DL"] * len(CATEGORICAL) for i in range(16)],
                           dtype=object)  # fmt: skip
    scorer = SavedModelScorer(model_dir)
    local = scorer.score(numeric, categorical)
    # The session that runs the packed inputs scores as the signature does, input by input,
    # on rows whose scores differ (a column mix-up would show).
    import tensorflow as tf

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    small = numeric / 20
    packed = scorer.score(small, categorical)
    scorer.close()
    inputs = {n: tf.constant(small[:, i]) for i, n in enumerate(NUMERIC)}
    inputs.update({n: tf.constant(categorical[:, i].astype(bytes))
                   for i, n in enumerate(CATEGORICAL)})  # fmt: skip
    np.testing.assert_allclose(packed, signature(**inputs)["score"].numpy(), rtol=1e-6)
    assert len(set(packed.round(4))) > 8
    proc = ModelProcess(model_dir)
    try:
        np.testing.assert_array_equal(proc.score(numeric, categorical), local)

        async def run() -> np.ndarray:
            return await call(proc, numeric, categorical)

        np.testing.assert_array_equal(asyncio.run(run()), local)
        # The child dies: the call in flight fails with the reason, the next one restarts it.
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.5)

        async def after_kill() -> tuple[str, np.ndarray]:
            try:
                await call(proc, numeric, categorical)
                first = "ok"
            except RuntimeError as err:
                first = str(err)
            return first, await call(proc, numeric, categorical)

        first, again = asyncio.run(after_kill())
        assert first == "ok" or "model process died" in first
        np.testing.assert_array_equal(again, local)
    finally:
        proc.close()
