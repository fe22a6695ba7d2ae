"""The online lookup's pure parts: packing views' keys into entity rows, the staleness policy."""

from __future__ import annotations

import pytest

from mlops import features as F
from serving.online import (
    FUTURE,
    REALTIME_MAX_AGE_S,
    TOO_OLD,
    VIEW_FEATURES,
    ViewRow,
    _lookup_of,
    entity_key,
    entity_rows,
    missing_row,
)

pytestmark = pytest.mark.unit

T = 1371225600.0  # 2013-06-14T16:00:00Z


def test_every_key_is_read_from_a_row_holding_its_join_keys() -> None:
    """Views sharing join keys share rows; a compound key keeps its pair; nothing is overwritten."""
    keys = {
        F.WEATHER_VIEW: [("EWR",), ("JFK",), ("LGA",)],
        F.ORIGIN_RT_VIEW: [("JFK",), ("EWR",)],
        F.CARRIER_ORIGIN_RT_VIEW: [("UA", "EWR"), ("B6", "JFK"), ("UA", "JFK")],
        F.CARRIER_STATS_VIEW: [("UA",), ("DL",)],
        F.PLANE_VIEW: [("N1",), ("N2",), ("N3",), ("N4",)],
        F.AIRCRAFT_RT_VIEW: [("N2",)],
    }
    rows, placement = entity_rows(keys)
    assert set(placement) == {(v, k) for v, ks in keys.items() for k in ks}
    for (view, key), at in placement.items():
        assert entity_key(view, rows[at]) == key, (view, key)
    assert all(set(r) == set(F.ENTITY_KEYS) for r in rows)
    # Packed: no more rows than the widest view.
    assert len(rows) == max(len(ks) for ks in keys.values())


def row(view: str, ts: float | None, value: float = 1.0) -> ViewRow:
    if ts is None:
        return missing_row(view)
    return ViewRow(values=dict.fromkeys(VIEW_FEATURES[view], value), event_ts=ts)


@pytest.mark.parametrize(
    ("age_s", "reason"),
    [(0.0, None), (REALTIME_MAX_AGE_S, None), (REALTIME_MAX_AGE_S + 1, TOO_OLD), (-60.0, FUTURE)],
)
def test_a_real_time_row_outside_the_bound_is_served_as_missing(
    age_s: float, reason: str | None
) -> None:
    views = {view: row(view, T - age_s) for view in F.VIEW_KEYS}
    found = _lookup_of(views, T)
    rt = [f.name for f in F.REALTIME_FEATURES]
    if reason is None:
        assert found.stale_views == {}
        assert all(found.features[n] == 1.0 for n in rt)
    else:
        assert found.stale_views == dict.fromkeys(F.REALTIME_VIEWS, reason)
        assert all(found.features[n] is None for n in rt)
    # Batch views are never subject to it (their own ttl is Feast's and the cache's).
    assert found.features["temp"] == 1.0
    assert found.staleness_s[F.WEATHER_VIEW] == age_s
    assert found.missing_views == []


def test_an_absent_entity_is_missing_not_stale() -> None:
    views = {view: row(view, None if view == F.AIRCRAFT_RT_VIEW else T) for view in F.VIEW_KEYS}
    found = _lookup_of(views, T)
    assert found.missing_views == [F.AIRCRAFT_RT_VIEW] and found.stale_views == {}
    assert found.features["tail_prev_dep_delay"] is None
