"""Beam options for the TFDV and TFT steps: named run modes, and the checks on what they are given.

``beam_pipeline_args`` stay Beam's own command-line options (Flink, Spark and Dataflow take
theirs unchanged, see components/transform/README.md). A named mode is shorthand for the ones
measured here:

- ``in_process``: the DirectRunner in the step's process (``[]``).
- ``multi_processing:N``: the DirectRunner with N local worker processes. Measured on a month:
  TFDV's counts, means, standard deviations and top values, and TFT's vocabularies and
  transformed rows, equal the in-process run's; only TFDV's quantile sketch (a median, and the
  two histograms TFDV draws from the sketch) may differ in a few buckets, as the sketches merge
  in another order (tests/integration/test_beam_runners.py).
- ``dask:<scheduler address>``: refused. Beam 2.59's DaskRunner translates only Create, ParDo,
  Map, GroupByKey and Flatten to Dask bags: ``beam.io.Read`` (every file source) becomes a
  no-op, side inputs reach the DoFn as unresolved placeholders, and DoFn ``setup`` and bundle
  methods are never called. TFDV's ``GenerateStatistics`` needs side inputs
  (``Count.Globally`` inside it) and TFT's analysis passes its results to the transform phase
  as side inputs: on a 2-process dask.distributed cluster, with the reads done in a ParDo, both
  fail with ``ArgumentPlaceholder`` TypeErrors. (It also passes ``--runner`` on to dask's
  ``Client``, which rejects it, and its result waits with ``wait_for_workers()`` lacking the
  count distributed 2024.2 requires.) The same refusal covers raw ``--runner`` args naming it;
  a test runs the real DaskRunner on a side input, so a Beam upgrade that fixes it shows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DASK_REFUSED = (
    "Beam 2.59's DaskRunner cannot run TFDV statistics or TFT: it does not translate side "
    "inputs (TFDV's Count.Globally, TFT's analyzer results) or beam.io.Read (the parquet "
    "source); use multi_processing:N on one machine, or FlinkRunner/SparkRunner/DataflowRunner"
)


class BeamMode(BaseModel):
    """A named run mode, parsed from ``in_process``, ``multi_processing:N`` or ``dask:ADDR``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["in_process", "multi_processing", "dask"]
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None

    @classmethod
    def parse(cls, text: str) -> BeamMode:
        """Parse ``text``.

        Raises:
            ValueError: An unknown mode, a worker count that is not a positive integer, or a
                mode missing its argument (each message names the field).
        """
        kind, _, arg = text.strip().partition(":")
        if kind == "in_process" and not arg:
            return cls(kind="in_process")
        if kind == "multi_processing":
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(
                    f"beam mode {text!r}: workers must be a positive integer (multi_processing:N)"
                )
            return cls(kind="multi_processing", workers=int(arg))
        if kind == "dask":
            if not arg:
                raise ValueError(f"beam mode {text!r}: address is empty (dask:tcp://HOST:PORT)")
            return cls(kind="dask", address=arg)
        raise ValueError(
            f"beam mode {text!r}: kind must be in_process, multi_processing:N or dask:ADDRESS"
        )

    def to_args(self) -> list[str]:
        """The ``beam_pipeline_args`` of this mode.

        Raises:
            ValueError: The mode is ``dask`` (see the module docstring for why).
        """
        if self.kind == "multi_processing":
            return [
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={self.workers}",
            ]
        if self.kind == "dask":
            raise ValueError(f"beam mode dask:{self.address}: {DASK_REFUSED}")
        return []


def mode_args(mode: str) -> list[str]:
    """``beam_pipeline_args`` for a named mode, e.g. ``multi_processing:2``."""
    return BeamMode.parse(mode).to_args()


def pipeline_options(beam_pipeline_args: list[str]) -> Any:
    """The ``PipelineOptions`` the TFDV and TFT pipelines run with.

    Raises:
        ValueError: ``beam_pipeline_args`` select the DaskRunner (by class or by path).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_pipeline_args))
    runner = options.view_as(StandardOptions).runner or ""
    if runner.rsplit(".", 1)[-1] == "DaskRunner":
        raise ValueError(f"beam_pipeline_args: --runner={runner}: {DASK_REFUSED}")
    return options
