"""Unit tests of the model registry and the push gate (no TensorFlow: models are plain files)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
import pytest

from components.push.core import PushResult, find_schema, parse_ingest_result, push, read_validation
from mlops.registry import (
    CANDIDATE,
    PRODUCTION,
    Lineage,
    ModelRegistry,
    RegistryError,
    UnblessedVersionError,
    add_models_parser,
    cli_models,
    code_revision,
)

pytestmark = pytest.mark.unit

MODEL = "flight-delay"


def fake_model(path: Path, marker: str = "m") -> Path:
    """A directory shaped like a SavedModel; the registry copies bytes, it never loads them."""
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(f"graph-{marker}".encode())
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def lineage(blessed: bool = True, auc: float = 0.7, **kw: object) -> Lineage:
    base = dict(
        spans=["2013-01", "2013-02"],
        train_hash="a" * 64,
        eval_hash="b" * 64,
        code_revision="0123abcd",
        hyperparameters={"learning_rate": 0.001, "epochs": 3},
        metrics={"auc": auc},
        blessed=blessed,
        blessing_reasons=["ok overall AUC"] if blessed else ["FAIL slice carrier=UA"],
        pipeline_run_id="run-1",
    )
    base.update(kw)
    return Lineage(**base)  # type: ignore[arg-type]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return fake_model(tmp_path / "model")


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(str(tmp_path / "registry"))


def test_register_copies_artifacts_and_numbers_versions(
    registry: ModelRegistry, model_dir: Path, tmp_path: Path
) -> None:
    transform = tmp_path / "tg"
    (transform / "transform_fn").mkdir(parents=True)
    (transform / "transform_fn" / "saved_model.pb").write_bytes(b"tft")
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "carrier" }\n')

    v1 = registry.register(MODEL, model_dir, lineage(), {"blessed": True}, transform, schema)
    v2 = registry.register(MODEL, model_dir, lineage(), {"blessed": True})

    assert (v1.version, v2.version) == (1, 2)
    root = Path(v1.uri)
    assert root == tmp_path / "registry" / MODEL / "versions" / "1"
    assert (root / "model" / "saved_model.pb").read_bytes() == b"graph-m"
    assert (root / "model" / "variables" / "variables.index").read_bytes() == b"index"
    assert (root / "transform_graph" / "transform_fn" / "saved_model.pb").read_bytes() == b"tft"
    assert (root / "schema.pbtxt").read_text() == schema.read_text()
    assert json.loads((root / "evaluation.json").read_text()) == {"blessed": True}
    assert v1.model_uri == str(root / "model") and v1.local_model_path == root / "model"
    # The schema hash is filled in from the file when the caller did not give one.
    assert v1.lineage.schema_hash is not None and len(v1.lineage.schema_hash) == 64
    assert v2.lineage.schema_hash is None
    assert [v.version for v in registry.versions(MODEL)] == [1, 2]


def test_production_refuses_unblessed_and_failed_push_keeps_it(
    registry: ModelRegistry, model_dir: Path
) -> None:
    good = registry.register(MODEL, model_dir, lineage(blessed=True), {})
    registry.set_alias(MODEL, PRODUCTION, good.version)
    bad = registry.register(MODEL, model_dir, lineage(blessed=False), {})

    with pytest.raises(UnblessedVersionError, match=r"not blessed.*FAIL slice carrier=UA"):
        registry.set_alias(MODEL, PRODUCTION, bad.version)
    with pytest.raises(RegistryError, match="moved but not removed"):
        registry.remove_alias(MODEL, PRODUCTION)

    assert registry.aliases(MODEL) == {PRODUCTION: good.version}
    assert registry.resolve(MODEL, PRODUCTION).version == good.version
    # A candidate alias may point at anything; it is not served.
    registry.set_alias(MODEL, CANDIDATE, bad.version)
    assert registry.resolve(MODEL, "candidate").version == bad.version
    assert registry.resolve(MODEL, "latest").version == bad.version
    assert registry.resolve(MODEL, "1").aliases == (PRODUCTION,)
    with pytest.raises(RegistryError, match="no alias 'staging'; aliases: candidate, production"):
        registry.resolve(MODEL, "staging")
    with pytest.raises(RegistryError, match="no version 7"):
        registry.resolve(MODEL, 7)


def test_lineage_answers_which_data_code_and_parameters(
    registry: ModelRegistry, model_dir: Path
) -> None:
    v = registry.register(MODEL, model_dir, lineage(baseline_version=None), {})
    registry.set_alias(MODEL, PRODUCTION, v.version, reason="first model")
    registry.record_event(MODEL, v.version, "canary_started", {"traffic_percent": 10})
    registry.record_event(MODEL, v.version, "promoted", {})

    got = registry.lineage(MODEL, v.version)
    assert got.spans == ["2013-01", "2013-02"]
    assert got.train_hash == "a" * 64 and got.eval_hash == "b" * 64
    assert got.code_revision == "0123abcd"
    assert got.hyperparameters == {"learning_rate": 0.001, "epochs": 3}
    assert got.pipeline_run_id == "run-1"
    assert [e["kind"] for e in got.events] == [
        "registered", "alias_set", "canary_started", "promoted",
    ]  # fmt: skip
    assert got.events[1]["details"] == {
        "alias": PRODUCTION, "previous_version": None, "reason": "first model",
    }  # fmt: skip
    text = got.describe()
    assert "2013-01, 2013-02" in text and "0123abcd" in text and '"learning_rate": 0.001' in text
    assert "aaaaaaaaaaaa" in text and "run-1" in text


def test_interrupted_registration_is_ignored_and_its_number_not_reused(
    registry: ModelRegistry, model_dir: Path, tmp_path: Path
) -> None:
    registry.register(MODEL, model_dir, lineage(), {})
    # A registration that died after claiming number 2: claim present, no lineage.json.
    broken = tmp_path / "registry" / MODEL / "versions" / "2"
    broken.mkdir()
    (broken / ".claim").write_text("then crashed")
    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert registry.register(MODEL, model_dir, lineage(), {}).version == 3
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register(MODEL, tmp_path / "no-such-model", lineage(), {})
    assert registry.register(MODEL, model_dir, lineage(), {}).version == 4  # no number burnt
    with pytest.raises(RegistryError, match="no version 2"):
        registry.get(MODEL, 2)


def slow_listing(monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Make listing versions slow, as on an object store, so that every concurrent writer
    sees the same highest version: only exclusive creation can then keep numbers apart."""
    listed = ModelRegistry._claimed_numbers

    def slow(self: ModelRegistry, model_name: str) -> list[int]:
        numbers = listed(self, model_name)
        time.sleep(0.2)
        return numbers

    if monkeypatch is None:
        ModelRegistry._claimed_numbers = slow  # type: ignore[method-assign]
    else:
        monkeypatch.setattr(ModelRegistry, "_claimed_numbers", slow)


