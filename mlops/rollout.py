"""Rollout analysis: compare a canary with the stable version from Prometheus and decide.

The same analysis drives both modes:

- **cluster**: the InferenceService's ``canaryTrafficPercent`` moves in steps (10 -> 50 -> 100);
  promotion removes the field, roll-back sets it to 0. The objects written are checked against
  the KServe SDK's types before they are sent.
- **local (shadow)**: both versions are served side by side and receive the same replayed
  traffic; the analysis reads the same series and the ``production`` alias moves only on promote.

Every decision is recorded in the registry's lineage of the canary version.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlops import telemetry as T

Decision = Literal["promote", "hold", "rollback"]
TRAFFIC_STEPS: tuple[int, ...] = (10, 50, 100)


@dataclass(frozen=True)
class RolloutThresholds:
    """When a canary is rolled back, held, or promoted."""

    window: str = "5m"
    min_requests: int = 200
    max_error_rate: float = 0.02
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    max_p99_seconds: float = 0.2
    # A retrained model legitimately moves its scores (new months, new base rates): these bound
    # a broken slice (a wrong feature, a bad vocabulary), not an ordinary update. Measured here:
    # the Feb-Mar model against the Jan-Feb one on replayed March flights moved a slice's mean
    # score by up to 0.22 and its positive rate by up to 0.26.
    max_slice_positive_rate_shift: float = 0.35
    max_slice_mean_score_shift: float = 0.35


@dataclass
class VersionStats:
    """What Prometheus says about one served version over the window."""

    version: str
    requests: float
    error_rate: float
    p99_seconds: float
    slice_positive_rate: dict[str, float] = field(default_factory=dict)
    slice_mean_score: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutAnalysis:
    """A decision with the evidence behind it."""

    decision: Decision
    reasons: list[str]
    canary: VersionStats
    stable: VersionStats
    thresholds: RolloutThresholds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for lineage events and logs."""
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "canary": asdict(self.canary),
            "stable": asdict(self.stable),
            "thresholds": asdict(self.thresholds),
        }


