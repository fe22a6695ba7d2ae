"""Rollout analysis: compare a canary with the stable version from Prometheus and decide.

The same analysis drives both modes:

- **cluster**: the InferenceService's ``canaryTrafficPercent`` moves in steps (10 -> 50 -> 100);
  promotion removes the field, roll-back sets it to 0. The objects written are checked against
  the KServe SDK's types before they are sent.
- **local (shadow)**: both versions are served side by side and receive the same replayed
  traffic; the analysis reads the same series and the ``production`` alias moves only on promote.

Every decision is recorded in the registry's lineage of the canary version.

Missing evidence never promotes. A version without a request or p99 latency series, with fewer
than ``min_requests`` requests, a gated slice (see :class:`RolloutThresholds`) absent or under
``min_slice_requests`` for one version, or a Prometheus that cannot answer, is a **hold** whose
reason names the version, the slice and the metric. A cluster canary held longer than
``max_hold_seconds`` is rolled back.

Failure modes of the outbound calls:

- Prometheus (:class:`PrometheusClient`, ``GET /api/v1/query``): each try has a socket timeout;
  a refused connection, a timeout, a 5xx/429 answer or a body that is not a Prometheus vector is
  tried again up to ``attempts`` times with exponential backoff, then raises
  :class:`PrometheusError`. A 4xx (a bad query) is not retried. :func:`analyze` turns the error
  into a hold, so the decision waits for Prometheus; the hold time limit still applies.
- Kubernetes API (:class:`ClusterRollout`): every call has a ``(connect, read)`` timeout. The
  read (``get``) is retried on a timeout, a connection error, 429 or 5xx, with backoff; a
  ``patch`` is never resent in the same pass. When a patch's answer is lost (timeout, 5xx) the
  object is read again: if it already shows the traffic and storage URI sent, the step goes on;
  otherwise :class:`KubeUnconfirmedWrite` is raised and the next pass starts from a fresh read
  (the patch carries the ``resourceVersion`` read, so a late duplicate is refused with 409).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mlops import telemetry as T
from mlops.retrying import RetryError, retry_call

log = logging.getLogger("mlops.rollout")

Decision = Literal["promote", "hold", "rollback"]
TRAFFIC_STEPS: tuple[int, ...] = (10, 50, 100)
_R = TypeVar("_R")


class RolloutThresholds(BaseModel):
    """When a canary is rolled back, held, or promoted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: str = Field(
        "5m", pattern=r"^(\d+(ms|[smhdwy]))+$", description="PromQL range analysed."
    )
    min_requests: int = Field(200, ge=1, description="Requests each version needs in the window.")
    min_slice_requests: int = Field(
        20, ge=1, description="Predictions each version needs in every gated slice."
    )
    # A slice is gated (must be seen by both versions) when it carries at least this share of
    # its slice key's predictions in either version; rarer slices are compared only when both
    # versions have min_slice_requests, so a rare carrier cannot hold a rollout forever.
    min_slice_share: float = Field(
        0.05, gt=0.0, le=1.0, description="Share of a slice key's predictions that gates a slice."
    )
    max_hold_seconds: float = Field(
        3600.0, gt=0.0, description="A cluster canary held longer than this is rolled back."
    )
    max_error_rate: float = Field(0.02, ge=0.0)
    max_error_rate_increase: float = Field(0.01, ge=0.0)
    max_p99_ratio: float = Field(1.5, gt=0.0)
    max_p99_seconds: float = Field(0.2, gt=0.0)
    # A retrained model legitimately moves its scores (new months, new base rates): these bound
    # a broken slice (a wrong feature, a bad vocabulary), not an ordinary update. Measured here:
    # the Feb-Mar model against the Jan-Feb one on replayed March flights moved a slice's mean
    # score by up to 0.22 and its positive rate by up to 0.26.
    max_slice_positive_rate_shift: float = Field(0.35, ge=0.0)
    max_slice_mean_score_shift: float = Field(0.35, ge=0.0)


