"""Real-time features at serving: pushed rows reach the model, stale ones do not (issue #15).

A copy of the prepared Feast repository whose online store starts empty; the real-time rows of one
departure minute T (the rows ``mlops prepare`` computed for it) are pushed through the views'
push sources, as a live feed would. Both online readers (the SDK on the SQLite store and a real
``feast serve`` over HTTP) must return the pushed values for a request whose prediction moment is
T, the compound key (carrier, origin) included, and serve them as missing an hour later or a
minute earlier; a real transformer server applies the same policy, counts it in Prometheus, logs
the features it used, and refuses a malformed ``event_timestamp`` with a 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import features as F
from mlops.feast_ops import apply, push_source_name
from mlops.shadow import free_port, wait_ready
from serving.online import (
    FUTURE,
    TOO_OLD,
    FeastHttpSource,
    FeastSdkSource,
    Lookup,
    OnlineFeatures,
    RawSource,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
MODEL = "flight-delay"
AT = pd.Timestamp("2013-06-14T16:00:00Z")  # a busy departure minute
HOUR = 3600.0
RT_FEATURES = {f.name: f.source for f in F.REALTIME_FEATURES}


@pytest.fixture(scope="module")
def repo(prepared_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the prepared repository with a fresh registry and an empty online store."""
    dst = tmp_path_factory.mktemp("rt") / "feature_repo"
    shutil.copytree(prepared_repo, dst)
    for name in ("registry.db", "online_store.db"):
        (dst / "data" / name).unlink(missing_ok=True)
    apply(dst)  # the definitions point their sources at the copy's data
    return dst


@pytest.fixture(scope="module")
def flights(repo: Path) -> pd.DataFrame:
    """The flights scheduled at T (with a tail number)."""
    table = pd.read_parquet(repo / "data" / "flights.parquet")
    rows = table[(table[F.EVENT_TIMESTAMP] == AT) & (table[F.TAILNUM] != F.MISSING_CATEGORY)]
    assert len(rows) >= 5
    return rows.reset_index(drop=True)


def instances(df: pd.DataFrame, moment: Any = None) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict(orient="records"):
        inst: dict[str, Any] = {
            n: float(rec[n]) if n in F.NUMERIC_FEATURES else str(rec[n]) for n in F.REQUEST_FIELDS
        }
        if moment is not None:
            inst[F.EVENT_TIMESTAMP] = moment
        out.append(inst)
    return out


