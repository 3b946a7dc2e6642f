"""Start and stop the bundled Triton Inference Server on a model repository of edgekit artifacts.

`serve(...)` writes a repository into a run folder (artifacts referenced in place, not copied),
starts `tritonserver` in a process group of its own and returns when every model is ready.
`Server.stop()` (also on leaving `with`, at interpreter exit, and in `edgekit serve` on SIGINT or
SIGTERM) asks Triton to shut down (SIGTERM: in-flight requests finish, models unload, stubs exit),
waits, then kills whatever is left of the group, removes the Python backend's shared-memory
regions and the run folder: no orphaned server or stub, and the ports are free again.
"""
from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailableError, ConfigError
from edgekit.serving.config import ServeOptions, TritonModel

# Runs as the server's parent-to-be: asks Linux to SIGTERM the server when the thread that started
# it dies (no orphan if the caller is killed), then becomes tritonserver.
_EXEC = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
         "os.execv(sys.argv[1], sys.argv[1:])")


@dataclass
class Server:
    """A running tritonserver. `stop()` shuts it down; `with serve(...) as server:` does so on exit."""

    process: subprocess.Popen[bytes]
    address: str
    http_port: int
    grpc_port: int
    metrics_port: int
    models: list[TritonModel]
    run_dir: Path
    log_path: Path
    shm_prefix: str

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """Shut down cleanly (SIGTERM, then SIGKILL after `timeout` s); returns tritonserver's exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)
                self.process.wait()
        _kill_group(self.process.pid)  # stubs still shutting down after the server left
        for shm in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            shm.unlink(missing_ok=True)
        if self.run_dir.exists():
            import shutil

            shutil.rmtree(self.run_dir, ignore_errors=True)
        atexit.unregister(self.stop)
        return int(self.process.returncode)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(artifacts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
          names: Sequence[str] | None = None, http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, address: str = "127.0.0.1", options: ServeOptions | None = None,
          log: str | os.PathLike[str] | None = None, ready_timeout: float = 300.0) -> Server:
    """Serve artifacts with the bundled Triton; returns once every model is ready (see edgekit.serve)."""
    from edgekit.serving.bundle import find_bundle
    from edgekit.serving.pyenv import serving_env
    from edgekit.serving.repository import entries, write_models

    paths = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
    items = entries(paths, names)
    ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
    _check_ports(address, ports)
    bundle = find_bundle()
    env = serving_env(bundle)
    run_dir = Path(tempfile.mkdtemp(prefix="edgekit-serve-"))
    try:
        models = write_models(run_dir / "repo", items, options or ServeOptions(), copy=False, env=env)
    except BaseException:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    log_path = Path(log) if log is not None else run_dir / "tritonserver.log"
    shm_prefix = f"edgekit_{os.getpid()}_{run_dir.name[-8:]}_"  # two servers on one machine never share regions
    cmd = [str(bundle.server), "--model-repository", str(run_dir / "repo"),
           "--backend-directory", str(env / "backends"), "--cache-directory", str(bundle.caches),
           "--http-address", address, "--grpc-address", address, "--metrics-address", address,
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
           "--allow-gpu-metrics", "false", "--disable-auto-complete-config", "--exit-timeout-secs", "10",
           "--backend-config", f"python,shm-region-prefix-name={shm_prefix}"]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", _EXEC, *cmd], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(proc, address, http_port, grpc_port, metrics_port, models, run_dir, log_path, shm_prefix)
    atexit.register(server.stop)
    try:
        _wait_ready(server, ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _check_ports(address: str, ports: dict[str, int]) -> None:
    if len(set(ports.values())) != len(ports):
        raise ConfigError("the HTTP, gRPC and metrics ports must differ", found=str(ports))
    for kind, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                raise ConfigError(f"the {kind} port {port} on {address} cannot be used", found=str(e),
                                  fix=f"stop what listens there, or pass another --{kind}-port") from None


def _wait_ready(server: Server, timeout: float) -> None:
    url = f"http://{server.http_url}/v2/health/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BackendUnavailableError("tritonserver exited while loading the models",
                                          found=_errors(server.log()), fix="see the lines above; the full log is "
                                          f"{server.log_path}" if server.log_path.parent != server.run_dir else None)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise BackendUnavailableError(f"tritonserver was not ready within {timeout:.0f} s", found=_errors(server.log()))


def _errors(log: str) -> str:
    """What Triton's log says failed: each model's load error (the Python traceback cut off), else
    its last error lines (those about the missing GPU driver are no failure on a CPU machine)."""
    loads = [f"model '{m[1]}': {m[2].split(chr(92) + 'n' + chr(92) + 'nAt:')[0].rstrip(chr(34))}"
             for m in re.finditer(r"failed to load '([^']+)' version \d+: (.*)", log)]
    if loads:
        return "\n".join(dict.fromkeys(loads))
    lines = [ln for ln in log.splitlines() if ln.startswith("E") or "error" in ln.lower()]
    lines = [ln for ln in lines if "CudaDriverHelper" not in ln and "pinned memory" not in ln]
    return "\n".join(lines[-8:])[-2000:] or log[-1500:]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
