"""The evaluate and push components run through kfp.local, as the training DAG runs them.

Two runs against one registry: a reasonable first model is blessed and becomes production; a
candidate worse on one carrier is not blessed, push does nothing and says why, and production
stays where it was. The DAG has no ``dsl.If``: push decides.
"""

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Model
from model_fixtures import export_logistic_model  # tests/ is on sys.path via its conftest

from components.evaluate.component import evaluate_op
from components.push.component import push_op
from mlops.registry import CANDIDATE, PRODUCTION, ModelRegistry

pytestmark = pytest.mark.integration

MODEL = "flight-delay"


@dsl.pipeline
def gate_pipeline(
    eval_uri: str,
    model_uri: str,
    verdict_uri: str,
    transform_uri: str,
    statistics_uri: str,
    registry_uri: str,
    ingest_result: str,
) -> str:
    """evaluate -> push on imported artifacts (the upstream steps are tested elsewhere)."""
    eval_data = dsl.importer(artifact_uri=eval_uri, artifact_class=Dataset, reimport=True)
    model = dsl.importer(
        artifact_uri=model_uri,
        artifact_class=Model,
        reimport=True,
        metadata={"hyperparameters": '{"hour_weight": 0.12, "epochs": 3}'},
    )
    verdict = dsl.importer(artifact_uri=verdict_uri, artifact_class=Artifact, reimport=True)
    transform = dsl.importer(artifact_uri=transform_uri, artifact_class=Artifact, reimport=True)
    stats = dsl.importer(artifact_uri=statistics_uri, artifact_class=Artifact, reimport=True)
    evaluate = evaluate_op(
        eval_data=eval_data.output,
        model=model.output,
        registry_uri=registry_uri,
        model_name=MODEL,
    )
    push = push_op(
        model=model.output,
        blessing=evaluate.outputs["blessing"],
        validation=verdict.output,
        transform_graph=transform.output,
        statistics=stats.output,
        registry_uri=registry_uri,
        model_name=MODEL,
        ingest_result=ingest_result,
        hyperparameters='{"epochs": 1, "batch_size": 64}',
        pipeline_run_id="test-run",
    )
    return push.outputs["Output"]


