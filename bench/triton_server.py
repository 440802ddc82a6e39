"""A real Triton Inference Server on this machine (no GPU, loopback only) for the tests and the
benchmark of ``engine: triton``: scripts/serve_triton_cpu.py in its own venv (Triton's server
binary of the nvidia-pytriton wheel, the repository's ONNX files on ONNX Runtime), started,
killed and restarted as a process group.

The venv is ``.venv/triton-server`` (``make setup``; requirements-triton-server.txt), or the
interpreter named by ``POSE_ROS_TRITON_SERVER_PYTHON``.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO_ROOT / "scripts" / "serve_triton_cpu.py"
SERVER_PYTHON_VARIABLE = "POSE_ROS_TRITON_SERVER_PYTHON"
#: The header of Triton's restricted endpoints (statistics), as pytriton sets them up.
ACCESS_HEADER = "triton-grpc-protocol-triton-access-token"


def server_python() -> Path:
    """The interpreter of the server's venv (it may not exist: see :func:`unavailable_reason`)."""
    named = os.environ.get(SERVER_PYTHON_VARIABLE)
    if named:
        return Path(named)
    return REPO_ROOT / ".venv" / "triton-server" / "bin" / "python"


@functools.cache
def unavailable_reason() -> str | None:
    """Why no CPU Triton server can be started here (a sentence), or None when it can."""
    python = server_python()
    if not python.is_file():
        return (
            f"the CPU Triton server's venv is missing ({python}): `make setup` installs "
            "requirements-triton-server.txt (nvidia-pytriton) there"
        )
    probe = subprocess.run(
        [str(python), "-c", "import pytriton.triton, onnxruntime"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"nvidia-pytriton is not installed in {python}: {last}"
    return None


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that nothing listens on now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class CpuTritonServer:
    """A running (or stopped) server: its ports, token, log and process group."""

    repository: Path
    log_path: Path
    grpc_port: int
    http_port: int
    metrics_port: int
    threads: int = 1
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until every model of the repository is ready."""
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps writing to it)
        try:
            self.process = subprocess.Popen(
                [
                    str(server_python()),
                    str(SERVER_SCRIPT),
                    "--repository",
                    str(self.repository),
                    "--grpc-port",
                    str(self.grpc_port),
                    "--http-port",
                    str(self.http_port),
                    "--metrics-port",
                    str(self.metrics_port),
                    "--threads",
                    str(self.threads),
                    # One argument: a token may begin with "-".
                    f"--access-token={self.access_token}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                # Its own process group: the server binary and its backend stubs are killed
                # together (a crash of the whole server).
                start_new_session=True,
            )
        finally:
            log.close()
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout
        while b"serving:" not in self.log_path.read_bytes()[start:]:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the CPU Triton server exited ({self.process.returncode}):\n"
                    f"{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the CPU Triton server did not start within {timeout} s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole server (a crash: no clean shutdown)."""
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (a clean shutdown), SIGKILL after ``timeout``."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def rss_mb(self) -> float:
        """Resident memory of every process of the server (the script, tritonserver, stubs)."""
        if self.process is None:
            return 0.0
        return process_group_rss_mb(self.process.pid)

    def statistics(self, model: str) -> dict[str, Any]:
        """The model's inference statistics (Triton's statistics endpoint, over gRPC)."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        try:
            response = client.get_inference_statistics(
                model, headers={ACCESS_HEADER: self.access_token}, as_json=True
            )
        finally:
            client.close()
        return response["model_stats"][0]


def process_group_rss_mb(pgid: int) -> float:
    """Summed VmRSS of the processes of a process group (Linux /proc)."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return total_kb / 1024.0


@contextmanager
def cpu_triton_server(
    repository: Path, log_path: Path, *, threads: int = 1, timeout: float = 120.0
) -> Iterator[CpuTritonServer]:
    """A started server on free loopback ports, stopped on exit."""
    grpc_port, http_port, metrics_port = free_ports(3)
    server = CpuTritonServer(
        Path(repository), Path(log_path), grpc_port, http_port, metrics_port, threads
    )
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()


def batching_summary(statistics: dict[str, Any]) -> dict[str, Any]:
    """What the statistics say of dynamic batching: requests (``inference_count``: one per crop
    row, i.e. batch entries), executions, and executions per batch size."""
    sizes = {
        int(entry["batch_size"]): int(entry["compute_infer"]["count"])
        for entry in statistics.get("batch_stats", [])
    }
    return {
        "requests": int(statistics["inference_stats"]["success"].get("count", 0)),
        "inferences": int(statistics.get("inference_count", 0)),
        "executions": int(statistics.get("execution_count", 0)),
        "batch_sizes": dict(sorted(sizes.items())),
    }