def test_concurrent_registrations_from_threads_get_distinct_versions(
    registry: ModelRegistry, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_listing(monkeypatch)
    barrier = threading.Barrier(6)

    def one(i: int) -> int:
        barrier.wait()
        return registry.register(MODEL, model_dir, lineage(pipeline_run_id=f"t{i}"), {}).version

    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(one, range(6)))
    assert sorted(versions) == list(range(1, 7))
    runs = {v.version: v.lineage.pipeline_run_id for v in registry.versions(MODEL)}
    assert sorted(str(r) for r in runs.values()) == [f"t{i}" for i in range(6)]


def _register_in_process(args: tuple[str, str, int, Any]) -> int:
    uri, model_dir, i, barrier = args
    slow_listing()  # this is a fresh spawned interpreter: patch its class directly
    barrier.wait()
    reg = ModelRegistry(uri)
    v = reg.register(MODEL, model_dir, lineage(pipeline_run_id=f"p{i}"), {})
    reg.record_event(MODEL, v.version, "touched", {"by": i})
    return v.version


def test_concurrent_registrations_from_processes_get_distinct_versions(
    tmp_path: Path, model_dir: Path
) -> None:
    uri = str(tmp_path / "registry")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no shared in-process lock
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        barrier = manager.Barrier(4, timeout=60)
        jobs = [(uri, str(model_dir), i, barrier) for i in range(4)]
        versions = pool.map(_register_in_process, jobs, chunksize=1)
    assert sorted(versions) == [1, 2, 3, 4]
    for v in ModelRegistry(uri).versions(MODEL):
        assert [e["kind"] for e in v.lineage.events] == ["registered", "touched"]


