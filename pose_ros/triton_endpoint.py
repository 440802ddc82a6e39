"""Where a Triton Inference Server listens, and the defaults of ``engine: triton``, without
PyTorch (the node's parameter checks use them; :mod:`pose_ros.triton` has the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_PORTS",
    "DEFAULT_TIMEOUT_MS",
    "DEFAULT_URL",
    "TritonEndpoint",
    "parse_triton_url",
]

#: The model name ``pose-ros-export --triton-repository`` gives the pose network by default.
DEFAULT_MODEL_NAME: Final[str] = "pose"
DEFAULT_URL: Final[str] = "grpc://localhost:8001"
DEFAULT_TIMEOUT_MS: Final[int] = 1000
#: Triton's own ports: gRPC 8001, HTTP 8000.
DEFAULT_PORTS: Final[dict[str, int]] = {"grpc": 8001, "http": 8000}


@dataclass(frozen=True)
class TritonEndpoint:
    """Where a Triton server listens: ``protocol`` "grpc" or "http", ``address`` host:port."""

    protocol: str
    address: str

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.address}"


def parse_triton_url(url: str) -> TritonEndpoint:
    """``grpc://host:port``, ``http://host:port`` or ``host:port`` (gRPC); the port defaults to
    Triton's (8001 gRPC, 8000 HTTP).

    Raises:
        ValueError: another scheme, no host, a path, or a port that is not a number.
    """
    text = str(url).strip()
    if not text:
        raise ValueError("triton.url must not be empty (e.g. grpc://gpu-server:8001)")
    if "://" not in text:
        text = "grpc://" + text
    parts = urlsplit(text)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"triton.url {url!r}: the scheme must be grpc:// or http://, got {parts.scheme!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"triton.url {url!r}: give only scheme, host and port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"triton.url {url!r}: the port is not a number in 1..65535") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"triton.url {url!r} names no host (e.g. grpc://gpu-server:8001)")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return TritonEndpoint(parts.scheme, f"{host}:{port or DEFAULT_PORTS[parts.scheme]}")
