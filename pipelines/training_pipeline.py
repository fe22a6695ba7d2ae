"""The continuous-training DAG: ingest -> validate -> transform -> train -> evaluate -> push ->
deploy.

One typed pipeline factory; every setting is a parameter. Compiling, running locally and
submitting live in ``mlops.runner`` and the CLI, never here. Only component definitions are
imported, so compiling stays free of TensorFlow, TFDV, TFT and Feast.

Gating follows TFX's Pusher: there is no ``dsl.If`` (``kfp.local`` cannot run it); push reads the
validation verdict and the blessing and does nothing, saying why, when either is negative. The
same DAG runs locally and in the cluster.

The model registry must outlive the pods: in the cluster every step that reads or writes it
mounts one ReadWriteMany PVC at ``/mnt/registry`` (``kfp-kubernetes``; ``kfp.local`` ignores the
mount, and local runs pass a local ``registry_uri``). See docs/cluster.md, "Model registry
storage".
"""

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

from components.deploy.component import deploy_op
from components.evaluate.component import evaluate_op
from components.evaluate.config import GATE_DEFAULTS
from components.gate.component import validation_gate_op
from components.ingest.component import ingest_op
from components.push.component import push_op
from components.train.component import train_op
from components.transform.component import transform_op
from components.validate.component import validate_op
from mlops.registry import DEFAULT_MODEL_NAME

PIPELINE_NAME = "flight-delay-training"
REGISTRY_MOUNT = "/mnt/registry"


