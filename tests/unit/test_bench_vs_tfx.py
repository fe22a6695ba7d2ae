"""The side-by-side benchmark against the TFX peer: matching, ratios, and a missing peer.

A missing or half-installed peer must read "not installed", never a number, so a results file
cannot show another run's peer figures as this run's.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_vs_tfx import MATCH, peer_python, run_peer, side_by_side

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]
REPO = Path(__file__).resolve().parents[2]

OURS = {"ingest-op": 3.0, "validate-op": 4.0, "validation-gate-op": 0.5, "transform-op": 10.0,
        "train-op": 12.0, "evaluate-op": 5.0, "push-op": 1.0, "deploy-op": 0.4}  # fmt: skip
PEER = {"CsvExampleGen": 6.0, "StatisticsGen": 5.0, "SchemaGen": 0.5, "ExampleValidator": 0.5,
        "Transform": 20.0, "Trainer": 18.0, "Evaluator": 9.0, "Pusher": 1.0}  # fmt: skip


def test_side_by_side_matches_steps_and_sums_validation() -> None:
    fig = side_by_side(OURS, PEER)
    assert fig["validate_tfx_s"] == 6.0  # StatisticsGen + SchemaGen + ExampleValidator
    assert fig["validate_ratio"] == round(4.0 / 6.0, 3)
    assert fig["transform_ours_s"] == 10.0 and fig["transform_tfx_s"] == 20.0
    # The gate and deploy have no TFX counterpart: left out of the matched totals.
    assert fig["matched_steps_ours_s"] == 35.0
    assert fig["matched_steps_tfx_s"] == 60.0
    assert fig["ratio_ours_vs_tfx"] == round(35.0 / 60.0, 3)
    assert {f"{step}_ratio" for step in MATCH} <= fig.keys()


def test_missing_peer_reads_not_installed_and_has_no_ratio() -> None:
    fig = side_by_side(OURS, None)
    assert fig["ratio_ours_vs_tfx"] == "not installed"
    assert fig["matched_steps_tfx_s"] == "not installed"
    assert all(fig[f"{step}_tfx_s"] == "not installed" for step in MATCH)
    assert not [k for k in fig if k.endswith("_ratio")]
    assert fig["train_ours_s"] == 12.0


def test_half_installed_peer_is_not_installed(tmp_path: Path) -> None:
    venv = tmp_path / "tfxvenv"
    assert peer_python(venv) is None
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    # The install script writes .installed last; without it the install was interrupted.
    assert peer_python(venv) is None
    (venv / ".installed").touch()
    assert peer_python(venv) == venv / "bin" / "python"


def test_run_peer_reads_the_peers_last_json_line(tmp_path: Path) -> None:
    """The peer's contract (two scripts, one JSON line last on stdout), with a small peer."""
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "prepare_data.py").write_text(
        "import sys; open(sys.argv[1], 'w').write('a,b\\n1,2\\n')\n"
    )
    (peer / "pipeline.py").write_text(
        "import json, os, sys\n"
        "assert os.path.isfile(os.path.join(sys.argv[1], 'flights.csv'))\n"
        "print('Epoch 1/3 progress noise')\n"
        f"print(json.dumps({{'total_s': 9.5, 'per_component_s': {PEER!r}}}))\n"
    )
    result = run_peer(Path(sys.executable), tmp_path / "work", peer)
    assert result["total_s"] == 9.5
    assert result["per_component_s"] == PEER
    assert isinstance(result["process_wall_s"], float)
    (peer / "pipeline.py").write_text("import sys; sys.exit('peer broke')\n")
    with pytest.raises(RuntimeError, match="peer broke"):
        run_peer(Path(sys.executable), tmp_path / "work2", peer)


def test_install_script_is_idempotent_on_an_installed_peer() -> None:
    venv = Path.home() / ".cache" / "flight-delay" / "tfxvenv"
    if peer_python(venv) is None:
        pytest.skip("TFX peer not installed (tools/install-tfx-peer.sh)")
    out = subprocess.run([str(REPO / "tools" / "install-tfx-peer.sh"), str(venv)],
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    assert "already installed" in out.stdout
    assert (venv / ".installed").is_file()
