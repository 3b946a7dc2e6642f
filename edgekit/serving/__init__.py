"""Serving edgekit artifacts at scale on NVIDIA Triton Inference Server (KServe v2 HTTP/gRPC).

    server = edgekit.serve(["models/cnn", "models/gpt"], http_port=8000, grpc_port=8001)
    ...                                  # clients: tritonclient, or edgekit.serving.client.Client
    server.stop()

`edgekit serve` / `edgekit.serve` run the tritonserver bundled with nvidia-pytriton (the [serve]
extra); `edgekit export triton` / `export_repository` write a model repository that the same
server, or NVIDIA's Triton container, serves. Per task tensors: serving/config.py. Nothing here is
imported by `import edgekit`, `edgekit.load` or a task call.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from edgekit.serving.config import ServeOptions, TritonModel
from edgekit.serving.repository import export_repository
from edgekit.serving.server import Server
from edgekit.serving.server import serve as _serve

__all__ = ["serve", "export_repository", "Server", "ServeOptions", "TritonModel"]


def serve(artifacts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
          names: Sequence[str] | None = None, http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
          address: str = "127.0.0.1", max_batch: int = 8, batch_delay_us: int = 1000, instances: int = 1,
          device: str = "auto", threads: int = 0, streams: int = 8, log: str | os.PathLike[str] | None = None,
          ready_timeout: float = 300.0) -> Server:
    """Serve artifacts on the bundled Triton; returns once every model is ready.

    Each artifact is a model named after its folder (or `names`, in order); a generate artifact also
    gets NAME_stream, its decoupled twin for token streaming over gRPC (a CTC or Whisper
    artifact one for recognize_stream). `max_batch` and
    `batch_delay_us` set classify's dynamic batching (max_batch=1: batch-1 serving), `instances`
    the copies of each model, `device` edgekit.load's device in the server, `threads` onnxruntime's
    threads per instance (0: all cores), `streams` the generations one stream instance runs at once.
    `address="0.0.0.0"` listens beyond this machine. Stop it with `server.stop()` or a `with` block.
    """
    opts = ServeOptions(max_batch=max_batch, batch_delay_us=batch_delay_us, instances=instances, device=device,
                        threads=threads, streams=streams)
    return _serve(artifacts, names=names, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                  address=address, options=opts, log=log, ready_timeout=ready_timeout)
