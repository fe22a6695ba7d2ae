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

    def split_metadata(self, split: Literal["train", "eval"]) -> dict[str, Any]:
        """The metadata of one split's artifact: rows, spans, split time and content hash."""
        rows, digest = (
            (self.train_rows, self.train_hash)
            if split == "train"
            else (self.eval_rows, self.eval_hash)
        )
        return {
            "rows": rows,
            "span": f"{self.spans[0]}..{self.spans[-1]}",
            "spans": ",".join(self.spans),
            "split_time": self.split_time,
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


def join_features(repo_path: Path, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the feature service's features onto the entity rows.

    For each row, Feast takes the newest feature value whose event timestamp is not after the
    row's ``event_timestamp`` and not older than the view's TTL.
    """
    from feast import FeatureStore  # heavy import kept out of module import

    store = FeatureStore(repo_path=str(repo_path))
    service = store.get_feature_service(F.FEATURE_SERVICE)
    job = store.get_historical_features(entity_df=entities, features=service)
    joined = job.to_df()
    # Feast returns rows in its own order; restore the entity order and the contract's columns.
    joined = joined.sort_values([F.EVENT_TIMESTAMP, F.FLIGHT_ID]).reset_index(drop=True)
    columns = [F.FLIGHT_ID, F.EVENT_TIMESTAMP, F.SPAN, F.TAILNUM, *F.FEATURE_NAMES, F.LABEL]
    return joined[columns]


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
) -> IngestResult:
    """Build the training set for ``window`` and write train and eval parquet files.

    Args:
        repo_path: The Feast repository (its ``data/`` holds the prepared sources).
        window: The spans to train on.
        train_path: Where to write the training split.
        eval_path: Where to write the evaluation split.
        eval_fraction: Share of the window, by time, held out for evaluation.
    """
    entities = load_entities(repo_path / "data", window)
    joined = join_features(repo_path, entities)
    train, evaluation, cut = time_split(joined, eval_fraction)
    for df, path in ((train, train_path), (evaluation, eval_path)):
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
    )


def result_json(result: IngestResult) -> str:
    """The result as JSON, for logs and artifact metadata."""
    return json.dumps(asdict(result), indent=2)
