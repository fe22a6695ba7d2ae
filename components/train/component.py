"""KFP component: train the wide-and-deep classifier on the TFT output and export it for serving."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train_op(
    transform_graph: Input[Artifact],
    transformed_examples: Input[Dataset],
    hyperparameters: str,
    model: Output[Model],
    tensorboard_logs: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Train, compare with the logistic and majority baselines, export the serving SavedModel."""
    import json
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.train.core import HyperParameters, train

    exit_after_outputs()

    # The core reads one transform directory; the two artifacts are its two halves.
    work = Path(tempfile.mkdtemp(prefix="train-"))
    (work / "transform_graph").symlink_to(transform_graph.path, target_is_directory=True)
    (work / "transformed").symlink_to(transformed_examples.path, target_is_directory=True)

    hp = HyperParameters.from_json(hyperparameters)
    result = train(work, Path(model.path), Path(tensorboard_logs.path), hp)
    for key in (
        "eval_auc",
        "eval_loss",
        "eval_accuracy",
        "logistic_auc",
        "majority_accuracy",
        "examples_per_second",
        "epochs_run",
    ):
        metrics.log_metric(key, float(getattr(result, key)))
    model.metadata.update(
        {
            "framework": "tensorflow",
            "signature": "serving_default",
            "eval_auc": result.eval_auc,
            "hyperparameters": json.dumps(result.hyperparameters),
        }
    )
    tensorboard_logs.metadata["log_format"] = "tensorboard"
    return json.dumps(asdict(result))
