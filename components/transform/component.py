"""KFP component: TFT analyze-and-transform on Beam; outputs the transform graph and examples."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def transform_op(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    transform_graph: Output[Artifact],
    transformed_examples: Output[Dataset],
    beam_pipeline_args: list = [],  # noqa: B006 - KFP reads the default into the component spec
) -> str:
    """Analyze the train split, transform train and eval; returns the result as JSON.

    ``beam_pipeline_args`` pass to Beam unchanged (``[]`` = DirectRunner in the component's
    process); see components/transform/README.md for Flink, Spark and Dataflow.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.transform.core import EXAMPLES_DIR, GRAPH_DIR, transform

    exit_after_outputs()

    # The core writes one directory with two halves; each half becomes its own artifact so the
    # registry can store the graph without the examples.
    work = Path(tempfile.mkdtemp(prefix="transform-"))
    result = transform(
        Path(train_data.path),
        Path(eval_data.path),
        work,
        [str(a) for a in beam_pipeline_args],
    )
    for src, artifact in ((GRAPH_DIR, transform_graph), (EXAMPLES_DIR, transformed_examples)):
        dest = Path(artifact.path)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(work / src, dest)
    shutil.rmtree(work, ignore_errors=True)
    features = [f for f in result.transformed_features if f.endswith("_xf")]
    transform_graph.metadata.update(
        {"transformed_features": ",".join(features), "seconds": result.seconds}
    )
    transformed_examples.metadata.update(
        {
            "train_rows": result.train_rows,
            "eval_rows": result.eval_rows,
            "format": "tfrecord.gz (tf.Example)",
            "splits": "train,eval",
        }
    )
    return result.to_json()
