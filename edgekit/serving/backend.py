"""The Triton Python-backend model serving one edgekit artifact (each REPO/NAME/1/model.py imports it).

It runs inside Triton's stub process, one per model instance: `initialize` loads the artifact named
by the EDGEKIT_ARTIFACT parameter with `edgekit.load`, `execute` turns requests into task calls
(serving/handlers.py). An EdgekitError becomes that request's error with Triton's INVALID_ARG code
(HTTP 400, gRPC INVALID_ARGUMENT) and edgekit's message; the other requests and the server go on.

The decoupled NAME_stream model answers each request from a thread of its own, one response per
streamed piece (generate's text, recognize's StreamUpdate), so one instance streams to several
clients at once (EDGEKIT_STREAMS). A client that goes away (a cancelled gRPC stream) is seen between
two pieces: the generation is closed there, which frees its cache, and the model logs how far it got.
"""
from __future__ import annotations

import json
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError


class TritonPythonModel:
    """The class Triton's Python backend looks for in model.py."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb  # exists only inside Triton's stub

        self.pb = pb
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(params["EDGEKIT_ARTIFACT"])
        if not path.is_absolute():
            path = Path(args["model_repository"]) / path
        import edgekit
        from edgekit.serving.handlers import handler_for

        self.plain = params.get("EDGEKIT_PLAIN_MODEL")
        # With a plain NAME_model running the graph, this model only pre- and post-processes: on the CPU.
        self.model = edgekit.load(path, device="cpu" if self.plain else params.get("EDGEKIT_DEVICE", "auto"),
                                  threads=int(params.get("EDGEKIT_THREADS", "0")) or None)  # 0: all cores
        self.handler = handler_for(self.model)
        if self.plain:
            from edgekit.serving.handlers import ClassifyHandler

            self.handler = ClassifyHandler(self.model, forward=self._plain_forward)
        self.name = args["model_name"]
        self.pool: ThreadPoolExecutor | None = None
        if pb.using_decoupled_model_transaction_policy(config):
            self.pool = ThreadPoolExecutor(int(params.get("EDGEKIT_STREAMS", "8")), thread_name_prefix="edgekit-stream")
        pb.Logger.log_info(f"edgekit: {self.name} serves {path} ({self.model.manifest.task}) on {self.model.device}")

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if self.pool is not None:
            for r in requests:
                self.pool.submit(self._stream, r)
            return None
        inputs = [self._inputs(r) for r in requests]
        try:
            results = self.handler.run_batch(inputs)
        except Exception as e:  # a bug, not the client's doing: every request of the batch fails with it
            results = [self._internal(e)] * len(requests)
        return [self._response(r) for r in results]

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.model.close()

    def _plain_forward(self, feeds: dict[str, Any]) -> Any:
        """The graph run by Triton's NAME_model (onnxruntime_onnx / tensorrt_plan), through BLS."""
        import numpy as np

        pb, output = self.pb, self.model.contract.output
        request = pb.InferenceRequest(model_name=self.plain, requested_output_names=[output],
                                      inputs=[pb.Tensor(n, np.ascontiguousarray(v)) for n, v in feeds.items()])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.plain} failed: {response.error().message()}")
        return np.asarray(pb.get_output_tensor_by_name(response, output).as_numpy(), np.float32)

    # ---------------------------------------------------------------- tensors and errors

    def _inputs(self, request: Any) -> dict[str, Any]:
        return {t.name(): t.as_numpy() for t in request.inputs()}

    def _response(self, result: Any) -> Any:
        pb = self.pb
        if isinstance(result, EdgekitError):
            return pb.InferenceResponse(error=pb.TritonError(str(result), pb.TritonError.INVALID_ARG))
        if isinstance(result, Exception):
            return pb.InferenceResponse(error=pb.TritonError(str(result), pb.TritonError.INTERNAL))
        return pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in result.items()])

    def _internal(self, e: Exception) -> Exception:
        self.pb.Logger.log_error(f"edgekit: {self.name} failed: {''.join(traceback.format_exception(e))}")
        return RuntimeError(f"edgekit: internal error in {self.name}: {type(e).__name__}: {e}")

    # ---------------------------------------------------------------- streaming (decoupled)

    def _stream(self, request: Any) -> None:
        pb = self.pb
        sender = request.get_response_sender()
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        pieces = 0
        try:
            gen = self.handler.stream(self._inputs(request))
            try:
                for out in gen:
                    if sender.is_cancelled():
                        pb.Logger.log_info(f"edgekit: {self.name}: the client cancelled the stream after "
                                           f"{pieces} pieces; generation stopped")
                        cancelled = pb.TritonError("the client cancelled the request", pb.TritonError.CANCELLED)
                        sender.send(pb.InferenceResponse(error=cancelled), flags=final)  # releases the request
                        return
                    sender.send(self._response(out))
                    pieces += 1
            finally:
                gen.close()  # ends the decode loop early if it did not finish: its cache is freed
            sender.send(flags=final)
        except EdgekitError as e:
            sender.send(self._response(e), flags=final)
        except Exception as e:
            sender.send(self._response(self._internal(e)), flags=final)
