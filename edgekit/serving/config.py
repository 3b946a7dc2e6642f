"""Triton model configurations (`config.pbtxt`) for edgekit artifacts: one layout of tensors per task.

Every model is a Python-backend model whose `model.py` is `edgekit.serving.backend`. Strings and
encoded files travel as TYPE_STRING (KServe v2 "BYTES") tensors; options are one JSON object.

| task      | inputs (optional unless said)                              | outputs                             |
|-----------|------------------------------------------------------------|-------------------------------------|
| classify  | IMAGE (encoded bytes) or PIXELS (HxWxC uint8) / TEXT /      | LABELS, SCORES, INDICES (top-k)     |
|           | TENSOR (one sample), TOP_K; batched rows, dynamic batching |                                     |
| generate  | PROMPT or INPUT_IDS, OPTIONS (generate keywords, JSON)      | TEXT (+ OUTPUT_IDS for INPUT_IDS)   |
|           | + vision-language: IMAGE [N] (encoded files) or PIXELS      |                                     |
|           | [N,H,W,C] uint8, the prompt's images in order               |                                     |
| NAME_stream (decoupled): same inputs, one response per streamed piece of TEXT, over gRPC streams |
| recognize | AUDIO (file bytes) or PCM (float32) + SAMPLE_RATE, OPTIONS  | TEXT, SEGMENTS (JSON), LANGUAGE     |
| NAME_stream (decoupled, CTC and Whisper): same inputs, the clip fed to recognize_stream in CHUNK_S   |
|           | pieces (OPTIONS "chunk_s"); one response per StreamUpdate   | TEXT (final), PARTIAL, WORDS (JSON),|
|           |                                                             | AUDIO_S, IS_FINAL                   |
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgekit.artifact import Artifact
from edgekit.contract.base import TensorSpec
from edgekit.contract.classify import ClassifySection, ImageInput, TextInput
from edgekit.contract.generate import GenerateSection
from edgekit.contract.recognize import CtcSection, WhisperSection
from edgekit.errors import ConfigError, UnsupportedError

_TRITON_DTYPE = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int8": "TYPE_INT8",
                 "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "uint16": "TYPE_UINT16", "int32": "TYPE_INT32",
                 "uint32": "TYPE_UINT32", "int64": "TYPE_INT64", "uint64": "TYPE_UINT64", "bool": "TYPE_BOOL"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
STREAM_SUFFIX = "_stream"


@dataclass(frozen=True)
class ServeOptions:
    """How each model is served; the CLI's options of `edgekit serve` and `edgekit export triton`."""

    max_batch: int = 8  # classify: requests' rows Triton batches together; 1 = batch-1 serving
    batch_delay_us: int = 1000  # classify: how long the dynamic batcher waits to fill a batch
    instances: int = 1  # copies of each model (each its own stub process and loaded artifact)
    device: str = "auto"  # edgekit.load's device inside the stub
    threads: int = 0  # onnxruntime threads per instance (the EDGEKIT_THREADS parameter); 0 = all cores
    streams: int = 8  # generate: streamed generations one instance runs at once

    def __post_init__(self) -> None:
        for name in ("max_batch", "instances", "streams"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1", found=str(getattr(self, name)))
        if self.batch_delay_us < 0 or self.threads < 0:
            raise ConfigError("batch_delay_us and threads must not be negative",
                              found=f"{self.batch_delay_us}, {self.threads}")


@dataclass(frozen=True)
class TritonModel:
    """One Triton model: its name, the artifact it serves (a path as config.pbtxt records it), its role."""

    name: str
    artifact: str  # absolute, or relative to the model's folder
    task: str
    stream: bool = False  # the decoupled twin of a generate or streaming recognize model
    plain: str | None = None  # classify: the Triton model (NAME_model) that runs the graph, called by BLS

    def config(self, art: Artifact, opts: ServeOptions, env: str | None) -> str:
        """The config.pbtxt text."""
        if self.task == "classify":
            assert isinstance(art.manifest.contract, ClassifySection)
            inputs, outputs, batch = _classify_io(art), _classify_out(), opts.max_batch
        elif self.task == "generate":
            inputs = [_in("PROMPT", "TYPE_STRING", [1]), _in("INPUT_IDS", "TYPE_INT64", [-1]),
                      _in("OPTIONS", "TYPE_STRING", [1])]
            if isinstance(art.manifest.contract, GenerateSection) and art.manifest.contract.vision is not None:
                inputs += [_in("IMAGE", "TYPE_STRING", [-1]), _in("PIXELS", "TYPE_UINT8", [-1, -1, -1, -1])]
            outputs = [_out("TEXT", "TYPE_STRING", [1])] + ([] if self.stream else [_out("OUTPUT_IDS", "TYPE_INT64", [-1])])
            batch = 0
        elif self.task == "recognize":
            inputs = [_in("AUDIO", "TYPE_STRING", [1]), _in("PCM", "TYPE_FP32", [-1]),
                      _in("SAMPLE_RATE", "TYPE_INT32", [1]), _in("OPTIONS", "TYPE_STRING", [1])]
            outputs = [_out("TEXT", "TYPE_STRING", [1]), _out("SEGMENTS", "TYPE_STRING", [1]),
                       _out("LANGUAGE", "TYPE_STRING", [1])]
            if self.stream:
                outputs = [_out("TEXT", "TYPE_STRING", [1]), _out("PARTIAL", "TYPE_STRING", [1]),
                           _out("WORDS", "TYPE_STRING", [1]), _out("AUDIO_S", "TYPE_FP32", [1]),
                           _out("IS_FINAL", "TYPE_BOOL", [1])]
            batch = 0
        else:
            raise UnsupportedError(f"serving has no tensor layout for task '{self.task}'")
        params = {"EDGEKIT_ARTIFACT": self.artifact, "EDGEKIT_DEVICE": opts.device,
                  "EDGEKIT_THREADS": str(opts.threads), "EDGEKIT_STREAMS": str(opts.streams)}
        if env is not None:
            params["EXECUTION_ENV_PATH"] = env
        if self.plain is not None:
            params["EDGEKIT_PLAIN_MODEL"] = self.plain
        lines = [f'name: "{self.name}"', 'backend: "python"', f"max_batch_size: {batch}"]
        if self.task == "classify" and batch > 1:
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {opts.batch_delay_us} }}")
        if self.stream:
            lines.append("model_transaction_policy { decoupled: true }")
        lines += [f"input [\n{','.join(inputs)}\n]", f"output [\n{','.join(outputs)}\n]",
                  f"instance_group [ {{ kind: KIND_CPU count: {opts.instances} }} ]"]
        lines += [f'parameters: {{ key: "{k}" value: {{ string_value: "{_quote(v)}" }} }}' for k, v in params.items()]
        return "\n".join(lines) + "\n"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith(STREAM_SUFFIX):
        raise ConfigError(f"'{name}' cannot name a Triton model",
                          fix=f"use letters, digits, '_', '.', '-' (not ending in '{STREAM_SUFFIX}'), e.g. --name cnn")
    return name


