"""Ingest's as-of join gives exactly Feast's point-in-time join: same rows, values and dtypes.

``join_features`` does not call ``FeatureStore.get_historical_features`` (quadratic in a key's
history on the DuckDB store); this pins it to what Feast itself returns on a real month.
"""

from pathlib import Path

import pandas as pd
import pytest

from components.ingest.core import SpanWindow, join_features, load_entities
from mlops import features as F

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_join_features_equals_feast_point_in_time_join(prepared_repo: Path) -> None:
    from feast import FeatureStore

    entities = load_entities(prepared_repo / "data", SpanWindow("2013-01", "2013-01"))
    ours = join_features(prepared_repo, entities)
    store = FeatureStore(repo_path=str(prepared_repo))
    service = store.get_feature_service(F.FEATURE_SERVICE)
    feast = store.get_historical_features(entity_df=entities, features=service).to_df()
    feast = feast.sort_values([F.EVENT_TIMESTAMP, F.FLIGHT_ID]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, feast[list(ours.columns)])
    # The month has missing values (TTL-expired and absent keys): the comparison covers them.
    assert ours[list(F.FEATURE_NAMES)].isna().any().any()
