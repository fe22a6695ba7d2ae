"""KFP component: the last step of the DAG, a canary (cluster) or shadow analysis (local)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy_op(
    pushed: Input[Artifact],
    eval_data: Input[Dataset],
    registry_uri: str,
    model_name: str,
    deploy_mode: str,
    feature_repo: str,
    decision: Output[Artifact],
    inference_service: str = "flight-delay",
    namespace: str = "flight-delay",
    prometheus_url: str = "",
    registry_serving_root: str = "",
    request_log: str = "",
) -> str:
    """Roll the pushed version out; ``production`` moves only on promotion."""
    import json
    from pathlib import Path

    from components.deploy.core import check_mode, deploy
    from components.runtime import exit_after_outputs

    exit_after_outputs()
    result = deploy(
        json.loads(Path(pushed.path).read_text()),
        registry_uri,
        model_name,
        check_mode(deploy_mode),
        feature_repo=Path(feature_repo),
        replay_path=Path(eval_data.path),
        inference_service=inference_service,
        namespace=namespace,
        prometheus_url=prometheus_url,
        serving_root=registry_serving_root,
        request_log=request_log,
    )
    Path(decision.path).write_text(result.to_json())
    decision.metadata.update(result.to_metadata())
    print(result.to_json())
    return result.to_json()
