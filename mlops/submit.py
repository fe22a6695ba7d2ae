"""Submit the compiled pipeline to a Kubeflow Pipelines cluster.

Host and credentials resolve as KFP users expect: ``--host`` (or ``KFP_HOST``), a bearer token
(``--token`` or ``KFP_TOKEN``), else ``kfp.Client``'s own discovery (in-cluster config or the
current kubeconfig context, proxied through the Kubernetes API server). Plain ``kfp`` CLI
equivalents are in docs/cluster.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.config import PlatformConfig
from mlops.errors import DataError


@dataclass(frozen=True)
class SubmitPlan:
    """Everything a submission sends, resolved before any call to the API."""

    pipeline_name: str
    version_name: str
    experiment: str
    run_name: str
    package: Path
    arguments: dict[str, Any]
    cron: str | None = None


# Config settings that are also parameters of the training pipeline.
CONFIG_PARAMETERS = ("feature_repo", "eval_fraction", "registry_uri")


def submit_arguments(
    cfg: PlatformConfig,
    first_span: str,
    last_span: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run arguments of a submission: the span window, the config's settings, explicit flags.

    The config's pipeline settings that its file sets are sent, so a run never falls back to a
    pipeline default the config contradicts (above all ``registry_uri``: a registry that is not
    shared storage vanishes with each step's pod). Settings the file leaves out keep the
    pipeline's cluster defaults (the registry PVC at ``/mnt/registry``, the image's Feast repo):
    the config's own defaults are those of a local installation.

    Args:
        cfg: The platform config.
        first_span: First span of the window (the config's, or ``--through-month``'s).
        last_span: Last span of the window.
        overrides: ``--param KEY=VALUE`` flags; they win over the config.

    Raises:
        DataError: The registry is a relative path, which no two pods share.
    """
    arguments: dict[str, Any] = {"first_span": first_span, "last_span": last_span}
    for name in CONFIG_PARAMETERS:
        if name in cfg.model_fields_set:
            value = getattr(cfg, name)
            arguments[name] = str(value) if isinstance(value, Path) else value
    arguments.update(overrides or {})
    registry = str(arguments.get("registry_uri", "/"))
    if "://" not in registry and not registry.startswith("/"):
        raise DataError(
            f"registry_uri {registry!r} is a relative path: each pipeline step would write it "
            "inside its own pod. Set registry_uri in the config to the mounted registry PVC "
            "(/mnt/registry) or an fsspec URI whose driver the component image has."
        )
    return arguments


def version_name_for(package: Path) -> str:
    """A pipeline version name derived from the compiled YAML, so a resubmission reuses it."""
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    return f"v-{digest}"


def make_client(host: str | None, token: str | None, namespace: str | None) -> Any:
    """Create a ``kfp.Client`` from flags; missing values fall back to KFP's own discovery."""
    import kfp

    return kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")


def submit(client: Any, plan: SubmitPlan) -> dict[str, str]:
    """Create or reuse the pipeline, its version and the experiment; start a run or a schedule.

    Returns:
        IDs of what was created or reused.
    """
    pipeline_id = client.get_pipeline_id(plan.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(plan.package), pipeline_name=plan.pipeline_name)
        pipeline_id = pipeline.pipeline_id
    versions = client.list_pipeline_versions(pipeline_id, page_size=100)
    version_id = next(
        (
            v.pipeline_version_id
            for v in (versions.pipeline_versions or [])
            if v.display_name == plan.version_name
        ),
        None,
    )
    if version_id is None:
        version = client.upload_pipeline_version(
            str(plan.package), pipeline_version_name=plan.version_name, pipeline_id=pipeline_id
        )
        version_id = version.pipeline_version_id
    experiment = client.create_experiment(plan.experiment)  # returns the existing one if any
    ids = {"pipeline_id": pipeline_id, "version_id": version_id,
           "experiment_id": experiment.experiment_id}  # fmt: skip
    if plan.cron:
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=plan.run_name,
            cron_expression=plan.cron,
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=plan.arguments,
            max_concurrency=1,
            no_catchup=True,
        )
        ids["recurring_run_id"] = job.recurring_run_id
    else:
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=plan.run_name,
            pipeline_id=pipeline_id,
            version_id=version_id,
            params=plan.arguments,
        )
        ids["run_id"] = run.run_id
    return ids