@dataclass
class VersionStats:
    """What Prometheus says about one served version over the window.

    ``requests`` and ``p99_seconds`` are NaN when Prometheus has no series for them.
    """

    version: str
    requests: float
    error_rate: float
    p99_seconds: float
    slice_positive_rate: dict[str, float] = field(default_factory=dict)
    slice_mean_score: dict[str, float] = field(default_factory=dict)
    slice_requests: dict[str, float] = field(default_factory=dict)

    @classmethod
    def unknown(cls, version: str) -> VersionStats:
        """No evidence at all (Prometheus could not be read)."""
        return cls(version, math.nan, math.nan, math.nan)


@dataclass
class RolloutAnalysis:
    """A decision with the evidence behind it."""

    decision: Decision
    reasons: list[str]
    canary: VersionStats
    stable: VersionStats
    thresholds: RolloutThresholds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for lineage events and logs (NaN, which JSON lacks, as ``None``)."""
        return _finite({
            "decision": self.decision,
            "reasons": self.reasons,
            "canary": asdict(self.canary),
            "stable": asdict(self.stable),
            "thresholds": self.thresholds.model_dump(),
        })  # fmt: skip


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query (after the retries, where retrying helps)."""


class _Retryable(Exception):
    """A failure a later try may not see (connection, timeout, 5xx, a garbled body)."""


