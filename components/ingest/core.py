"""Ingest core: a point-in-time-correct training set for a span window, split by time.

Pure functions over paths and DataFrames; the KFP component in ``component.py`` only resolves
artifact paths and calls :func:`ingest`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlops import features as F
from mlops.data import FLIGHTS_PARQUET, DataError, content_hash


@dataclass(frozen=True)
class SpanWindow:
    """An inclusive window of monthly spans, e.g. ``2013-01`` to ``2013-03``."""

    first: str
    last: str

    def select(self, available: list[str]) -> list[str]:
        """Return the available spans inside the window.

        Raises:
            DataError: A bound is not an available span, or the bounds are reversed.
        """
        for bound in (self.first, self.last):
            if bound not in available:
                raise DataError(f"unknown span {bound!r}; available spans: {', '.join(available)}")
        if self.first > self.last:
            raise DataError(f"span window is reversed: {self.first} > {self.last}")
        return [s for s in available if self.first <= s <= self.last]


@dataclass(frozen=True)
class IngestResult:
    """What ingest wrote and how it split the window."""

    spans: list[str]
    train_rows: int
    eval_rows: int
    split_time: str
    train_hash: str
    eval_hash: str
    feature_service: str
    # The validation split (three-way split only): between train and eval in time.
    validation_rows: int = 0
    validation_hash: str = ""
    validation_split_time: str = ""

    def split_metadata(self, split: Literal["train", "validation", "eval"]) -> dict[str, Any]:
        """The metadata of one split's artifact: rows, spans, split times and content hash."""
        rows, digest = {
            "train": (self.train_rows, self.train_hash),
            "validation": (self.validation_rows, self.validation_hash),
            "eval": (self.eval_rows, self.eval_hash),
        }[split]
        return {
            "rows": rows,
            "span": f"{self.spans[0]}..{self.spans[-1]}",
            "spans": ",".join(self.spans),
            "split_time": self.split_time,
            "validation_split_time": self.validation_split_time,
            "content_hash": digest,
            "feature_service": self.feature_service,
            "format": "parquet",
        }


def load_entities(data_dir: Path, window: SpanWindow) -> pd.DataFrame:
    """Rows of the entity/label table whose span is inside ``window``.

    Raises:
        DataError: The table is missing, a span is unknown, or the window holds no flights.
    """
    path = data_dir / FLIGHTS_PARQUET
    if not path.is_file():
        raise DataError(f"entity/label table not found: {path}; run `mlops prepare` first")
    flights = pd.read_parquet(path)
    spans = window.select(sorted(flights[F.SPAN].unique()))
    rows = flights[flights[F.SPAN].isin(spans)]
    if rows.empty:
        raise DataError(f"span window {window.first}..{window.last} holds no flights")
    return rows.reset_index(drop=True)


# Offline stores whose sources are local parquet files, joined here by an as-of merge.
ASOF_JOIN_STORES = ("duckdb", "file")


def join_features(repo_path: Path, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the feature service's features onto the entity rows.

    For each row and view, the newest feature value of the row's key whose event timestamp is
    not after the row's ``event_timestamp`` and not older than the view's TTL (Feast's
    semantics). Which engine joins follows the repository's configuration (``feature_store.yaml``
    or ``FEAST_FS_YAML_FILE_PATH``):

    * DuckDB or file store (the local default): one sorted as-of merge per view over the views,
      keys, parquet sources and TTLs registered in Feast. Feast 0.47's own join compares each
      entity row with every source row of its key before the time filter; views keyed by origin
      (3 keys) make that quadratic: ~5 min for 2013 against 20 s here, an estimated 9 h for ten
      years. ``tests/integration/test_ingest_asof_join.py`` pins it to Feast's output.
    * Any other offline store (Spark: ``feature_store.spark.yaml``): the store's own
      ``get_historical_features``, one span (month) at a time, because its SQL has the same
      key-then-time shape; each entity row is joined on its own, so the result is the same.
    """
    from mlops.feast_ops import historical_features, open_store

    store = open_store(repo_path)
    if store.config.offline_store.type in ASOF_JOIN_STORES:
        joined = _asof_join(store, entities)
    else:
        parts = [historical_features(repo_path, part) for _, part in entities.groupby(F.SPAN)]
        joined = pd.concat(parts, ignore_index=True)
    # Restore the entity order and the contract's columns.
    joined = joined.sort_values([F.EVENT_TIMESTAMP, F.FLIGHT_ID]).reset_index(drop=True)
    columns = [F.FLIGHT_ID, F.EVENT_TIMESTAMP, F.SPAN, F.TAILNUM, *F.FEATURE_NAMES, F.LABEL]
    return joined[columns]


def _asof_join(store: Any, entities: pd.DataFrame) -> pd.DataFrame:
    """The feature service's views joined onto ``entities`` by ``pd.merge_asof`` per view."""
    service = store.get_feature_service(F.FEATURE_SERVICE)
    # merge_asof needs both sides in time order.
    joined = entities.sort_values(F.EVENT_TIMESTAMP, kind="stable")
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        source = view.batch_source
        # FileSource and SparkSource carry the parquet path; a table or query source does not.
        path = getattr(source, "path", None)
        if not path:
            raise DataError(f"feature view {view.name}: batch source {source.name} has no path")
        keys = [c.name for c in view.entity_columns]  # as the source spells them
        # The entity rows' names of the keys (a projection may map them).
        by = [projection.join_key_map.get(k, k) for k in keys]
        ts = "_feature_timestamp"
        names = [f.name for f in projection.features]
        table = (
            pd.read_parquet(path, columns=[*keys, source.timestamp_field, *names])
            .rename(columns={source.timestamp_field: ts, **dict(zip(keys, by, strict=True))})
            .sort_values(ts, kind="stable")
        )
        joined = pd.merge_asof(
            joined, table, left_on=F.EVENT_TIMESTAMP, right_on=ts, by=by,
            direction="backward", tolerance=view.ttl or None,
        ).drop(columns=ts)  # fmt: skip
    return joined


