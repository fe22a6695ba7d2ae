"""KFP component: evaluate a candidate overall and per slice against production; bless or not."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.evaluate.config import with_gate_defaults
from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
@with_gate_defaults
def evaluate_op(
    eval_data: Input[Dataset],
    model: Input[Model],
    registry_uri: str,
    model_name: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    blessing: Output[Artifact],
    threshold: float,
    min_auc: float,
    max_log_loss: float,
    max_auc_drop: float,
    max_slice_auc_drop: float,
    min_slice_count: int,
    max_log_loss_increase: float,
    max_slice_log_loss_increase: float,
    slice_max_auc_drop: dict,
) -> bool:
    """Score the eval split with the candidate and the production model; returns the blessing.

    Precision, recall and F1 are measured at the model's ``operating_threshold`` metadata when
    it has one, else at ``threshold``. The gate parameters are ``EvalConfig``'s fields, with
    its defaults (``with_gate_defaults``).
    """
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
        slice_max_auc_drop={str(k): float(v) for k, v in slice_max_auc_drop.items()},
    )
    result = run_evaluation(
        Path(eval_data.path),
        Path(model.path),
        registry_uri,
        model_name,
        config,
        Path(report.path),
        Path(blessing.path),
        # train records the operating threshold it chose on the validation split here.
        model_metadata=dict(model.metadata),
    )
    for name, value in result.kfp_metrics().items():
        metrics.log_metric(name, value)
    classification_metrics.log_roc_curve(
        result.roc["fpr"], result.roc["tpr"], result.roc["threshold"]
    )
    classification_metrics.log_confusion_matrix(["on time", "delayed"], result.confusion_matrix)
    blessing.metadata.update(result.to_metadata())
    for line in result.reasons:
        print(line)
    return result.blessed