class PrometheusClient:
    """Minimal client of the Prometheus HTTP API (instant queries)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; return the result vector."""
        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=self.timeout) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {body.get('error', body)}: {promql}")
        return list(body["data"]["result"])

    def scalar(self, promql: str) -> float:
        """A query expected to return at most one series; NaN when it returns none."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else math.nan

    def by_slice(self, promql: str) -> dict[str, float]:
        """A query returning one series per slice, keyed ``slice_key=slice_value``."""
        out = {}
        for series in self.query(promql):
            labels = series["metric"]
            out[f"{labels.get('slice_key')}={labels.get('slice_value')}"] = float(
                series["value"][1]
            )
        return out


def selector(model: str, version: str) -> str:
    """The PromQL label selector of one served version."""
    return f'model="{model}",version="{version}"'


def version_stats(prom: PrometheusClient, sel: str, window: str) -> VersionStats:
    """Collect one version's request, error, latency and per-slice prediction figures.

    Args:
        prom: The Prometheus to query.
        sel: Label selector of the version, see :func:`selector`.
        window: PromQL range, e.g. ``5m``.
    """
    version = dict(kv.split("=", 1) for kv in sel.split(",")).get("version", '""').strip('"')
    requests = prom.scalar(f"sum(increase({T.REQUESTS}{{{sel}}}[{window}]))")
    errors = prom.scalar(f"sum(increase({T.REQUEST_ERRORS}{{{sel}}}[{window}]))")
    p99 = prom.scalar(
        f"histogram_quantile(0.99, sum by (le) (rate({T.STAGE_LATENCY}_bucket"
        f'{{{sel},stage="total"}}[{window}])))'
    )
    total = f"sum by (slice_key, slice_value) (increase({T.PREDICTIONS}{{{sel}}}[{window}]))"
    # A slice with no positive prediction has no positive series: `or total * 0` makes it 0.
    positive = prom.by_slice(
        f"(sum by (slice_key, slice_value) (increase({T.PREDICTIONS}"
        f'{{{sel},outcome="positive"}}[{window}])) or {total} * 0) / {total}'
    )
    mean_score = prom.by_slice(
        f"sum by (slice_key, slice_value) (increase({T.PREDICTION_SCORE}_sum{{{sel}}}[{window}]))"
        f" / sum by (slice_key, slice_value) (increase({T.PREDICTION_SCORE}_count{{{sel}}}"
        f"[{window}]))"
    )
    requests = 0.0 if math.isnan(requests) else requests
    errors = 0.0 if math.isnan(errors) else errors
    return VersionStats(
        version=version,
        requests=requests,
        error_rate=errors / requests if requests else 0.0,
        p99_seconds=p99,
        slice_positive_rate={k: v for k, v in positive.items() if not math.isnan(v)},
        slice_mean_score={k: v for k, v in mean_score.items() if not math.isnan(v)},
    )


def decide(canary: VersionStats, stable: VersionStats, th: RolloutThresholds) -> RolloutAnalysis:
    """Compare canary with stable: roll back on any breach, hold on too little data."""
    reasons: list[str] = []
    if canary.error_rate > th.max_error_rate:
        reasons.append(
            f"canary error rate {canary.error_rate:.3%} exceeds the limit {th.max_error_rate:.3%}"
        )
    if canary.error_rate - stable.error_rate > th.max_error_rate_increase:
        reasons.append(
            f"canary error rate {canary.error_rate:.3%} is more than "
            f"{th.max_error_rate_increase:.3%} above stable {stable.error_rate:.3%}"
        )
    if not math.isnan(canary.p99_seconds):
        if canary.p99_seconds > th.max_p99_seconds:
            reasons.append(
                f"canary p99 latency {canary.p99_seconds * 1000:.1f} ms exceeds "
                f"{th.max_p99_seconds * 1000:.0f} ms"
            )
        if (
            not math.isnan(stable.p99_seconds)
            and stable.p99_seconds > 0
            and canary.p99_seconds / stable.p99_seconds > th.max_p99_ratio
        ):
            reasons.append(
                f"canary p99 {canary.p99_seconds * 1000:.1f} ms is more than "
                f"{th.max_p99_ratio}x stable {stable.p99_seconds * 1000:.1f} ms"
            )
    per_slice = (
        ("positive rate", canary.slice_positive_rate, stable.slice_positive_rate,
         th.max_slice_positive_rate_shift),
        ("mean score", canary.slice_mean_score, stable.slice_mean_score,
         th.max_slice_mean_score_shift),
    )  # fmt: skip
    for what, ours, theirs, limit in per_slice:
        for key in sorted(set(ours) & set(theirs)):
            shift = ours[key] - theirs[key]
            if abs(shift) > limit:
                reasons.append(
                    f"slice {key}: {what} {ours[key]:.3f} vs stable {theirs[key]:.3f} "
                    f"(shift {shift:+.3f}, limit {limit})"
                )
    if reasons:
        decision: Decision = "rollback"
    elif canary.requests < th.min_requests or stable.requests < th.min_requests:
        decision = "hold"
        reasons.append(
            f"not enough traffic yet: canary {canary.requests:.0f}, stable "
            f"{stable.requests:.0f} requests (need {th.min_requests} each)"
        )
    else:
        decision = "promote"
        reasons.append(
            f"canary within every threshold over {canary.requests:.0f} requests: error rate "
            f"{canary.error_rate:.3%}, p99 {canary.p99_seconds * 1000:.1f} ms, "
            f"{len(canary.slice_positive_rate)} slices compared"
        )
    return RolloutAnalysis(decision, reasons, canary, stable, th)


def analyze(
    prom: PrometheusClient, canary: str, stable: str, th: RolloutThresholds
) -> RolloutAnalysis:
    """Query Prometheus for both versions (label selectors) and decide."""
    return decide(
        version_stats(prom, canary, th.window), version_stats(prom, stable, th.window), th
    )


def next_traffic_percent(current: int | None, decision: Decision) -> int | None:
    """The canary traffic after a decision; ``None`` means promoted (field removed)."""
    if decision == "rollback":
        return 0
    if decision == "hold":
        return current if current is not None else TRAFFIC_STEPS[0]
    later = [s for s in TRAFFIC_STEPS if current is None or s > current]
    if not later or later[0] == 100:
        return None
    return later[0]


# KServe's names: the predictor's model container, and the env var of a custom container that
# KServe's storage initializer reads (the predictor also labels its metrics by it).
KSERVE_CONTAINER = "kserve-container"
STORAGE_URI_ENV = "STORAGE_URI"


def _kserve_container(predictor: dict[str, Any]) -> dict[str, Any]:
    """The predictor's model container: KServe's storage initializer serves ``kserve-container``."""
    for container in predictor.get("containers") or []:
        if container.get("name") == KSERVE_CONTAINER:
            return container
    raise ValueError(f"spec.predictor.containers has no container named {KSERVE_CONTAINER!r}")


def predictor_storage_uri(isvc: dict[str, Any]) -> str | None:
    """The storage URI the predictor serves: ``model.storageUri`` of a model-block predictor, or
    the ``STORAGE_URI`` env of a custom container predictor's ``kserve-container``."""
    predictor = isvc.get("spec", {}).get("predictor", {})
    model = predictor.get("model")
    if isinstance(model, dict):
        uri = model.get("storageUri")
        return uri if isinstance(uri, str) else None
    if not predictor.get("containers"):
        return None
    for env in _kserve_container(predictor).get("env") or []:
        if env.get("name") == STORAGE_URI_ENV and isinstance(env.get("value"), str):
            return str(env["value"])
    return None


