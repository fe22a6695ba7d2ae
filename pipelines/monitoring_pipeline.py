"""The monitoring DAG for the cluster: one step, scheduled as a recurring run (e.g. hourly).

Locally the same job is ``mlops monitor``. The alert rules fire on what it pushes, and the
Alertmanager webhook (``mlops alert-receiver``) starts a retraining run for each new cause.
"""

from kfp import dsl

from components.monitor.component import monitor_op

PIPELINE_NAME = "flight-delay-monitoring"


@dsl.pipeline(name=PIPELINE_NAME, description="Skew, drift and live quality of served requests.")
def monitoring_pipeline(
    request_log: str = "/mnt/serving/requests.jsonl",
    registry_uri: str = "/opt/flight-delay/registry",
    model_name: str = "flight-delay",
    previous_statistics_uri: str = "",
    feedback_uri: str = "",
    pushgateway: str = "prometheus-pushgateway.monitoring:9091",
) -> None:
    """Monitor one window of served requests.

    Args:
        request_log: The serving request log of the window (a mounted volume or fsspec path).
        registry_uri: Model registry holding the production model's training statistics.
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
