"""KFP component: point-in-time training set from the Feast offline store, split by time."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_op(
    feature_repo: str,
    first_span: str,
    last_span: str,
    eval_fraction: float,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
) -> str:
    """Build train and eval parquet files for the span window; returns the result as JSON."""
    from pathlib import Path

    from components.ingest.core import SpanWindow, ingest, result_json

    result = ingest(
        Path(feature_repo),
        SpanWindow(first_span, last_span),
        Path(train_data.path),
        Path(eval_data.path),
        eval_fraction,
    )
    span = f"{result.spans[0]}..{result.spans[-1]}"
    for artifact, rows, digest in (
        (train_data, result.train_rows, result.train_hash),
        (eval_data, result.eval_rows, result.eval_hash),
    ):
        artifact.metadata.update(
            {
                "rows": rows,
                "span": span,
                "spans": ",".join(result.spans),
                "split_time": result.split_time,
                "content_hash": digest,
                "feature_service": result.feature_service,
                "format": "parquet",
            }
        )
    return result_json(result)