@pytest.fixture(scope="module")
def inputs(
    training_set: Callable[[str, str], tuple[pd.DataFrame, pd.DataFrame]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("push-inputs")
    eval_df: pd.DataFrame = training_set("2013-01", "2013-01")[1]
    eval_df.to_parquet(root / "eval.parquet", index=False)
    (root / "verdict.json").write_text(json.dumps({"ok": True, "anomalies": []}))
    (root / "transform_graph" / "transform_fn").mkdir(parents=True)
    (root / "transform_graph" / "transform_fn" / "saved_model.pb").write_bytes(b"tft graph")
    (root / "statistics").mkdir()
    (root / "statistics" / "schema.pbtxt").write_text('feature { name: "carrier" }\n')
    export_logistic_model(root / "good")
    export_logistic_model(root / "worse", carrier_bonus={"EV": 2.0})
    return {
        "eval_uri": str(root / "eval.parquet"),
        "verdict_uri": str(root / "verdict.json"),
        "transform_uri": str(root / "transform_graph"),
        "statistics_uri": str(root / "statistics"),
        "good": str(root / "good"),
        "worse": str(root / "worse"),
        "ingest_result": json.dumps(
            {"spans": ["2013-01"], "train_hash": "t" * 64, "eval_hash": "e" * 64}
        ),
    }


def test_push_component_gates_through_kfp_local(inputs: dict[str, str], tmp_path: Path) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    registry_uri = str(tmp_path / "registry")
    registry = ModelRegistry(registry_uri)
    common = {k: inputs[k] for k in ("eval_uri", "verdict_uri", "transform_uri", "statistics_uri")}

    first = gate_pipeline(
        model_uri=inputs["good"], registry_uri=registry_uri,
        ingest_result=inputs["ingest_result"], **common,
    )  # fmt: skip
    result = json.loads(first.output)
    assert result["pushed"] and result["version"] == 1, result["reason"]
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    v1 = registry.get(MODEL, 1)
    assert (Path(v1.uri) / "model" / "saved_model.pb").is_file()
    assert (Path(v1.uri) / "transform_graph" / "transform_fn" / "saved_model.pb").is_file()
    assert (Path(v1.uri) / "schema.pbtxt").is_file() and v1.lineage.schema_hash
    assert (Path(v1.uri) / "statistics" / "schema.pbtxt").is_file()
    assert v1.lineage.spans == ["2013-01"] and v1.lineage.train_hash == "t" * 64
    # The trainer's resolved values (model metadata) win over the requested ones.
    assert v1.lineage.hyperparameters == {"hour_weight": 0.12, "epochs": 3, "batch_size": 64}
    assert v1.lineage.pipeline_run_id == "test-run" and v1.lineage.validation_ok is True

    second = gate_pipeline(
        model_uri=inputs["worse"], registry_uri=registry_uri,
        ingest_result=inputs["ingest_result"], **common,
    )  # fmt: skip
    result = json.loads(second.output)
    assert not result["pushed"] and result["version"] is None
    assert result["reason"].startswith("not pushed") and "carrier=EV" in result["reason"]
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    assert [v.version for v in registry.versions(MODEL)] == [1]

    # What the KFP UI shows: scalar metrics, ROC + confusion matrix, the HTML report.
    runs = sorted((tmp_path / "root").glob("*/evaluate-op/executor_output.json"))
    assert len(runs) == 2
    blessed = []
    for executor_output in runs:
        artifacts = json.loads(executor_output.read_text())["artifacts"]
        metrics = artifacts["metrics"]["artifacts"][0]["metadata"]
        assert 0.6 < metrics["auc"] < 0.7 and metrics["count"] > 5000
        blessed.append(metrics["blessed"])
        cls = artifacts["classification_metrics"]["artifacts"][0]["metadata"]
        assert len(cls["confidenceMetrics"]) > 10
        matrix = cls["confusionMatrix"]["rows"]
        assert sum(map(sum, (r["row"] for r in matrix))) == metrics["count"]
        assert (executor_output.parent / "report").read_text().count("<svg") == 3
    assert sorted(blessed) == [0.0, 1.0]


def test_push_component_retry_finds_its_own_registration(tmp_path: Path) -> None:
    """A KFP retry reruns the task with the same inputs and the same output artifact URI."""
    model_dir = tmp_path / "model"
    (model_dir / "variables").mkdir(parents=True)
    (model_dir / "saved_model.pb").write_bytes(b"graph")
    blessing = tmp_path / "blessing.json"
    blessing.write_text(json.dumps({"blessed": True, "reasons": ["ok overall AUC"]}))
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps({"ok": True, "anomalies": []}))
    (tmp_path / "tg").mkdir()
    (tmp_path / "stats").mkdir()
    registry_uri = str(tmp_path / "registry")

    def attempt(task_dir: str) -> dict[str, object]:
        pushed = Artifact(uri=str(tmp_path / "root" / "run-9" / task_dir / "pushed"))
        Path(pushed.path).parent.mkdir(parents=True, exist_ok=True)
        out = push_op.python_func(
            model=Model(uri=str(model_dir)),
            blessing=Artifact(uri=str(blessing)),
            validation=Artifact(uri=str(verdict)),
            transform_graph=Artifact(uri=str(tmp_path / "tg")),
            statistics=Artifact(uri=str(tmp_path / "stats")),
            registry_uri=registry_uri,
            model_name=MODEL,
            pushed=pushed,
            pipeline_run_id="run-9",
            code_revision="abc",
        )
        assert json.loads(Path(pushed.path).read_text()) == json.loads(out)
        return {**json.loads(out), "metadata": dict(pushed.metadata)}

    first, retry = attempt("push-op"), attempt("push-op")
    assert (first["version"], first["reused"]) == (1, False)
    assert (retry["version"], retry["reused"], retry["pushed"]) == (1, True, True)
    assert retry["metadata"]["reused"] is True
    registry = ModelRegistry(registry_uri)
    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert [e["kind"] for e in registry.lineage(MODEL, 1).events] == [
        "registered", "alias_set", "alias_set",
    ]  # fmt: skip
    # Another task (another output URI) is another push, even in the same run.
    assert attempt("push-op-2")["version"] == 2
