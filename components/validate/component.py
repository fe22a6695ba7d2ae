"""KFP component: TFDV statistics, anomalies, drift and skew of a span; never raises on bad data."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_op(
    train_data: Input[Dataset],
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
) -> bool:
    """Validate the span (both splits); write the verdict (``ok`` in its metadata) and reports.

    Drift is measured against ``baseline_statistics_uri`` or, when empty, against the training
    statistics of the registry's ``production`` version (if there is one).
    """
    import shutil
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.validate.core import ANOMALIES_FILE, VERDICT_FILE, validate

    exit_after_outputs()
    from mlops.registry import ModelRegistry

    baseline = baseline_statistics_uri or None
    if baseline is None:
        production = ModelRegistry(registry_uri).find(model_name, "production")
        if production is not None and Path(production.statistics_uri).exists():
            baseline = production.statistics_uri
    out = Path(statistics.path)
    result = validate(
        [Path(train_data.path), Path(eval_data.path)],
        out,
        previous_stats_path=Path(baseline) if baseline else None,
        serving_stats_path=Path(serving_statistics_uri) if serving_statistics_uri else None,
        block_on_drift=block_on_drift,
    )
    Path(anomalies.path).mkdir(parents=True, exist_ok=True)
    shutil.copy(out / ANOMALIES_FILE, Path(anomalies.path) / ANOMALIES_FILE)
    Path(verdict.path).mkdir(parents=True, exist_ok=True)
    shutil.copy(out / VERDICT_FILE, Path(verdict.path) / VERDICT_FILE)
    shutil.copy(out / "statistics.html", statistics_view.path)
    shutil.copy(out / "report.md", report.path)
    summary = result.summary()
    for artifact in (verdict, statistics):
        artifact.metadata.update({"ok": result.ok, "anomalies": len(result.anomalies),
                                  "drifted": ",".join(result.drifted), "summary": summary,
                                  "baseline": baseline or ""})  # fmt: skip
    print(result.report_markdown())
    return result.ok
