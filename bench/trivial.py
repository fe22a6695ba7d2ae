"""A trivial KServe model (constant score), the baseline of the serving benchmark.

It runs in the same ``LoopbackModelServer`` as the real models. With ``--kserve_routes`` its
``:predict`` goes through KServe's own FastAPI route (KServe's cost, the issue's baseline);
without, through the server's fast path as the real models' do, so that ratio measures what
validation, the feature lookup, the model and the metrics cost over the serving stack itself.
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve


class ConstantModel(kserve.Model):
    """Answers 0.5 per instance: no features, no model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.version = "trivial"
        self.ready = True

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        instances = payload.get("instances", []) if isinstance(payload, dict) else []
        return {"predictions": [0.5] * len(instances)}


def main(argv: list[str] | None = None) -> int:
    """Serve the constant model on loopback."""
    from serving.server import serve

    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--kserve_routes",
        action="store_true",
        help="Answer :predict through KServe's FastAPI route, not the server's fast path.",
    )
    args = parser.parse_args(argv)
    serve([ConstantModel(args.model_name)], http_port=args.http_port, host=args.host,
          fast_predict=not args.kserve_routes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