def test_concurrent_alias_moves_lose_no_alias(
    registry: ModelRegistry, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = registry.register(MODEL, model_dir, lineage(), {})
    read = ModelRegistry.aliases

    def slow(self: ModelRegistry, model_name: str) -> dict[str, int]:
        current = read(self, model_name)
        time.sleep(0.05)  # without the lock, writers would overwrite each other's aliases
        return current

    monkeypatch.setattr(ModelRegistry, "aliases", slow)
    names = [f"team-{i}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda a: registry.set_alias(MODEL, a, v.version), names))
    assert registry.aliases(MODEL) == dict.fromkeys(names, v.version)
    assert len(registry.lineage(MODEL, v.version).events) == 1 + len(names)


def test_memory_fsspec_registry(model_dir: Path) -> None:
    uri = f"memory://reg-{uuid.uuid4().hex}"
    reg = ModelRegistry(uri)
    v = reg.register(MODEL, model_dir, lineage(), {"blessed": True, "overall": {"auc": 0.7}})
    reg.set_alias(MODEL, PRODUCTION, v.version)

    again = ModelRegistry(uri).resolve(MODEL, PRODUCTION)
    assert again.version == 1 and not again.is_local
    assert again.model_uri.startswith("memory://") and again.model_uri.endswith("/1/model")
    with fsspec.open(again.model_uri + "/saved_model.pb", "rb") as fh:
        assert fh.read() == b"graph-m"
    assert reg.evaluation(MODEL, 1)["overall"] == {"auc": 0.7}
    with pytest.raises(RegistryError, match="not local"):
        again.local_path()


def test_memory_registry_concurrent_claims(model_dir: Path) -> None:
    reg = ModelRegistry(f"memory://reg-{uuid.uuid4().hex}")
    with ThreadPoolExecutor(6) as pool:
        versions = list(
            pool.map(lambda i: reg.register(MODEL, model_dir, lineage(), {}).version, range(6))
        )
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]


def test_download_from_remote(tmp_path: Path, model_dir: Path) -> None:
    reg = ModelRegistry(f"memory://reg-{uuid.uuid4().hex}")
    reg.register(MODEL, model_dir, lineage(), {})
    out = reg.download(MODEL, 1, tmp_path / "dl")
    assert (out / "saved_model.pb").read_bytes() == b"graph-m"
    assert (out / "variables" / "variables.index").read_bytes() == b"index"


def test_code_revision_in_this_checkout(tmp_path: Path) -> None:
    rev, _dirty = code_revision()
    assert rev == "unknown" or len(rev) == 40
    assert code_revision(tmp_path) == ("unknown", False)  # not a git checkout


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_models_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_models_list_and_show(
    registry: ModelRegistry, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = registry.register(MODEL, model_dir, lineage(auc=0.7123), {"regressed_slices": []})
    registry.set_alias(MODEL, PRODUCTION, good.version)
    bad = registry.register(
        MODEL,
        model_dir,
        lineage(False, 0.61, baseline_version=1),
        {"regressed_slices": ["carrier=UA"]},
    )
    registry.set_alias(MODEL, CANDIDATE, bad.version)

    assert cli_models(_cli("models", "--registry", registry.uri, "list")) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["VERSION", "CREATED", "SPANS", "AUC", "BLESSED", "ALIASES"]
    row1, row2 = table[1].split(), table[2].split()
    assert row1[0] == "1" and row1[2:] == ["2013-01..2013-02", "0.7123", "yes", "production"]
    assert row2[0] == "2" and row2[2:] == ["2013-01..2013-02", "0.6100", "no", "candidate"]

    assert cli_models(_cli("models", "--registry", registry.uri, "show", "candidate")) == 0
    out = capsys.readouterr().out
    assert "version 2" in out and "baseline version 1" in out and "blessed=False" in out
    assert "regressed slices: carrier=UA" in out and "0123abcd" in out

    assert cli_models(_cli("models", "--registry", registry.uri, "show", "1", "--json")) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lineage"]["spans"] == ["2013-01", "2013-02"] and shown["aliases"] == [PRODUCTION]

    assert cli_models(_cli("models", "--registry", registry.uri, "show", "nope")) == 2
    assert "no alias 'nope'" in capsys.readouterr().err


# -- push gate ---------------------------------------------------------------------------------

BLESSED = {"blessed": True, "reasons": ["ok overall AUC"], "overall": {"auc": 0.71, "count": 9}}
REJECTED = {
    "blessed": False,
    "baseline_version": 1,
    "reasons": ["FAIL slice carrier=UA (n=900): AUC 0.61 vs baseline 0.70", "note small"],
    "overall": {"auc": 0.69},
}
VALID = {"ok": True, "anomalies": []}
INVALID = {"ok": False, "anomalies": [{"feature": "temp", "description": "out of range"}]}


def _push(
    reg: ModelRegistry, model_dir: Path, blessing: dict, validation: dict | None, **kw: Any
) -> PushResult:
    return push(reg.uri, MODEL, model_dir, blessing, validation, ["2013-01"], "h1", "h2",
                {"epochs": 2}, "run-x", "cafe", **kw)  # fmt: skip


def test_push_blessed_moves_candidate_and_production(
    registry: ModelRegistry, model_dir: Path
) -> None:
    result = _push(registry, model_dir, BLESSED, VALID)
    assert result.pushed and result.version == 1 and result.aliases == [CANDIDATE, PRODUCTION]
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    lin = registry.lineage(MODEL, 1)
    assert lin.metrics == {"auc": 0.71, "count": 9} and lin.validation_ok is True
    assert (lin.code_revision, lin.spans, lin.train_hash) == ("cafe", ["2013-01"], "h1")
    assert registry.evaluation(MODEL, 1) == BLESSED


@pytest.mark.parametrize(
    ("blessing", "validation", "why"),
    [
        (REJECTED, VALID, "evaluation did not bless the model: FAIL slice carrier=UA"),
        (BLESSED, INVALID, "data validation failed with 1 anomalies: temp"),
        (BLESSED, None, "no validation verdict"),
    ],
)
def test_push_refuses_and_keeps_production(
    registry: ModelRegistry, model_dir: Path, blessing: dict, validation: dict | None, why: str
) -> None:
    assert _push(registry, model_dir, BLESSED, VALID).pushed
    result = _push(registry, model_dir, blessing, validation)
    assert not result.pushed and result.version is None
    assert why in result.reason and result.reason.startswith("not pushed")
    assert "note small" not in result.reason  # only the failed checks are quoted
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    assert [v.version for v in registry.versions(MODEL)] == [1]


def test_push_register_rejected_records_without_aliases(
    registry: ModelRegistry, model_dir: Path
) -> None:
    _push(registry, model_dir, BLESSED, VALID)
    result = _push(registry, model_dir, REJECTED, VALID, register_rejected=True)
    assert not result.pushed and result.version == 2 and result.aliases == []
    assert "for the record" in result.reason
    assert registry.aliases(MODEL) == {CANDIDATE: 1, PRODUCTION: 1}
    lin = registry.lineage(MODEL, 2)
    assert not lin.blessed and lin.baseline_version == 1
    assert lin.blessing_reasons[0].startswith("FAIL slice carrier=UA")


def test_push_without_promote_leaves_production_to_deploy(
    registry: ModelRegistry, model_dir: Path
) -> None:
    result = _push(registry, model_dir, BLESSED, VALID, promote=False)
    assert result.pushed and registry.aliases(MODEL) == {CANDIDATE: 1}


def test_push_input_readers(tmp_path: Path) -> None:
    (tmp_path / "verdict").mkdir()
    (tmp_path / "verdict" / "verdict.json").write_text(json.dumps(INVALID))
    assert read_validation(tmp_path / "verdict") == INVALID
    (tmp_path / "bad.json").write_text('{"anomalies": []}')
    with pytest.raises(ValueError, match="no boolean 'ok'"):
        read_validation(tmp_path / "bad.json")
    (tmp_path / "stats").mkdir()
    assert find_schema(tmp_path / "stats", tmp_path / "verdict") is None
    (tmp_path / "verdict" / "schema.pbtxt").write_text("")
    assert find_schema(tmp_path / "stats", tmp_path / "verdict") == (
        tmp_path / "verdict" / "schema.pbtxt"
    )
    result = json.dumps({"spans": ["2013-01"], "train_hash": "t", "eval_hash": "e"})
    assert parse_ingest_result(result) == (["2013-01"], "t", "e")
    assert parse_ingest_result("") == ([], None, None)


def test_production_statistics_follow_the_production_alias(
    registry: ModelRegistry, model_dir: Path
) -> None:
    assert registry.production_statistics(MODEL) is None  # nothing in production yet
    v1 = registry.register(MODEL, model_dir, lineage(blessed=True), {})
    registry.register(MODEL, model_dir, lineage(blessed=True), {})
    registry.set_alias(MODEL, PRODUCTION, v1.version)
    assert registry.production_statistics(MODEL) == v1.statistics_uri
