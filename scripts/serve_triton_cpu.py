"""Serve the ONNX models of a Triton model repository with Triton's own server on a machine
without GPU, on loopback only: the tests and the benchmarks of ``engine: triton``.

Triton's server binary comes from the ``nvidia-pytriton`` wheel, which ships it with the Python
backend only (no ONNX Runtime backend): each model directory with ``config.pbtxt`` and
``1/model.onnx`` is bound as a Python function that runs that ONNX file with ONNX Runtime, under
the inputs, outputs, ``max_batch_size`` and dynamic-batching delay of its ``config.pbtxt`` (read
with Triton's own model-config protobuf). Clients see the same gRPC/HTTP API, model names,
tensors and batching as on a GPU server running the repository (docs/triton.md).

Runs in its own environment (pytriton needs numpy < 2; see requirements-triton-server.txt)::

    .venv/triton-server/bin/python scripts/serve_triton_cpu.py --repository triton_models \
        --grpc-port 8001 --http-port 8000 --metrics-port 8002

It prints ``serving: <names>`` once the models are ready, and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"


def _with_own_libpython() -> None:
    """Re-execute with this interpreter's libpython first on the library path.

    The backend stub in the wheel links ``libpython3.X.so.1.0`` by name. Where the system has its
    own libpython of the same minor version (Debian 12: 3.11.2) and this interpreter is another
    build (pyenv 3.11.7), the stub loads the system's C library with this interpreter's standard
    library, and the model fails to load (``'_thread.RLock' object has no attribute
    '_recursion_count'``). The stub inherits the server's environment, which inherits ours.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not library or not (Path(libdir) / library).exists():
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if paths[:1] == [libdir]:
        return
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([libdir, *paths]))
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _read_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _numpy_dtype(data_type: int):
    import numpy as np
    from tritonclient.grpc import model_config_pb2

    types = {
        model_config_pb2.TYPE_UINT8: np.uint8,
        model_config_pb2.TYPE_FP32: np.float32,
        model_config_pb2.TYPE_FP16: np.float16,
        model_config_pb2.TYPE_INT64: np.int64,
        model_config_pb2.TYPE_INT32: np.int32,
    }
    if data_type not in types:
        raise ValueError(f"data type {data_type} is not served here")
    return types[data_type]


def _bind_model(triton, name: str, model_dir: Path, threads: int) -> None:
    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    config = _read_config(model_dir / "config.pbtxt")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model_dir / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    input_names = [tensor.name for tensor in config.input]
    output_names = [tensor.name for tensor in config.output]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = session.run(output_names, {key: inputs[key] for key in input_names})
        return dict(zip(output_names, outputs, strict=True))

    def tensors(specs) -> list:
        return [
            Tensor(name=t.name, dtype=_numpy_dtype(t.data_type), shape=tuple(t.dims)) for t in specs
        ]

    triton.bind(
        model_name=name,
        infer_func=infer,
        inputs=tensors(config.input),
        outputs=tensors(config.output),
        config=ModelConfig(
            max_batch_size=config.max_batch_size,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds
            ),
        ),
        strict=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    parser.add_argument(
        "--access-token",
        default=None,
        help="token of the restricted endpoints (statistics, repository); default: random",
    )
    args = parser.parse_args(argv)
    _with_own_libpython()

    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    models = sorted(
        d
        for d in args.repository.iterdir()
        if (d / "config.pbtxt").is_file() and (d / "1" / "model.onnx").is_file()
    )
    if not models:
        print(f"serve_triton_cpu: no model with 1/model.onnx in {args.repository}", file=sys.stderr)
        return 2
    config = TritonConfig(
        http_address=LOOPBACK,
        grpc_address=LOOPBACK,
        metrics_address=LOOPBACK,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_on_error=True,
    )
    security = TritonSecurityConfig(access_token=args.access_token)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Triton(config=config, security_config=security) as triton:
        for model_dir in models:
            _bind_model(triton, model_dir.name, model_dir, args.threads)
        triton.run()
        print(f"serving: {', '.join(d.name for d in models)}", flush=True)
        while not stop.wait(0.5):
            if not triton.is_alive():
                print("serve_triton_cpu: the server stopped", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
