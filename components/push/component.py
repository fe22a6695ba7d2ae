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
    import json
    from pathlib import Path

    from components.evaluate.core import read_blessing
    from components.push.core import find_schema, parse_ingest_result, push, read_validation

    spans, train_hash, eval_hash = parse_ingest_result(ingest_result)
    # The trainer records the hyperparameters it resolved (defaults filled in) on the model.
    hp = json.loads(hyperparameters or "{}")
    hp.update(json.loads(model.metadata.get("hyperparameters") or "{}"))
    result = push(
        registry_uri=registry_uri,
        model_name=model_name,
        model_dir=Path(model.path),
        blessing=read_blessing(Path(blessing.path)),
        validation=read_validation(Path(validation.path)),
        spans=spans,
        train_hash=train_hash,
        eval_hash=eval_hash,
        hyperparameters=hp,
        pipeline_run_id=pipeline_run_id or None,
        code_rev=code_revision or None,
        transform_dir=Path(transform_graph.path),
        schema_path=find_schema(statistics.path, validation.path),
        statistics_dir=Path(statistics.path),
        promote=promote,
        register_rejected=register_rejected,
        task_id=pushed.uri,
    )
    Path(pushed.path).write_text(result.to_json())
    pushed.metadata.update(
        {
            "pushed": result.pushed,
            "version": result.version or 0,
            "reason": result.reason,
            "model_uri": result.model_uri or "",
            "reused": result.reused,
        }
    )
    print(result.reason)
    return result.to_json()
