"""Everything about torchrun in one place: read env, init, seeds, barrier, unwrap.

The same entry point runs as one plain process or under
``torchrun --nproc_per_node=N``: NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly 1-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_primary(self) -> bool:
        """True on the process that logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun, else one process.

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"`` or None to use CUDA when available.
    """
    want_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(device=torch.device("cuda" if want_cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if want_cuda else "gloo", timeout=timedelta(minutes=30)
        )
    return DistInfo(rank, world_size, local_rank, dev)


def shutdown(info: DistInfo) -> None:
    """Barrier, then destroy the group (without the barrier some runs abort at exit)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True if ``flag`` is true on any rank (so every rank stops at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (for the primary's progress display)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=info.device)
    dist.all_reduce(t)
    return {
        k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)
    }


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when distributed, else return it.

    A model is wrapped once only.
    """
    if not info.enabled or isinstance(model, DistributedDataParallel):
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """Peel DDP and ``torch.compile`` wrappers off a model."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
