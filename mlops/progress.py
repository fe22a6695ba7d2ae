"""Live progress of a ``kfp.local`` run: each step's state, elapsed time and own log file.

kfp.local announces each task through the root logger ("Executing task 'x'", "Task 'x' finished
with status ...") and prints the task's subprocess output to ``sys.stdout``. ``RunProgress`` hooks
both: a filter on the root logger turns the announcements into state changes (kfp.local swaps the
root logger's handlers per task but keeps its filters), and ``sys.stdout``/``sys.stderr`` are
redirected into ``<log_dir>/<step>.log`` of the step that is running. The same events drive the
display: a ``rich`` live table on a terminal, one plain line per state change otherwise (CI, pipes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import textwrap
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

QUEUED, RUNNING, SUCCEEDED, FAILED, SKIPPED = "queued", "running", "succeeded", "failed", "skipped"
TAIL_LINES = 20
# Lines of a run that belong to no step (the pipeline's start and end) go to this file.
RUN_LOG = "_run.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_STYLE = {QUEUED: "dim", RUNNING: "yellow", SUCCEEDED: "green", FAILED: "bold red", SKIPPED: "dim"}


@dataclass
class StepProgress:
    """One step of a run as the progress display sees it."""

    name: str
    log: Path
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds the step ran, or has been running until ``now``; None if it never started."""
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now or time.time())
        return end - self.started


class _StepStream(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr`` and files each line under the running step."""

    def __init__(self, progress: RunProgress) -> None:
        super().__init__()
        self._progress = progress
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._partial += s
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._progress.log_line(line)
        return len(s)

    def flush(self) -> None:
        if self._partial:
            self._progress.log_line(self._partial)
            self._partial = ""


class _TaskEvents(logging.Filter):
    """Turns kfp.local's task announcements on the root logger into state changes."""

    def __init__(self, progress: RunProgress) -> None:
        super().__init__()
        self._progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        msg = _ANSI.sub("", str(record.getMessage()))
        if m := _STARTED.match(msg):
            self._progress.start(m.group(1), record.created)
        elif m := _FINISHED.match(msg):
            ok = m.group(2) == "SUCCESS"
            self._progress.finish(m.group(1), SUCCEEDED if ok else FAILED, record.created)
        return True


class RunProgress:
    """Tracks and shows the steps of one kfp.local run; use it around the pipeline call.

    Args:
        steps: The steps expected, in order; they start ``queued``. Steps kfp.local runs that are
            not listed are added when they start.
        log_dir: Where each step's log is written, as ``<step>.log``.
        out: Where the display goes (default: ``sys.stdout`` as it is on entry).
        verbose: Also echo every step's log lines to ``out``.
        live: Draw a live table (default: when ``out`` is a terminal); otherwise print one line
            per state change.
    """

    def __init__(
        self,
        steps: Sequence[str],
        log_dir: Path,
        out: TextIO | None = None,
        verbose: bool = False,
        live: bool | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.steps: dict[str, StepProgress] = {
            s: StepProgress(s, log_dir / f"{s}.log") for s in steps
        }
        self.verbose = verbose
        self._out = out
        self._live_wanted = live
        self._current: str | None = None
        self._files: dict[str, TextIO] = {}
        self._tails: dict[str, deque[str]] = {}
        self._events = _TaskEvents(self)
        self._stream = _StepStream(self)
        self._redirects = contextlib.ExitStack()
        self._console: Console | None = None
        self._live: Live | None = None

    # -- events ---------------------------------------------------------------------------------

    def start(self, name: str, at: float | None = None) -> None:
        """Mark a step running; its log lines go to its file from now on."""
        step = self.steps.setdefault(name, StepProgress(name, self.log_dir / f"{name}.log"))
        step.state, step.started, step.finished = RUNNING, at or time.time(), None
        self._current = name
        self._announce(step)

    def finish(self, name: str, state: str, at: float | None = None) -> None:
        """Mark a step succeeded or failed."""
        step = self.steps.setdefault(name, StepProgress(name, self.log_dir / f"{name}.log"))
        step.state, step.finished = state, at or time.time()
        self._announce(step)

    def log_line(self, line: str) -> None:
        """File one output line under the running step (or the run's own log between steps)."""
        line = _ANSI.sub("", line).rstrip("\r")
        key = self._current or RUN_LOG
        if key not in self._files:
            path = self.log_dir / (key if key == RUN_LOG else f"{key}.log")
            # A re-used run name starts its step logs afresh.
            self._files[key] = path.open("w", encoding="utf-8")
            # Room for the blank lines kfp.local pads a task's output with.
            self._tails[key] = deque(maxlen=10 * TAIL_LINES)
        self._files[key].write(line + "\n")
        self._files[key].flush()
        self._tails[key].append(line)
        if self.verbose and self._current:
            self._print(f"[{self._current}] {line}")

    # -- queries --------------------------------------------------------------------------------

    @property
    def failed_step(self) -> str | None:
        """The first step that failed, if any."""
        return next((s.name for s in self.steps.values() if s.state == FAILED), None)

    def tail(self, name: str, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` non-empty log lines of a step, less kfp.local's indent of them."""
        lines = [line for line in self._tails.get(name, ()) if line.strip()][-n:]
        return textwrap.dedent("\n".join(lines)).splitlines()

    # -- context --------------------------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # An earlier run of the same name leaves no log of a step this run does not reach.
        for stale in self.log_dir.glob("*.log"):
            stale.unlink()
        out = self._out or sys.stdout
        self._out = out
        live = out.isatty() if self._live_wanted is None else self._live_wanted
        if live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=out)
            self._live = Live(
                self, console=self._console, refresh_per_second=4,
                redirect_stdout=False, redirect_stderr=False,
            )  # fmt: skip
            self._live.start()
        logging.getLogger().addFilter(self._events)
        # kfp.local's handler is created per task on whatever sys.stdout is then: this stream.
        self._redirects.enter_context(contextlib.redirect_stdout(self._stream))
        self._redirects.enter_context(contextlib.redirect_stderr(self._stream))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stream.flush()
        self._redirects.close()
        logging.getLogger().removeFilter(self._events)
        now = time.time()
        for step in self.steps.values():
            if step.state == RUNNING:
                # Stopped by an error or Ctrl-C in this process, with no status logged for it.
                self.finish(step.name, FAILED, now)
            elif step.state == QUEUED:
                step.state = SKIPPED
                self._announce(step)
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
        for f in self._files.values():
            f.close()

    # -- display --------------------------------------------------------------------------------

    def _announce(self, step: StepProgress) -> None:
        if self._live is not None or self._out is None:
            return
        secs = step.elapsed()
        took = "" if secs is None or step.state == RUNNING else f" in {secs:.1f} s"
        self._print(f"{step.name}: {step.state}{took}")

    def _print(self, text: str) -> None:
        if self._console is not None:
            # Printed above the live table, which rich redraws below.
            self._console.print(text, markup=False, highlight=False, soft_wrap=True)
        elif self._out is not None:
            self._out.write(text + "\n")
            self._out.flush()

    def __rich__(self) -> Table:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        table.add_column("step")
        table.add_column("state")
        table.add_column("elapsed", justify="right")
        now = time.time()
        # rich draws from its own thread: a copy, as a step kfp.local adds may land meanwhile.
        for step in list(self.steps.values()):
            secs = step.elapsed(now)
            table.add_row(
                step.name, step.state, "" if secs is None else f"{secs:.1f} s",
                style=_STYLE.get(step.state),
            )  # fmt: skip
        return table