@pytest.fixture(scope="module")
def pushed(repo: Path, flights: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Push the real-time rows stamped T of the flights' entities; return them per view."""
    from feast import FeatureStore
    from feast.data_source import PushMode

    store = FeatureStore(repo_path=str(repo))
    # Before the push the online store holds no real-time row of these flights.
    sdk = FeastSdkSource(repo)
    before = asyncio.run(lookup(lambda: sdk, flights, AT.timestamp()))
    assert all(set(F.REALTIME_VIEWS) <= set(b.missing_views) for b in before)
    out = {}
    for view in F.REALTIME_VIEWS:
        keys = list(F.VIEW_KEYS[view])
        rows = pd.read_parquet(repo / "data" / f"{view}.parquet")
        rows = rows[rows[F.EVENT_TIMESTAMP] == AT].merge(flights[keys].drop_duplicates(), on=keys)
        assert len(rows) > 0, view
        store.push(push_source_name(view), rows, to=PushMode.ONLINE)
        out[view] = rows
    return out


async def lookup(
    source: Callable[[], RawSource], flights: pd.DataFrame, moment: float
) -> list[Lookup]:
    """Uncached lookups (every row read from the store) at one prediction moment.

    The source is made inside the event loop: an HTTP client belongs to the loop it was made in.
    """
    online = OnlineFeatures(source(), timeout_s=30.0, fresh_s=0, realtime_fresh_s=0)
    return await online.lookup(instances(flights), [moment] * len(flights))


def expected(pushed: dict[str, pd.DataFrame], inst: dict[str, Any]) -> dict[str, Any]:
    """The pushed real-time values of one request instance."""
    out = {}
    for view, rows in pushed.items():
        match = rows
        for key in F.VIEW_KEYS[view]:
            match = match[match[key] == inst[key]]
        assert len(match) == 1, (view, inst)
        for name, source in RT_FEATURES.items():
            if source == view:
                out[name] = match.iloc[0][name]
    return out


def same(served: Any, pushed_value: Any) -> bool:
    if pushed_value is None or (isinstance(pushed_value, float) and math.isnan(pushed_value)):
        return served is None or (isinstance(served, float) and math.isnan(served))
    return served is not None and math.isclose(float(served), float(pushed_value), rel_tol=1e-9)


@pytest.fixture(scope="module")
def http_source(repo: Path, pushed: dict) -> Iterator[Callable[[], FeastHttpSource]]:
    """A real ``feast serve`` on the copy (it reads the same SQLite online store)."""
    port = free_port()
    feast = Path(sys.executable).with_name("feast")
    with (repo / "feast-serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(feast), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc)
        yield lambda: FeastHttpSource(f"http://127.0.0.1:{port}", timeout_s=30.0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("reader", ["sdk", "http"])
def test_pushed_rows_are_served_at_their_moment_and_missing_when_stale(
    reader: str, repo: Path, flights: pd.DataFrame, pushed: dict, request: pytest.FixtureRequest
) -> None:
    if reader == "sdk":
        sdk = FeastSdkSource(repo)
        source: Callable[[], RawSource] = lambda: sdk  # noqa: E731
    else:
        source = request.getfixturevalue("http_source")
    insts = instances(flights)

    at_t = asyncio.run(lookup(source, flights, AT.timestamp()))
    for inst, found in zip(insts, at_t, strict=True):
        assert found.stale_views == {} and not set(F.REALTIME_VIEWS) & set(found.missing_views)
        for name, value in expected(pushed, inst).items():
            assert same(found.features[name], value), (reader, name, inst)
        assert all(found.staleness_s[v] == 0.0 for v in F.REALTIME_VIEWS)
    # Not vacuous: the pushed values include real counts and delays.
    assert any(found.features["origin_deps_60m"] for found in at_t)

    # An hour later the feed "stopped": too old; a minute earlier the rows are from the future.
    for moment, reason in ((AT.timestamp() + HOUR, TOO_OLD), (AT.timestamp() - 60, FUTURE)):
        later = asyncio.run(lookup(source, flights, moment))
        for found in later:
            assert found.stale_views == dict.fromkeys(F.REALTIME_VIEWS, reason)
            assert all(found.features[name] is None for name in RT_FEATURES)
    # The batch views are not subject to the real-time bound.
    assert all(F.WEATHER_VIEW not in f.stale_views for f in later)


def call(url: str, payload: object, request_id: str = "") -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    req = urllib.request.Request(url, json.dumps(payload).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def metric(base: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def server(repo: Path, pushed: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from model_fixtures import export_logistic_model

    work = tmp_path_factory.mktemp("rt-serving")
    model_dir = export_logistic_model(work / "model" / "3" / "model")
    port = free_port()
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.transformer", f"--model_name={MODEL}",
         f"--model_dir={model_dir}", f"--feast_repo={repo}", f"--http_port={port}",
         f"--request_log={work / 'requests.jsonl'}", "--request_log_flush_s=0.1",
         "--realtime_cache_ttl_s=0", "--no_feature_warmup"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/v2/models/{MODEL}/ready", proc)
        yield {"base": base, "proc": proc, "log": work / "requests.jsonl"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def logged(server: dict, request_id: str) -> list[dict]:
    time.sleep(0.5)  # past the log's flush interval
    rows = [json.loads(line) for line in server["log"].read_text().splitlines()]
    return sorted((r for r in rows if r["request_id"] == request_id), key=lambda r: r["row"])


def test_the_server_applies_the_policy_counts_it_and_keeps_serving(
    server: dict, flights: pd.DataFrame, pushed: dict
) -> None:
    base = server["base"]
    url = f"{base}/v1/models/{MODEL}:predict"
    n = len(flights)

    def stale(reason: str, view: str = F.ORIGIN_RT_VIEW) -> float:
        return metric(base, "flight_delay_feature_stale_total", view=view, reason=reason)

    # At T: the model got the pushed values (the request log holds the features it was sent).
    status, body = call(url, {"instances": instances(flights, AT.isoformat())}, "at-t")
    assert status == 200 and len(body["predictions"]) == n, body
    for inst, rec in zip(instances(flights), logged(server, "at-t"), strict=True):
        for name, value in expected(pushed, inst).items():
            assert same(rec["features"][name], value), name
    assert stale(TOO_OLD) == 0
    assert metric(base, "flight_delay_feature_freshness_seconds", view=F.ORIGIN_RT_VIEW) == 0

    # An hour later: every real-time view served as missing, counted, and the freshness gauge
    # shows how old the newest row is.
    later = (AT + pd.Timedelta(hours=1)).isoformat()
    status, _ = call(url, {"instances": instances(flights, later)}, "later")
    assert status == 200
    assert all(rec["features"][name] is None for rec in logged(server, "later")
               for name in RT_FEATURES)  # fmt: skip
    for view in F.REALTIME_VIEWS:
        assert stale(TOO_OLD, view) == n
        assert metric(base, "flight_delay_feature_freshness_seconds", view=view) == HOUR

    # A minute before T: the rows are from the future of the moment, not used either.
    early = (AT - pd.Timedelta(minutes=1)).isoformat()
    assert call(url, {"instances": instances(flights, early)})[0] == 200
    assert stale(FUTURE) == n

    # No event_timestamp: the moment is the server's clock, and 2013's rows are far too old.
    status, body = call(url, {"instances": instances(flights)}, "now")
    assert status == 200 and len(body["predictions"]) == n
    assert stale(TOO_OLD) == 2 * n
    assert all(rec["features"]["origin_deps_60m"] is None for rec in logged(server, "now"))

    # V2: the moment is an optional BYTES input.
    insts = instances(flights, AT.isoformat())
    v2 = {"inputs": [{"name": k, "shape": [n], "data": [i[k] for i in insts],
                      "datatype": "FP32" if k in F.NUMERIC_FEATURES else "BYTES"}
                     for k in insts[0]]}  # fmt: skip
    status, body = call(f"{base}/v2/models/{MODEL}/infer", v2)
    assert status == 200 and body["outputs"][0]["shape"] == [n], body
    assert stale(TOO_OLD) == 2 * n  # served at T: nothing stale

    # A malformed moment is a 400 naming the field, and the server keeps serving.
    for bad in ("yesterday", "2013-06-14T16:00:00", 1371225600):
        status, reply = call(url, {"instances": instances(flights.head(1), bad)})
        assert status == 400 and "instances[0].event_timestamp" in reply["error"], reply
    assert call(url, {"instances": instances(flights.head(1), AT.isoformat())})[0] == 200
    assert server["proc"].poll() is None
