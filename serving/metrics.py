"""Prometheus metrics of the serving path, with the names of ``mlops.telemetry``.

Label sets are bounded: model names are those registered in the server (anything else is
``unknown``), error kinds and stages are the fixed tuples of ``mlops.telemetry``, slice values are
allow-listed by ``mlops.features.bounded_slice_value``.

The series are ``LoopCounter``/``LoopGauge``/``LoopHistogram``: plain numbers written by the event
loop's thread (every request stage, the error handlers and the gRPC interceptor run there), read
at scrape time. ``prometheus_client``'s own series take a lock per update and walk their buckets
in Python; a request updates about twenty series, and that was a quarter of the transformer's own
CPU per request. The exposition is the same (names, labels, buckets, counters' ``_created``),
but for histograms' ``_created`` samples, which nothing here reads.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mlops import features as F
from mlops import telemetry as T

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5)  # fmt: skip
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Feature age spans seconds (live data) to years (the 2013 data set): a log scale.
STALENESS_BUCKETS = (1, 10, 60, 300, 900, 3600, 3 * 3600, 86400, 7 * 86400, 30 * 86400,
                     365 * 86400, 10 * 365 * 86400)  # fmt: skip


class LoopCounter:
    """A counter series; ``inc`` from the event loop's thread only."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopGauge:
    """A gauge series; ``set`` from the event loop's thread only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)


class LoopHistogram:
    """A histogram series; ``observe`` from the event loop's thread only.

    Counts are kept per bucket (not cumulative) and summed at scrape time; ``bisect_left`` finds
    the first bound ``>= value``, Prometheus' ``le``.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopFamily(Collector):
    """One metric family of loop-written series, registered with ``registry``.

    Args:
        name: Metric name (a counter's ``_total`` suffix is the exposition's).
        documentation: Help text.
        labelnames: Label names, in ``labels()`` order.
        kind: ``counter``, ``gauge`` or ``histogram``.
        buckets: A histogram's upper bounds (``+Inf`` is added).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        kind: str,
        buckets: Sequence[float] = (),
        registry: Any = REGISTRY,
    ) -> None:
        if kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"kind: counter, gauge or histogram, got {kind!r}")
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.kind = kind
        self.bounds = (*sorted(float(b) for b in buckets), float("inf"))
        self._les = [floatToGoString(b) for b in self.bounds]  # the exposition's ``le`` values
        self._series: dict[tuple[str, ...], Any] = {}
        # Taken to add a series and to copy the list at scrape time, never to update one.
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Any:
        """The series of these label values (created at 0 on first use)."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
            key = tuple(str(v) for v in values)
            with self._lock:
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = self._new()
        return series

    def _new(self) -> Any:
        if self.kind == "counter":
            return LoopCounter()
        if self.kind == "gauge":
            return LoopGauge()
        return LoopHistogram(self.bounds)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> Metric:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family: Any = self._family()
        with self._lock:
            series = list(self._series.items())
        for values, s in series:
            if isinstance(s, LoopCounter):
                family.add_metric(values, s.value, created=s.created)
            elif isinstance(s, LoopGauge):
                family.add_metric(values, s.value)
            else:
                counts, running, cumulative = list(s.counts), 0, []
                for le, n in zip(self._les, counts, strict=True):
                    running += n
                    cumulative.append((le, float(running)))
                family.add_metric(values, cumulative, sum_value=s.sum)
        yield family


