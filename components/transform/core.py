"""Transform core: TFT analyze-and-transform on Beam over the train and validation parquet files.

Writes two outputs, each to its own directory (the component's two artifacts): the transform
graph (a ``tft.TFTransformOutput`` directory, embedded in the served model) and the transformed
examples, gzipped TFRecord ``tf.Example`` files ``train-*`` and ``validation-*``. The eval split
is not transformed: the evaluate step scores it through the exported model, which embeds this
graph, exactly as serving will. Beam pipeline options
pass through unchanged, so the same code runs on the DirectRunner here and on Flink, Spark or
Dataflow (see README.md).

Input path: parquet is read in batches (``ReadFromParquetBatched``) and each Arrow table becomes
one ``RecordBatch`` of list columns (one value a row, NaN / ``b""`` when missing) that TFT reads
through a ``TensorAdapterConfig``; TFT's output stays in RecordBatches, encoded to ``tf.Example`` by
tfx_bsl's C++ encoder. No Python dict is built per row on either side.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlops import features as F

SPLITS = ("train", "validation")
# Rows per RecordBatch handed to TFT; TFT re-batches internally, this bounds memory per bundle.
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class TransformResult:
    """What transform wrote and how long it took."""

    transform_graph: str
    transformed_examples: str
    train_rows: int
    validation_rows: int
    seconds: float
    transformed_features: list[str]

    def to_json(self) -> str:
        """The result as JSON, for logs and artifact metadata."""
        return json.dumps(asdict(self), indent=2)

    def graph_metadata(self) -> dict[str, Any]:
        """The transform graph artifact's metadata: its output features and the run time."""
        features = [f for f in self.transformed_features if f.endswith("_xf")]
        return {"transformed_features": ",".join(features), "seconds": self.seconds}

    def examples_metadata(self) -> dict[str, Any]:
        """The transformed examples artifact's metadata: rows per split and the format."""
        return {
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "format": "tfrecord.gz (tf.Example)",
            "splits": ",".join(SPLITS),
        }


def to_record_batches(table: Any, batch_rows: int = BATCH_ROWS) -> list[Any]:
    """Turn an Arrow table of training rows into TFT's raw input form.

    Every feature becomes a list column of one value a row, as the served model takes them:
    numeric as ``list<float32>`` with NaN for a null, categorical as ``list<binary>`` with
    ``b""`` for a null. The label becomes ``list<int64>``.

    Raises:
        ValueError: A contract column is missing, or the label has nulls.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in (*F.FEATURE_NAMES, F.LABEL) if c not in table.column_names]
    if missing:
        raise ValueError(f"transform input lacks columns: {', '.join(missing)}")
    label_nulls = table.column(F.LABEL).null_count
    if label_nulls:
        raise ValueError(f"label {F.LABEL} has {label_nulls} missing values")

    def one_per_row(values: Any) -> Any:
        offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, values)

    def convert(part: Any) -> Any:
        arrays, names = [], []
        for name in F.FEATURE_NAMES:
            col = part.column(name).combine_chunks()
            if name in F.NUMERIC_FEATURES:
                col = pc.fill_null(pc.cast(col, pa.float32()), float("nan"))
            else:
                col = pc.fill_null(pc.cast(col, pa.binary()), b"")
            arrays.append(one_per_row(col))
            names.append(name)
        label = part.column(F.LABEL).to_numpy().astype(np.int64)  # a copy, not a view
        arrays.append(one_per_row(pa.array(label)))
        names.append(F.LABEL)
        return pa.RecordBatch.from_arrays(arrays, names)

    # Each batch is converted from its own slice of the table, so it owns its buffers: a slice
    # of one converted batch pickles its parent's whole buffers (Beam pickles each batch between
    # stages), which made transform's memory quadratic in the rows (7.5 GB for 2013's year).
    return [
        convert(table.slice(i, batch_rows)) for i in range(0, max(table.num_rows, 1), batch_rows)
    ]


def raw_tensor_adapter_config() -> Any:
    """The ``TensorAdapterConfig`` of :func:`to_record_batches`'s output (raw feature spec)."""
    import pyarrow as pa
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from components.transform.preprocessing import raw_feature_spec

    schema = schema_utils.schema_from_feature_spec(raw_feature_spec())
    fields = [
        pa.field(n, pa.list_(pa.float32() if n in F.NUMERIC_FEATURES else pa.binary()))
        for n in F.FEATURE_NAMES
    ]
    fields.append(pa.field(F.LABEL, pa.list_(pa.int64())))
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(pa.schema(fields), representations)


def _encode_examples(batch_and_passthrough: tuple[Any, Any]) -> list[bytes]:
    """Serialized ``tf.Example``s of one transformed RecordBatch (TFT's output tuple)."""
    from tfx_bsl.coders import example_coder

    return example_coder.RecordBatchToExamplesEncoder().encode(batch_and_passthrough[0])


