"""KFP component: the monitoring job for the cluster (skew, drift, live quality -> Pushgateway)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.images import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def monitor_op(
    request_log: str,
    registry_uri: str,
    model_name: str,
    previous_statistics_uri: str,
    feedback_uri: str,
    pushgateway: str,
    statistics: Output[Artifact],
) -> str:
    """Compare served requests with the production model's training data and the last window.

    ``request_log`` is a directory (every rotated, per-pod ``*.jsonl`` in it), a glob or a file;
    it and the other URIs may be local paths or fsspec URIs (gs://, s3://), never wrapped in
    ``Path``.
    """
    from pathlib import Path

    from components.monitor.core import push_metrics, run_monitor
    from components.runtime import exit_after_outputs
    from mlops.registry import PRODUCTION, ModelRegistry

    exit_after_outputs()
    production = ModelRegistry(registry_uri).find(model_name, PRODUCTION)
    if production is None:
        raise ValueError(f"{model_name} has no production version to monitor")
    result = run_monitor(
        request_log,
        production.statistics_uri,
        Path(statistics.path),
        previous_stats=previous_statistics_uri or None,
        feedback=feedback_uri or None,
    )
    if pushgateway:
        push_metrics(result, model_name, pushgateway)
    statistics.metadata.update(
        {
            "requests": result.requests,
            "skewed": ",".join(result.skewed),
            "drifted": ",".join(result.drifted),
            "production_version": production.version,
        }
    )
    return result.to_json()
