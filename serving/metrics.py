"""Prometheus metrics of the serving path, with the names of ``mlops.telemetry``.

Label sets are bounded: model names are those registered in the server (anything else is
``unknown``), error kinds and stages are the fixed tuples of ``mlops.telemetry``, slice values are
allow-listed by ``mlops.features.bounded_slice_value``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from mlops import features as F
from mlops import telemetry as T

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5)  # fmt: skip
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Feature age spans seconds (live data) to years (the 2013 data set): a log scale.
STALENESS_BUCKETS = (1, 10, 60, 300, 900, 3600, 3 * 3600, 86400, 7 * 86400, 30 * 86400,
                     365 * 86400, 10 * 365 * 86400)  # fmt: skip

REQUESTS = Counter(T.REQUESTS, "Inference requests received.", ["model", "version", "protocol"])
REQUEST_ERRORS = Counter(
    T.REQUEST_ERRORS, "Inference requests that failed, by kind.", ["model", "version", "kind"]
)
STAGE_LATENCY = Histogram(
    T.STAGE_LATENCY,
    "Latency of a serving stage.",
    ["model", "version", "stage"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_SCORE = Histogram(
    T.PREDICTION_SCORE,
    "Predicted delay probability per slice.",
    ["model", "version", "slice_key", "slice_value"],
    buckets=SCORE_BUCKETS,
)
PREDICTIONS = Counter(
    T.PREDICTIONS,
    "Predictions per slice and outcome (score >= threshold is positive).",
    ["model", "version", "slice_key", "slice_value", "outcome"],
)
FEATURE_STALENESS = Histogram(
    T.FEATURE_STALENESS,
    "Age of the online feature values used (now minus their event timestamp).",
    ["model", "version", "view"],
    buckets=STALENESS_BUCKETS,
)
MISSING_ENTITIES = Counter(
    T.MISSING_ENTITIES,
    "Request rows whose entity the online store lacks.",
    ["model", "version", "view"],
)

# Model name -> version of the models this process serves (bounds the `model` label).
SERVED_VERSIONS: dict[str, str] = {}


def model_labels(model: str) -> tuple[str, str]:
    """Return the ``(model, version)`` labels for a model name from a request path."""
    if model in SERVED_VERSIONS:
        return model, SERVED_VERSIONS[model]
    return "unknown", "unknown"


def slice_labels(instance: dict[str, object]) -> list[tuple[str, str]]:
    """Return the bounded ``(slice_key, slice_value)`` pairs of one request instance."""
    hour = instance.get("sched_dep_hour")
    band = F.hour_band(float(hour)) if isinstance(hour, int | float) else F.OTHER_SLICE
    raw = {F.CARRIER: str(instance.get(F.CARRIER)), F.ORIGIN: str(instance.get(F.ORIGIN)),
           "sched_hour_band": band}  # fmt: skip
    return [(key, F.bounded_slice_value(key, raw[key])) for key in F.SLICE_KEYS]
