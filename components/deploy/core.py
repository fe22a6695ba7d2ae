"""Deploy core: roll a newly pushed version out, moving ``production`` only on promotion.

- nothing pushed (not blessed, or invalid data): nothing to deploy, and it says why;
- no production version yet: the first model becomes production (there is nothing to compare
  it with);
- ``local``: shadow analysis, production and candidate served side by side on replayed
  held-out flights (:mod:`mlops.shadow`); skipped, with how to install it, when no
  ``prometheus`` binary is on PATH (the candidate stays ``candidate``);
- ``cluster``: the InferenceService's canary starts at 10 % of traffic (:mod:`mlops.rollout`);
  the rollout controller then steps it to 50 % and promotes, or rolls it back.

Missing evidence (a series absent, too few requests, Prometheus failing) is a hold, never a
promotion. The timeouts and retries of the Prometheus and Kubernetes API calls, and what happens
when they still fail, are in :mod:`mlops.rollout` and this component's README.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

from mlops.registry import PRODUCTION, ModelRegistry, serving_uri

Mode = Literal["local", "cluster"]
MODES: tuple[Mode, ...] = ("local", "cluster")
# The shadow analysis' decisions, as deploy reports them.
_ACTIONS = {"promote": "promoted", "rollback": "rolled_back", "hold": "held"}


@dataclass
class DeployResult:
    """What deploy did."""

    action: str
    version: int | None
    production_version: int | None
    reasons: list[str]

    def to_json(self) -> str:
        """JSON form for the artifact and the logs."""
        return json.dumps(asdict(self), indent=2)

    def to_metadata(self) -> dict[str, Any]:
        """The decision artifact's metadata: scalars only (``0`` for none, reasons joined)."""
        return {
            "action": self.action,
            "version": self.version or 0,
            "production_version": self.production_version or 0,
            "reasons": "\n".join(self.reasons),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> DeployResult | None:
        """Read :meth:`to_metadata`'s output back; ``None`` when it holds no decision."""
        if "action" not in meta:
            return None
        reasons = str(meta.get("reasons") or "")
        return cls(
            action=str(meta["action"]),
            version=int(meta.get("version") or 0) or None,
            production_version=int(meta.get("production_version") or 0) or None,
            reasons=reasons.split("\n") if reasons else [],
        )


def check_mode(mode: str) -> Mode:
    """``mode`` as a :data:`Mode`.

    Raises:
        ValueError: It is neither ``local`` nor ``cluster``.
    """
    if mode not in MODES:
        raise ValueError(f"deploy_mode must be 'local' or 'cluster', got {mode!r}")
    return cast(Mode, mode)


def deploy(
    pushed: dict[str, Any],
    registry_uri: str,
    model_name: str,
    mode: Mode,
    feature_repo: Path | None = None,
    replay_path: Path | None = None,
    inference_service: str = "flight-delay",
    namespace: str = "flight-delay",
    prometheus_url: str = "",
    replay_requests: int | None = None,
    serving_root: str = "",
    request_log: str = "",
) -> DeployResult:
    """Deploy the version push registered, as ``mode`` says.

    Args:
        pushed: The push result (``pushed``, ``version``, ``reason``).
        registry_uri: The model registry.
        model_name: Registered model name.
        mode: ``local`` (shadow analysis) or ``cluster`` (KServe canary).
        feature_repo: Feast repository for the local server's online features.
        replay_path: Held-out flights (parquet) replayed in shadow mode.
        inference_service: Name of the InferenceService (cluster).
        namespace: Its namespace (cluster).
        prometheus_url: Prometheus the cluster controller will query.
        replay_requests: Flights replayed to each version in shadow mode (default
            ``mlops.shadow.DEFAULT_REPLAY_REQUESTS``).
        serving_root: The registry root as KServe reads it (e.g. ``pvc://<claim>`` of the PVC
            the steps mount); '' when KServe reads ``registry_uri`` itself (object storage).
        request_log: Shadow mode: where the server appends the replayed requests ('' keeps them
            in a temporary directory).
    """
    registry = ModelRegistry(registry_uri)
    current = registry.find(model_name, PRODUCTION)
    current_version = None if current is None else current.version
    if not pushed.get("pushed"):
        return DeployResult(
            "none",
            None,
            current_version,
            [f"nothing to deploy: {pushed.get('reason', 'not pushed')}"],
        )
    version = int(pushed["version"])
    if current is None:
        registry.set_alias(
            model_name, PRODUCTION, version, reason="first model: nothing to compare it with"
        )
        return DeployResult(
            "promoted", version, version, ["first model: promoted without a canary"]
        )
    if mode == "local":
        if feature_repo is None or replay_path is None:
            raise ValueError("local deploy needs feature_repo and replay_path")
        return _shadow(registry, model_name, version, feature_repo, replay_path, replay_requests,
                       request_log)  # fmt: skip
    return _canary(
        registry, model_name, version, current_version, inference_service, namespace,
        prometheus_url, serving_root,
    )  # fmt: skip


def _shadow(
    registry: ModelRegistry,
    model_name: str,
    version: int,
    feature_repo: Path,
    replay_path: Path,
    replay_requests: int | None,
    request_log: str = "",
) -> DeployResult:
    """Local: serve production and the candidate side by side on replayed held-out flights.

    Without a ``prometheus`` binary there is no evidence to analyse: the analysis is skipped
    with a reason that says how to install it, the candidate keeps its alias and ``production``
    does not move (missing evidence never promotes).
    """
    import pandas as pd

    from mlops.shadow import (
        DEFAULT_REPLAY_REQUESTS,
        PROMETHEUS_MISSING,
        prometheus_available,
        shadow_rollout,
    )

    if not prometheus_available():
        registry.record_event(model_name, version, "shadow_skipped", {"reason": PROMETHEUS_MISSING})
        production = registry.find(model_name, PRODUCTION)
        return DeployResult(
            "skipped",
            version,
            None if production is None else production.version,
            [f"shadow analysis skipped: {PROMETHEUS_MISSING}; version {version} stays candidate"],
        )
    analysis = shadow_rollout(
        registry,
        model_name,
        version,
        feature_repo,
        pd.read_parquet(replay_path),
        requests=DEFAULT_REPLAY_REQUESTS if replay_requests is None else replay_requests,
        request_log=Path(request_log) if request_log else None,
    )
    production = registry.find(model_name, PRODUCTION)
    return DeployResult(
        _ACTIONS[analysis.decision],
        version,
        None if production is None else production.version,
        analysis.reasons,
    )


def _canary(
    registry: ModelRegistry,
    model_name: str,
    version: int,
    current_version: int | None,
    inference_service: str,
    namespace: str,
    prometheus_url: str,
    serving_root: str,
) -> DeployResult:
    """Cluster: start the InferenceService's canary; the rollout controller decides."""
    from mlops.rollout import ClusterRollout, PrometheusClient, RolloutThresholds

    controller = ClusterRollout.from_kubeconfig(
        prom=PrometheusClient(prometheus_url),
        registry=registry,
        name=inference_service,
        namespace=namespace,
        model_name=model_name,
        thresholds=RolloutThresholds(),
    )
    storage_uri = serving_uri(registry.get(model_name, version), serving_root)
    controller.start(version, storage_uri)
    return DeployResult(
        "canary_started",
        version,
        current_version,
        [
            f"canary of version {version} ({storage_uri}) at 10 % of {namespace}/"
            f"{inference_service}; the rollout controller decides"
        ],
    )
