"""Submit the compiled pipeline to a Kubeflow Pipelines cluster.

Host and credentials resolve as KFP users expect: ``--host`` (or ``KFP_HOST``), a bearer token
(``--token`` or ``KFP_TOKEN``), else ``kfp.Client``'s own discovery (in-cluster config or the
current kubeconfig context, proxied through the Kubernetes API server). Plain ``kfp`` CLI
equivalents are in docs/cluster.md.

Timeouts and failure modes: every call to the KFP API has a connect and a read timeout
(``timeout_s``; urllib3's own silent retries are switched off). Calls safe to repeat are retried
with exponential backoff on a timeout, a connection error, 429 or a 5xx: reads, the health check,
and the find-or-create steps (pipeline, version, experiment), which look up what an earlier
attempt may have created before creating again. Starting a run or a recurring run is not
repeatable, so it is retried only when the connection was never made; after a timeout or a 5xx
the submission fails with :class:`SubmitError` saying that the run may have started. Any call
that fails on every attempt raises :class:`SubmitError` naming the call and the host.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.config import PlatformConfig
from mlops.errors import DataError
from mlops.retrying import RetryError, retry_call

# Read timeout of one KFP API call: uploads of a compiled pipeline are the slowest.
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
DEFAULT_ATTEMPTS = 3
TERMINAL_RUN_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})


class SubmitError(RuntimeError):
    """A KFP API call failed (after its retries); the message names the call."""


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
CONFIG_PARAMETERS = (
    "feature_repo", "eval_fraction", "validation_fraction", "registry_uri", "train_workers",
)  # fmt: skip


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


def _is_transient(err: BaseException) -> bool:
    """A timeout, a connection error, 429 or a 5xx: worth another try of an idempotent call."""
    import kfp_server_api
    import urllib3

    if isinstance(err, urllib3.exceptions.HTTPError):
        return True
    if isinstance(err, kfp_server_api.ApiException):
        return err.status in (0, 429) or err.status >= 500
    return False


def _describe(err: BaseException | None) -> str:
    """An error in one line: an API error's status, not its headers and body."""
    import kfp_server_api

    if isinstance(err, kfp_server_api.ApiException):
        return f"HTTP {err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"


