"""The chart's serving pods, started as containers the way KServe and Kubernetes would start them.

Input is what ``helm template`` renders, never a hand-written copy: the InferenceService's
predictor and transformer components and the Feast feature server's Deployment (+ ConfigMap).
Each becomes a Pod for ``podman kube play``, with what the controllers add in a cluster:

- KServe, predictor with a ``pvc://<claim>/<path>`` STORAGE_URI: the version's directory is
  mounted read-only at ``/mnt/models`` (KServe's direct PVC mount; the storage initializer copies
  the same directory for object storage).
- KServe, custom transformer: ``--predictor_host <host>`` and ``--http_port`` appended to the
  container's args, unless the args name them (``transformer_custom.go``, ``GetContainer``).
- Kubernetes: a PVC is a podman named volume bound to a host directory; a Service's DNS name
  is a line of a hosts file bind-mounted at /etc/hosts. Pods share the host network (podman's
  bridge is not used here), so each server gets its own port: appended ``--http_port``, probes
  rewritten to it.
"""

from __future__ import annotations

import copy
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mlops.rollout import KSERVE_CONTAINER, STORAGE_URI_ENV

FEAST_CLAIM = "flight-delay-feast-online"
REQUESTS_CLAIM = "flight-delay-requests"
# A busy departure minute inside the trained month: the online store is materialized up to it,
# so the pods and the embedded server see the same feature values.
SERVE_AT = datetime(2013, 1, 25, 16, tzinfo=UTC)
MODELS_MOUNT = "/mnt/models"


@dataclass
class PodSet:
    """Pods and ConfigMaps ready for ``podman kube play``, with the port each server got."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    claims: set[str] = field(default_factory=set)


def render(values: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """The chart as ``helm template`` renders it with these values (the real helm)."""
    from tools.k8s_validate import CHART, HELM, NAMESPACE, RELEASE, ROOT, helm

    subprocess.run(["bash", str(ROOT / "tools" / "install-helm.sh")], check=True)
    path = work / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(path)]
    proc = helm(*args, helm_bin=HELM)
    assert proc.returncode == 0, proc.stderr
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o and o.get("kind") == kind]


def pvc_path(storage_uri: str) -> tuple[str, str]:
    """``pvc://claim/a/b`` -> ``("claim", "a/b")``."""
    m = re.fullmatch(r"pvc://([^/]+)/(.+?)/?", storage_uri)
    if not m:
        raise ValueError(f"not a pvc:// storage URI: {storage_uri!r}")
    return m.group(1), m.group(2)


