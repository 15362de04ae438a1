"""Provenance written first by every run.

Resolved config, seed, versions, git revision.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__
from .config import Config
from .data.imageset import ImageSet


def git_revision() -> str:
    """The repository's HEAD commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX; Linux only)."""
    try:
        flags = cpuinfo.read_text(errors="replace").split()
    except OSError:  # not Linux: no way to tell, so take the safe fp32 path
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def machine_description() -> str:
    """A short description of this machine (for benchmark JSON)."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Two "AMD EPYC" machines here differ several-fold in bf16 speed: name the units.
    cpu += ", bf16 units" if cpu_has_bf16_units() else ", no bf16 units"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {gpu}"


def write_provenance(
    out_dir: Path, cfg: Config, world_size: int, data: ImageSet | None = None
) -> None:
    """Write ``config.yaml`` and ``provenance.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(cfg.to_yaml())
    info = {
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": cfg.training.seed,
        "config_digest": cfg.digest(),
        "git_revision": git_revision(),
        "versions": {
            "medsynth_fl": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "world_size": world_size,
        "machine": machine_description(),
    }
    if data is not None:
        info["images"] = len(data)
        info["images_per_class"] = dict(
            zip(data.class_names, map(int, data.class_counts()), strict=True)
        )
    (out_dir / "provenance.json").write_text(json.dumps(info, indent=2))
