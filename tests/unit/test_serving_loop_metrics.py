"""The serving path's lock-free metric series expose what ``prometheus_client``'s own would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.metrics import STALENESS_BUCKETS, LoopFamily

pytestmark = pytest.mark.unit

BUCKETS = (0.0005, 0.001, 0.01, 1.0, 2.5)


def exposition(registry: CollectorRegistry) -> list[str]:
    # Histograms' _created samples are the one documented difference.
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_seconds_created" not in line]  # fmt: skip


@pytest.mark.parametrize("buckets", [BUCKETS, STALENESS_BUCKETS])
def test_the_exposition_equals_prometheus_clients(buckets: tuple[float, ...]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    pairs = [
        (Histogram("lat_seconds", "doc", ["a"], buckets=buckets, registry=theirs),
         LoopFamily("lat_seconds", "doc", ["a"], "histogram", buckets, registry=ours)),
        (Counter("hits_total", "doc", ["a", "b"], registry=theirs),
         LoopFamily("hits_total", "doc", ["a", "b"], "counter", registry=ours)),
        (Gauge("age_seconds", "doc", ["a"], registry=theirs),
         LoopFamily("age_seconds", "doc", ["a"], "gauge", registry=ours)),
    ]  # fmt: skip
    rng = random.Random(7)
    # Values on the bounds (le is inclusive), between them, past the last one, and negative.
    values = [*buckets, 0.0, -1.0, 1e12, *(rng.uniform(0, 3) for _ in range(200))]
    for value in values:
        label = rng.choice(["x", "y"])
        for theirs_metric, ours_metric in pairs:
            kind = ours_metric.kind
            for metric in (theirs_metric, ours_metric):
                series = metric.labels(label, "k") if kind == "counter" else metric.labels(label)
                if kind == "histogram":
                    series.observe(value)
                elif kind == "counter":
                    series.inc(abs(value) % 5)
                else:
                    series.set(value)
    created = [line for line in exposition(ours) if "hits_created{" in line]
    assert len(created) == 2  # counters keep their _created samples
    strip = [line for line in exposition(theirs) if "_created{" not in line]
    assert [line for line in exposition(ours) if "_created{" not in line] == strip
    assert "lat_seconds_bucket" in "\n".join(strip)


def test_a_series_is_created_once_and_starts_at_zero() -> None:
    family = LoopFamily("n_total", "doc", ["model", "version"], "counter", registry=None)
    series = family.labels("m", "1")
    assert series.value == 0
    series.inc()
    assert family.labels("m", "1") is series
    assert family.labels("m", 1) is series  # label values are strings, as Prometheus' are
    with pytest.raises(ValueError, match="labels"):
        family.labels("m")
    with pytest.raises(ValueError, match="kind"):
        LoopFamily("x", "doc", [], "summary", registry=None)
