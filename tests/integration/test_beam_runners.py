"""TFDV and TFT beyond the in-process DirectRunner (issue #17): multi_processing and Dask.

The DirectRunner's multi_processing mode must give the in-process results: statistics counts
and moments, TFT vocabularies, analyzer constants and transformed rows. Beam 2.59's DaskRunner
cannot run either (components/beam_options.py says why); the platform refuses it before any
work, and a real Dask cluster shows the reason still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import features as F

pytestmark = pytest.mark.integration

TrainingSet = Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]]
MULTI_PROCESSING = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
DASK_ARGS = [
    "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
    "--dask_client_address=tcp://127.0.0.1:8786",
]
# Rows of January's splits: enough for several bundles per worker, small enough that the
# fixed Beam/TFT start-up, not the data, is most of each run.
TRAIN_ROWS, EVAL_ROWS = 6_000, 2_000


def _slice(training_set: TrainingSet, tmp_path: Path) -> tuple[Path, Path]:
    train, evaluation = training_set("2013-01", "2013-01")
    paths = (tmp_path / "train.parquet", tmp_path / "eval.parquet")
    train.head(TRAIN_ROWS).to_parquet(paths[0], index=False)
    evaluation.head(EVAL_ROWS).to_parquet(paths[1], index=False)
    return paths


def _by_name(stats: Any) -> dict[str, Any]:
    return {".".join(f.path.step): f for f in stats.datasets[0].features}


def test_named_modes_become_beam_args_and_bad_ones_name_the_field() -> None:
    from components.beam_options import mode_args, pipeline_options

    assert mode_args("in_process") == []
    assert mode_args("multi_processing:2") == MULTI_PROCESSING
    bad_modes = {"multi_processing:0": "workers", "multi_processing:x": "workers",
                 "dask:": "address", "spark": "kind", "in_process:3": "kind"}  # fmt: skip
    for bad, field in bad_modes.items():
        with pytest.raises(ValueError, match=field):
            mode_args(bad)
    # Flink, Spark and Dataflow args pass through untouched.
    flink = ["--runner=FlinkRunner", "--flink_master=flink:8081", "--parallelism=8"]
    assert (
        pipeline_options(flink).get_all_options(drop_default=True)["flink_master"] == "flink:8081"
    )


def test_dask_is_refused_before_any_work_with_the_reason() -> None:
    from components.beam_options import mode_args, pipeline_options

    with pytest.raises(ValueError, match=r"dask:tcp://127\.0\.0\.1:8786: .*side inputs"):
        mode_args("dask:tcp://127.0.0.1:8786")
    for runner in ("DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        with pytest.raises(ValueError, match=r"beam_pipeline_args: --runner=.*DaskRunner.*Flink"):
            pipeline_options([f"--runner={runner}", *DASK_ARGS[1:]])


def test_dask_steps_refuse_before_reading(tmp_path: Path) -> None:
    from components.transform.core import transform
    from components.validate.beam_stats import stats_from_parquet_beam

    # The inputs do not exist: the refusal comes first, from the options, not from a read.
    missing = tmp_path / "missing.parquet"
    with pytest.raises(ValueError, match="DaskRunner cannot run TFDV statistics or TFT"):
        stats_from_parquet_beam([missing], DASK_ARGS)
    with pytest.raises(ValueError, match="DaskRunner cannot run TFDV statistics or TFT"):
        transform(missing, missing, tmp_path / "graph", tmp_path / "xf", DASK_ARGS)


def _with_side_input(values: list[int]) -> Any:
    import apache_beam as beam

    def build(pipeline: Any) -> Any:
        total = pipeline | "Total" >> beam.Create([sum(values)])
        return (
            pipeline
            | "Values" >> beam.Create(values)
            | "Share" >> beam.Map(lambda v, t: v / t, beam.pvalue.AsSingleton(total))
        )

    return build


def _without_side_input(values: list[int]) -> Any:
    import apache_beam as beam

    def build(pipeline: Any) -> Any:
        return (
            pipeline
            | "Values" >> beam.Create(values)
            | "Key" >> beam.Map(lambda v: (v % 2, v))
            | "Group" >> beam.GroupByKey()
            | "Sum" >> beam.Map(lambda kv: (kv[0], sum(kv[1])))
        )

    return build


def test_dask_runner_runs_plain_steps_but_not_side_inputs() -> None:
    """The reason for the refusal, on a real 2-process Dask cluster: lift it when this fails."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from dask.distributed import LocalCluster

    def run(build: Callable[[Any], Any], address: str) -> list[Any]:
        # Beam 2.59's DaskRunner hands every set option to dask's Client (``--runner`` too,
        # which it rejects) and its result's wait calls ``wait_for_workers()`` without the
        # worker count distributed 2024.2 requires: pass the runner as an object and gather
        # the futures here.
        pipeline = beam.Pipeline(
            runner=DaskRunner(), options=PipelineOptions([f"--dask_client_address={address}"])
        )
        build(pipeline)
        result = pipeline.run()
        try:
            # One future per step, in the order the steps were applied: the last is the output.
            return sorted(result.client.gather(result.futures, errors="raise")[-1])
        finally:
            result.client.close()

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        values = list(range(1, 101))
        assert run(_without_side_input(values), cluster.scheduler_address) == [(0, 2550), (1, 2500)]
        with pytest.raises(TypeError, match="ArgumentPlaceholder"):
            run(_with_side_input(values), cluster.scheduler_address)


