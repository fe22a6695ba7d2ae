"""KFP component: TFDV statistics, anomalies, drift and skew of a span; never raises on bad data."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_op(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    eval_data: Input[Dataset],
    registry_uri: str,
    model_name: str,
    statistics: Output[Artifact],
    anomalies: Output[Artifact],
    verdict: Output[Artifact],
    statistics_view: Output[HTML],
    report: Output[Markdown],
    baseline_statistics_uri: str = "",
    serving_statistics_uri: str = "",
    block_on_drift: bool = False,
    beam_pipeline_args: list = [],  # noqa: B006 - KFP reads the default into the component spec
) -> bool:
    """Validate the span (all three splits); write the verdict (``ok`` in its metadata) and reports.

    Drift is measured against ``baseline_statistics_uri`` or, when empty, against the training
    statistics of the registry's ``production`` version (if there is one). Non-empty
    ``beam_pipeline_args`` compute the statistics on Beam (the same options as transform).
    """
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.validate.core import ValidateOutputs, run_validation

    exit_after_outputs()
    result = run_validation(
        [Path(train_data.path), Path(validation_data.path), Path(eval_data.path)],
        ValidateOutputs(
            statistics=Path(statistics.path),
            anomalies=Path(anomalies.path),
            verdict=Path(verdict.path),
            statistics_view=Path(statistics_view.path),
            report=Path(report.path),
        ),
        registry_uri,
        model_name,
        baseline_statistics_uri=baseline_statistics_uri,
        serving_statistics_uri=serving_statistics_uri,
        block_on_drift=block_on_drift,
        beam_pipeline_args=[str(a) for a in beam_pipeline_args],
    )
    # Both carry the verdict, so a reader of either artifact sees the outcome.
    for artifact in (verdict, statistics):
        artifact.metadata.update(result.to_metadata())
    print(result.report_markdown())
    return result.ok
