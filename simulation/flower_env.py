"""Running ``flwr run`` against a project-local Flower home, and cleaning up after it.

``flwr run`` on a ``:local:`` connection starts a detached SuperLink that outlives
the command; we give it a free port and a project-local ``FLWR_HOME`` so that
it can be found and stopped, and we switch off its runtime ``uv sync`` (the
project's own environment already has every dependency).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_tmpdir() -> Path:
    """A folder for Ray's sessions: project-local when the path is short enough.

    Ray puts AF_UNIX sockets below it (``.../ray/session_<date>_<pid>/sockets/
    plasma_store``), and such paths may not exceed 107 bytes.
    """
    local = PROJECT_ROOT / ".cache" / "ray"
    if len(str(local)) <= 40:
        return local
    return Path("/tmp") / f"medsynth-ray-{os.getuid()}"


def flower_env(flwr_home: Path, port: int) -> dict[str, str]:
    """Environment for ``flwr``: project-local home and caches, no telemetry."""
    cache = PROJECT_ROOT / ".cache"
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
            "RAY_TMPDIR": str(ray_tmpdir()),
            "UV_CACHE_DIR": str(cache / "uv"),
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    ray_tmpdir().mkdir(parents=True, exist_ok=True)
    return env


def write_local_federation(
    flwr_home: Path, num_supernodes: int, cpus_per_client: int
) -> None:
    """Write ``$FLWR_HOME/config.toml`` with a local simulation connection.

    Ray runs as many ClientApps at once as ``cpu_count / cpus_per_client`` and
    gives each that many threads (OMP_NUM_THREADS): never more threads than
    cores, since oversubscribed OpenMP threads spin and slow everything tenfold.
    """
    total = os.cpu_count() or 1
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n'
        '[superlink.local]\naddress = ":local:"\n'
        f"options.num-supernodes = {num_supernodes}\n"
        f"options.backend.client-resources.num-cpus = {min(cpus_per_client, total)}\n"
        f"options.backend.init-args.num-cpus = {total}\n"
    )


def _pids_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (
                (proc / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            continue
        if marker in cmdline and "flower-superlink" in cmdline:
            pids.append(int(proc.name))
    return pids


def stop_local_superlink(flwr_home: Path, grace_s: float = 10.0) -> int:
    """Stop the SuperLink that ``flwr run`` left running for ``flwr_home``.

    Return how many processes were stopped.
    """
    marker = str(flwr_home / "local-superlink")
    pids = _pids_with(marker)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _pids_with(marker):
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def toml_value(value: object) -> str:
    """A run-config value in TOML syntax for ``--run-config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
