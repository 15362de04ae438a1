"""Mixed precision for the training loops: one switch, ``training.precision``.

bf16 autocast measured 1.7–1.95× faster than fp32 for phase I and II steps on
the 2-core CPU machine (channels_last added little on top at 32 px), and it is
the fast path on H100/H200 too. bf16 keeps fp32's exponent range, so no loss
scaling is needed. Optimiser state and weights stay fp32.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


def autocast(
    device: torch.device | str, precision: str
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 on ``device`` when ``precision == "bf16"``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; known: fp32, bf16")
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")
