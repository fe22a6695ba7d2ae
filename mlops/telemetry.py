"""Names of the Prometheus metrics the platform exports, shared by serving, monitor and alerts.

Label sets are bounded: slice values are allow-listed in ``mlops.features.SLICE_ALLOWLIST`` and
everything else is reported as ``other``; error kinds and stages are the fixed tuples below.
"""

PREFIX = "flight_delay"

# Serving (KServe transformer + predictor).
REQUESTS = f"{PREFIX}_requests_total"  # counter{model, version, protocol}
REQUEST_ERRORS = f"{PREFIX}_request_errors_total"  # counter{model, version, kind}
STAGE_LATENCY = f"{PREFIX}_stage_latency_seconds"  # histogram{model, version, stage}
PREDICTION_SCORE = f"{PREFIX}_prediction_score"  # histogram{model, version, slice_key, slice_value}
PREDICTIONS = (
    f"{PREFIX}_predictions_total"  # counter{model, version, slice_key, slice_value, outcome}
)
FEATURE_STALENESS = f"{PREFIX}_feature_staleness_seconds"  # histogram{model, version, view}
# Real-time rows served as missing by the staleness policy (serving.online), by reason.
FEATURE_STALE = f"{PREFIX}_feature_stale_total"  # counter{model, version, view, reason}
# Age of the newest real-time row a request read, per view, at its prediction moment: grows when
# the feed stops.
FEATURE_FRESHNESS = f"{PREFIX}_feature_freshness_seconds"  # gauge{model, version, view}
MISSING_ENTITIES = f"{PREFIX}_missing_entities_total"  # counter{model, version, view}
MODEL_BATCH_ROWS = f"{PREFIX}_model_batch_rows"  # histogram{model, version}: rows per model call
FEATURE_CACHE = f"{PREFIX}_feature_cache_total"  # counter{result in FEATURE_CACHE_RESULTS}
# counter: request-log rows dropped because the disk stalled past the log's queue bound
REQUEST_LOG_DROPPED = f"{PREFIX}_request_log_dropped_rows_total"

ERROR_KINDS = ("bad_request", "feature_lookup", "predict", "unavailable", "internal")
STAGES = ("feature_lookup", "predict", "total")
# The `outcome` label of PREDICTIONS: the score at or above the decision threshold, or below.
POSITIVE = "positive"
NEGATIVE = "negative"
OUTCOMES = (POSITIVE, NEGATIVE)
FEATURE_CACHE_RESULTS = ("hit", "stale_hit", "miss", "read", "read_error")
# The `reason` label of FEATURE_STALE: older than the bound, or stamped after the moment.
STALE_REASONS = ("too_old", "future")

# Monitoring job (pushed to the Pushgateway or served by `mlops monitor`).
FEATURE_DRIFT = f"{PREFIX}_feature_drift"  # gauge{feature, comparison in (drift, skew)}
FEATURE_DRIFT_THRESHOLD = f"{PREFIX}_feature_drift_threshold"  # gauge{feature, comparison}
SLICE_QUALITY = (
    f"{PREFIX}_slice_quality"  # gauge{slice_key, slice_value, metric in (auc, accuracy)}
)

# Rollout controller.
ROLLOUT_STATE = f"{PREFIX}_rollout_state"  # gauge{model, version, state}, 1 for the current state
ROLLOUT_STATES = ("canary", "promoted", "rolled_back")
