"""Training's speed-ups change no result, and the exported model is the trained one.

Train leaves ``tf_keras`` unconverted by AutoGraph and saves only the serving signature. Two
fresh processes train the same small real data, one with AutoGraph converting ``tf_keras`` as
before: the exported weights and every reported figure must be identical. The exported model,
fed raw validation rows, must reproduce the validation AUC train reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops import features as F
from tests.conftest import ROOT, TrainingSet

pytestmark = pytest.mark.integration

SCRIPT = """
import hashlib, json, sys
from dataclasses import asdict
from pathlib import Path
from components.train import core
if sys.argv[1] == "convert":
    core.skip_autograph_for_tf_keras = lambda: None  # AutoGraph converts tf_keras, as before
xf, out = Path(sys.argv[2]), Path(sys.argv[3])
hp = core.HyperParameters(epochs=2, batch_size=256, hidden_units=(16,))
result = core.train(xf / "graph", xf / "examples", out, out.parent / "logs", hp)
import tensorflow as tf
loaded = tf.saved_model.load(str(out))
digest = hashlib.sha256()
for v in loaded.model_variables:
    digest.update(v.numpy().tobytes())
fields = asdict(result)
for timing in ("seconds", "examples_per_second"):
    fields.pop(timing)
print("RESULT" + json.dumps({"weights": digest.hexdigest(), "result": fields}))
"""


@pytest.fixture(scope="module")
def small_transformed(training_set: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components.transform.core import transform

    train, validation = training_set("2013-01", "2013-01")
    out = tmp_path_factory.mktemp("small-xf")
    paths = []
    for name, df in (("train", train.head(3000)), ("validation", validation.head(1000))):
        paths.append(out / f"{name}.parquet")
        df.to_parquet(paths[-1], index=False)
    transform(paths[0], paths[1], out / "graph", out / "examples")
    return out


def _train(mode: str, xf: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(xf), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_skipping_autograph_for_tf_keras_changes_no_result(
    small_transformed: Path, tmp_path: Path
) -> None:
    fast = _train("skip", small_transformed, tmp_path / "fast" / "model")
    before = _train("convert", small_transformed, tmp_path / "before" / "model")
    assert fast["weights"] == before["weights"]
    assert fast["result"] == before["result"]
    assert 0.0 < fast["result"]["operating_threshold"] < 1.0


def test_exported_model_reproduces_the_reported_validation_auc(
    small_transformed: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from components.evaluate.core import score
    from components.evaluate.metrics import auc, f1_optimal_threshold
    from components.train.core import HyperParameters, train

    model_dir = tmp_path / "model"
    hp = HyperParameters(epochs=2, batch_size=256, hidden_units=(16,))
    result = train(small_transformed / "graph", small_transformed / "examples", model_dir,
                   tmp_path / "logs", hp)  # fmt: skip
    validation = pd.read_parquet(small_transformed / "validation.parquet")
    scores = score(model_dir, validation)
    labels = validation[F.LABEL].to_numpy()
    # Train chose its threshold on the Keras model's own scores of the transformed rows: the
    # exported model, from raw rows through the embedded TFT graph, must find the same one.
    threshold, f1 = f1_optimal_threshold(labels, scores)
    assert threshold == pytest.approx(result.operating_threshold, abs=1e-5)
    assert f1 == pytest.approx(result.validation_f1, abs=1e-4)
    # Keras' AUC is approximated over 200 thresholds; the exact one differs in the 3rd decimal.
    assert auc(labels, scores) == pytest.approx(result.validation_auc, abs=5e-3)
