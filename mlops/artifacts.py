"""File and directory names of the artifacts that one step writes and another reads.

A name that crosses a module boundary (a component writes it, the registry, serving or the
monitor reads it) is defined here once; names private to one module stay in that module.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# TFDV (validate, monitor, registry, serving).
SCHEMA_FILE = "schema.pbtxt"  # the curated TFDV schema, text proto
SCHEMA_DIR = "schema"  # where the curated schema ships: package data of `mlops` (pyproject.toml)
STATS_FILE = "statistics.pb"  # DatasetFeatureStatisticsList, binary proto
STATS_TEXT_FILE = "statistics.pbtxt"  # the same statistics as a text proto, for reading by eye
STATS_HTML_FILE = "statistics.html"  # the statistics rendered for the KFP UI
ANOMALIES_FILE = "anomalies.pbtxt"  # TFDV anomalies of a span, text proto
VERDICT_FILE = "verdict.json"  # {"ok": bool, "anomalies": [...]}: what validate decided
SPAN_PROFILE_FILE = "span_profile.json"  # the span checks' profile of one span

# TFT (transform writes it, train and the registry read it, serving loads it).
TRANSFORM_GRAPH_DIR = "transform_graph"

# Ingest (the point-in-time training set).
TRAIN_DATA_FILE = "train.parquet"
VALIDATION_DATA_FILE = "validation.parquet"
EVAL_DATA_FILE = "eval.parquet"

# The exported SavedModel's contract (train exports it; evaluate, the predictor and the
# registry's checks call it): the signature and the key of its probability output.
SIGNATURE = "serving_default"
SCORE = "score"

# Model artifact metadata (written by train) and evaluation JSON key (written by evaluate,
# stored by push as the version's evaluation.json): the score threshold chosen on the
# validation split, at which evaluate reports precision and recall.
OPERATING_THRESHOLD = "operating_threshold"

# Monitoring job.
MONITOR_FILE = "monitor.json"  # skew, drift and live quality of one window

# kfp.local: the file a task writes with its output artifacts and parameters (KFP's name).
EXECUTOR_OUTPUT_FILE = "executor_output.json"


def packaged_schema() -> Path:
    """The curated TFDV schema shipped as package data (``mlops/schema/schema.pbtxt``).

    Validation, the monitor and the serving transformer load it from here, so neither image
    needs a ``components/`` path. The path may not exist in an install made without it.
    """
    return Path(str(resources.files("mlops").joinpath(SCHEMA_DIR, SCHEMA_FILE)))
