"""Probe (not a product module): the lift of the real-time features on Jan-Mar 2013.

Two steps, because scikit-learn is not a dependency of the platform:

1. ``python bench/probe_realtime_lift.py build --repo feature_repo --out /tmp/lift.parquet``
   (project venv): the point-in-time training set of Jan-Mar 2013 through the v2 feature service.
2. ``python bench/probe_realtime_lift.py fit /tmp/lift.parquet`` (any venv with scikit-learn):
   time split (last 20 % by scheduled departure is eval), logistic regression and
   HistGradientBoostingClassifier, with and without the real-time features; prints eval AUC.

Feature names are repeated in step 2 as read from the file's columns: the batch ones are every
column that is not real-time, an entity/label column or the timestamp.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build(repo: Path, out: Path) -> None:
    import pandas as pd
    from feast import FeatureStore

    from mlops import features as F

    flights = pd.read_parquet(repo / "data" / "flights.parquet")
    flights = flights[flights[F.SPAN].isin(["2013-01", "2013-02", "2013-03"])]
    store = FeatureStore(repo_path=str(repo))
    df = store.get_historical_features(
        entity_df=flights, features=store.get_feature_service(F.FEATURE_SERVICE)
    ).to_df()
    meta = {
        "realtime": [f.name for f in F.REALTIME_FEATURES],
        "categorical": list(F.CATEGORICAL_FEATURES),
        "numeric": [n for n in F.NUMERIC_FEATURES],
        "label": F.LABEL,
        "time": F.EVENT_TIMESTAMP,
    }
    df.to_parquet(out, index=False)
    out.with_suffix(".json").write_text(json.dumps(meta))
    print(f"{len(df)} rows -> {out}")


def fit(path: Path, per_feature: bool = False) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    meta = json.loads(path.with_suffix(".json").read_text())
    df = pd.read_parquet(path).sort_values(meta["time"]).reset_index(drop=True)
    cut = int(len(df) * 0.8)
    y = df[meta["label"]].to_numpy()
    groups = {
        "rt_origin": [c for c in meta["realtime"] if c.startswith("origin_")],
        "rt_carrier_origin": [c for c in meta["realtime"] if c.startswith("carrier_origin_")],
        "rt_tail": [c for c in meta["realtime"] if c.startswith("tail_")],
    }

    def matrix(cols: list[str]) -> np.ndarray:
        parts = []
        for c in cols:
            if c in meta["categorical"]:
                parts.append(pd.Series(pd.Categorical(df[c]).codes, name=c).to_frame())
            else:
                x = pd.to_numeric(df[c], errors="coerce")
                parts.append(x.to_frame(c))
        return pd.concat(parts, axis=1).to_numpy(dtype=float)

    def scores(cols: list[str]) -> dict[str, float]:
        x = matrix(cols)
        cat = [i for i, c in enumerate(cols) if c in meta["categorical"]]
        hgb = HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.08, categorical_features=cat or None, random_state=0
        ).fit(x[:cut], y[:cut])
        num = [i for i, c in enumerate(cols) if c not in meta["categorical"]]
        xl = x[:, num]
        # Logistic regression: missing -> train mean plus a missing indicator per column.
        miss = np.isnan(xl)
        mean = np.nanmean(xl[:cut], axis=0)
        xl = np.where(miss, mean, xl)
        xl = np.hstack([xl, miss[:, miss[:cut].any(axis=0)]])
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
            xl[:cut], y[:cut]
        )
        return {
            "hgb": round(roc_auc_score(y[cut:], hgb.predict_proba(x[cut:])[:, 1]), 4),
            "logreg": round(roc_auc_score(y[cut:], lr.predict_proba(xl[cut:])[:, 1]), 4),
        }

    batch = [c for c in meta["categorical"] + meta["numeric"] if c not in meta["realtime"]]
    print(json.dumps({"rows": len(df), "eval_rows": len(df) - cut}), flush=True)
    configs = {"batch_only": batch, "all": batch + meta["realtime"]}
    for name, cols in groups.items():
        configs[f"all_minus_{name}"] = batch + [c for c in meta["realtime"] if c not in cols]
        configs[f"batch_plus_{name}"] = batch + cols
    if per_feature:
        for c in meta["realtime"]:
            configs[f"all_minus_{c}"] = batch + [x for x in meta["realtime"] if x != c]
    for name, cols in configs.items():
        print(json.dumps({name: scores(cols)}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--repo", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit")
    f.add_argument("path", type=Path)
    f.add_argument("--per-feature", action="store_true", help="also drop each feature alone")
    args = parser.parse_args()
    if args.cmd == "build":
        build(args.repo, args.out)
    else:
        fit(args.path, args.per_feature)
    return 0


if __name__ == "__main__":
    sys.exit(main())
