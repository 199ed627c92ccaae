"""One progress display for every mode: a rich bar on a terminal, plain lines elsewhere."""
from __future__ import annotations

import sys
import time


class Progress:
    """A progress bar on stderr when it is a terminal.

    Without a terminal it prints nothing unless ``quarters`` is set, in which case a plain line
    (``<label> 500/2000 (230/s)``) marks each quarter taking longer than a second in all.
    ``print`` writes a line above the bar (or plainly to stdout).
    """

    def __init__(self, label: str, total: int, completed: int = 0, quarters: bool = False):
        self.label, self.total, self.done = label, total, completed
        self.quarters, self.next_quarter, self.t0 = quarters, 0.25, time.monotonic()
        self.bar = None
        if sys.stderr.isatty() and total:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar,
                                       TextColumn, TimeRemainingColumn)
            self.bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                           transient=True)
            self.task = self.bar.add_task(label, total=total, completed=completed, info="")
            self.bar.start()

    def update(self, completed: int | None = None, info: str | None = None) -> None:
        """Move to ``completed`` (default: one more), optionally with an info text."""
        self.done = self.done + 1 if completed is None else completed
        if self.bar is not None:
            fields = {} if info is None else {"info": info}
            self.bar.update(self.task, completed=self.done, **fields)
        elif self.quarters and self.done / self.total >= self.next_quarter:
            elapsed = time.monotonic() - self.t0
            if elapsed > 1.0:
                print(f"{self.label} {self.done}/{self.total} ({self.done / elapsed:.0f}/s)",
                      file=sys.stderr)
            while self.done / self.total >= self.next_quarter:
                self.next_quarter += 0.25

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