def canary_patch(
    isvc: dict[str, Any], storage_uri: str | None, traffic_percent: int | None
) -> dict[str, Any]:
    """The InferenceService after a rollout step (a copy; the input is left as it was).

    A predictor with a ``model:`` block gets ``model.storageUri``; a custom container predictor
    (the chart's) gets the ``STORAGE_URI`` env of its ``kserve-container``, which KServe's
    storage initializer downloads into ``/mnt/models``. KServe's types have no storage URI on
    the predictor itself.

    Args:
        isvc: The current InferenceService object.
        storage_uri: The canary model's URI when a canary starts; ``None`` keeps the current one.
        traffic_percent: New ``canaryTrafficPercent``; ``None`` removes it (promotion).

    Raises:
        ValueError: The traffic is not 0..100, or the predictor has neither a model block nor a
            ``kserve-container`` to point at ``storage_uri``.
    """
    obj = json.loads(json.dumps(isvc))
    predictor = obj.setdefault("spec", {}).setdefault("predictor", {})
    if storage_uri is not None:
        model = predictor.get("model")
        if isinstance(model, dict):
            model["storageUri"] = storage_uri
        elif predictor.get("containers"):
            env = _kserve_container(predictor).setdefault("env", [])
            entry = {"name": STORAGE_URI_ENV, "value": storage_uri}
            for i, item in enumerate(env):
                if item.get("name") == STORAGE_URI_ENV:
                    env[i] = entry  # a valueFrom is replaced by the literal value
                    break
            else:
                env.append(entry)
        else:
            raise ValueError(
                "spec.predictor has neither a model block nor containers to set a storage URI on"
            )
    if traffic_percent is None:
        predictor.pop("canaryTrafficPercent", None)
    else:
        if not 0 <= traffic_percent <= 100:
            raise ValueError(f"canaryTrafficPercent must be 0..100, got {traffic_percent}")
        predictor["canaryTrafficPercent"] = traffic_percent
    return obj


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    Removed keys become ``null`` (which is how a merge patch deletes ``canaryTrafficPercent``);
    a changed list is sent whole, as RFC 7386 replaces lists (custom resources accept no
    strategic merge patch).
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in sorted(old.keys() - new.keys())}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


