"""`mlops serve`: the embedded transformer + predictor on 127.0.0.1, ready for curl."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlops.config import DEFAULT_REQUEST_LOG
from mlops.registry import DEFAULT_MODEL_NAME, PRODUCTION
from serving.online import MISSING_POLICIES


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand to the ``mlops`` CLI's subparsers."""
    p = sub.add_parser("serve", help="serve the model locally (KServe, V1/V2, /metrics)")
    p.add_argument("--model-dir", help="SavedModel to serve (default: the registry's alias)")
    p.add_argument("--registry", default=None, help="model registry (default: the config's)")
    p.add_argument("--alias", default=PRODUCTION, help="registry alias or version to serve")
    p.add_argument("--second-model-dir", default=None, help="a second version side by side")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="also serve the V2 inference protocol over gRPC on this port (0: off)",
    )
    # The default is the server's (serving.server, which imports KServe: not at CLI start-up).
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="largest request body accepted, 413 past it (default: 2 MiB)",
    )
    p.add_argument("--feast-repo", type=Path, default=Path("feature_repo"))
    p.add_argument("--request-log", type=Path, default=Path(DEFAULT_REQUEST_LOG))
    p.add_argument("--missing-entity-policy", choices=MISSING_POLICIES, default=MISSING_POLICIES[0])


def cli_serve(args: argparse.Namespace, default_registry: str = "registry") -> int:
    """Run the embedded server until interrupted; returns the exit code."""
    from serving import transformer

    if args.model_dir is None:
        from mlops.registry import ModelRegistry

        version = ModelRegistry(args.registry or default_registry).resolve(
            args.model_name, args.alias
        )
        args.model_dir = version.local_model_path
        print(f"serving {args.model_name} version {version.version} ({args.alias})")

    argv = [
        f"--model_name={args.model_name}",
        f"--model_dir={args.model_dir}",
        f"--feast_repo={args.feast_repo}",
        f"--http_port={args.port}",
        f"--request_log={args.request_log}",
        f"--missing_entity_policy={args.missing_entity_policy}",
        f"--grpc_port={args.grpc_port}",
    ]
    if args.max_request_bytes is not None:
        argv.append(f"--max_request_bytes={args.max_request_bytes}")
    if args.second_model_dir:
        argv.append(f"--second_model_dir={args.second_model_dir}")
    return transformer.main(argv)
