"""Call edgekit models on a Triton server with the in-process calls (needs tritonclient, the [serve] extra).

    client = Client("127.0.0.1:8001", protocol="grpc")          # or "127.0.0.1:8000", protocol="http"
    client.classify("cnn", "cat.png", top_k=3)                    # -> [Prediction(label, score, index)]
    client.generate("gpt", "Once upon a time", max_new_tokens=16) # -> str; options as in Generator.generate
    client.generate("llava", "<image> what is it?", images=["cat.jpg"])  # a vision-language artifact
    for piece in client.stream("gpt", "Once", max_new_tokens=16): # gRPC: the NAME_stream model, piece by piece
        print(piece, end="")
    client.recognize("asr", "speech.wav")                         # -> Transcript(text, segments, language)
    for u in client.recognize_stream("asr", "speech.wav", chunk_s=0.5):  # gRPC: NAME_stream -> StreamUpdate
        print(u.text_final, "~", u.text_partial)

Any KServe v2 client works the same way (tensors per task: edgekit/serving/config.py); this one
builds those tensors. A request the server refuses raises InputError with the server's message.
"""
from __future__ import annotations

import json
import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendUnavailableError, InputError
from edgekit.results import Prediction, Segment, StreamUpdate, Transcript
from edgekit.serving.config import STREAM_SUFFIX