REQUESTS = LoopFamily(
    T.REQUESTS, "Inference requests received.", ["model", "version", "protocol"], "counter"
)
REQUEST_ERRORS = LoopFamily(
    T.REQUEST_ERRORS,
    "Inference requests that failed, by kind.",
    ["model", "version", "kind"],
    "counter",
)
STAGE_LATENCY = LoopFamily(
    T.STAGE_LATENCY,
    "Latency of a serving stage.",
    ["model", "version", "stage"],
    "histogram",
    LATENCY_BUCKETS,
)
PREDICTION_SCORE = LoopFamily(
    T.PREDICTION_SCORE,
    "Predicted delay probability per slice.",
    ["model", "version", "slice_key", "slice_value"],
    "histogram",
    SCORE_BUCKETS,
)
PREDICTIONS = LoopFamily(
    T.PREDICTIONS,
    "Predictions per slice and outcome (score >= threshold is positive).",
    ["model", "version", "slice_key", "slice_value", "outcome"],
    "counter",
)
FEATURE_STALENESS = LoopFamily(
    T.FEATURE_STALENESS,
    "Age of the online feature values used (now minus their event timestamp).",
    ["model", "version", "view"],
    "histogram",
    STALENESS_BUCKETS,
)
FEATURE_STALE = LoopFamily(
    T.FEATURE_STALE,
    "Real-time feature rows served as missing by the staleness policy: older than "
    "REALTIME_MAX_AGE_MINUTES before the prediction moment (too_old) or after it (future).",
    ["model", "version", "view", "reason"],
    "counter",
)
FEATURE_FRESHNESS = LoopFamily(
    T.FEATURE_FRESHNESS,
    "Age of the newest real-time row of the view read by the last request, at its prediction "
    "moment (seconds; grows when the feed stops).",
    ["model", "version", "view"],
    "gauge",
)
MISSING_ENTITIES = LoopFamily(
    T.MISSING_ENTITIES,
    "Request rows whose entity the online store lacks.",
    ["model", "version", "view"],
    "counter",
)
MODEL_BATCH_ROWS = LoopFamily(
    T.MODEL_BATCH_ROWS,
    "Rows per model call (requests waiting together share one call).",
    ["model", "version"],
    "histogram",
    (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

REQUEST_LOG_DROPPED = LoopFamily(
    T.REQUEST_LOG_DROPPED,
    "Request-log rows dropped: the disk stalled and more than max_queued_mb waited for it.",
    [],
    "counter",
)
REQUEST_LOG_DROPPED.labels()  # 0 from start-up, so a first drop shows as an increase

# Model name -> version of the models this process serves (bounds the `model` label).
SERVED_VERSIONS: dict[str, str] = {}


def model_labels(model: str) -> tuple[str, str]:
    """Return the ``(model, version)`` labels for a model name from a request path."""
    if model in SERVED_VERSIONS:
        return model, SERVED_VERSIONS[model]
    return "unknown", "unknown"


def slice_labels(instance: dict[str, object]) -> list[tuple[str, str]]:
    """Return the bounded ``(slice_key, slice_value)`` pairs of one request instance."""
    return list(F.slice_values(instance, bounded=True).items())


def outcome(score: float, threshold: float) -> str:
    """The ``outcome`` label of one score (``score >= threshold`` is positive)."""
    return T.POSITIVE if score >= threshold else T.NEGATIVE


class ModelMetrics:
    """The metric series of one served model version, resolved once.

    A request touches a dozen series: each is resolved on first use and kept under one key here
    (measured: 10 % less transformer CPU than asking the family's ``labels`` each time).
    Label values are bounded (stages, views, allow-listed slices, outcomes), so the cache is too.
    """

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        self.stage = {s: STAGE_LATENCY.labels(model, version, s) for s in T.STAGES}
        self._series: dict[tuple[str, ...], Any] = {}
        # Every per-slice series exists at 0 from the start. Prometheus' increase() cannot count
        # what a counter held at its first sample, so a series born above 0 loses its first
        # increments; on a slice of a few dozen requests that skewed a canary's positive rate
        # by 0.4 against stable's (seen in the rollout tests). The slice values are bounded.
        for key in F.SLICE_KEYS:
            for value in (*F.SLICE_ALLOWLIST.get(key, ()), F.OTHER_SLICE):
                self.score(key, value)
                for outcome in T.OUTCOMES:
                    self.prediction(key, value, outcome)
        # The same for the stale counters: a feed that stops shows from the first stale row.
        for view in F.REALTIME_VIEWS:
            for reason in T.STALE_REASONS:
                self.stale(view, reason)

    def _get(self, metric: Any, *labels: str) -> Any:
        key = (metric.name, *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(self.model, self.version, *labels)
        return series

    def staleness(self, view: str) -> Any:
        return self._get(FEATURE_STALENESS, view)

    def stale(self, view: str, reason: str) -> Any:
        return self._get(FEATURE_STALE, view, reason)

    def freshness(self, view: str) -> Any:
        return self._get(FEATURE_FRESHNESS, view)

    def missing(self, view: str) -> Any:
        return self._get(MISSING_ENTITIES, view)

    def score(self, slice_key: str, slice_value: str) -> Any:
        return self._get(PREDICTION_SCORE, slice_key, slice_value)

    def prediction(self, slice_key: str, slice_value: str, outcome: str) -> Any:
        return self._get(PREDICTIONS, slice_key, slice_value, outcome)


class FeatureCacheCollector(Collector):
    """``flight_delay_feature_cache_total{result}``, read from the caches' counters at scrape time.

    The counters are plain integers bumped on the request path; reading them on scrape keeps the
    per-row cost of the cache at an addition.
    """

    _FIELDS = {"hit": "hits", "stale_hit": "stale_hits", "miss": "misses", "read": "reads",
               "read_error": "read_errors"}  # fmt: skip

    def __init__(self) -> None:
        self.caches: list[Any] = []

    def collect(self) -> Any:
        family = CounterMetricFamily(
            T.FEATURE_CACHE.removesuffix("_total"),
            "Online feature cache lookups (per entity row) and store reads, by result.",
            labels=["result"],
        )
        for result in T.FEATURE_CACHE_RESULTS:
            total = sum(getattr(c.stats, self._FIELDS[result]) for c in self.caches)
            family.add_metric([result], total)
        yield family


FEATURE_CACHE = FeatureCacheCollector()
REGISTRY.register(FEATURE_CACHE)
