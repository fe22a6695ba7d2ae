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
    validation_fraction: float,
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    eval_data: Output[Dataset],
) -> str:
    """Build train, validation and eval parquet files for the window; returns the result JSON."""
    from pathlib import Path

    from components.ingest.core import SpanWindow, ingest, result_json

    result = ingest(
        Path(feature_repo),
        SpanWindow(first_span, last_span),
        Path(train_data.path),
        Path(eval_data.path),
        eval_fraction,
        Path(validation_data.path),
        validation_fraction,
    )
    train_data.metadata.update(result.split_metadata("train"))
    validation_data.metadata.update(result.split_metadata("validation"))
    eval_data.metadata.update(result.split_metadata("eval"))
    return result_json(result)