def time_split(df: pd.DataFrame, eval_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Split by time: the last ``eval_fraction`` of the window, cut at a UTC day boundary.

    Every training row precedes every eval row, so the eval set measures the model on the
    future, as serving will.

    Raises:
        DataError: The fraction is out of range or one side would be empty.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    ts = df[F.EVENT_TIMESTAMP]
    cut = ts.quantile(1.0 - eval_fraction).floor("D")
    train, evaluation = df[ts < cut], df[ts >= cut]
    if train.empty or evaluation.empty:
        raise DataError(
            f"the window {ts.min()}..{ts.max()} is too short to split at {cut} "
            f"(eval_fraction={eval_fraction}); use a longer window"
        )
    return train.reset_index(drop=True), evaluation.reset_index(drop=True), cut.isoformat()


def ingest(
    repo_path: Path,
    window: SpanWindow,
    train_path: Path,
    eval_path: Path,
    eval_fraction: float = 0.2,
    validation_path: Path | None = None,
    validation_fraction: float = 0.1,
) -> IngestResult:
    """Build the training set for ``window`` and write its splits as parquet files.

    With ``validation_path`` the window is split three ways by time, train | validation | eval:
    the trainer tunes (early stopping, the warm-start choice, the operating threshold) on the
    validation split only, so the eval split is touched once, by the evaluate step.

    Args:
        repo_path: The Feast repository (its ``data/`` holds the prepared sources).
        window: The spans to train on.
        train_path: Where to write the training split.
        eval_path: Where to write the evaluation split.
        eval_fraction: Share of the window, by time, held out for evaluation.
        validation_path: Where to write the validation split; None for a two-way split.
        validation_fraction: Share of the whole window, by time, just before the eval split.

    Raises:
        DataError: A fraction is out of range or a split would be empty.
    """
    entities = load_entities(repo_path / "data", window)
    joined = join_features(repo_path, entities)
    fit, evaluation, cut = time_split(joined, eval_fraction)
    train, validation, validation_cut = fit, fit.iloc[:0], ""
    if validation_path is not None:
        if not 0.0 < validation_fraction < 1.0 - eval_fraction:
            raise DataError(
                f"validation_fraction must be in (0, 1 - eval_fraction = {1 - eval_fraction:g}), "
                f"got {validation_fraction}"
            )
        # The same day-boundary rule, applied to what precedes the eval split.
        train, validation, validation_cut = time_split(
            fit, validation_fraction / (1.0 - eval_fraction)
        )
    outputs = [(train, train_path), (evaluation, eval_path)]
    if validation_path is not None:
        outputs.append((validation, validation_path))
    for df, path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return IngestResult(
        spans=sorted(entities[F.SPAN].unique()),
        train_rows=len(train),
        eval_rows=len(evaluation),
        split_time=cut,
        train_hash=content_hash(train),
        eval_hash=content_hash(evaluation),
        feature_service=F.FEATURE_SERVICE,
        validation_rows=len(validation),
        validation_hash=content_hash(validation) if validation_path is not None else "",
        validation_split_time=validation_cut,
    )


def result_json(result: IngestResult) -> str:
    """The result as JSON, for logs and artifact metadata."""
    return json.dumps(asdict(result), indent=2)