def models_for(name: str, art: Artifact, artifact: str, stream_artifact: str) -> list[TritonModel]:
    """The Triton models serving one artifact: generate, and recognize where it streams (CTC, Whisper),
    get a decoupled NAME_stream twin for streaming (Triton refuses decoupled models on plain HTTP
    infer, so NAME stays a request/response model)."""
    task = art.manifest.task
    models = [TritonModel(check_name(name), artifact, task)]
    if task == "generate" or isinstance(art.manifest.contract, (CtcSection, WhisperSection)):
        models.append(TritonModel(name + STREAM_SUFFIX, stream_artifact, task, stream=True))
    return models


def _in(name: str, dtype: str, dims: list[int]) -> str:
    # Every input is optional: the backend checks which combination a request carries, in edgekit's words.
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ] optional: true }}'


def _out(name: str, dtype: str, dims: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ] }}'


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _classify_io(art: Artifact) -> list[str]:
    c = art.manifest.contract
    assert isinstance(c, ClassifySection)
    top_k = _in("TOP_K", "TYPE_INT32", [1])
    if isinstance(c.input, ImageInput):
        return [_in("IMAGE", "TYPE_STRING", [1]), _in("PIXELS", "TYPE_UINT8", [-1, -1, -1]), top_k]
    if isinstance(c.input, TextInput):
        return [_in("TEXT", "TYPE_STRING", [1]), top_k]
    spec = _graph_input(art, c.input.name)
    if spec.dtype not in _TRITON_DTYPE:
        raise UnsupportedError(f"Triton has no data type for the input dtype '{spec.dtype}'", found=spec.name)
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1:]]
    return [_in("TENSOR", _TRITON_DTYPE[spec.dtype], dims or [1]), top_k]


def _classify_out() -> list[str]:
    return [_out("LABELS", "TYPE_STRING", [-1]), _out("SCORES", "TYPE_FP32", [-1]), _out("INDICES", "TYPE_INT32", [-1])]


def _graph_input(art: Artifact, name: str) -> TensorSpec:
    for t in art.manifest.graphs["model"].inputs:
        if t.name == name:
            return t
    raise UnsupportedError(f"the artifact's graph has no input '{name}'", found=str(art.path))