def _set_port(container: dict[str, Any], port: int, flag: str) -> None:
    """Listen on ``port``: the flag appended, the probes and the declared port rewritten."""
    container["args"] = [a for a in container.get("args", []) if not a.startswith(flag)]
    container["args"] += [flag, str(port)] if flag == "--http_port" else [f"{flag}={port}"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container and "httpGet" in container[probe]:
            container[probe]["httpGet"]["port"] = port


def _pod(name: str, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["hostNetwork"] = True
    for container in spec["containers"]:
        # Host networking takes no port mappings; the ports list only documents them.
        container.pop("ports", None)
    spec["restartPolicy"] = "Always"
    # No API server: nothing to authenticate to, and podman has no service accounts.
    spec.pop("serviceAccountName", None)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def _component_spec(component: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of an InferenceService component (its PodSpec fields, no KServe extras)."""
    extension = {
        "minReplicas",
        "maxReplicas",
        "scaleMetric",
        "scaleTarget",
        "canaryTrafficPercent",
        "containerConcurrency",
        "timeout",
        "batcher",
        "logger",
    }
    return copy.deepcopy({k: v for k, v in component.items() if k not in extension})


def predictor_pod(
    isvc: dict[str, Any], port: int, claims: dict[str, Path], revision: str = "00001"
) -> dict[str, Any]:
    """A predictor revision's pod: the version named by STORAGE_URI at /mnt/models, read-only."""
    pred = _component_spec(isvc["spec"]["predictor"])
    container = next(c for c in pred["containers"] if c["name"] == KSERVE_CONTAINER)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    claim, sub = pvc_path(env[STORAGE_URI_ENV])
    pred.setdefault("volumes", []).append(
        {
            "name": "kserve-pvc-source",
            "hostPath": {"path": str(claims[claim] / sub), "type": "Directory"},
        }
    )
    container.setdefault("volumeMounts", []).append(
        {"name": "kserve-pvc-source", "mountPath": MODELS_MOUNT, "readOnly": True}
    )
    _set_port(container, port, "--http_port")
    name = isvc["metadata"]["name"]
    return _pod(f"{name}-predictor-{revision}", {"component": "predictor"}, pred)


def cluster_dns(objects: list[dict[str, Any]], hosts: Path) -> dict[str, Any]:
    """A hosts file resolving every rendered Service's cluster DNS name to loopback.

    Returns the volume to add to a pod; mount it with :func:`mount_dns`. (Podman ignores
    ``hostAliases`` and ``--add-host`` under host networking, so the file is bind-mounted.)
    """
    names = sorted(
        f"{svc['metadata']['name']}.{svc['metadata'].get('namespace', 'default')}.svc.cluster.local"
        for svc in by_kind(objects, "Service")
    )
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names))
    hosts.chmod(0o644)
    return {"name": "cluster-dns", "hostPath": {"path": str(hosts), "type": "File"}}


def mount_dns(spec: dict[str, Any], volume: dict[str, Any]) -> None:
    spec.setdefault("volumes", []).append(volume)
    for container in spec["containers"]:
        container.setdefault("volumeMounts", []).append(
            {"name": volume["name"], "mountPath": "/etc/hosts", "readOnly": True}
        )


def build(
    objects: list[dict[str, Any]],
    ports: dict[str, int],
    claims: dict[str, Path],
    work: Path,
    predictor_host: str | None = None,
) -> PodSet:
    """Pods from the rendered chart.

    Args:
        objects: ``helm template`` output, parsed.
        ports: Port per server: ``predictor``, ``transformer`` (the feature server's is a value).
        claims: Host directory per PVC claim name.
        work: Where the harness writes its files (the hosts file of the cluster DNS names).
        predictor_host: What the transformer calls (KServe: the predictor's Service); default
            the predictor pod itself.
    """
    out = PodSet(ports=dict(ports))
    isvc = by_kind(objects, "InferenceService")[0]
    dns = cluster_dns(objects, work / "hosts")
    out.pods.append(predictor_pod(isvc, ports["predictor"], claims))

    # Transformer: KServe appends the predictor's host.
    trans = _component_spec(isvc["spec"]["transformer"])
    container = trans["containers"][0]
    if not any(a.startswith("--predictor_host") for a in container.get("args", [])):
        host = predictor_host or f"127.0.0.1:{ports['predictor']}"
        container["args"] = [*container.get("args", []), "--predictor_host", host]
    _set_port(container, ports["transformer"], "--http_port")
    mount_dns(trans, dns)
    name = isvc["metadata"]["name"]
    out.pods.append(_pod(f"{name}-transformer", {"component": "transformer"}, trans))

    # The feature server: its Deployment's pod template, one replica.
    out.pods.append(deployment_pod(objects, "feature-server", dns))
    out.configmaps = by_kind(objects, "ConfigMap")
    out.claims = claims_of(out.pods)
    return out


def deployment_pod(
    objects: list[dict[str, Any]], component: str, dns: dict[str, Any]
) -> dict[str, Any]:
    """One replica of the rendered Deployment of ``app.kubernetes.io/component: component``."""
    (dep,) = [
        d
        for d in by_kind(objects, "Deployment")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    spec = copy.deepcopy(dep["spec"]["template"]["spec"])
    mount_dns(spec, dns)
    return _pod(dep["metadata"]["name"], {"component": component}, spec)


def with_api_credentials(pod: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """What the service-account admission gives a pod that mounts its token: API access.

    There is no API server to mint a token, so the kubeconfig of the fake API server is
    mounted and named by KUBECONFIG (the client falls back to it outside a cluster).
    """
    spec = pod["spec"]
    spec.setdefault("volumes", []).append(
        {"name": "kube-api", "hostPath": {"path": str(kubeconfig), "type": "File"}}
    )
    for container in spec["containers"]:
        container.setdefault("volumeMounts", []).append(
            {"name": "kube-api", "mountPath": "/etc/kube-api/config", "readOnly": True}
        )
        container.setdefault("env", []).append(
            {"name": "KUBECONFIG", "value": "/etc/kube-api/config"}
        )
    return pod


def claims_of(pods: list[dict[str, Any]]) -> set[str]:
    """The PVC claim names the pods mount."""
    return {
        vol["persistentVolumeClaim"]["claimName"]
        for pod in pods
        for vol in pod["spec"].get("volumes", [])
        if "persistentVolumeClaim" in vol
    }


def play(pods: PodSet, claims: dict[str, Path], work: Path, name: str = "pods") -> Path:
    """Create the PVCs' named volumes and start the pods; returns the played YAML file."""
    for claim in sorted(pods.claims):
        inspect = subprocess.run(["podman", "volume", "inspect", "--format",
                                  "{{.Options.device}}", claim], capture_output=True, text=True,
                                 check=False)  # fmt: skip
        if inspect.returncode == 0 and inspect.stdout.strip() == str(claims[claim]):
            continue  # already bound here (pods added to a running set)
        subprocess.run(["podman", "volume", "rm", "-f", claim], capture_output=True, check=False)
        subprocess.run(
            [
                "podman",
                "volume",
                "create",
                "--opt",
                "type=none",
                "--opt",
                f"device={claims[claim]}",
                "--opt",
                "o=bind",
                claim,
            ],
            check=True,
            capture_output=True,
        )
    kube = work / f"{name}.yaml"
    kube.write_text(yaml.safe_dump_all(pods.pods, sort_keys=False))
    cms = work / f"{name}-configmaps.yaml"
    cms.write_text(yaml.safe_dump_all(pods.configmaps, sort_keys=False))
    args = ["podman", "kube", "play", str(kube)]
    if pods.configmaps:
        args[3:3] = ["--configmap", str(cms)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        down(kube, set())
        raise RuntimeError(f"podman kube play failed: {proc.stderr.strip()}\n{proc.stdout}")
    return kube


def down(kube: Path, claims: set[str]) -> None:
    subprocess.run(["podman", "kube", "down", str(kube)], capture_output=True, check=False)
    for claim in sorted(claims):
        subprocess.run(["podman", "volume", "rm", "-f", claim], capture_output=True, check=False)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (a readiness check)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def logs(pods: PodSet) -> str:
    """Every container's log, for a failure message."""
    out = []
    for pod in pods.pods:
        for c in pod["spec"]["containers"]:
            ctr = f"{pod['metadata']['name']}-{c['name']}"
            proc = subprocess.run(
                ["podman", "logs", "--tail", "30", ctr], capture_output=True, text=True, check=False
            )
            out.append(f"--- {ctr}\n{proc.stdout}{proc.stderr}")
    return "\n".join(out)
