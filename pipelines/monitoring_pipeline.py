"""The monitoring DAG for the cluster: one step, scheduled as a recurring run (e.g. hourly).

Locally the same job is ``mlops monitor``. The alert rules fire on what it pushes, and the
Alertmanager webhook (``mlops alert-receiver``) starts a retraining run for each new cause.

In the cluster the step mounts two ReadWriteMany PVCs the chart creates: the request log the
transformer pods write (one file per pod, rotated by size) at ``/mnt/requests``, and the model
registry at ``/mnt/registry`` (``kfp.local`` ignores the mounts).
"""

from kfp import dsl, kubernetes

from components.monitor.component import monitor_op
from mlops.registry import DEFAULT_MODEL_NAME
from pipelines.training_pipeline import REGISTRY_MOUNT, mount_registry

PIPELINE_NAME = "flight-delay-monitoring"
REQUESTS_MOUNT = "/mnt/requests"


@dsl.pipeline(name=PIPELINE_NAME, description="Skew, drift and live quality of served requests.")
def monitoring_pipeline(
    request_log: str = REQUESTS_MOUNT,
    requests_pvc: str = "flight-delay-requests",
    registry_uri: str = REGISTRY_MOUNT,
    registry_pvc: str = "flight-delay-registry",
    model_name: str = DEFAULT_MODEL_NAME,
    previous_statistics_uri: str = "",
    feedback_uri: str = "",
    pushgateway: str = "prometheus-pushgateway.monitoring:9091",
) -> None:
    """Monitor one window of served requests.

    Args:
        request_log: The serving request log: a directory (every ``*.jsonl`` in it, rotated
            files included), a glob or one file; a mounted path or an fsspec URI.
        requests_pvc: PVC the transformer pods write the request log to, mounted at
            /mnt/requests.
        registry_uri: Model registry holding the production model's training statistics.
        registry_pvc: PVC holding the registry, mounted at /mnt/registry.
        model_name: Registered model name.
        previous_statistics_uri: Statistics of the previous window, for drift ('' = none).
        feedback_uri: Labels of served rows, for live per-slice quality ('' = none).
        pushgateway: Where the gauges go for Prometheus to scrape.
    """
    # Skew vs training, drift vs the last window, live quality: the inputs of the alerts.
    monitor = monitor_op(
        request_log=request_log,
        registry_uri=registry_uri,
        model_name=model_name,
        previous_statistics_uri=previous_statistics_uri,
        feedback_uri=feedback_uri,
        pushgateway=pushgateway,
    )
    monitor.set_display_name("monitor").set_caching_options(False)
    monitor.set_cpu_limit("2").set_memory_limit("8G")
    kubernetes.mount_pvc(monitor, pvc_name=requests_pvc, mount_path=REQUESTS_MOUNT)
    mount_registry(monitor, registry_pvc)
