"""The progress of a kfp.local run: real kfp.local on a tiny pipeline of lightweight components.

Each test runs a real pipeline (a few seconds: one Python subprocess per step) and checks what
``RunProgress`` made of it: the states and elapsed times, one log file per step holding that step's
own output, the plain lines printed off a terminal, and what a failure leaves for the user.
"""

# No `from __future__ import annotations`: kfp reads the component signatures as types.

import io
from pathlib import Path

import pytest
from kfp import dsl, local

from mlops.progress import FAILED, SKIPPED, SUCCEEDED, RunProgress
from mlops.runner import RunSummary

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def hello_op(word: str) -> str:
    print(f"hello says {word}")
    return word.upper()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout_op(word: str) -> str:
    print(f"shout says {word}!")
    return word + "!"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def boom_op(word: str) -> None:
    for i in range(40):
        print(f"boom line {i}")
    raise ValueError(f"boom on {word}")


@dsl.pipeline
def good_pipeline(word: str) -> None:
    shout_op(word=hello_op(word=word).output)


@dsl.pipeline
def failing_pipeline(word: str) -> None:
    first = hello_op(word=word)
    broken = boom_op(word=first.output)
    shout_op(word=word).after(broken)


STEPS = ["hello-op", "boom-op", "shout-op"]


@pytest.fixture
def kfp_root(tmp_path: Path) -> Path:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    return tmp_path


def test_steps_succeed_with_elapsed_times_and_own_log_files(kfp_root: Path) -> None:
    out = io.StringIO()
    with RunProgress(["hello-op", "shout-op"], kfp_root / "logs", out=out) as progress:
        good_pipeline(word="hi")

    assert [(s.name, s.state) for s in progress.steps.values()] == [
        ("hello-op", SUCCEEDED),
        ("shout-op", SUCCEEDED),
    ]
    hello, shout = progress.steps["hello-op"], progress.steps["shout-op"]
    assert hello.started and hello.finished and shout.started and shout.finished
    assert 0 < hello.elapsed() < 60 and 0 < shout.elapsed() < 60  # type: ignore[operator]
    assert hello.finished <= shout.started, "steps run one after the other"
    # Each step's file holds its own output and not the other's.
    hello_log, shout_log = hello.log.read_text(), shout.log.read_text()
    assert hello.log == kfp_root / "logs" / "hello-op.log"
    assert "hello says hi" in hello_log and "shout says" not in hello_log
    assert "shout says HI!" in shout_log and "hello says" not in shout_log
    assert "\x1b[" not in hello_log, "colour codes are stripped from the files"
    # Off a terminal: one plain line per state change, no step output unless verbose.
    lines = out.getvalue().splitlines()
    assert lines[0] == "hello-op: running"
    assert lines[1].startswith("hello-op: succeeded in ") and lines[1].endswith(" s")
    assert lines[2] == "shout-op: running"
    assert lines[3].startswith("shout-op: succeeded in ")
    assert len(lines) == 4
    assert progress.failed_step is None


def test_verbose_echoes_each_step_log_line_tagged_with_its_step(kfp_root: Path) -> None:
    out = io.StringIO()
    with RunProgress(["hello-op", "shout-op"], kfp_root / "logs", out=out, verbose=True):
        good_pipeline(word="yo")

    text = out.getvalue()
    assert "[hello-op]     hello says yo" in text
    assert "[shout-op]     shout says YO!" in text
    assert "shout-op: succeeded in " in text


def test_failing_step_is_named_with_its_last_lines_and_log_path(kfp_root: Path) -> None:
    out = io.StringIO()
    progress = RunProgress(STEPS, kfp_root / "logs", out=out)
    with pytest.raises(RuntimeError, match="boom-op"), progress:
        failing_pipeline(word="x")

    states = {s.name: s.state for s in progress.steps.values()}
    assert states == {"hello-op": SUCCEEDED, "boom-op": FAILED, "shout-op": SKIPPED}
    assert progress.failed_step == "boom-op"
    boom = progress.steps["boom-op"]
    assert boom.elapsed() is not None and boom.elapsed() > 0  # type: ignore[operator]
    assert progress.steps["shout-op"].elapsed() is None
    full = boom.log.read_text()
    assert "boom line 0" in full and "ValueError: boom on X" in full
    assert not (kfp_root / "logs" / "shout-op.log").exists()

    tail = progress.tail("boom-op")
    assert len(tail) == 20
    assert "boom line 0" not in "\n".join(tail), "only the last lines"
    assert any("ValueError: boom on X" in line for line in tail)
    lines = out.getvalue().splitlines()
    assert "boom-op: running" in lines
    assert any(line.startswith("boom-op: failed in ") for line in lines)
    assert "shout-op: skipped" in lines

    # What `mlops run` prints under its summary table, and its exit status.
    summary = RunSummary(
        "tiny", "FAILURE (boom-op)", kfp_root, kfp_root / "report.html", [],
        failed_step="boom-op", failed_log=boom.log, failed_tail=tail,
    )  # fmt: skip
    text = "\n".join(summary.lines())
    assert "step boom-op failed; its last 20 log lines:" in text
    assert "ValueError: boom on X" in text
    assert summary.lines()[-1] == f"  full log: {boom.log}"


def test_live_table_on_a_terminal_shows_each_step_state_and_elapsed(kfp_root: Path) -> None:
    out = io.StringIO()
    with RunProgress(["hello-op", "shout-op"], kfp_root / "logs", out=out, live=True):
        good_pipeline(word="hi")

    text = out.getvalue()
    assert "step" in text and "state" in text and "elapsed" in text
    final = text[text.rindex("step") :]
    assert "hello-op" in final and "shout-op" in final
    assert final.count("succeeded") == 2
    assert "hello says" not in text, "step output stays in the files unless verbose"


def test_a_run_stopped_mid_step_marks_that_step_failed_and_the_rest_skipped(
    kfp_root: Path,
) -> None:
    # Ctrl-C (or any error in this process) while a step runs: kfp.local logs no status for it.
    out = io.StringIO()
    progress = RunProgress(STEPS, kfp_root / "logs", out=out)
    with pytest.raises(KeyboardInterrupt), progress:
        progress.start("hello-op")
        print("working")
        raise KeyboardInterrupt

    assert [s.state for s in progress.steps.values()] == [FAILED, SKIPPED, SKIPPED]
    assert progress.failed_step == "hello-op"
    assert progress.tail("hello-op") == ["working"]
    assert out.getvalue().splitlines()[-3].startswith("hello-op: failed in ")


def test_a_rerun_of_the_same_name_keeps_no_stale_step_log(kfp_root: Path) -> None:
    stale = kfp_root / "logs" / "shout-op.log"
    stale.parent.mkdir()
    stale.write_text("from an earlier run\n")
    with RunProgress(["hello-op", "shout-op"], kfp_root / "logs", out=io.StringIO()) as progress:
        progress.start("hello-op")
        print("fresh")
        progress.finish("hello-op", SUCCEEDED)

    assert not stale.exists()
    assert "fresh" in (kfp_root / "logs" / "hello-op.log").read_text()


@pytest.mark.parametrize("command", ["run", "retrain-if-needed", "alert-receiver"])
def test_commands_that_run_locally_take_verbose(command: str) -> None:
    from mlops.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([command, "--verbose"]).verbose is True
    assert parser.parse_args([command]).verbose is False
