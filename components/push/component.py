"""KFP component: register a blessed, validated model and move its aliases, or say why not."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def push_op(
    model: Input[Model],
    blessing: Input[Artifact],
    validation: Input[Artifact],
    transform_graph: Input[Artifact],
    statistics: Input[Artifact],
    registry_uri: str,
    model_name: str,
    pushed: Output[Artifact],
    ingest_result: str = "",
    hyperparameters: str = "{}",
    pipeline_run_id: str = "",
    code_revision: str = "",
    promote: bool = True,
    register_rejected: bool = False,
) -> str:
    """Push when the blessing and the validation verdict are both positive; returns the result.

    ``ingest_result`` is the ingest component's JSON output (spans and content hashes);
    ``pipeline_run_id`` is usually ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``. The transform graph and
    the training statistics (with ``schema.pbtxt`` if validate wrote one there) are stored with
    the version. A retry of this task finds the version its earlier attempt registered: the
    task's identity is its output artifact's URI, which KFP gives every retry of one task and no
    other task.
    """
    from pathlib import Path

    from components.push.core import push_artifacts

    result = push_artifacts(
        registry_uri=registry_uri,
        model_name=model_name,
        model_dir=Path(model.path),
        model_metadata=model.metadata,
        blessing_path=Path(blessing.path),
        validation_path=Path(validation.path),
        transform_dir=Path(transform_graph.path),
        statistics_dir=Path(statistics.path),
        ingest_result=ingest_result,
        hyperparameters=hyperparameters,
        pipeline_run_id=pipeline_run_id,
        code_rev=code_revision,
        promote=promote,
        register_rejected=register_rejected,
        task_id=pushed.uri,
    )
    Path(pushed.path).write_text(result.to_json())
    pushed.metadata.update(result.to_metadata())
    print(result.reason)
    return result.to_json()