class Client:
    """A connection to one Triton server over HTTP or gRPC."""

    def __init__(self, url: str, protocol: str = "http", timeout: float = 300.0) -> None:
        if protocol == "http":
            import tritonclient.http as tc

            self.tc: Any = tc
            self.conn = tc.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
        elif protocol == "grpc":
            import tritonclient.grpc as tc

            self.tc = tc
            self.conn = tc.InferenceServerClient(url)
        else:
            raise InputError("protocol must be 'http' or 'grpc'", found=repr(protocol))
        self.protocol, self.timeout = protocol, timeout
        self._inputs: dict[str, set[str]] = {}

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- tasks

    def classify(self, model: str, inputs: Any, top_k: int = 5) -> list[Prediction] | list[list[Prediction]]:
        """Images (paths, encoded bytes, HxWxC uint8 arrays), texts or tensors; one or a list, like Classifier."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        names = self._input_names(model)
        first = items[0] if items else None
        if "TEXT" in names:
            tensor = self._tensor("TEXT", np.array([[str(t).encode()] for t in items], dtype=np.object_))
        elif "TENSOR" in names:
            tensor = self._tensor("TENSOR", np.stack([np.asarray(x) for x in items]))
        elif isinstance(first, np.ndarray):
            tensor = self._tensor("PIXELS", np.stack(items).astype(np.uint8, copy=False))
        else:
            data = [Path(x).read_bytes() if isinstance(x, (str, os.PathLike)) else bytes(x) for x in items]
            tensor = self._tensor("IMAGE", np.array([[d] for d in data], dtype=np.object_))
        k = self._tensor("TOP_K", np.full((len(items), 1), top_k, np.int32))
        out = self._infer(model, [tensor, k])
        labels, scores, idx = out["LABELS"], out["SCORES"], out["INDICES"]
        ranked = [[Prediction(lab.decode(), float(s), int(i)) for lab, s, i in zip(*row)]
                  for row in zip(labels, scores, idx)]
        return ranked[0] if single else ranked

    def generate(self, model: str, prompt: str | None = None, *, input_ids: np.ndarray | None = None,
                 images: list[Any] | None = None, **options: Any) -> Any:
        """Generate with the Generator's keyword options; str in -> str out, input_ids in -> ids out.

        `images`: the prompt's images in order (a vision-language artifact), as paths or encoded bytes
        (sent as IMAGE) or as HxWxC uint8 arrays of one size (sent as PIXELS).
        """
        out = self._infer(model, self._generate_inputs(prompt, input_ids, options, images))
        if "OUTPUT_IDS" in out:
            return out["OUTPUT_IDS"][None]
        return out["TEXT"].reshape(-1)[0].decode()

    def stream(self, model: str, prompt: str | None = None, *, input_ids: np.ndarray | None = None,
               images: list[Any] | None = None, stop_after: int | None = None, **options: Any) -> Iterator[str]:
        """Pieces of text from the model's NAME_stream twin as they are generated (gRPC only).

        `stop_after=N` ends the stream after N pieces and cancels the request on the server.
        """
        tensors = self._generate_inputs(prompt, input_ids, options, images)
        for r in self._responses(model, tensors, stop_after):
            text = r.as_numpy("TEXT")
            if text is not None:
                yield text.reshape(-1)[0].decode()

    def recognize_stream(self, model: str, audio: Any, sample_rate: int | None = None, chunk_s: float = 0.5,
                         **options: Any) -> Iterator[StreamUpdate]:
        """Stream a clip through the model's NAME_stream twin (gRPC only): the server feeds it to
        recognize_stream in `chunk_s` pieces and answers each with a StreamUpdate, as in process.

        `audio` as for `recognize`; `options` are recognize_stream's (lookahead_s, step_s, ...).
        """
        tensors = self._audio_inputs(audio, sample_rate, {**options, "chunk_s": chunk_s})
        for r in self._responses(model, tensors, None):
            if r.as_numpy("TEXT") is None:
                continue
            words = tuple(Segment(w["text"], w["start"], w["end"]) for w in json.loads(_one(r, "WORDS")))
            yield StreamUpdate(_one(r, "TEXT"), _one(r, "PARTIAL"), words, float(r.as_numpy("AUDIO_S")[0]),
                               bool(r.as_numpy("IS_FINAL")[0]))

    def _responses(self, model: str, tensors: list[Any], stop_after: int | None) -> Iterator[Any]:
        """The responses of one request to the model's NAME_stream twin over a gRPC stream, until its
        final flag; `stop_after=N` ends after N responses and cancels the request on the server."""
        if self.protocol != "grpc":
            raise InputError("streaming needs the gRPC protocol", fix="Client(url, protocol='grpc')")
        pieces: queue.Queue[Any] = queue.Queue()
        self.conn.start_stream(callback=lambda result, error: pieces.put(error or result),
                               stream_timeout=self.timeout)
        done = False
        try:
            self.conn.async_stream_infer(model + STREAM_SUFFIX, tensors, enable_empty_final_response=True)
            got = 0
            while True:
                item = pieces.get(timeout=self.timeout)
                if isinstance(item, Exception):
                    raise _error(item)
                if item.get_response().parameters.get("triton_final_response", None) and \
                        item.get_response().parameters["triton_final_response"].bool_param:
                    done = True
                    return
                yield item
                got += 1
                if stop_after is not None and got >= stop_after:
                    return
        finally:
            self.conn.stop_stream(cancel_requests=not done)

    def recognize(self, model: str, audio: Any, sample_rate: int | None = None, **options: Any) -> Transcript:
        """A path or encoded audio bytes (the file's own rate), or a float32 waveform + sample_rate."""
        out = self._infer(model, self._audio_inputs(audio, sample_rate, options))
        segments = [Segment(s["text"], s["start"], s["end"]) for s in json.loads(out["SEGMENTS"].reshape(-1)[0])]
        language = out["LANGUAGE"].reshape(-1)[0].decode() or None
        return Transcript(out["TEXT"].reshape(-1)[0].decode(), segments, language)

    # ---------------------------------------------------------------- tensors

    def _audio_inputs(self, audio: Any, sample_rate: int | None, options: dict[str, Any]) -> list[Any]:
        if isinstance(audio, np.ndarray):
            tensors = [self._tensor("PCM", np.asarray(audio, np.float32).reshape(-1))]
            if sample_rate is not None:
                tensors.append(self._tensor("SAMPLE_RATE", np.array([sample_rate], np.int32)))
        else:
            data = Path(audio).read_bytes() if isinstance(audio, (str, os.PathLike)) else bytes(audio)
            tensors = [self._tensor("AUDIO", np.array([data], dtype=np.object_))]
        if options:
            tensors.append(self._tensor("OPTIONS", np.array([json.dumps(options).encode()], dtype=np.object_)))
        return tensors

    def _generate_inputs(self, prompt: str | None, input_ids: np.ndarray | None, options: dict[str, Any],
                         images: list[Any] | None = None) -> list[Any]:
        tensors = [] if images is None else [self._images(images)]
        if prompt is not None:
            tensors.append(self._tensor("PROMPT", np.array([prompt.encode()], dtype=np.object_)))
        if input_ids is not None:
            tensors.append(self._tensor("INPUT_IDS", np.asarray(input_ids, np.int64).reshape(-1)))
        if options:
            tensors.append(self._tensor("OPTIONS", np.array([json.dumps(options).encode()], dtype=np.object_)))
        return tensors

    def _images(self, images: list[Any]) -> Any:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        arrays = [isinstance(x, np.ndarray) for x in items]
        if items and all(arrays):
            if len({x.shape for x in items}) != 1:
                raise InputError("image arrays travel as one PIXELS tensor, so they must have one size",
                                 found=", ".join(str(list(x.shape)) for x in items),
                                 fix="send encoded files (paths or bytes) for images of different sizes")
            return self._tensor("PIXELS", np.stack(items).astype(np.uint8, copy=False))
        if any(arrays):
            raise InputError("images= takes arrays or files (paths, encoded bytes), not both in one request",
                             fix="send every image as a path or bytes, or every image as an HxWxC uint8 array")
        data = [Path(x).read_bytes() if isinstance(x, (str, os.PathLike)) else bytes(x) for x in items]
        return self._tensor("IMAGE", np.array(data, dtype=np.object_))

    def _tensor(self, name: str, value: np.ndarray) -> Any:
        from tritonclient.utils import np_to_triton_dtype

        t = self.tc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        t.set_data_from_numpy(value)
        return t

    def _infer(self, model: str, tensors: list[Any]) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        try:
            if self.protocol == "grpc":
                r = self.conn.infer(model, tensors, client_timeout=self.timeout)
            else:
                r = self.conn.infer(model, tensors)
        except InferenceServerException as e:
            raise _error(e) from None
        outputs = r.get_response().outputs if self.protocol == "grpc" else r.get_response()["outputs"]
        names = [o.name if self.protocol == "grpc" else o["name"] for o in outputs]
        return {n: r.as_numpy(n) for n in names}

    def _input_names(self, model: str) -> set[str]:
        if model not in self._inputs:
            meta = self.conn.get_model_metadata(model)
            inputs = meta.inputs if self.protocol == "grpc" else meta["inputs"]
            self._inputs[model] = {i.name if self.protocol == "grpc" else i["name"] for i in inputs}
        return self._inputs[model]


def _one(result: Any, name: str) -> str:
    return str(result.as_numpy(name).reshape(-1)[0].decode())


def _error(e: Any) -> Exception:
    """A server error -> InputError for what the client sent, else BackendUnavailableError.

    Unary calls carry the status (HTTP 4xx, gRPC INVALID_ARGUMENT); a gRPC stream's error response
    carries only the message, so there the backend's own prefix for its failures tells them apart.
    """
    status, message = str(e.status() or ""), e.message() if hasattr(e, "message") else str(e)
    refused = status.startswith("4") or "INVALID_ARGUMENT" in status
    if refused or (not status and not message.startswith("edgekit: internal error")):
        return InputError(f"the server refused the request: {message}")
    return BackendUnavailableError(f"the server failed the request: {message}", found=status or None)
