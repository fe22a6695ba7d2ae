"""KFP component: evaluate a candidate overall and per slice against production; bless or not."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_op(
    eval_data: Input[Dataset],
    model: Input[Model],
    registry_uri: str,
    model_name: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    blessing: Output[Artifact],
    threshold: float = 0.5,
    min_auc: float = 0.6,
    max_log_loss: float = 0.69,
    max_auc_drop: float = 0.01,
    max_slice_auc_drop: float = 0.05,
    min_slice_count: int = 200,
    max_log_loss_increase: float = 0.02,
    max_slice_log_loss_increase: float = 0.05,
) -> bool:
    """Score the eval split with the candidate and the production model; returns the blessing."""
    from pathlib import Path

    from components.evaluate.core import EvalConfig, run_evaluation
    from components.runtime import exit_after_outputs

    exit_after_outputs()

    config = EvalConfig(
        threshold=threshold,
        min_auc=min_auc,
        max_log_loss=max_log_loss,
        max_auc_drop=max_auc_drop,
        max_slice_auc_drop=max_slice_auc_drop,
        min_slice_count=min_slice_count,
        max_log_loss_increase=max_log_loss_increase,
        max_slice_log_loss_increase=max_slice_log_loss_increase,
    )
    result = run_evaluation(
        Path(eval_data.path),
        Path(model.path),
        registry_uri,
        model_name,
        config,
        Path(report.path),
        Path(blessing.path),
    )
    for name, value in result.overall.to_dict().items():
        if value is not None:
            metrics.log_metric(name, float(value))
    if result.baseline_overall is not None and result.baseline_overall.to_dict()["auc"] is not None:
        metrics.log_metric("baseline_auc", float(result.baseline_overall.auc))
    metrics.log_metric("regressed_slices", float(len(result.regressed_slices)))
    metrics.log_metric("blessed", float(result.blessed))
    classification_metrics.log_roc_curve(
        result.roc["fpr"], result.roc["tpr"], result.roc["threshold"]
    )
    classification_metrics.log_confusion_matrix(["on time", "delayed"], result.confusion_matrix)
    blessing.metadata.update(
        {
            "blessed": result.blessed,
            "baseline_version": result.baseline_version or 0,
            "regressed_slices": ",".join(result.regressed_slices),
            "reasons": "\n".join(result.reasons),
        }
    )
    for line in result.reasons:
        print(line)
    return result.blessed
