"""One place for training output.

A rich progress bar with the losses, log lines, and a JSON-lines file of
hierarchical metrics (``loss/critic/gp`` …).

Only the primary process reports; other ranks get a silent reporter.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("medsynth_fl")


class Reporter:
    """Progress bar + metrics log for the stages of one run."""

    def __init__(
        self,
        metrics_path: Path | None = None,
        log_every: int = 50,
        enabled: bool = True,
        show_bar: bool | None = None,
    ):
        self.metrics_path = metrics_path
        self.log_every = log_every
        self.enabled = enabled
        self.show_bar = sys.stderr.isatty() if show_bar is None else show_bar

    @contextmanager
    def stage(self, name: str, total: int, start: int = 0) -> Iterator[StageReporter]:
        """Report the steps of one stage (``phase1``, ``teacher`` …)."""
        if not self.enabled:
            yield StageReporter(self, name, None, None)
            return
        log.info("%s: steps %d..%d", name, start, total)
        if not self.show_bar:
            yield StageReporter(self, name, None, None)
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=Console(stderr=True),
            transient=False,
        )
        with progress:
            task = progress.add_task(name, total=total, completed=start, losses="")
            yield StageReporter(self, name, progress, task)

    def write(self, record: dict) -> None:
        """Append one record to the metrics file."""
        if self.enabled and self.metrics_path is not None:
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")


class StageReporter:
    """Advances the bar and writes metrics every ``log_every`` steps."""

    def __init__(self, parent: Reporter, name: str, progress, task) -> None:
        self.parent = parent
        self.name = name
        self.progress = progress
        self.task = task
        self.t0 = time.monotonic()

    def step(self, step: int, logs: dict[str, float]) -> None:
        """Record the losses of ``step`` (0-based)."""
        if not self.parent.enabled:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
        if self.progress is not None:
            self.progress.update(self.task, advance=1, losses=text)
        if (step + 1) % self.parent.log_every == 0:
            if self.progress is None:
                log.info("%s step %d: %s", self.name, step + 1, text)
            self.parent.write({"stage": self.name, "step": step + 1, **logs})