@dataclass(frozen=True)
class ServiceState:
    """Where an InferenceService's rollout stands.

    Attributes:
        version: Registry version of the predictor's storage URI (``None``: not a registry URI).
        traffic_percent: ``canaryTrafficPercent`` (``None``: absent, all traffic on the latest).
        production_version: The registry's ``production`` alias.
    """

    version: int | None
    traffic_percent: int | None
    production_version: int | None

    @property
    def canary_running(self) -> bool:
        """A canary takes traffic: some share on a version that is not production."""
        return (
            self.version is not None
            and self.traffic_percent is not None
            and self.traffic_percent > 0
            and self.version != self.production_version
        )

    @property
    def state(self) -> str | None:
        """One of ``telemetry.ROLLOUT_STATES`` for :attr:`version`, ``None`` when none fits."""
        if self.version is None:
            return None
        if self.canary_running:
            return "canary"
        if self.traffic_percent == 0 and self.version != self.production_version:
            return "rolled_back"
        if self.traffic_percent is None and self.version == self.production_version:
            return "promoted"
        return None


def service_state(isvc: dict[str, Any], production_version: int | None) -> ServiceState:
    """Read the canary version and traffic off an InferenceService."""
    from mlops.registry import version_from_uri

    uri = predictor_storage_uri(isvc)
    traffic = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    return ServiceState(
        None if uri is None else version_from_uri(uri),
        None if traffic is None else int(traffic),
        production_version,
    )


ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


@dataclass
class StepResult:
    """One controller step: the analysis, the traffic it set and the alias it moved."""

    analysis: RolloutAnalysis
    traffic_percent: int | None
    production_version: int | None


def record_decision(
    registry: Any, model_name: str, canary_version: int, analysis: RolloutAnalysis
) -> int | None:
    """Write the decision into the canary's lineage; move ``production`` only on promote.

    Returns:
        The production version after the step.
    """
    kind = {"promote": "promoted", "rollback": "rolled_back", "hold": "canary_held"}
    registry.record_event(model_name, canary_version, kind[analysis.decision], analysis.to_dict())
    if analysis.decision == "promote":
        registry.set_alias(
            model_name, "production", canary_version, reason="; ".join(analysis.reasons)
        )
    elif (
        analysis.decision == "rollback"
        and registry.aliases(model_name).get("candidate") == canary_version
    ):
        # The candidate alias must not keep pointing at a rolled-back version.
        registry.remove_alias(model_name, "candidate")
    current = registry.find(model_name, "production")
    return None if current is None else current.version


