"""KFP component: TFT analyze-and-transform on Beam; outputs the transform graph and examples."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def transform_op(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    transform_graph: Output[Artifact],
    transformed_examples: Output[Dataset],
    beam_pipeline_args: list = [],  # noqa: B006 - KFP reads the default into the component spec
) -> str:
    """Analyze the train split, transform train and validation; returns the result as JSON.

    ``beam_pipeline_args`` pass to Beam unchanged (``[]`` = DirectRunner in the component's
    process); see components/transform/README.md for Flink, Spark and Dataflow.
    """
    from pathlib import Path

    from components.runtime import exit_after_outputs
    from components.transform.core import transform

    exit_after_outputs()
    # The core writes the graph and the examples straight into their own artifacts, so the
    # registry stores the graph without the examples and train reads each where it lies.
    result = transform(
        Path(train_data.path),
        Path(validation_data.path),
        Path(transform_graph.path),
        Path(transformed_examples.path),
        [str(a) for a in beam_pipeline_args],
    )
    transform_graph.metadata.update(result.graph_metadata())
    transformed_examples.metadata.update(result.examples_metadata())
    return result.to_json()
