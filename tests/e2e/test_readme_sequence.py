"""The README's local sequence, literally, in a copy of the checkout: what a new user runs.

The commands come from README.md's code blocks ("Two commands": ``make run``; "Continuous
training, locally": the rest), so the test follows the README when it changes. The copy holds
the tracked and untracked-not-ignored files (``git ls-files -co --exclude-standard``), as a
clone of the working tree would; the pinned environment (``.venv``) and the Makefile's tools
(``.tools``) are linked from this checkout instead of reinstalled. Everything else, the data
preparation, the Feast registry and online store, the installation of ``prometheus``, is done
by the README's commands themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops.registry import PRODUCTION, ModelRegistry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MODEL = "flight-delay"


@dataclass
class Step:
    """One README command as run: exit status, output, wall time, production version after."""

    command: str
    returncode: int
    output: str
    seconds: float
    production: int | None


def code_block(section: str) -> list[str]:
    """The commands of the first ```bash block after the heading ``section``, comments cut."""
    text = README.read_text()
    start = text.index(section)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block is not None, f"no bash block under {section!r} in README.md"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def readme_sequence() -> list[str]:
    """``make run``, then the continuous-training block, as README.md shows them."""
    first = [c for c in code_block("## Two commands") if c.startswith("make run")]
    return first + code_block("### Continuous training, locally")


def copy_checkout(dest: Path) -> Path:
    """Tracked and untracked-not-ignored files (mtimes kept, so make sees the venv current)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for env in (".venv", ".tools"):
        if (ROOT / env).exists():
            (dest / env).symlink_to(ROOT / env)
    # The linked .venv was built from this checkout's files; dated no newer than its stamp, the
    # copies leave it alone. A rebuild from the copy would reinstall the shared environment
    # editable from the copy, so one still due fails here instead.
    stamp = (ROOT / ".venv" / ".stamp").stat().st_mtime
    for rel in ("requirements.lock", "requirements-dev.lock", "pyproject.toml"):
        os.utime(dest / rel, (stamp - 1, stamp - 1))
    current = subprocess.run(["make", "-q", ".venv/.stamp"], cwd=dest, capture_output=True)
    assert current.returncode == 0, "the .venv is out of date: run `make venv` in the checkout"
    return dest


def fresh_env() -> dict[str, str]:
    """The environment of a new shell: no virtualenv active, nothing of this checkout on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    keep = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))]
    env["PATH"] = os.pathsep.join(keep)
    return env


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Step]:
    """Run every README command in order in a fresh copy; the shell lines carry over."""
    work = copy_checkout(tmp_path_factory.mktemp("readme") / "flight-delay-mlops")
    env = fresh_env()
    shell_state: list[str] = []  # `source ...` lines: a shell keeps them for what follows
    done: dict[str, Step] = {}
    for command in readme_sequence():
        if command.startswith(("source ", ". ")):
            shell_state.append(command)
            continue
        script = " && ".join([*shell_state, command])
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
            timeout=1200,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        production = ModelRegistry(str(work / "registry")).find(MODEL, PRODUCTION)
        done[command] = Step(command, proc.returncode, proc.stdout + proc.stderr, seconds,
                             None if production is None else production.version)  # fmt: skip
        print(f"README step {command!r}: exit {proc.returncode} in {seconds:.0f} s")
    done["__registry__"] = Step("", 0, str(work / "registry"), 0.0, None)
    return done


def step(steps: dict[str, Step], prefix: str) -> Step:
    """The one step whose command starts with ``prefix`` (the test names what it checks)."""
    found = [s for c, s in steps.items() if c.startswith(prefix)]
    assert len(found) == 1, f"README.md must show exactly one `{prefix}` command: {list(steps)}"
    return found[0]


def registry(steps: dict[str, Step]) -> ModelRegistry:
    """The registry the copy's commands wrote (``registry/`` of the config's defaults)."""
    return ModelRegistry(steps["__registry__"].output)


def test_the_sequence_is_the_readme_s() -> None:
    text = README.read_text()
    sequence = readme_sequence()
    assert sequence[0] == "make run"
    assert any(c.startswith("mlops run --through-month") for c in sequence)
    for prefix in ("mlops models list", "mlops models show", "mlops monitor",
                   "mlops retrain-if-needed"):  # fmt: skip
        assert any(c.startswith(prefix) for c in sequence), prefix
    for command in sequence:
        assert command in text


def test_no_step_ends_in_a_traceback(steps: dict[str, Step]) -> None:
    for command, s in steps.items():
        assert "Traceback (most recent call last)" not in s.output, (
            f"{command}:\n{s.output[-3000:]}"
        )


def test_make_run_promotes_the_first_model(steps: dict[str, Step]) -> None:
    s = step(steps, "make run")
    assert s.returncode == 0, s.output[-3000:]
    assert s.production == 1
    assert re.search(r"\bpromoted\b", s.output), s.output[-3000:]  # the decision is printed


def test_the_second_run_shadow_analyses_its_candidate(steps: dict[str, Step]) -> None:
    s = step(steps, "mlops run --through-month")
    assert s.returncode == 0, s.output[-3000:]
    events = [e["kind"] for e in registry(steps).get(MODEL, 2).lineage.events]
    assert "shadow_started" in events, events
    # The decision is recorded and printed: promote, rollback or hold, with its reasons.
    decided = {"promoted", "rolled_back", "held"} & set(events)
    assert decided, events
    assert s.production == (2 if "promoted" in decided else 1)
    assert re.search(r"\b(promoted|rolled_back|held)\b", s.output), s.output[-3000:]


def test_models_list_and_show(steps: dict[str, Step]) -> None:
    listed = step(steps, "mlops models list")
    assert listed.returncode == 0, listed.output
    assert re.search(r"\b1\b", listed.output) and re.search(r"\b2\b", listed.output), listed.output
    assert "production" in listed.output
    shown = step(steps, "mlops models show")
    assert shown.returncode == 0, shown.output
    # The production version's lineage names its spans: the first model's January-February, or
    # the promoted candidate's two months up to the README's --through-month.
    second = step(steps, "mlops run --through-month")
    found = re.search(r"--through-month (\d+)", second.command)
    assert found, second.command
    month = int(found.group(1))
    spans = (
        ("2013-01", "2013-02")
        if second.production == 1
        else (f"2013-{month - 1:02d}", f"2013-{month:02d}")
    )
    assert any(span in shown.output for span in spans), shown.output


def last_json(output: str) -> dict:
    """The last top-level JSON object a command printed (``json.dumps(..., indent=2)``)."""
    text = "\n" + output
    return json.loads(text[text.rindex("\n{\n") + 1 :])


def test_monitor_reads_the_traffic_the_shadow_analysis_served(steps: dict[str, Step]) -> None:
    s = step(steps, "mlops monitor")
    assert s.returncode == 0, s.output[-3000:]
    work = Path(steps["__registry__"].output).parent
    result = json.loads((work / "runs" / "monitor" / "monitor.json").read_text())
    # The replay went to both versions through the real server, which logged every request.
    assert result["requests"] > 0 and "1" in result["model_versions"], result
    # Skew against production's training statistics: judged per feature or, under the monitor's
    # minimum sample (a replay of a few hundred requests), reported as insufficient data.
    assert set(result["skew_thresholds"]) | set(result["skew_insufficient"]), result


def test_retrain_if_needed_acts_on_the_monitoring_result(steps: dict[str, Step]) -> None:
    s = step(steps, "mlops retrain-if-needed")
    assert s.returncode == 0, s.output[-3000:]
    result = last_json(s.output)
    work = Path(steps["__registry__"].output).parent
    monitored = json.loads((work / "runs" / "monitor" / "monitor.json").read_text())
    # A run when the monitor found drift or skew, none otherwise; none failed.
    assert bool(result["started"]) == bool(monitored["drifted"] or monitored["skewed"]), (
        result, monitored)  # fmt: skip
    assert not result["failed"], result
