"""Train core: a wide-and-deep Keras classifier on the TFT output, exported for raw-feature serving.

The model is built from the transformed feature spec, so it follows the feature contract without
naming features: int64 features (vocabulary indices, buckets) get embeddings and a wide one-hot
part, float features feed the deep part directly. All GPUs present are used through
``tf.distribute.MirroredStrategy``, with mixed precision on GPU; on CPU it trains in float32.
When ``TF_CONFIG`` names several workers (a TFJob, or ``components.train.workers`` on loopback),
every worker runs :func:`train` under ``tf.distribute.MultiWorkerMirroredStrategy``: the data is
sharded by tf.data, every worker takes the same steps, and only the chief's export is kept.

The exported SavedModel embeds the TFT graph: its ``serving_default`` signature takes one dense
tensor per raw feature (``mlops.features.FEATURE_NAMES``; float32 with NaN for missing numerics,
strings with ``b""`` for missing categoricals) and returns ``{"score": probability}``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops import features as F
from mlops.artifacts import OPERATING_THRESHOLD, SCORE, SIGNATURE


@dataclass(frozen=True)
class HyperParameters:
    """Training settings; every one is a pipeline parameter."""

    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = 8
    learning_rate: float = 0.001
    batch_size: int = 1024
    epochs: int = 15
    patience: int = 3
    dropout: float = 0.3
    seed: int = 42
    # The logistic baseline is a linear model: it converges faster with a larger step.
    baseline_learning_rate: float = 0.01
    # Diagnostic knob for tests and ablations: train with this raw feature's values shuffled.
    shuffled_feature: str | None = None

    @classmethod
    def from_json(cls, text: str) -> HyperParameters:
        """Parse hyperparameters from JSON, rejecting unknown keys."""
        raw = json.loads(text) if text else {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown hyperparameters: {', '.join(sorted(unknown))}")
        if "hidden_units" in raw:
            raw["hidden_units"] = tuple(raw["hidden_units"])
        return cls(**raw)


@dataclass
class TrainResult:
    """What training produced and measured, on the validation split only.

    The eval split is never read here: it is touched once, by the evaluate step.
    """

    epochs_run: int
    train_examples: int
    examples_per_second: float
    seconds: float
    devices: list[str]
    mixed_precision: bool
    validation_auc: float
    validation_loss: float
    logistic_validation_auc: float
    majority_validation_accuracy: float
    validation_accuracy: float
    operating_threshold: float
    validation_f1: float
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    workers: int = 1

    def kfp_metrics(self) -> dict[str, float]:
        """The scalar metrics the component logs."""
        keys = ("validation_auc", "validation_loss", "validation_accuracy",
                "logistic_validation_auc", "majority_validation_accuracy", "operating_threshold",
                "validation_f1", "examples_per_second", "epochs_run")  # fmt: skip
        return {key: float(getattr(self, key)) for key in keys}

    def model_metadata(self) -> dict[str, Any]:
        """The model artifact's metadata; push reads the resolved ``hyperparameters`` back."""
        return {
            "framework": "tensorflow",
            "signature": SIGNATURE,
            "validation_auc": self.validation_auc,
            OPERATING_THRESHOLD: self.operating_threshold,
            "hyperparameters": json.dumps(self.hyperparameters),
        }


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic where it can."""
    import numpy as np
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def skip_autograph_for_tf_keras() -> None:
    """Let AutoGraph call the ``tf_keras`` package as it is, as TF does for ``keras``.

    AutoGraph leaves the packages of its ``CONVERSION_RULES`` unconverted; ``keras`` is there,
    but Keras 2 now ships as ``tf_keras``, so every ``fit``/``evaluate`` re-parsed and converted
    Keras' own training-step code (about 170 functions, half of the step's wall time here).
    Keras 2 code is graph-safe without conversion (TF <= 2.15 never converted it), and the
    trained weights are unchanged (tests/integration/test_train_export.py).
    """
    from tensorflow.python.autograph.core import config

    rule = config.DoNotConvert("tf_keras")
    if not any(getattr(r, "_prefix", None) == "tf_keras" for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule, *config.CONVERSION_RULES)


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker job, as ``TF_CONFIG`` describes it."""

    workers: int
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """Whether this task's export, logs and result are kept.

        The ``chief`` task if the cluster has one, else worker 0: TF's convention, and the
        Training Operator's for a TFJob with Worker replicas only.
        """
        if self.has_chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @classmethod
    def from_tf_config(cls, text: str | None) -> Cluster | None:
        """The cluster of a ``TF_CONFIG`` value; ``None`` when it is unset or empty.

        Raises:
            ValueError: The value has no ``cluster`` or no ``task`` with ``type`` and ``index``.
        """
        if not text:
            return None
        try:
            config = json.loads(text)
            spec, task = config["cluster"], config["task"]
            task_type, task_index = str(task["type"]), int(task["index"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"TF_CONFIG: expected cluster and task.type/index: {err!r}") from err
        workers = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
        return cls(workers, task_type, task_index, "chief" in spec)


def distribution_strategy(multi_worker: bool = False) -> tuple[Any, bool]:
    """The strategy to train under, and whether mixed precision is on.

    MultiWorkerMirroredStrategy across the workers of ``TF_CONFIG`` when ``multi_worker`` (it
    must be created before any other TF op runs: collectives are set up at context start);
    else MirroredStrategy over all GPUs, else the default CPU strategy. Mixed precision is on
    wherever there is a GPU.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi_worker else None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
        return strategy or tf.distribute.MirroredStrategy(), True
    return strategy or tf.distribute.get_strategy(), False


def _feature_columns(tft_output: Any) -> tuple[dict[str, int], list[str]]:
    """Split transformed features into categorical (with bucket counts) and numeric."""
    import tensorflow as tf

    categorical: dict[str, int] = {}
    numeric: list[str] = []
    for name, spec in sorted(tft_output.transformed_feature_spec().items()):
        if name == F.LABEL:
            continue
        if spec.dtype == tf.int64:
            categorical[name] = int(tft_output.num_buckets_for_transformed_feature(name))
        else:
            numeric.append(name)
    return categorical, numeric


def build_model(tft_output: Any, hp: HyperParameters, linear_only: bool = False) -> Any:
    """A wide-and-deep binary classifier over the transformed features.

    Args:
        tft_output: The ``tft.TFTransformOutput`` of the transform step.
        hp: Hyperparameters.
        linear_only: Build the logistic-regression baseline (wide part only) instead.
    """
    import tensorflow as tf

    categorical, numeric = _feature_columns(tft_output)
    inputs: dict[str, Any] = {}
    wide, deep = [], []
    # Each layer here is a few TensorFlow ops in every served call, whose cost is per op: a
    # one-hot is one op where Keras' CategoryEncoding is 18, and the numerics enter as one
    # stacked block rather than 35 Reshape layers (4 ops each). The values are the same.
    for name, buckets in categorical.items():
        inp = tf.keras.Input(shape=(), name=name, dtype=tf.int64)
        inputs[name] = inp
        idx = tf.keras.layers.Lambda(lambda x, b=buckets: tf.clip_by_value(x, 0, b - 1))(inp)
        wide.append(tf.keras.layers.Lambda(lambda x, b=buckets: tf.one_hot(x, b))(idx))
        if not linear_only:
            emb = tf.keras.layers.Embedding(buckets, hp.embedding_dim, name=f"emb_{name}")(idx)
            deep.append(emb)
    for name in numeric:
        inputs[name] = tf.keras.Input(shape=(), name=name, dtype=tf.float32)
    block = tf.keras.layers.Lambda(lambda cols: tf.stack(cols, axis=1), name="numeric")(
        [inputs[name] for name in numeric]
    )
    wide.append(block)
    deep.append(block)
    wide_x = tf.keras.layers.Concatenate(name="wide")(wide)
    wide_logit = tf.keras.layers.Dense(1, name="wide_logit")(wide_x)
    if linear_only:
        logit = wide_logit
    else:
        x = tf.keras.layers.Concatenate(name="deep")(deep)
        for units in hp.hidden_units:
            x = tf.keras.layers.Dense(units, activation="relu")(x)
            x = tf.keras.layers.Dropout(hp.dropout, seed=hp.seed)(x)
        # Starts at zero: the wide-and-deep model begins as the logistic model it is warm-started
        # from, and the deep part learns what the linear part cannot.
        deep_logit = tf.keras.layers.Dense(1, name="deep_logit", kernel_initializer="zeros")(x)
        logit = tf.keras.layers.Add(name="logit")([deep_logit, wide_logit])
    # The output stays float32 under mixed precision so the loss is computed stably.
    prob = tf.keras.layers.Activation("sigmoid", dtype="float32", name="score")(logit)
    model = tf.keras.Model(inputs=inputs, outputs=prob)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(hp.learning_rate),
        loss="binary_crossentropy",
        metrics=[tf.keras.metrics.AUC(name="auc"), tf.keras.metrics.BinaryAccuracy("accuracy")],
    )
    return model


def export_serving_model(model: Any, tft_output: Any, export_dir: Path) -> None:
    """Save ``model`` with the TFT layer inside and a signature over dense raw features.

    Only the serving signature is saved: the module tracks the Keras model's variables, not the
    Keras object, and Keras' per-layer call traces are off, so saving traces one function instead
    of every layer's call (the SavedModel is loaded by its signature only, never as Keras).
    """
    import tensorflow as tf
    from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

    tft_layer = tft_output.transform_features_layer()
    specs = {
        name: tf.TensorSpec([None], tf.float32 if name in F.NUMERIC_FEATURES else tf.string, name)
        for name in F.FEATURE_NAMES
    }

    class ServingModule(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model_variables = list(model.variables)
            self.tft_layer = tft_layer

        # No Python control flow depends on tensors here: AutoGraph has nothing to convert.
        @tf.function(input_signature=[specs], autograph=False)
        def serve(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            transformed = self.tft_layer(raw)
            feats = {k: transformed[k] for k in model.input}
            score = tf.reshape(tf.cast(model(feats, training=False), tf.float32), [-1])
            return {SCORE: score}

    module = ServingModule()

    @tf.function(input_signature=list(specs.values()), autograph=False)
    def serving_default(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return module.serve(dict(zip(specs, args, strict=True)))

    with keras_option_scope(save_traces=False, in_tf_saved_model_scope=True):
        tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE: serving_default})


def _evaluate_auc(model: Any, dataset: Any) -> tuple[float, float, float]:
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(results["auc"]), float(results["loss"]), float(results["accuracy"])


def train(
    graph_dir: Path,
    examples_dir: Path,
    model_dir: Path,
    log_dir: Path,
    hp: HyperParameters | None = None,
    cluster: Cluster | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train the classifier and the baselines on ``train``, tune on ``validation``, export.

    Early stopping, the warm-start choice and the operating threshold use the validation split
    only; the eval split is left to the evaluate step.

    With a ``cluster`` of several workers, every worker calls this with the same arguments and
    trains on its ``hp.batch_size`` share of each global batch of ``hp.batch_size * workers``
    (tf.data DATA sharding: there may be fewer files than workers). Validation metrics are
    reduced across the workers, so early stopping stops all of them at the same epoch
    (collectives deadlock otherwise). Every worker exports (saving reads distributed variables
    collectively); only the chief's export and logs land in ``model_dir`` and ``log_dir``, the
    others' in a scratch directory that is removed.

    Args:
        graph_dir: The transform step's graph (``tft.TFTransformOutput`` directory).
        examples_dir: The transform step's examples (``train-*``, ``validation-*``).
        model_dir: Where to write the serving SavedModel.
        log_dir: Where to write TensorBoard logs.
        hp: Hyperparameters; defaults when omitted.
        cluster: This worker's place in a multi-worker job (``None``: one process).
        checkpoint_dir: A directory every worker sees, for ``BackupAndRestore`` checkpoints
            at each epoch: a restarted job resumes its fit there instead of starting over.
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.evaluate.metrics import f1_optimal_threshold
    from components.transform.core import load_transformed_dataset

    multi_worker = cluster is not None and cluster.workers > 1
    keep = cluster is None or cluster.is_chief
    skip_autograph_for_tf_keras()
    hp = hp or HyperParameters()
    # The strategy comes first: a multi-worker one must exist before any TF op runs.
    strategy, mixed = distribution_strategy(multi_worker)
    set_seeds(hp.seed)
    tft_output = tft.TFTransformOutput(str(graph_dir))
    batch = hp.batch_size * strategy.num_replicas_in_sync

    def data(split: str, shuffle: bool) -> Any:
        ds = load_transformed_dataset(graph_dir, examples_dir, split, batch, shuffle, hp.seed)
        if hp.shuffled_feature and split == "train":
            ds = _shuffle_feature(ds, f"{hp.shuffled_feature}_xf", hp.seed)
        if multi_worker:
            # Every worker reads all files in the same seeded order and keeps its share of each
            # global batch; file sharding would leave workers idle when files < workers.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            ds = ds.with_options(options)
        return ds

    train_ds, val_ds = data("train", True).cache(), data("validation", False).cache()
    # Labels only: the features are not parsed for this pass.
    labels = _labels(examples_dir, "train")
    val_labels = np.concatenate([y.numpy().reshape(-1) for _, y in val_ds])
    majority = int(labels.mean() >= 0.5)

    with strategy.scope():
        model = build_model(tft_output, hp)
        baseline = build_model(
            tft_output, replace(hp, learning_rate=hp.baseline_learning_rate), linear_only=True
        )
    with tempfile.TemporaryDirectory(prefix="train-worker-") as scratch:
        fit = _fit_warm_started(model, baseline, train_ds, val_ds,
                                log_dir if keep else Path(scratch) / "logs", hp,
                                checkpoint_dir)  # fmt: skip
        auc, loss, acc = _evaluate_auc(model, val_ds)
        if multi_worker:
            # Keras' distributed predict would concatenate the workers' shards; the threshold
            # needs scores aligned with the labels in file order, so each worker scores the
            # whole validation split itself (no collectives, the same result everywhere).
            scores = np.concatenate(
                [np.asarray(model(x, training=False)).reshape(-1) for x, _ in val_ds]
            )
        else:
            scores = model.predict(val_ds, verbose=0).reshape(-1)
        threshold, f1 = f1_optimal_threshold(val_labels, scores)
        export_serving_model(model, tft_output, model_dir if keep else Path(scratch) / "model")
    return TrainResult(
        epochs_run=fit.epochs_run,
        train_examples=len(labels),
        examples_per_second=round(len(labels) * fit.epochs_run / fit.seconds, 1),
        seconds=round(fit.seconds, 2),
        devices=[d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"]
        or ["CPU"],
        mixed_precision=mixed,
        validation_auc=round(auc, 4),
        validation_loss=round(loss, 4),
        logistic_validation_auc=round(fit.logistic_auc, 4),
        majority_validation_accuracy=round(float((val_labels == majority).mean()), 4),
        validation_accuracy=round(acc, 4),
        operating_threshold=round(threshold, 6),
        validation_f1=round(f1, 4),
        hyperparameters=asdict(hp),
        workers=cluster.workers if cluster else 1,
    )


def _labels(examples_dir: Path, split: str) -> Any:
    """The labels of one split's examples, in file order, parsing nothing else."""
    import numpy as np
    import tensorflow as tf

    from components.transform.core import split_files

    files = split_files(examples_dir, split)
    spec = {F.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(65_536)
    return np.concatenate([tf.io.parse_example(b, spec)[F.LABEL].numpy() for b in ds])


@dataclass(frozen=True)
class _Fit:
    """What fitting measured: epochs and seconds of the main model, the baseline's AUC."""

    epochs_run: int
    seconds: float
    logistic_auc: float


def _fit_warm_started(
    model: Any,
    baseline: Any,
    train_ds: Any,
    val_ds: Any,
    log_dir: Path,
    hp: HyperParameters,
    checkpoint_dir: Path | None = None,
) -> _Fit:
    """Fit the logistic baseline, warm-start the wide part from it, fit the wide-and-deep model.

    Keeps the warm start when the deep part ends below the baseline's validation AUC. With a
    ``checkpoint_dir``, each fit backs up at every epoch end and a rerun resumes from there
    (Keras deletes a fit's backup when it completes; the early-stopping state is not in it).
    """
    import tensorflow as tf

    def backup(name: str) -> list[Any]:
        if checkpoint_dir is None:
            return []
        return [tf.keras.callbacks.BackupAndRestore(str(checkpoint_dir / name))]

    def early_stopping() -> Any:
        return tf.keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=hp.patience, restore_best_weights=True
        )

    tensorboard = tf.keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch")
    # The logistic baseline first, with the same data, epochs and early stopping; its weights
    # then warm-start the wide part of the wide-and-deep model.
    baseline.fit(train_ds, validation_data=val_ds, epochs=hp.epochs,
                 callbacks=[early_stopping(), *backup("baseline")], verbose=0)  # fmt: skip
    logistic_auc, _, _ = _evaluate_auc(baseline, val_ds)
    model.get_layer("wide_logit").set_weights(baseline.get_layer("wide_logit").get_weights())
    start_weights = model.get_weights()
    t0 = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=hp.epochs,
        callbacks=[early_stopping(), tensorboard, *backup("model")], verbose=2,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if _evaluate_auc(model, val_ds)[0] < logistic_auc:
        # The deep part found nothing the linear part had not: keep the warm start.
        model.set_weights(start_weights)
    return _Fit(len(history.history["loss"]), seconds, logistic_auc)


def _shuffle_feature(ds: Any, name: str, seed: int) -> Any:
    """Permute one transformed feature within each batch, breaking its link to the label."""
    import tensorflow as tf

    def permute(feats: dict[str, Any], label: Any) -> tuple[dict[str, Any], Any]:
        if name not in feats:
            raise ValueError(f"cannot shuffle unknown feature {name}")
        feats = dict(feats)
        feats[name] = tf.random.shuffle(feats[name], seed=seed)
        return feats, label

    return ds.map(permute)
