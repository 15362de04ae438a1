"""Site-local checkpoints: written atomically every N steps and on SIGTERM.

Checkpoints hold models, optimisers and the step counter of the stage in
progress. They never leave the site and are read back with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Training stopped on request (SIGTERM/SIGINT) after saving a checkpoint."""


class StopFlag:
    """Set by SIGTERM/SIGINT; the training loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("signal %d received: checkpointing after this step", signum)
        self.requested = True

    def install(self) -> StopFlag:
        """Install the handlers (main thread only; elsewhere a no-op)."""
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. inside a Flower worker)
            pass
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no unpickling of code)."""
    return torch.load(path, map_location="cpu", weights_only=True)
