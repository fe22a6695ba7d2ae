"""Push core: register a blessed, validated model and move its aliases; otherwise say why not.

The gate is here rather than in the DAG (as TFX's Pusher does it): ``kfp.local`` cannot run
``dsl.If``, so the same pipeline always runs push and push decides.

A rejected candidate is, by default, not registered at all: the registry then holds only
models that passed, and nothing downstream can pick a rejected one up by number. With
``register_rejected=True`` it is registered for the record (its evaluation and lineage kept,
``blessed`` false) and still no alias moves; ``production`` refuses unblessed versions anyway.

Push is idempotent: the pipeline retries it, and a retry (in KFP the same task rerun with the
same inputs) must find its own earlier registration, not add a duplicate version. The key
(:func:`push_key`) is the run and task identity plus the SavedModel's content hash: a retry
shares all three, a new run has another run id. Alias moves are skipped when the alias already
points at the version, so a retry after a crash between registering and moving the aliases
finishes the moves without repeating recorded ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops.artifacts import SCHEMA_FILE, VERDICT_FILE
from mlops.registry import (
    CANDIDATE,
    PRODUCTION,
    Lineage,
    ModelRegistry,
    code_revision,
    tree_hash,
)

# Overall metrics copied into the lineage summary (the full evaluation is stored beside it).
SUMMARY_METRICS = ("auc", "log_loss", "accuracy", "precision", "recall", "calibration_error",
                   "count", "positive_rate")  # fmt: skip


@dataclass(frozen=True)
class PushResult:
    """What push did.

    Attributes:
        pushed: Whether the model was registered and the aliases moved.
        version: The registered version (also set when a rejected model was registered).
        reason: Why it was or was not pushed, in one line.
        aliases: Aliases that now point at ``version``.
        model_uri: The registered SavedModel's URI (KServe ``storageUri``).
        reused: Whether ``version`` was registered by an earlier attempt of this step.
    """

    pushed: bool
    version: int | None
    reason: str
    aliases: list[str] = field(default_factory=list)
    model_uri: str | None = None
    reused: bool = False

    def to_json(self) -> str:
        """As JSON, for logs and the component's return value."""
        return json.dumps(asdict(self), indent=2)

    def to_metadata(self) -> dict[str, Any]:
        """The pushed artifact's metadata: scalars only (``0``/``""`` for none)."""
        return {
            "pushed": self.pushed,
            "version": self.version or 0,
            "reason": self.reason,
            "model_uri": self.model_uri or "",
            "reused": self.reused,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> PushResult | None:
        """Read :meth:`to_metadata`'s output back (without ``aliases``, which it does not
        carry); ``None`` when it holds no push result."""
        if "pushed" not in meta:
            return None
        return cls(
            pushed=bool(meta["pushed"]),
            version=int(meta.get("version") or 0) or None,
            reason=str(meta.get("reason") or ""),
            model_uri=str(meta.get("model_uri") or "") or None,
            reused=bool(meta.get("reused")),
        )


def read_validation(path: str | Path) -> dict[str, Any]:
    """Read the validate component's verdict: a JSON file, or a directory holding
    ``verdict.json``.

    Raises:
        ValueError: The verdict has no boolean ``ok``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / VERDICT_FILE
    raw = json.loads(p.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("ok"), bool):
        raise ValueError(f"{p} is not a validation verdict: it has no boolean 'ok'")
    return raw


def _gate(blessing: Mapping[str, Any], validation: Mapping[str, Any] | None) -> list[str]:
    """Reasons not to push; empty when the model may be pushed."""
    problems = []
    if validation is None:
        problems.append("no validation verdict was given")
    elif not validation.get("ok"):
        anomalies = validation.get("anomalies") or []
        names = ", ".join(str(a.get("feature", a)) if isinstance(a, dict) else str(a)
                          for a in anomalies[:5])  # fmt: skip
        more = f" (+{len(anomalies) - 5} more)" if len(anomalies) > 5 else ""
        problems.append(
            f"data validation failed with {len(anomalies)} anomalies"
            + (f": {names}{more}" if names else "")
        )
    if not blessing.get("blessed"):
        failed = [r for r in blessing.get("reasons", []) if str(r).startswith("FAIL")]
        problems.append("evaluation did not bless the model: " + ("; ".join(failed) or "no reason"))
    return problems


def push_key(
    model_name: str,
    model_dir: str | Path,
    pipeline_run_id: str | None,
    task_id: str | None,
    decision_inputs: Mapping[str, Any] | None = None,
) -> str | None:
    """The idempotency key of a push: what a retry of the step shares and a new run does not.

    In KFP a retry reruns the same task with the same inputs, so the key covers the run, the
    task and those inputs.

    Args:
        model_name: The registered model.
        model_dir: The SavedModel; its content hash is part of the key, so a push handed a
            different model is not mistaken for a retry.
        pipeline_run_id: The KFP run id.
        task_id: The task's identity within the run, the same for each retry (the component
            passes its output artifact's URI).
        decision_inputs: The other inputs push decides on (blessing, validation verdict), as
            JSON-ready values.

    Returns:
        A SHA-256 hex digest, or ``None`` when neither the run nor the task is known: a retry
        cannot then be told from a new run, and each push registers a new version.
    """
    if not pipeline_run_id and not task_id:
        return None
    h = hashlib.sha256()
    inputs = json.dumps(decision_inputs or {}, sort_keys=True, default=str)
    for part in ("push-v1", model_name, pipeline_run_id or "", task_id or "",
                 tree_hash(model_dir), inputs):  # fmt: skip
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def build_lineage(
    blessing: Mapping[str, Any],
    validation: Mapping[str, Any] | None,
    spans: Sequence[str],
    train_hash: str | None,
    eval_hash: str | None,
    hyperparameters: Mapping[str, Any],
    pipeline_run_id: str | None,
    code_rev: str | None = None,
) -> Lineage:
    """The lineage record of a candidate from its blessing and its pipeline inputs.

    The schema's hash is left to the registry, which takes it from the schema it stores.
    """
    if code_rev:
        rev, dirty = code_rev, False
    else:
        rev, dirty = code_revision()
    overall = blessing.get("overall") or {}
    return Lineage(
        spans=list(spans),
        train_hash=train_hash,
        eval_hash=eval_hash,
        code_revision=rev,
        code_dirty=dirty,
        hyperparameters=dict(hyperparameters),
        metrics={k: overall.get(k) for k in SUMMARY_METRICS if k in overall},
        baseline_version=blessing.get("baseline_version"),
        blessed=bool(blessing.get("blessed")),
        blessing_reasons=[str(r) for r in blessing.get("reasons", [])],
        validation_ok=None if validation is None else bool(validation.get("ok")),
        pipeline_run_id=pipeline_run_id,
    )


def push(
    registry_uri: str,
    model_name: str,
    model_dir: str | Path,
    blessing: Mapping[str, Any],
    validation: Mapping[str, Any] | None,
    spans: Sequence[str],
    train_hash: str | None = None,
    eval_hash: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    pipeline_run_id: str | None = None,
    code_rev: str | None = None,
    transform_dir: str | Path | None = None,
    schema_path: str | Path | None = None,
    statistics_dir: str | Path | None = None,
    promote: bool = True,
    register_rejected: bool = False,
    task_id: str | None = None,
) -> PushResult:
    """Register the model and move ``candidate`` (and ``production``) when it passed both gates.

    Args:
        registry_uri: The model registry.
        model_name: Registered model name.
        model_dir: The candidate SavedModel.
        blessing: The evaluate component's blessing (``Evaluation.to_dict()``).
        validation: The validate component's verdict (``{"ok": bool, "anomalies": [...]}``);
            ``None`` counts as failed: push never ships unvalidated data's model.
        spans: Data spans trained on.
        train_hash: Content hash of the training split.
        eval_hash: Content hash of the eval split.
        hyperparameters: The trainer's hyperparameters.
        pipeline_run_id: The KFP run id.
        code_rev: Code revision; ``git rev-parse HEAD`` (or ``unknown``) when empty.
        transform_dir: The TFT transform graph, stored with the version.
        schema_path: The TFDV schema, stored with the version.
        statistics_dir: The training data's TFDV statistics, stored with the version.
        promote: Also move ``production`` (local mode). In the cluster deploy moves it after
            the canary, so the pipeline passes ``False`` there.
        register_rejected: Register a rejected model for the record, without aliases.
        task_id: The step's identity within the run, shared by its retries (see
            :func:`push_key`); with ``pipeline_run_id`` it makes a retried push return the
            version its earlier attempt registered.
    """
    registry = ModelRegistry(registry_uri)
    problems = _gate(blessing, validation)
    if problems and not register_rejected:
        return PushResult(False, None, "not pushed: " + "; ".join(problems))

    lineage = build_lineage(
        blessing, validation, spans, train_hash, eval_hash, hyperparameters or {},
        pipeline_run_id, code_rev,
    )  # fmt: skip
    key = push_key(
        model_name, model_dir, pipeline_run_id, task_id,
        {"blessing": blessing, "validation": validation, "promote": promote},
    )  # fmt: skip
    earlier = registry.find_registration(model_name, key) if key else None
    version = earlier or registry.register(
        model_name, model_dir, lineage, dict(blessing), transform_dir, schema_path,
        statistics_dir, idempotency_key=key,
    )  # fmt: skip
    again = " (registered by an earlier attempt of this step)" if earlier else ""
    if problems:
        return PushResult(
            False,
            version.version,
            f"registered as version {version.version}{again} for the record, no alias moved: "
            + "; ".join(problems),
            [],
            version.model_uri,
            reused=earlier is not None,
        )
    moves = [(CANDIDATE, "blessed and validated")] + ([(PRODUCTION, "pushed")] if promote else [])
    for alias, why in moves:
        registry.set_alias(model_name, alias, version.version, reason=why, if_changed=True)
    moved = [alias for alias, _ in moves]
    return PushResult(
        True,
        version.version,
        f"pushed version {version.version}{again}: blessed and validated; {', '.join(moved)} moved",
        moved,
        version.model_uri,
        reused=earlier is not None,
    )


def find_schema(*artifact_paths: str | Path) -> Path | None:
    """The first ``schema.pbtxt`` in (or being) one of the given artifact paths, if any."""
    for raw in artifact_paths:
        p = Path(raw)
        candidate = p if p.is_file() and p.name == SCHEMA_FILE else p / SCHEMA_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_ingest_result(ingest_result: str) -> tuple[list[str], str | None, str | None]:
    """Spans and content hashes from the ingest component's JSON result (empty -> nothing)."""
    if not ingest_result.strip():
        return [], None, None
    raw = json.loads(ingest_result)
    return list(raw.get("spans", [])), raw.get("train_hash"), raw.get("eval_hash")


