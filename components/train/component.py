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
    from dataclasses import asdict
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.train.core import HyperParameters, train

    exit_after_outputs()
    result = train(
        Path(transform_graph.path),
        Path(transformed_examples.path),
        Path(model.path),
        Path(tensorboard_logs.path),
        HyperParameters.from_json(hyperparameters),
    )
    for key, value in result.kfp_metrics().items():
        metrics.log_metric(key, value)
    model.metadata.update(result.model_metadata())
    tensorboard_logs.metadata["log_format"] = "tensorboard"
    return json.dumps(asdict(result))
