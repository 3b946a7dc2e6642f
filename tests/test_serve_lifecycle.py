"""`edgekit serve` as a user runs it: SIGINT and SIGTERM shut it down cleanly (no tritonserver or
stub process left, shared memory removed, ports free), it restarts on the same ports, and a port
in use is refused before Triton starts."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from reliability_models import converted
from serve_support import free_ports, png_bytes, port_free, serving_or_skip


def start_cli(art: Path, ports: list[int], *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgekit.cli", "serve", str(art), "--name", "cnn", "--device", "cpu",
           "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("edgekit serve was not ready in time")


def alive(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


def serve_and_stop(art: Path, ports: list[int], sig: signal.Signals) -> None:
    from edgekit.serving.client import Client

    proc = start_cli(art, ports)
    try:
        wait_ready(proc, ports[0])
        tree = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        names = " ".join(psutil.Process(p).name() for p in tree)
        assert "tritonserver" in names and "triton_python_b" in names, names  # the server and its stub
        assert Client(f"127.0.0.1:{ports[1]}", "grpc").classify("cnn", png_bytes(3))[0].label in ("cat", "dog", "owl")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in err
    assert alive(tree) == [], "left running after shutdown"
    assert [p for p in ports if not port_free(p)] == [], "ports still taken"
    assert list(Path("/dev/shm").glob(f"edgekit_{proc.pid}_*")) == []


def test_sigint_then_sigterm_restart_on_the_same_ports(tmp_path_factory: pytest.TempPathFactory) -> None:
    serving_or_skip()
    art, ports = converted(tmp_path_factory, "image"), free_ports(3)
    serve_and_stop(art, ports, signal.SIGINT)
    serve_and_stop(art, ports, signal.SIGTERM)


def test_a_signal_while_starting_stops_cleanly_once_started(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ctrl-C as soon as tritonserver exists (before every model is ready): no "Aborted!", nothing left."""
    serving_or_skip()
    art, ports = converted(tmp_path_factory, "image"), free_ports(3)
    proc = start_cli(art, ports)
    try:
        deadline = time.monotonic() + 120
        tree: list[int] = []
        while not any(psutil.Process(p).name() == "tritonserver" for p in tree):
            assert proc.poll() is None and time.monotonic() < deadline, "tritonserver never started"
            time.sleep(0.05)
            tree = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in err and "Aborted" not in err
    assert alive(tree) == [], "left running after shutdown"
    assert [p for p in ports if not port_free(p)] == [], "ports still taken"


def test_a_port_in_use_is_refused_before_triton_starts(tmp_path_factory: pytest.TempPathFactory) -> None:
    serving_or_skip()
    art, ports = converted(tmp_path_factory, "image"), free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        proc = start_cli(art, ports)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert f"the grpc port {ports[1]} on 127.0.0.1 cannot be used" in err and "Traceback" not in err


def test_serve_refuses_a_missing_artifact_and_duplicate_names(tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    import edgekit

    with pytest.raises(edgekit.ArtifactError):
        edgekit.serve(tmp_path / "nothing")
    art = converted(tmp_path_factory, "image")
    with pytest.raises(edgekit.ConfigError, match="the same model name"):
        edgekit.serve([art, art])
    with pytest.raises(edgekit.ConfigError, match="cannot name a Triton model"):
        edgekit.serve(art, names=["bad name"])


def _pids_of(server: Any) -> list[int]:
    return [server.process.pid] + [c.pid for c in psutil.Process(server.process.pid).children(recursive=True)]


def test_python_api_stop_leaves_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    import edgekit

    serving_or_skip()
    ports = free_ports(3)
    server = edgekit.serve(converted(tmp_path_factory, "image"), http_port=ports[0], grpc_port=ports[1],
                           metrics_port=ports[2], device="cpu")
    pids, run_dir = _pids_of(server), server.run_dir
    assert server.stop() == 0
    assert alive(pids) == [] and not run_dir.exists() and all(port_free(p) for p in ports)
    assert not os.path.exists(f"/proc/{server.process.pid}/status") or alive([server.process.pid]) == []


_KILLED_PARENT = r"""
import sys, time, edgekit
s = edgekit.serve(sys.argv[1], http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), metrics_port=int(sys.argv[4]),
                  device="cpu")
print(s.process.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_parent_takes_the_server_with_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL gives the parent no chance to stop anything: Linux sends the server SIGTERM (its
    parent-death signal) and Triton shuts down cleanly on its own."""
    serving_or_skip()
    ports = free_ports(3)
    parent = subprocess.Popen([sys.executable, "-c", _KILLED_PARENT, str(converted(tmp_path_factory, "image")),
                               *map(str, ports)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())  # printed once the server is ready
        tree = [server_pid] + [c.pid for c in psutil.Process(server_pid).children(recursive=True)]
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 60
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert alive(tree) == [], "the server outlived its killed parent"
        assert all(port_free(p) for p in ports)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_model_that_cannot_load_is_reported_with_the_reason(tmp_path_factory: pytest.TempPathFactory) -> None:
    """edgekit.load failing inside Triton (here: no TensorRT on this machine) stops the start with
    Triton's load error, which carries edgekit's message, and leaves nothing running."""
    import edgekit

    serving_or_skip()
    ports = free_ports(3)
    before = {p.pid for p in psutil.process_iter() if p.name() == "tritonserver"}
    with pytest.raises(edgekit.BackendUnavailableError, match="tritonserver exited while loading") as e:
        edgekit.serve(converted(tmp_path_factory, "image"), names=["cnn"], http_port=ports[0], grpc_port=ports[1],
                      metrics_port=ports[2], device="tensorrt")
    assert "model 'cnn': Internal: BackendUnavailableError: device 'tensorrt' was asked for" in str(e.value), e.value
    assert "At:" not in str(e.value)  # Triton's copy of the Python traceback is left out
    assert {p.pid for p in psutil.process_iter() if p.name() == "tritonserver"} <= before
    assert all(port_free(p) for p in ports)
