"""Mixed precision for the training loops: one switch, ``training.precision``.

bf16 autocast measured 1.7–1.95× faster than fp32 for phase I and II steps on
a 2-core CPU with bf16 units (AVX512-BF16), and it is the fast path on
H100/H200 too. On a CPU without them it is emulated: on a 2-core AVX2-only
AMD EPYC (Zen 3) a phase-I forward/backward measured 8× (demo preset) to 18×
(cpu preset) *slower* in bf16. So ``auto`` takes bf16 only where the hardware
has it. bf16 keeps fp32's exponent range, so no loss scaling is needed.
Optimiser state and weights stay fp32.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch

from ..runinfo import cpu_has_bf16_units  # noqa: F401  (re-exported: tests patch it here)

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]


def resolve_precision(setting: str, device: torch.device | str) -> Precision:
    """The precision to train in on ``device``: ``auto`` picks bf16 where it is fast."""
    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {setting!r}; known: auto, fp32, bf16")
    if setting != "auto":
        return setting  # type: ignore[return-value]
    dev = torch.device(device)
    if dev.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = dev.type == "cpu" and cpu_has_bf16_units()
    chosen: Precision = "bf16" if fast else "fp32"
    log.info("precision auto on %s: %s", dev.type, chosen)
    return chosen


def autocast(
    device: torch.device | str, precision: str
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 on ``device`` when ``precision == "bf16"``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; known: fp32, bf16")
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")
