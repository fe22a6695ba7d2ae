"""Transform core: TFT analyze-and-transform on Beam over the train and eval parquet files.

Writes ``<out>/transform_graph/`` (a ``tft.TFTransformOutput`` directory) and gzipped TFRecord
``tf.Example`` files ``<out>/transformed/train-*`` and ``eval-*``. Beam pipeline options pass
through unchanged, so the same code runs on the DirectRunner here and on Flink, Spark or
Dataflow (see README.md).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops import features as F

GRAPH_DIR = "transform_graph"
EXAMPLES_DIR = "transformed"


@dataclass(frozen=True)
class TransformResult:
    """What transform wrote and how long it took."""

    transform_graph: str
    transformed_examples: str
    train_rows: int
    eval_rows: int
    seconds: float
    transformed_features: list[str]


def row_to_instance(row: dict[str, Any]) -> dict[str, Any]:
    """A parquet row as a TFT instance dict: a missing value is an empty list."""
    out: dict[str, Any] = {}
    for name in F.FEATURE_NAMES:
        value = row.get(name)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if name in F.NUMERIC_FEATURES:
            out[name] = [] if missing else [float(value)]
        else:
            out[name] = [] if missing or value == "" else [str(value).encode()]
    out[F.LABEL] = int(row[F.LABEL])
    return out


def transform(
    train_path: Path,
    eval_path: Path,
    out_dir: Path,
    beam_pipeline_args: list[str] | None = None,
) -> TransformResult:
    """Analyze the training split, transform both splits, write the graph and the examples.

    Args:
        train_path: Training split (parquet, from ingest).
        eval_path: Eval split (parquet).
        out_dir: Output directory.
        beam_pipeline_args: Beam options, e.g. ``["--runner=FlinkRunner", ...]``;
            DirectRunner when empty.
    """
    import apache_beam as beam
    import pyarrow.parquet as pq
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from components.transform.preprocessing import preprocessing_fn, raw_feature_spec

    for path in (train_path, eval_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"transform input not found: {path}")
    graph_dir, examples_dir = out_dir / GRAPH_DIR, out_dir / EXAMPLES_DIR
    examples_dir.mkdir(parents=True, exist_ok=True)
    raw_metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(raw_feature_spec())
    )
    columns = [*F.FEATURE_NAMES, F.LABEL]
    options = PipelineOptions(beam_pipeline_args or ["--runner=DirectRunner"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, beam.Pipeline(options=options) as pipeline:
        with tft_beam.Context(temp_dir=tmp):
            def read(label: str, path: Path) -> Any:
                return (
                    pipeline
                    | f"Read{label}" >> beam.io.ReadFromParquet(str(path), columns=columns)
                    | f"ToInstances{label}" >> beam.Map(row_to_instance)
                )

            raw_train, raw_eval = read("Train", train_path), read("Eval", eval_path)
            (train_xf, metadata), transform_fn = (
                raw_train,
                raw_metadata,
            ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            eval_xf, _ = (
                (raw_eval, raw_metadata),
                transform_fn,
            ) | "TransformEval" >> tft_beam.TransformDataset()
            coder = tft.coders.ExampleProtoCoder(metadata.schema)
            for label, data in (("train", train_xf), ("eval", eval_xf)):
                _ = (
                    data
                    | f"Encode{label}" >> beam.Map(coder.encode)
                    | f"Write{label}"
                    >> beam.io.WriteToTFRecord(
                        str(examples_dir / label), file_name_suffix=".tfrecord.gz"
                    )
                )
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(graph_dir))
    seconds = time.perf_counter() - t0
    tft_output = tft.TFTransformOutput(str(graph_dir))
    return TransformResult(
        transform_graph=str(graph_dir),
        transformed_examples=str(examples_dir),
        train_rows=pq.ParquetFile(train_path).metadata.num_rows,
        eval_rows=pq.ParquetFile(eval_path).metadata.num_rows,
        seconds=round(seconds, 2),
        transformed_features=sorted(tft_output.transformed_feature_spec()),
    )


def load_transformed_dataset(
    transform_dir: Path, split: str, batch_size: int, shuffle: bool, seed: int
) -> Any:
    """Batches of (transformed features, label) for the trainer.

    Args:
        transform_dir: The transform output directory (``transform_graph/``, ``transformed/``).
        split: ``train`` or ``eval``.
        batch_size: Examples per batch.
        shuffle: Shuffle examples (seeded) before batching.
        seed: Shuffle seed.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    files = sorted(str(p) for p in (transform_dir / EXAMPLES_DIR).glob(f"{split}-*"))
    if not files:
        raise FileNotFoundError(f"no transformed {split} examples in {transform_dir}")
    spec = tft.TFTransformOutput(str(transform_dir / GRAPH_DIR)).transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        ds = ds.shuffle(100_000, seed=seed, reshuffle_each_iteration=True)

    def parse(batch: Any) -> tuple[dict[str, Any], Any]:
        feats = tf.io.parse_example(batch, spec)
        label = feats.pop(F.LABEL)
        return feats, label

    return ds.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
