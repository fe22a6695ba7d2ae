"""Run every benchmark module (`bench/bench_*.py`) and write the figures to bench/results.json.

Each module's ``run()`` returns named figures; ratios are against baselines measured in the same
run, because this machine is shared and absolute numbers are noisy. ``--only NAME`` runs one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results.json"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and merge their figures into ``bench/results.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="module name, e.g. bench_ingest")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = args.only or sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            figures = importlib.import_module(f"bench.{name}").run()
        except Exception as err:  # one failing benchmark must not lose the others' figures
            traceback.print_exc()
            failed += 1
            # ...nor leave its previous figures looking fresh.
            failed_at = datetime.now(UTC).isoformat(timespec="seconds")
            results[name] = {"failed": f"{type(err).__name__}: {err}", "failed_at": failed_at}
            continue
        figures["bench_wall_s"] = round(time.perf_counter() - t0, 1)
        # Per module: `--only` rewrites one entry, and _meta's time alone would make the others
        # look as fresh as it.
        figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        results[name] = figures
        for key, value in figures.items():
            print(f"   {key}: {value}")
    results["_meta"] = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": sys.version.split()[0],
    }
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"figures written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