class PrometheusClient:
    """Minimal client of the Prometheus HTTP API (instant queries).

    Args:
        url: Base URL of Prometheus.
        timeout: Seconds each try may wait on the socket (connect, and each read).
        attempts: Tries of one query, the first included.
        backoff: Seconds before the second try; doubled before each further one.
    """

    def __init__(
        self, url: str, timeout: float = 5.0, attempts: int = 3, backoff: float = 0.5
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; return the result vector.

        Raises:
            PrometheusError: No valid answer after the tries, or Prometheus refused the query.
        """
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            return retry_call(
                lambda: self._query_once(url, promql),
                f"Prometheus at {self.url}",
                attempts=self.attempts,
                backoff_s=self.backoff,
                retryable=lambda err: isinstance(err, _Retryable),
            )
        except RetryError as err:
            raise PrometheusError(
                f"Prometheus at {self.url} failed {self.attempts} tries ({err.__cause__}): {promql}"
            ) from err

    def _query_once(self, url: str, promql: str) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as err:
            if err.code >= 500 or err.code == 429:
                raise _Retryable(f"HTTP {err.code}") from err
            # 400/422: Prometheus refused the query itself; the same query fails again.
            raise PrometheusError(
                f"Prometheus refused the query (HTTP {err.code}: {_error_of(err.read())}): {promql}"
            ) from err
        except (OSError, http.client.HTTPException) as err:
            # URLError, refused connections and socket timeouts are OSErrors.
            reason = getattr(err, "reason", err)
            raise _Retryable(f"{type(err).__name__}: {reason}") from err
        try:
            body = json.loads(raw)
            if body.get("status") != "success":
                raise _Retryable(f"status {body.get('status')!s}: {body.get('error', '')}")
            data = body["data"]
            if data["resultType"] not in ("vector", "scalar"):
                raise _Retryable(f"expected a vector, got {data['resultType']}")
            result = (
                data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]
            )
            if not isinstance(result, list):
                raise _Retryable("data.result is not a list")
            for series in result:
                float(series["value"][1])  # every value must parse, or none is used
                if not isinstance(series.get("metric", {}), dict):
                    raise _Retryable("a series' metric is not an object")
            return list(result)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise _Retryable(f"not a Prometheus answer ({type(err).__name__})") from err

    def scalar(self, promql: str) -> float:
        """A query expected to return at most one series; NaN when it returns none."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else math.nan

    def by_slice(self, promql: str) -> dict[str, float]:
        """A query returning one series per slice, keyed ``slice_key=slice_value``."""
        out = {}
        for series in self.query(promql):
            labels = series.get("metric", {})
            out[f"{labels.get('slice_key')}={labels.get('slice_value')}"] = float(
                series["value"][1]
            )
        return out


def _error_of(raw: bytes) -> str:
    """The ``error`` of a Prometheus error body, else a short excerpt of it."""
    try:
        return str(json.loads(raw).get("error", ""))[:200]
    except (ValueError, AttributeError):
        return raw[:200].decode(errors="replace")


def selector(model: str, version: str) -> str:
    """The PromQL label selector of one served version."""
    return f'model="{model}",version="{version}"'


def _version_of(sel: str) -> str:
    """The ``version`` label value of a :func:`selector`."""
    return dict(kv.split("=", 1) for kv in sel.split(",")).get("version", '""').strip('"')


def version_stats(prom: PrometheusClient, sel: str, window: str) -> VersionStats:
    """Collect one version's request, error, latency and per-slice prediction figures.

    Args:
        prom: The Prometheus to query.
        sel: Label selector of the version, see :func:`selector`.
        window: PromQL range, e.g. ``5m``.

    Raises:
        PrometheusError: A query failed.
    """
    version = _version_of(sel)
    requests = prom.scalar(f"sum(increase({T.REQUESTS}{{{sel}}}[{window}]))")
    errors = prom.scalar(f"sum(increase({T.REQUEST_ERRORS}{{{sel}}}[{window}]))")
    p99 = prom.scalar(
        f"histogram_quantile(0.99, sum by (le) (rate({T.STAGE_LATENCY}_bucket"
        f'{{{sel},stage="total"}}[{window}])))'
    )
    total = f"sum by (slice_key, slice_value) (increase({T.PREDICTIONS}{{{sel}}}[{window}]))"
    slice_requests = prom.by_slice(total)
    # A slice with no positive prediction has no positive series: `or total * 0` makes it 0.
    positive = prom.by_slice(
        f"(sum by (slice_key, slice_value) (increase({T.PREDICTIONS}"
        f'{{{sel},outcome="{T.POSITIVE}"}}[{window}])) or {total} * 0) / {total}'
    )
    mean_score = prom.by_slice(
        f"sum by (slice_key, slice_value) (increase({T.PREDICTION_SCORE}_sum{{{sel}}}[{window}]))"
        f" / sum by (slice_key, slice_value) (increase({T.PREDICTION_SCORE}_count{{{sel}}}"
        f"[{window}]))"
    )
    # The serving error counter appears at a version's first error: no series with requests
    # counted means no error, not missing evidence. No request series stays NaN.
    errors = 0.0 if math.isnan(errors) else errors
    return VersionStats(
        version=version,
        requests=requests,
        error_rate=errors / requests if requests and not math.isnan(requests) else 0.0,
        p99_seconds=p99,
        slice_positive_rate={k: v for k, v in positive.items() if not math.isnan(v)},
        slice_mean_score={k: v for k, v in mean_score.items() if not math.isnan(v)},
        slice_requests={k: v for k, v in slice_requests.items() if not math.isnan(v)},
    )


def missing_evidence(
    canary: VersionStats, stable: VersionStats, th: RolloutThresholds
) -> tuple[list[str], list[str]]:
    """What is missing before a promotion, and the slices that can be compared.

    A slice is gated when it carries at least ``min_slice_share`` of its key's predictions in
    either version: then both versions need ``min_slice_requests`` predictions and both slice
    metrics in it. A slice below that share in both is compared only when both versions have
    enough predictions in it.

    Returns:
        The reasons (each naming the version, the slice and the metric), and the slices whose
        metrics are compared.
    """
    gaps: list[str] = []
    for role, vs in (("canary", canary), ("stable", stable)):
        who = f"{role} version {vs.version}"
        if math.isnan(vs.requests):
            gaps.append(f"missing evidence: {who} has no request series ({T.REQUESTS})")
        elif vs.requests < th.min_requests:
            gaps.append(
                f"not enough traffic yet: {who} has {vs.requests:.0f} requests over "
                f"{th.window} (need {th.min_requests})"
            )
        if math.isnan(vs.p99_seconds):
            gaps.append(
                f"missing evidence: {who} has no p99 latency ({T.STAGE_LATENCY} stage=total)"
            )
    keys = sorted(set(canary.slice_requests) | set(stable.slice_requests))
    if not keys:
        gaps.append(
            f"missing evidence: neither version has per-slice predictions ({T.PREDICTIONS})"
        )
    compared: list[str] = []
    for key in keys:
        gated = any(_share(vs.slice_requests, key) >= th.min_slice_share for vs in (canary, stable))
        short = []
        for role, vs in (("canary", canary), ("stable", stable)):
            who = f"{role} version {vs.version}"
            n = vs.slice_requests.get(key)
            if n is None:
                short.append(f"missing evidence: {who} has no predictions in slice {key}")
            elif n < th.min_slice_requests:
                short.append(
                    f"not enough traffic yet: {who} has {n:.0f} predictions in slice {key} "
                    f"(need {th.min_slice_requests})"
                )
            else:
                for metric, values in (("positive rate", vs.slice_positive_rate),
                                       ("mean score", vs.slice_mean_score)):  # fmt: skip
                    if key not in values:
                        short.append(f"missing evidence: {who} has no {metric} in slice {key}")
        if not short:
            compared.append(key)
        elif gated:
            gaps.extend(short)
    return gaps, compared


def _share(counts: dict[str, float], key: str) -> float:
    """A slice's share of its slice key's predictions (0 when the version has none)."""
    slice_key = key.split("=", 1)[0]
    total = sum(v for k, v in counts.items() if k.split("=", 1)[0] == slice_key)
    return counts.get(key, 0.0) / total if total > 0 else 0.0


def decide(canary: VersionStats, stable: VersionStats, th: RolloutThresholds) -> RolloutAnalysis:
    """Compare canary with stable: roll back on any breach, hold on missing evidence.

    A breach seen in the evidence there is rolls back even when other evidence is missing; a
    promotion needs every version-level and gated-slice figure (see :func:`missing_evidence`).
    """
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
    gaps, compared = missing_evidence(canary, stable, th)
    per_slice = (
        ("positive rate", canary.slice_positive_rate, stable.slice_positive_rate,
         th.max_slice_positive_rate_shift),
        ("mean score", canary.slice_mean_score, stable.slice_mean_score,
         th.max_slice_mean_score_shift),
    )  # fmt: skip
    for what, ours, theirs, limit in per_slice:
        for key in compared:
            shift = ours[key] - theirs[key]
            if abs(shift) > limit:
                reasons.append(
                    f"slice {key}: {what} {ours[key]:.3f} vs stable {theirs[key]:.3f} "
                    f"(shift {shift:+.3f}, limit {limit})"
                )
    if reasons:
        decision: Decision = "rollback"
    elif gaps:
        decision = "hold"
        reasons.extend(gaps)
    else:
        decision = "promote"
        reasons.append(
            f"canary within every threshold over {canary.requests:.0f} requests: error rate "
            f"{canary.error_rate:.3%}, p99 {canary.p99_seconds * 1000:.1f} ms, "
            f"{len(compared)} slices compared"
        )
    return RolloutAnalysis(decision, reasons, canary, stable, th)


def analyze(
    prom: PrometheusClient, canary: str, stable: str, th: RolloutThresholds
) -> RolloutAnalysis:
    """Query Prometheus for both versions (label selectors) and decide.

    A Prometheus that cannot answer is a hold naming the failed query, never a promotion.
    """
    try:
        canary_stats = version_stats(prom, canary, th.window)
        stable_stats = version_stats(prom, stable, th.window)
    except PrometheusError as err:
        return RolloutAnalysis(
            "hold",
            [f"no evidence: {err}"],
            VersionStats.unknown(_version_of(canary)),
            VersionStats.unknown(_version_of(stable)),
            th,
        )
    return decide(canary_stats, stable_stats, th)


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
    from mlops.registry import CANDIDATE, PRODUCTION

    kind = {"promote": "promoted", "rollback": "rolled_back", "hold": "canary_held"}
    registry.record_event(model_name, canary_version, kind[analysis.decision], analysis.to_dict())
    if analysis.decision == "promote":
        registry.set_alias(
            model_name, PRODUCTION, canary_version, reason="; ".join(analysis.reasons)
        )
    elif (
        analysis.decision == "rollback"
        and registry.aliases(model_name).get(CANDIDATE) == canary_version
    ):
        # The candidate alias must not keep pointing at a rolled-back version.
        registry.remove_alias(model_name, CANDIDATE)
    current = registry.find(model_name, PRODUCTION)
    return None if current is None else current.version


class KubeUnconfirmedWrite(RuntimeError):
    """A patch's answer was lost and a fresh read does not show it: nothing is assumed written."""


def _kube_transient(err: BaseException) -> bool:
    """Whether a Kubernetes API failure may pass on a later try: timeouts, lost connections,
    429 and 5xx. A 4xx (403 by RBAC, 404, 409 on a stale ``resourceVersion``) will not."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        return err.status == 429 or (err.status or 0) >= 500
    return isinstance(err, urllib3.exceptions.HTTPError | OSError | http.client.HTTPException)


class ClusterRollout:
    """Drives an InferenceService's canary through the Kubernetes API.

    Each :meth:`step` reads the object, analyses the canary from Prometheus and writes the next
    ``canaryTrafficPercent`` (10 -> 50 -> removed on promotion, 0 on roll-back). Objects are
    checked against the KServe SDK's types before they are written. A canary held (missing
    evidence, Prometheus down) for ``thresholds.max_hold_seconds`` is rolled back.

    Args:
        api: ``kubernetes.client.CustomObjectsApi`` (or anything with its two methods).
        prom: The Prometheus the analysis reads.
        registry: The model registry (``mlops.registry.ModelRegistry``).
        name: The InferenceService.
        namespace: Its namespace.
        model_name: Registered model name.
        thresholds: Rollout thresholds.
        request_timeout: Seconds each API call may take to connect, and to read the answer.
        attempts: Tries of a read (``get``), the first included; a patch is sent once.
        backoff: Seconds before the second read; doubled before each further one.
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
        request_timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.api, self.prom, self.registry = api, prom, registry
        self.name, self.namespace, self.model_name = name, namespace, model_name
        self.thresholds = thresholds
        self.request_timeout, self.attempts, self.backoff = request_timeout, attempts, backoff

    @classmethod
    def from_kubeconfig(cls, **kwargs: Any) -> ClusterRollout:
        """Build with in-cluster config, or the current kubeconfig context outside a cluster.

        The client's own urllib3 retries are turned off: :meth:`get` retries with backoff
        itself, and a patch is never resent blindly.
        """
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        configuration.retries = 0
        return cls(api=client.CustomObjectsApi(client.ApiClient(configuration)), **kwargs)

    @property
    def _timeout(self) -> tuple[float, float]:
        # The kubernetes client takes an int or a (connect, read) pair, not a float.
        return (self.request_timeout, self.request_timeout)

    def _read(self, call: Callable[[], _R], what: str) -> _R:
        """An idempotent read, tried ``attempts`` times on transient failures, with backoff."""
        try:
            return retry_call(call, what, attempts=self.attempts, backoff_s=self.backoff,
                              retryable=_kube_transient)  # fmt: skip
        except RetryError as err:
            # Callers handle the API's own errors (e.g. a 404) whatever the tries were.
            raise err.__cause__ from err  # type: ignore[misc]

    def get(self) -> dict[str, Any]:
        """The InferenceService as the API server has it (verb ``get``, retried)."""
        return self._read(
            lambda: dict(self.api.get_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, self.namespace, ISVC_PLURAL, self.name,
                _request_timeout=self._timeout)),
            f"get {self.namespace}/{self.name}",
        )  # fmt: skip

    def _patch(self, current: dict[str, Any], desired: dict[str, Any]) -> None:
        """Send what turns ``current`` into ``desired`` as a JSON merge patch (verb ``patch``).

        The rollout Role grants ``patch``, not ``update``: no PUT. The kubernetes client sends a
        dict body of ``patch_namespaced_custom_object`` as ``application/merge-patch+json``
        (custom resources take no strategic merge patch); a removed field goes as ``null``. The
        object read carries its ``resourceVersion``, sent back as a precondition: the API server
        answers 409 if the InferenceService changed since it was read (e.g. the deploy step
        started another canary), and the next pass reads it again.

        The patch is sent once. When its answer is lost (timeout, connection, 5xx) the object
        is read again: it either shows what was sent (done) or :class:`KubeUnconfirmedWrite`
        is raised, and the next pass starts from a fresh read.
        """
        from mlops.kserve_types import validate_inference_service

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
        try:
            self.api.patch_namespaced_custom_object(
                ISVC_GROUP, ISVC_VERSION, self.namespace, ISVC_PLURAL, self.name, body,
                _request_timeout=self._timeout)  # fmt: skip
        except Exception as err:
            if not _kube_transient(err):
                raise
            now = self.get()
            if _rollout_fields(now) == _rollout_fields(desired):
                log.warning("patch answer lost (%s); a fresh read shows it applied",
                            type(err).__name__)  # fmt: skip
                return
            raise KubeUnconfirmedWrite(
                f"patch of {self.namespace}/{self.name} not confirmed ({type(err).__name__}); "
                "the next pass reads it again"
            ) from err

    def state(self, obj: dict[str, Any] | None = None) -> ServiceState:
        """Where the rollout stands: the object's canary against the registry's production."""
        from mlops.registry import PRODUCTION

        production = self.registry.find(self.model_name, PRODUCTION)
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

        A hold is recorded once (``canary_held`` with ``held_since``); once it has lasted
        ``thresholds.max_hold_seconds`` the canary is rolled back, the reasons saying what
        evidence was still missing.

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
        held_since = self._held_since(canary_version)
        if analysis.decision == "hold" and held_since is not None:
            held = time.time() - held_since
            if held >= self.thresholds.max_hold_seconds:
                analysis.decision = "rollback"
                analysis.reasons.insert(0, (
                    f"held {held:.0f} s, over the limit of {self.thresholds.max_hold_seconds:.0f}"
                    " s, without the evidence to promote"))  # fmt: skip
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
        elif analysis.decision == "hold" and held_since is not None:
            # The controller steps every interval: a hold is recorded once, not once a minute.
            production = state.production_version
        elif analysis.decision == "hold":
            self.registry.record_event(
                self.model_name, canary_version, "canary_held",
                {"held_since": time.time(), **analysis.to_dict()},
            )  # fmt: skip
            production = state.production_version
        else:
            production = record_decision(self.registry, self.model_name, canary_version, analysis)
        return StepResult(analysis, traffic, production)

    def held_seconds(self, canary_version: int) -> float | None:
        """How long the canary has been held, ``None`` when its last event is not a hold."""
        since = self._held_since(canary_version)
        return None if since is None else max(0.0, time.time() - since)

    def _held_since(self, version: int) -> float | None:
        """Unix time the current hold began: the last event, when it is ``canary_held``."""
        from datetime import datetime

        events = self.registry.lineage(self.model_name, version).events
        if not events or events[-1]["kind"] != "canary_held":
            return None
        since = events[-1].get("details", {}).get("held_since")
        if isinstance(since, int | float):
            return float(since)
        return datetime.fromisoformat(str(events[-1]["at"])).timestamp()


def _rollout_fields(obj: dict[str, Any]) -> tuple[str | None, Any]:
    """What a rollout patch sets: the predictor's storage URI and ``canaryTrafficPercent``."""
    return (predictor_storage_uri(obj),
            obj.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent"))  # fmt: skip
