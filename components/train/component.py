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
    train_workers: int = 1,
    gpu_count: int = 0,
    gpu_type: str = "nvidia.com/gpu",
    registry_pvc: str = "",
    workspace: str = "",
) -> str:
    """Train, compare with the logistic and majority baselines, export the serving SavedModel.

    With ``train_workers`` > 1 it trains under MultiWorkerMirroredStrategy: in a cluster as a
    TFJob of that many workers (``gpu_count`` GPUs each, inputs staged on ``registry_pvc``,
    mounted at ``workspace``), elsewhere as worker processes on loopback.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.train.core import HyperParameters, train

    exit_after_outputs()
    if train_workers < 1:
        raise ValueError(f"train_workers must be >= 1, got {train_workers}")
    # Parsed here as well, so a bad key fails before any worker or TFJob starts.
    hp = HyperParameters.from_json(hyperparameters)
    graph, examples = Path(transform_graph.path), Path(transformed_examples.path)
    if train_workers == 1:
        result = train(graph, examples, Path(model.path), Path(tensorboard_logs.path), hp)
    else:
        from components.train.tfjob import train_on_workers

        result = train_on_workers(
            train_workers, graph, examples, Path(model.path), Path(tensorboard_logs.path),
            hyperparameters, pvc=registry_pvc, mount_path=workspace, gpu_count=gpu_count,
            gpu_resource=gpu_type,
        )  # fmt: skip
    for key, value in result.kfp_metrics().items():
        metrics.log_metric(key, value)
    model.metadata.update(result.model_metadata())
    tensorboard_logs.metadata["log_format"] = "tensorboard"
    return json.dumps(asdict(result))