def _num_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def transform(
    train_path: Path,
    validation_path: Path,
    graph_dir: Path,
    examples_dir: Path,
    beam_pipeline_args: list[str] | None = None,
) -> TransformResult:
    """Analyze the training split, transform both splits, write the graph and the examples.

    The analysis (means, variances, vocabularies, quantiles) sees only the training split, so
    the validation split is transformed exactly as serving data will be.

    Args:
        train_path: Training split (parquet, from ingest).
        validation_path: Validation split (parquet).
        graph_dir: Where to write the transform graph (``tft.TFTransformOutput``).
        examples_dir: Where to write the transformed ``train-*`` and ``validation-*`` examples;
            shards a previous attempt left there are removed first.
        beam_pipeline_args: Beam options, e.g. ``["--runner=FlinkRunner", ...]``; the
            DirectRunner when empty. With a remote runner, both output directories and a
            ``--temp_location`` must be on storage the workers can reach. See
            components/beam_options.py for the named modes and the refused DaskRunner.

    Raises:
        FileNotFoundError: An input split does not exist.
        ValueError: ``beam_pipeline_args`` select a runner that cannot run TFT (DaskRunner).
    """
    import tensorflow_transform as tft

    from components.beam_options import pipeline_options

    options = pipeline_options(beam_pipeline_args or [])
    for path in (train_path, validation_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"transform input not found: {path}")
    _clear_shards(examples_dir)
    t0 = time.perf_counter()
    _run_beam(train_path, validation_path, graph_dir, examples_dir, options)
    seconds = time.perf_counter() - t0
    tft_output = tft.TFTransformOutput(str(graph_dir))
    return TransformResult(
        transform_graph=str(graph_dir),
        transformed_examples=str(examples_dir),
        train_rows=_num_rows(train_path),
        validation_rows=_num_rows(validation_path),
        seconds=round(seconds, 2),
        transformed_features=sorted(tft_output.transformed_feature_spec()),
    )


def _clear_shards(examples_dir: Path) -> None:
    """Create ``examples_dir`` and remove the split shards a retried step left in it."""
    examples_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for stale in examples_dir.glob(f"{split}-*"):
            stale.unlink()


def _run_beam(
    train_path: Path,
    validation_path: Path,
    graph_dir: Path,
    examples_dir: Path,
    options: Any,
) -> None:
    """The Beam pipeline: read both splits, analyze train, transform both, write everything."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from components.transform.preprocessing import preprocessing_fn

    adapter_config = raw_tensor_adapter_config()
    columns = [*F.FEATURE_NAMES, F.LABEL]
    with tempfile.TemporaryDirectory() as tmp, beam.Pipeline(options=options) as pipeline:
        # TFT's own temp dir; a remote runner gets its --temp_location instead.
        temp_dir = options.get_all_options().get("temp_location") or tmp
        with tft_beam.Context(temp_dir=temp_dir):

            def read(split: str, path: Path) -> Any:
                return (
                    pipeline
                    | f"Read[{split}]" >> beam.io.ReadFromParquetBatched(str(path), columns=columns)
                    | f"ToRecordBatches[{split}]" >> beam.FlatMap(to_record_batches)
                )

            raw_train = read("train", train_path)
            raw_validation = read("validation", validation_path)
            # Record batches out, encoded by tfx_bsl's C++ encoder: no Python dict per row.
            (train_xf, _), transform_fn = (
                (raw_train, adapter_config)
                | "AnalyzeAndTransform"
                >> tft_beam.AnalyzeAndTransformDataset(preprocessing_fn, output_record_batches=True)
            )  # fmt: skip
            validation_xf, _ = (
                ((raw_validation, adapter_config), transform_fn)
                | "TransformValidation" >> tft_beam.TransformDataset(output_record_batches=True)
            )  # fmt: skip
            for split, data in (("train", train_xf), ("validation", validation_xf)):
                _ = (
                    data
                    | f"Encode[{split}]" >> beam.FlatMap(_encode_examples)
                    | f"Write[{split}]"
                    >> beam.io.WriteToTFRecord(
                        str(examples_dir / split), file_name_suffix=".tfrecord.gz"
                    )
                )
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(graph_dir))


def split_files(examples_dir: Path, split: str) -> list[str]:
    """The transformed example files of one split, in a fixed order.

    Raises:
        ValueError: ``split`` is not ``train`` or ``validation``.
        FileNotFoundError: No examples of that split exist.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    files = sorted(str(p) for p in Path(examples_dir).glob(f"{split}-*"))
    if not files:
        raise FileNotFoundError(f"no transformed {split} examples in {examples_dir}")
    return files


def load_transformed_dataset(
    graph_dir: Path, examples_dir: Path, split: str, batch_size: int, shuffle: bool, seed: int
) -> Any:
    """Batches of (transformed features, label) for the trainer.

    Args:
        graph_dir: The transform graph (its transformed feature spec parses the examples).
        examples_dir: The transformed examples.
        split: ``train`` or ``validation``.
        batch_size: Examples per batch.
        shuffle: Shuffle examples (seeded) before batching; the file order is fixed.
        seed: Shuffle seed.

    Returns:
        A ``tf.data.Dataset`` of ``({"<name>_xf": [batch] tensor, ...}, [batch] int64 label)``.

    Raises:
        ValueError: ``split`` is not ``train`` or ``validation``.
        FileNotFoundError: No examples of that split exist.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    files = split_files(examples_dir, split)
    spec = tft.TFTransformOutput(str(graph_dir)).transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        ds = ds.shuffle(100_000, seed=seed, reshuffle_each_iteration=True)

    def parse(batch: Any) -> tuple[dict[str, Any], Any]:
        feats = tf.io.parse_example(batch, spec)
        label = feats.pop(F.LABEL)
        return feats, label

    return ds.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