def _never_connected(err: BaseException) -> bool:
    """The request was never sent (so even a non-idempotent call may be tried again)."""
    import urllib3

    return isinstance(
        err, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def bound_api_client(api_client: Any, timeout_s: float) -> None:
    """Give every request of a ``kfp_server_api.ApiClient`` a timeout and no hidden retries.

    kfp.Client sends ``_request_timeout=None`` (wait forever) and its urllib3 pool retries on its
    own; both are replaced here, on this client only, so :func:`retry_call` alone decides.
    """
    rest = api_client.rest_client
    if getattr(rest, "mlops_timeout", None) is not None:
        return
    send = rest.request
    timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return send(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request = request
    rest.mlops_timeout = timeout
    rest.pool_manager.connection_pool_kw["retries"] = False
    rest.pool_manager.clear()


def make_client(
    host: str | None,
    token: str | None,
    namespace: str | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Any:
    """Create a ``kfp.Client`` from flags; missing values fall back to KFP's own discovery.

    Every call of the client has a timeout (``timeout_s``), including the health check its
    constructor makes.

    Raises:
        SubmitError: The health check failed on every attempt.
    """
    import kfp

    class BoundedClient(kfp.Client):
        # The constructor's health check is the first call; its API client exists by then.
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            bound_api_client(self._healthz_api.api_client, timeout_s)
            health = self._healthz_api.healthz_service_get_healthz
            return call_api(health, "GET healthz", host, attempts=attempts)

    client = BoundedClient(host=host, existing_token=token, namespace=namespace or "kubeflow")
    bound_api_client(client._healthz_api.api_client, timeout_s)
    return client


def call_api(
    call: Callable[[], Any],
    what: str,
    host: str | None,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = 1.0,
    idempotent: bool = True,
) -> Any:
    """Call the KFP API with retries (idempotent calls) or once (others, unless never sent).

    Raises:
        SubmitError: Every attempt failed, or a non-idempotent call failed after it was sent.
    """
    where = host or "the discovered KFP endpoint"
    retryable = _is_transient if idempotent else _never_connected
    try:
        return retry_call(call, f"{what} on {where}", attempts=attempts, backoff_s=backoff_s,
                          retryable=retryable)  # fmt: skip
    except RetryError as err:
        raise SubmitError(
            f"{what} on {where} failed after {attempts} attempts: {_describe(err.__cause__)}"
        ) from err
    except Exception as err:
        if not idempotent and _is_transient(err):
            raise SubmitError(
                f"{what} on {where} failed ({_describe(err)}) after the request was sent: "
                "it may have taken effect; look in the KFP UI before submitting again"
            ) from err
        raise


def submit(
    client: Any, plan: SubmitPlan, host: str | None = None, attempts: int = DEFAULT_ATTEMPTS
) -> dict[str, str]:
    """Create or reuse the pipeline, its version and the experiment; start a run or a schedule.

    Args:
        client: A ``kfp.Client`` (from :func:`make_client`).
        plan: What to send.
        host: The endpoint, for error messages.
        attempts: Most tries of each idempotent step.

    Returns:
        IDs of what was created or reused.

    Raises:
        SubmitError: A step failed; see the module docstring for which steps are retried.
    """

    def api(call: Callable[[], Any], what: str, idempotent: bool = True) -> Any:
        return call_api(call, what, host, attempts=attempts, idempotent=idempotent)

    def find_or_upload_pipeline() -> str:
        # Looked up again on each attempt: an upload that timed out may have been stored.
        pipeline_id = client.get_pipeline_id(plan.pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(str(plan.package), pipeline_name=plan.pipeline_name)
            pipeline_id = pipeline.pipeline_id
        return str(pipeline_id)

    pipeline_id = api(find_or_upload_pipeline, "find or upload pipeline")

    def find_or_upload_version() -> str:
        versions = client.list_pipeline_versions(pipeline_id, page_size=100)
        for v in versions.pipeline_versions or []:
            if v.display_name == plan.version_name:
                return str(v.pipeline_version_id)
        version = client.upload_pipeline_version(
            str(plan.package), pipeline_version_name=plan.version_name, pipeline_id=pipeline_id
        )
        return str(version.pipeline_version_id)

    version_id = api(find_or_upload_version, "find or upload pipeline version")
    # kfp's create_experiment returns the existing experiment of that name: repeatable.
    experiment = api(lambda: client.create_experiment(plan.experiment), "create experiment")
    ids = {"pipeline_id": pipeline_id, "version_id": version_id,
           "experiment_id": experiment.experiment_id}  # fmt: skip
    if plan.cron:
        job = api(
            lambda: client.create_recurring_run(
                experiment_id=experiment.experiment_id,
                job_name=plan.run_name,
                cron_expression=plan.cron,
                pipeline_id=pipeline_id,
                version_id=version_id,
                params=plan.arguments,
                max_concurrency=1,
                no_catchup=True,
            ),
            "create recurring run",
            idempotent=False,
        )
        ids["recurring_run_id"] = job.recurring_run_id
    else:
        run = api(
            lambda: client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=plan.run_name,
                pipeline_id=pipeline_id,
                version_id=version_id,
                params=plan.arguments,
            ),
            "start run",
            idempotent=False,
        )
        ids["run_id"] = run.run_id
    return ids


def wait_for_run(
    client: Any,
    run_id: str,
    timeout_s: float,
    host: str | None = None,
    poll_s: float = 10.0,
    attempts: int = DEFAULT_ATTEMPTS,
) -> str:
    """Poll a run until it ends and return its final state (``SUCCEEDED``, ``FAILED``, ...).

    Raises:
        SubmitError: The run is still going after ``timeout_s``, or polling failed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        run = call_api(lambda: client.get_run(run_id), f"GET run {run_id}", host, attempts=attempts)
        state = str(run.state or "")
        if state in TERMINAL_RUN_STATES:
            return state
        if time.monotonic() >= deadline:
            raise SubmitError(f"run {run_id} still {state or 'pending'} after {timeout_s:.0f}s")
        time.sleep(poll_s)