def mount_registry(task: PipelineTask, registry_pvc: str) -> PipelineTask:
    """Mount the registry's PVC into a step at ``REGISTRY_MOUNT`` (ignored by kfp.local)."""
    return kubernetes.mount_pvc(task, pvc_name=registry_pvc, mount_path=REGISTRY_MOUNT)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Continuous training of the flight-delay model on NYC 2013 flights, "
    "from Feast features to a blessed, registered model.",
)
def training_pipeline(
    feature_repo: str = "/opt/flight-delay/feature_repo",
    first_span: str = "2013-01",
    last_span: str = "2013-02",
    eval_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    baseline_statistics_uri: str = "",
    serving_statistics_uri: str = "",
    beam_pipeline_args: list = [],  # noqa: B006 - KFP reads the default into the pipeline spec
    hyperparameters: str = "{}",
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: int = 0,
    train_workers: int = 1,
    registry_uri: str = REGISTRY_MOUNT,
    registry_pvc: str = "flight-delay-registry",
    registry_serving_root: str = "pvc://flight-delay-registry",
    model_name: str = DEFAULT_MODEL_NAME,
    # The model gate; its defaults have one home, EvalConfig (components/evaluate/config.py).
    decision_threshold: float = GATE_DEFAULTS.threshold,
    min_auc: float = GATE_DEFAULTS.min_auc,
    max_log_loss: float = GATE_DEFAULTS.max_log_loss,
    max_auc_drop: float = GATE_DEFAULTS.max_auc_drop,
    max_log_loss_increase: float = GATE_DEFAULTS.max_log_loss_increase,
    max_slice_auc_drop: float = GATE_DEFAULTS.max_slice_auc_drop,
    max_slice_log_loss_increase: float = GATE_DEFAULTS.max_slice_log_loss_increase,
    slice_max_auc_drop: dict = dict(GATE_DEFAULTS.slice_max_auc_drop),  # noqa: B006 - a KFP default
    min_slice_count: int = GATE_DEFAULTS.min_slice_count,
    stop_on_invalid_data: bool = True,
    deploy_mode: str = "cluster",
    inference_service: str = "flight-delay",
    namespace: str = "flight-delay",
    prometheus_url: str = "http://prometheus-operated.monitoring:9090",
    code_revision: str = "",
    request_log: str = "",
) -> None:
    """Train on the spans ``first_span``..``last_span`` and push the model if it earns it.

    Args:
        feature_repo: Path of the Feast repository inside the component image (or a mounted one).
        first_span: First monthly span of the training window (YYYY-MM).
        last_span: Last monthly span of the training window.
        eval_fraction: Share of the window, by time, held out for evaluation (the last part).
        validation_fraction: Share of the window, by time, just before the eval part, on which
            training stops early and chooses its operating threshold (eval is touched once).
        baseline_statistics_uri: Statistics to measure drift against ('' = the production
            model's training statistics from the registry, if any).
        serving_statistics_uri: Statistics of logged serving requests to measure skew against.
        beam_pipeline_args: Beam options for TFDV/TFT, e.g. ["--runner=FlinkRunner", ...].
        hyperparameters: JSON of trainer hyperparameters (see components/train/README.md).
        gpu_type: Accelerator type to request for training.
        gpu_count: GPUs for training (per worker); 0 trains on CPU.
        train_workers: Training workers; above 1 the train step runs a Kubeflow Training
            Operator TFJob of that many workers (MultiWorkerMirroredStrategy), its inputs
            staged on the registry PVC (see components/train/README.md).
        registry_uri: Model registry as the steps see it: the mounted PVC (default) or an
            fsspec URI (s3://, gs://; its driver must be in the image).
        registry_pvc: ReadWriteMany PVC holding the registry, mounted at /mnt/registry into
            the steps that read or write it (the chart creates it).
        registry_serving_root: The registry root as KServe reads it (``pvc://<registry_pvc>``);
            '' when KServe reads ``registry_uri`` itself (object storage).
        model_name: Registered model name.
        decision_threshold: Score at or above which a flight is predicted delayed (accuracy,
            precision, recall and the confusion matrix of the evaluation).
        min_auc: Absolute AUC a first model must reach.
        max_log_loss: Absolute log loss a first model must stay under.
        max_auc_drop: Largest overall AUC drop against production that still blesses.
        max_log_loss_increase: Largest overall log loss increase against production.
        max_slice_auc_drop: Largest AUC drop of any gating slice against production.
        max_slice_log_loss_increase: Largest log loss increase of any gating slice.
        slice_max_auc_drop: Per-slice overrides of ``max_slice_auc_drop``, keyed ``"key"`` or
            ``"key=value"``, e.g. ``{"origin=LGA": 0.08}``.
        min_slice_count: Slices with fewer eval examples are reported, not gating.
        stop_on_invalid_data: Fail the run at the validation gate when the data is invalid
            (else it runs on and push refuses the model).
        deploy_mode: ``cluster`` (KServe canary) or ``local`` (shadow analysis on loopback).
        inference_service: The InferenceService to roll out (cluster).
        namespace: Its namespace (cluster).
        prometheus_url: Prometheus the rollout analysis queries (cluster).
        code_revision: Git revision of the code that built the component image.
        request_log: Local shadow analysis only: the JSONL file its server appends the replayed
            requests to, so ``mlops monitor`` has served traffic to read ('' keeps them in a
            temporary directory).
    """
    # Point-in-time training set from the Feast offline store, split by time: train | validation
    # | eval.
    ingest = ingest_op(
        feature_repo=feature_repo,
        first_span=first_span,
        last_span=last_span,
        eval_fraction=eval_fraction,
        validation_fraction=validation_fraction,
    )
    ingest.set_display_name("ingest").set_retry(2, backoff_duration="30s")
    ingest.set_cpu_limit("2").set_memory_limit("8G")

    # Statistics, anomalies against the curated schema, drift and skew: the data gate.
    validate = validate_op(
        train_data=ingest.outputs["train_data"],
        validation_data=ingest.outputs["validation_data"],
        eval_data=ingest.outputs["eval_data"],
        baseline_statistics_uri=baseline_statistics_uri,
        serving_statistics_uri=serving_statistics_uri,
        registry_uri=registry_uri,
        model_name=model_name,
        beam_pipeline_args=beam_pipeline_args,
    )
    validate.set_display_name("validate").set_cpu_limit("2").set_memory_limit("8G")
    mount_registry(validate, registry_pvc)

    # A bad span stops here, after its report is written and before any compute is spent on it.
    gate = validation_gate_op(
        verdict=validate.outputs["verdict"], stop_on_invalid_data=stop_on_invalid_data
    )
    gate.set_display_name("validation-gate").set_caching_options(False)

    # TFT analyze-and-transform on Beam; its graph is embedded in the served model.
    transform = transform_op(
        train_data=ingest.outputs["train_data"],
        validation_data=ingest.outputs["validation_data"],
        beam_pipeline_args=beam_pipeline_args,
    )
    transform.set_display_name("transform").set_cpu_limit("4").set_memory_limit("16G")
    transform.after(gate)

    # Wide-and-deep Keras training; GPUs when asked for, CPU otherwise; several workers as a
    # TFJob when train_workers > 1.
    train = train_op(
        transform_graph=transform.outputs["transform_graph"],
        transformed_examples=transform.outputs["transformed_examples"],
        hyperparameters=hyperparameters,
        train_workers=train_workers,
        gpu_count=gpu_count,
        gpu_type=gpu_type,
        registry_pvc=registry_pvc,
        workspace=REGISTRY_MOUNT,
    )
    train.set_display_name("train").set_cpu_limit("4").set_memory_limit("16G")
    train.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    # Seeded training is reproducible, but a new image or data must retrain: no cache hits on
    # stale models.
    train.set_caching_options(False)
    # A TFJob's workers read the staged inputs and write the model on the registry PVC.
    mount_registry(train, registry_pvc)

    # Candidate vs production, overall and per slice: the model gate.
    evaluate = evaluate_op(
        eval_data=ingest.outputs["eval_data"],
        model=train.outputs["model"],
        registry_uri=registry_uri,
        model_name=model_name,
        threshold=decision_threshold,
        min_auc=min_auc,
        max_log_loss=max_log_loss,
        max_auc_drop=max_auc_drop,
        max_log_loss_increase=max_log_loss_increase,
        max_slice_auc_drop=max_slice_auc_drop,
        max_slice_log_loss_increase=max_slice_log_loss_increase,
        slice_max_auc_drop=slice_max_auc_drop,
        min_slice_count=min_slice_count,
    )
    evaluate.set_display_name("evaluate").set_caching_options(False)
    mount_registry(evaluate, registry_pvc)

    # Register only a validated, blessed model (as candidate); otherwise record why not.
    push = push_op(
        model=train.outputs["model"],
        blessing=evaluate.outputs["blessing"],
        validation=validate.outputs["verdict"],
        transform_graph=transform.outputs["transform_graph"],
        statistics=validate.outputs["statistics"],
        registry_uri=registry_uri,
        model_name=model_name,
        ingest_result=ingest.outputs["Output"],
        hyperparameters=hyperparameters,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        code_revision=code_revision,
        promote=False,
    )
    push.set_display_name("push").set_caching_options(False).set_retry(2)
    mount_registry(push, registry_pvc)

    # Canary (cluster) or shadow analysis (local); production moves only on promotion.
    deploy = deploy_op(
        pushed=push.outputs["pushed"],
        eval_data=ingest.outputs["eval_data"],
        registry_uri=registry_uri,
        registry_serving_root=registry_serving_root,
        model_name=model_name,
        deploy_mode=deploy_mode,
        feature_repo=feature_repo,
        inference_service=inference_service,
        namespace=namespace,
        prometheus_url=prometheus_url,
        request_log=request_log,
    )
    deploy.set_display_name("deploy").set_caching_options(False)
    mount_registry(deploy, registry_pvc)