def test_multi_processing_statistics_equal_in_process(
    training_set: TrainingSet, tmp_path: Path
) -> None:
    from components.validate.beam_stats import stats_from_parquet_beam

    paths = list(_slice(training_set, tmp_path))
    single = stats_from_parquet_beam(paths, [], tmp_path / "single")
    multi = stats_from_parquet_beam(paths, MULTI_PROCESSING, tmp_path / "multi")
    assert (
        single.datasets[0].num_examples
        == multi.datasets[0].num_examples
        == (TRAIN_ROWS + EVAL_ROWS)
    )
    s, m = _by_name(single), _by_name(multi)
    assert sorted(s) == sorted(m) == sorted((*F.FEATURE_NAMES, F.LABEL))
    for name in F.NUMERIC_FEATURES:
        a, b = s[name].num_stats, m[name].num_stats
        # Counts are exact; sums merge in another order, so moments agree to rounding.
        assert a.common_stats == b.common_stats, name
        assert (a.num_zeros, a.min, a.max) == (b.num_zeros, b.min, b.max), name
        assert b.mean == pytest.approx(a.mean, rel=1e-9), name
        assert b.std_dev == pytest.approx(a.std_dev, rel=1e-9), name
    for name in F.CATEGORICAL_FEATURES:
        a, b = s[name].string_stats, m[name].string_stats
        assert a.common_stats == b.common_stats, name
        assert (a.unique, list(a.top_values)) == (b.unique, list(b.top_values)), name
        assert a.avg_length == pytest.approx(b.avg_length, rel=1e-9), name


def test_multi_processing_transform_equals_in_process(
    training_set: TrainingSet, tmp_path: Path
) -> None:
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.transform.core import split_files, transform

    train, evaluation = _slice(training_set, tmp_path)
    outputs = {}
    for name, args in (("single", []), ("multi", MULTI_PROCESSING)):
        transform(train, evaluation, tmp_path / name / "graph", tmp_path / name / "xf", args)
        outputs[name] = tft.TFTransformOutput(str(tmp_path / name / "graph"))
    single, multi = outputs["single"], outputs["multi"]
    assert single.transformed_feature_spec() == multi.transformed_feature_spec()
    for feature in F.CATEGORICAL_FEATURES:
        assert single.vocabulary_by_name(feature) == multi.vocabulary_by_name(feature), feature

    def rows(name: str, split: str) -> Any:
        """The split's transformed rows as one float matrix, columns by name, rows sorted."""
        files = split_files(tmp_path / name / "xf", split)
        spec = single.transformed_feature_spec()
        batch = next(iter(
            tf.data.TFRecordDataset(files, compression_type="GZIP")
            .batch(TRAIN_ROWS + EVAL_ROWS)
            .map(lambda b: tf.io.parse_example(b, spec))
        ))  # fmt: skip
        matrix = np.stack([batch[k].numpy().astype(np.float64).ravel() for k in sorted(spec)], 1)
        # The workers write shards in their own order (and a tf.Example's features in their
        # own order, so the bytes differ): compare the rows as a sorted set.
        return matrix[np.lexsort(np.round(matrix, 4).T[::-1])]

    for split, count in (("train", TRAIN_ROWS), ("validation", EVAL_ROWS)):
        a, b = rows("single", split), rows("multi", split)
        assert a.shape == b.shape == (count, len(single.transformed_feature_spec())), split
        # Means and variances are summed in another order: equal to float rounding (measured
        # on a month: bit-equal).
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=split)