def resolved_hyperparameters(
    pipeline_value: str, model_metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The pipeline's hyperparameters JSON, overlaid with what the trainer resolved.

    The trainer records the hyperparameters it used (defaults filled in) in its model's
    metadata; those win over the pipeline's partial JSON.
    """
    hp: dict[str, Any] = json.loads(pipeline_value or "{}")
    hp.update(json.loads(model_metadata.get("hyperparameters") or "{}"))
    return hp


def push_artifacts(
    registry_uri: str,
    model_name: str,
    model_dir: Path,
    model_metadata: Mapping[str, Any],
    blessing_path: Path,
    validation_path: Path,
    transform_dir: Path,
    statistics_dir: Path,
    ingest_result: str = "",
    hyperparameters: str = "{}",
    pipeline_run_id: str = "",
    code_rev: str = "",
    promote: bool = True,
    register_rejected: bool = False,
    task_id: str | None = None,
) -> PushResult:
    """The push step over its artifacts: read the blessing, the verdict and the ingest result,
    then :func:`push`.

    Args:
        registry_uri: The model registry.
        model_name: Registered model name.
        model_dir: The candidate SavedModel.
        model_metadata: The model artifact's metadata (the trainer's resolved hyperparameters).
        blessing_path: The evaluate step's blessing JSON.
        validation_path: The validate step's verdict (a directory holding ``verdict.json``).
        transform_dir: The TFT transform graph.
        statistics_dir: The training statistics (with ``schema.pbtxt`` if validate wrote one).
        ingest_result: The ingest step's JSON output (spans and content hashes).
        hyperparameters: The pipeline's hyperparameters JSON.
        pipeline_run_id: The KFP run id ('' = unknown).
        code_rev: The code revision ('' = ask git).
        promote: Also move ``production``.
        register_rejected: Register a rejected model for the record, without aliases.
        task_id: The step's identity within the run, shared by its retries.
    """
    from components.evaluate.core import read_blessing

    spans, train_hash, eval_hash = parse_ingest_result(ingest_result)
    return push(
        registry_uri=registry_uri,
        model_name=model_name,
        model_dir=model_dir,
        blessing=read_blessing(blessing_path),
        validation=read_validation(validation_path),
        spans=spans,
        train_hash=train_hash,
        eval_hash=eval_hash,
        hyperparameters=resolved_hyperparameters(hyperparameters, model_metadata),
        pipeline_run_id=pipeline_run_id or None,
        code_rev=code_rev or None,
        transform_dir=transform_dir,
        schema_path=find_schema(statistics_dir, validation_path),
        statistics_dir=statistics_dir,
        promote=promote,
        register_rejected=register_rejected,
        task_id=task_id,
    )