class ClusterRollout:
    """Drives an InferenceService's canary through the Kubernetes API.

    Each :meth:`step` reads the object, analyses the canary from Prometheus and writes the next
    ``canaryTrafficPercent`` (10 -> 50 -> removed on promotion, 0 on roll-back). Objects are
    checked against the KServe SDK's types before they are written.
    """

    def __init__(
        self,
        api: Any,
        prom: PrometheusClient,
        registry: Any,
        name: str,
        namespace: str,
        model_name: str,
        thresholds: RolloutThresholds,
    ) -> None:
        self.api, self.prom, self.registry = api, prom, registry
        self.name, self.namespace, self.model_name = name, namespace, model_name
        self.thresholds = thresholds

    @classmethod
    def from_kubeconfig(cls, **kwargs: Any) -> ClusterRollout:
        """Build with in-cluster config, or the current kubeconfig context outside a cluster."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(api=client.CustomObjectsApi(), **kwargs)

    def get(self) -> dict[str, Any]:
        """The InferenceService as the API server has it (verb ``get``)."""
        return dict(self.api.get_namespaced_custom_object(
            ISVC_GROUP, ISVC_VERSION, self.namespace, ISVC_PLURAL, self.name))  # fmt: skip

    def _patch(self, current: dict[str, Any], desired: dict[str, Any]) -> None:
        """Send what turns ``current`` into ``desired`` as a JSON merge patch (verb ``patch``).

        The rollout Role grants ``patch``, not ``update``: no PUT. The kubernetes client sends a
        dict body of ``patch_namespaced_custom_object`` as ``application/merge-patch+json``
        (custom resources take no strategic merge patch); a removed field goes as ``null``. The
        object read carries its ``resourceVersion``, sent back as a precondition: the API server
        answers 409 if the InferenceService changed since it was read (e.g. the deploy step
        started another canary), and the next pass reads it again.
        """
        from mlops.k8s_validate import validate_inference_service

        # `status` belongs to KServe's controller and a patch of the object cannot change it;
        # what is checked is everything this patch writes.
        current = {k: v for k, v in current.items() if k != "status"}
        desired = {k: v for k, v in desired.items() if k != "status"}
        validate_inference_service(desired)
        body = merge_patch(current, desired)
        if not body:
            return
        version = current.get("metadata", {}).get("resourceVersion")
        if version:
            body.setdefault("metadata", {})["resourceVersion"] = version
        self.api.patch_namespaced_custom_object(
            ISVC_GROUP, ISVC_VERSION, self.namespace, ISVC_PLURAL, self.name, body)  # fmt: skip

    def state(self, obj: dict[str, Any] | None = None) -> ServiceState:
        """Where the rollout stands: the object's canary against the registry's production."""
        production = self.registry.find(self.model_name, "production")
        return service_state(
            self.get() if obj is None else obj, None if production is None else production.version
        )

    def start(self, canary_version: int, storage_uri: str) -> dict[str, Any]:
        """Point the predictor at a registry version with the first traffic step.

        Args:
            canary_version: The registry version to roll out.
            storage_uri: Its model as KServe downloads it, the registry path as the cluster sees
                it, e.g. ``pvc://flight-delay-registry/flight-delay/versions/3/model``; its
                ``versions/<n>/model`` must name ``canary_version``, which is how the controller
                reads the canary's version back.

        Returns:
            The InferenceService as patched.

        Raises:
            ValueError: ``storage_uri`` does not name ``canary_version``.
        """
        from mlops.registry import version_from_uri

        if version_from_uri(storage_uri) != canary_version:
            raise ValueError(
                f"storage URI {storage_uri} does not end in versions/{canary_version}/model"
            )
        self.registry.get(self.model_name, canary_version)  # raises for an unknown version
        current = self.get()
        obj = canary_patch(current, storage_uri, TRAFFIC_STEPS[0])
        self._patch(current, obj)
        self.registry.record_event(
            self.model_name,
            canary_version,
            "canary_started",
            {
                "traffic_percent": TRAFFIC_STEPS[0],
                "storage_uri": storage_uri,
                "inference_service": f"{self.namespace}/{self.name}",
            },
        )
        return obj

    def step(
        self, canary_version: int, stable_version: int, obj: dict[str, Any] | None = None
    ) -> StepResult | None:
        """Analyse and move traffic one step.

        Does nothing (returns ``None``, sends nothing) unless the InferenceService runs a canary
        of ``canary_version``: ``canaryTrafficPercent`` above 0 on a version other than
        production. A stray step therefore never starts, restarts or re-promotes a canary.

        Args:
            canary_version: The version the canary serves.
            stable_version: The version it is compared with.
            obj: The InferenceService as just read (its ``resourceVersion`` guards the patch);
                read now when not given.
        """
        obj = self.get() if obj is None else obj
        state = self.state(obj)
        if not state.canary_running or state.version != canary_version:
            return None
        current = state.traffic_percent
        analysis = analyze(
            self.prom,
            selector(self.model_name, str(canary_version)),
            selector(self.model_name, str(stable_version)),
            self.thresholds,
        )
        traffic = next_traffic_percent(current, analysis.decision)
        if traffic != current:
            self._patch(obj, canary_patch(obj, None, traffic))
        if analysis.decision == "promote" and traffic is not None:
            # A passing step below 100 % raises traffic; production moves only at the end.
            self.registry.record_event(
                self.model_name, canary_version, "canary_traffic_raised",
                {"traffic_percent": traffic, **analysis.to_dict()},
            )  # fmt: skip
            production = state.production_version
        elif analysis.decision == "hold" and self._last_event(canary_version) == "canary_held":
            # The controller steps every interval: a hold is recorded once, not once a minute.
            production = state.production_version
        else:
            production = record_decision(self.registry, self.model_name, canary_version, analysis)
        return StepResult(analysis, traffic, production)

    def _last_event(self, version: int) -> str | None:
        events = self.registry.lineage(self.model_name, version).events
        return str(events[-1]["kind"]) if events else None
