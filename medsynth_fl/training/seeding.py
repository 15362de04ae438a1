"""Per-step seeds, so a resumed run replays exactly what an uninterrupted one does.

Every step draws its randomness (noise, data indices, dropout, GP mixing) from
a seed derived from (run seed, phase, step, rank). Resuming therefore only needs
model and optimiser states, and the step counter.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of parts (stable across runs and machines)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def step_rngs(
    seed: int, phase: str, step: int, rank: int
) -> tuple[np.random.Generator, torch.Generator]:
    """Seed torch's global RNG for this step and return (numpy, torch) generators."""
    s = derive_seed(seed, phase, step, rank)
    torch.manual_seed(s)
    return np.random.default_rng(s), torch.Generator().manual_seed(s)
