"""Start, observe and stop a Flower deployment (SuperLink + SuperNodes) on one machine.

Used by the loopback integration test and handy for trying the deployment
commands of ``docs/deployment.md`` locally. Everything here is a thin layer over
the Flower 1.41 command-line tools:

* ``flower-superlink`` with TLS (``--ssl-*``) and ``--enable-supernode-auth``
  serves the Fleet, Control and Runtime APIs over HTTPS on one ``--port``;
* ``flwr supernode register <key.pub> <connection>`` registers a SuperNode's
  public key through the Control API (with SuperNode authentication on, only
  registered keys can activate);
* ``flower-supernode --root-certificates ca.crt --auth-supernode-private-key
  KEY --node-config "..." --port P`` runs a hospital's node (``--port`` is the
  node's local Runtime API, distinct per node on one machine);
* ``flwr run <app> <connection> --stream --run-config "..."`` submits the app.

Every process started through :class:`ProcessSet` carries a tag in its
environment, which its children (SuperExec, ServerApp, ClientApp processes,
some started in sessions of their own) inherit; :meth:`ProcessSet.stop_all`
finds them all by that tag, so nothing outlives the deployment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from coordinator.certificates import TlsFiles

from .flower_env import free_port, toml_value

TAG_VAR = "MEDSYNTH_DEPLOYMENT_TAG"
NAME_VAR = "MEDSYNTH_DEPLOYMENT_PROCESS"
T = TypeVar("T")


class DeploymentError(RuntimeError):
    """A deployment step failed or did not happen in time."""


# -- environment and configuration ------------------------------------------------
def deployment_env(
    flwr_home: Path, threads: int | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a Flower process with its own ``FLWR_HOME``.

    No telemetry, no runtime ``uv sync`` (this environment already holds every
    dependency), the virtual environment's ``bin`` first on ``PATH`` (Flower
    starts ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by
    name), and optionally a cap on the math libraries' threads.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    Path(flwr_home).mkdir(parents=True, exist_ok=True)
    return env


def write_connection(
    flwr_home: Path, name: str, address: str, root_certificates: Path | None = None
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one (default) SuperLink connection.

    With ``root_certificates`` the ``flwr`` CLI verifies the SuperLink's TLS
    certificate against that CA (Flower requires an absolute path); without
    it the connection is ``insecure`` (plain HTTP).
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f"default = {toml_value(name)}",
        "",
        f"[superlink.{name}]",
        f"address = {toml_value(address)}",
    ]
    if root_certificates is not None:
        lines.append(
            f"root-certificates = {toml_value(str(Path(root_certificates).resolve()))}"
        )
    else:
        lines.append("insecure = true")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_config_arg(values: Mapping[str, str | int | float | bool]) -> str:
    """Render a ``--node-config`` value: ``site-id='X' data-path='/p' num-gpus=2``.

    Strings become TOML literal strings (single quotes, no escapes), so paths
    with spaces or backslashes survive.
    """
    parts = []
    for key, value in values.items():
        if isinstance(value, str):
            if "'" in value or "\n" in value:
                raise ValueError(
                    f"node config value for {key!r} cannot hold quotes/newlines"
                )
            parts.append(f"{key}='{value}'")
        else:
            parts.append(f"{key}={toml_value(value)}")
    return " ".join(parts)


def run_config_arg(values: Mapping[str, object]) -> str:
    """Render a ``flwr run --run-config`` value (keys must exist in pyproject)."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def superlink_command(
    tls: TlsFiles | None,
    port: int,
    host: str = "127.0.0.1",
    database: Path | None = None,
    supernode_auth: bool = True,
) -> list[str]:
    """``flower-superlink`` with TLS and SuperNode authentication on one port."""
    cmd = [
        "flower-superlink",
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    cmd += tls.superlink_args() if tls is not None else ["--insecure"]
    if supernode_auth:
        cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def supernode_command(
    superlink: str,
    root_certificates: Path | None,
    auth_key: Path | None,
    node_config: Mapping[str, str | int | float | bool],
    runtime_port: int,
) -> list[str]:
    """``flower-supernode`` for one hospital; ``runtime_port``: its Runtime API."""
    cmd = ["flower-supernode", "--superlink", superlink, "--port", str(runtime_port)]
    cmd += (
        ["--root-certificates", str(root_certificates)]
        if root_certificates
        else ["--insecure"]
    )
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd + ["--node-config", node_config_arg(node_config)]


# -- the flwr CLI ----------------------------------------------------------------------
def flwr_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    timeout_s: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``flwr ARGS``; raise :class:`DeploymentError` with its output on failure."""
    proc = subprocess.run(
        ["flwr", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise DeploymentError(
            f"flwr {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _json_tail(text: str) -> dict:
    """Parse the JSON object that ends ``text`` (after the CLI's banner, if any)."""
    start = text.find("{")
    if start < 0:
        raise DeploymentError(f"no JSON in output: {text!r}")
    return json.loads(text[start:])


def register_supernode(
    public_key: Path, connection: str, env: Mapping[str, str]
) -> int:
    """Register a SuperNode's public key with the SuperLink; return its node id."""
    out = flwr_cli(
        ["supernode", "register", str(public_key), connection, "--format", "json"], env
    )
    return int(_json_tail(out.stdout)["node-id"])


def list_supernodes(connection: str, env: Mapping[str, str]) -> list[dict]:
    """``flwr supernode ls``: dicts with ``node-id`` (int) and ``status``."""
    out = flwr_cli(["supernode", "ls", connection, "--format", "json"], env)
    nodes = _json_tail(out.stdout)["nodes"]
    return [{**n, "node-id": int(n["node-id"])} for n in nodes]


def wait_for(
    predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"timed out after {timeout_s:.0f} s waiting for {what}"
            )
        time.sleep(interval_s)


# -- processes -------------------------------------------------------------------------
def _environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@dataclass
class ManagedProcess:
    """One started process, its log file and its name."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    def log_text(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.popen.poll() is None


class ProcessSet:
    """Processes of one deployment, each in its own session, all found by a tag.

    Parameters
    ----------
    log_dir : folder for one ``<name>.log`` per started process.
    """

    def __init__(self, log_dir: Path):
        self.tag = uuid.uuid4().hex
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, ManagedProcess] = {}

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``cmd`` in a new session, output to ``<log_dir>/<name>.log``."""
        if name in self.processes:
            raise ValueError(f"a process named {name!r} was already started")
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop_all
        full_env = {**env, TAG_VAR: self.tag, NAME_VAR: name}
        popen = subprocess.Popen(
            list(cmd),
            env=full_env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = ManagedProcess(name, popen, log_path, log)
        self.processes[name] = proc
        return proc

    def pids(self, name: str | None = None) -> list[int]:
        """Live processes with this set's tag (and started as ``name``, if given)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            env = _environ_of(int(entry.name))
            if env.get(TAG_VAR) != self.tag:
                continue
            if name is not None and env.get(NAME_VAR) != name:
                continue
            if not _is_zombie(int(entry.name)):
                found.append(int(entry.name))
        return found

    def signal(self, name: str | None, sig: int) -> list[int]:
        """Send ``sig`` to every process of ``name`` (or of the whole set)."""
        pids = self.pids(name)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def kill(self, name: str, timeout_s: float = 10.0) -> None:
        """SIGKILL ``name`` and everything it started (a crash, not a shutdown)."""
        self.signal(name, signal.SIGKILL)
        self._reap()
        wait_for(lambda: not self.pids(name), timeout_s, f"{name} to die", 0.1)

    def _reap(self) -> None:
        for proc in self.processes.values():
            proc.popen.poll()

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM every tagged process, SIGKILL what is left after ``grace_s``."""
        self.signal(None, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self._reap()
            if not self.pids():
                break
            time.sleep(0.2)
        for _ in range(3):
            if not self.signal(None, signal.SIGKILL):
                break
            time.sleep(0.2)
            self._reap()
        for proc in self.processes.values():
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc._log is not None:
                proc._log.close()
                proc._log = None


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports
