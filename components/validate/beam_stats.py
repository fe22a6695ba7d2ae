"""TFDV statistics on Apache Beam, for spans too large to hold in memory.

The in-memory path (``core.stats_from_dataframe``) serves a month or a year of this data; this
one computes the same ``DatasetFeatureStatisticsList`` with ``tfdv.GenerateStatistics`` in a
Beam pipeline, so it runs on the DirectRunner here (in process, or ``multi_processing:N``) and on
Flink, Spark or Dataflow with the same ``beam_pipeline_args`` as transform (see
components/transform/README.md); components/beam_options.py checks them and refuses the
DaskRunner. Parquet is read in batches and canonicalised to list columns, as TFDV's own
DataFrame path does, so the two paths agree (a test compares them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlops import features as F
from mlops.artifacts import STATS_FILE


def _to_canonical_batches(table: Any) -> list[Any]:
    from tfx_bsl.arrow import table_util

    return [table_util.CanonicalizeRecordBatch(b) for b in table.to_batches() if b.num_rows]


def stats_from_parquet_beam(
    paths: list[Path], beam_pipeline_args: list[str] | None = None, out_dir: Path | None = None
) -> Any:
    """TFDV statistics of the contract's columns in ``paths`` (one dataset), computed on Beam.

    Args:
        paths: Parquet files of one span (e.g. the train and eval splits).
        beam_pipeline_args: Beam options; the DirectRunner when empty. With a remote runner,
            ``out_dir`` must be on storage the workers can write. See
            components/beam_options.py for the named modes and the refused DaskRunner.
        out_dir: Where the pipeline writes ``statistics.pb``; a temporary directory if omitted.

    Returns:
        The ``DatasetFeatureStatisticsList``.

    Raises:
        FileNotFoundError: An input file does not exist.
        ValueError: ``beam_pipeline_args`` select a runner that cannot run TFDV (DaskRunner).
    """
    import apache_beam as beam
    import pyarrow.parquet as pq
    import tensorflow_data_validation as tfdv

    from components.beam_options import pipeline_options

    options = pipeline_options(list(beam_pipeline_args or []))
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"statistics input not found: {path}")
    # Read only the contract's columns that are there: a dropped column must show up as an
    # anomaly in validation, not as a read error here.
    present = set(pq.read_schema(paths[0]).names)
    columns = [c for c in (*F.FEATURE_NAMES, F.LABEL) if c in present]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out_dir or tmp)
        target.mkdir(parents=True, exist_ok=True)
        output = target / STATS_FILE
        with beam.Pipeline(options=options) as pipeline:
            reads = [
                pipeline | f"Read[{i}]" >> beam.io.ReadFromParquetBatched(str(p), columns=columns)
                for i, p in enumerate(paths)
            ]
            _ = (
                reads
                | "Flatten" >> beam.Flatten()
                | "Canonicalize" >> beam.FlatMap(_to_canonical_batches)
                | "GenerateStatistics" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                | "Write" >> tfdv.WriteStatisticsToBinaryFile(str(output))
            )
        return tfdv.load_stats_binary(str(output))
