"""A classifier's graph as Triton's own model (`--plain onnxruntime|tensorrt`), with edgekit around it.

    REPO/NAME_model/   platform onnxruntime_onnx (model.onnx) or tensorrt_plan (model.plan, the
                       artifact's engine built by `edgekit build` on the target): Triton runs the graph
    REPO/NAME/         the Python-backend model as usual, but its forward is a BLS call to NAME_model:
                       edgekit decodes and pre-processes the inputs, and ranks the logits into labels

Clients see the same NAME tensors either way; NAME_model can also be called directly with
pre-processed tensors. Needs a Triton with the onnxruntime or TensorRT backend (NVIDIA's
container); a TensorRT engine runs only under the TensorRT version and GPU it was built for.
"""
from __future__ import annotations

from pathlib import Path

from edgekit.artifact import Artifact
from edgekit.contract.classify import ClassifySection
from edgekit.errors import UnsupportedError
from edgekit.external_data import external_locations
from edgekit.serving.config import _TRITON_DTYPE, ServeOptions

PLAIN_SUFFIX = "_model"
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}


def plain_model(art: Artifact, name: str, backend: str, opts: ServeOptions) -> tuple[str, list[tuple[Path, str]]]:
    """(config.pbtxt text, [(artifact file, path in the version folder)]) of NAME_model."""
    if not isinstance(art.manifest.contract, ClassifySection):
        raise UnsupportedError(f"--plain serves classifiers only; '{name}' is a {art.manifest.task} model",
                               fix="export it without --plain (generation and recognition loop in edgekit)")
    graph = art.manifest.graphs["model"]
    if backend == "onnxruntime":
        # The graph names its weights file (weights.data, shared with other graphs) relative to itself.
        files = [(art.file(graph.file), "model.onnx")]
        files += [(art.file(loc), loc) for loc in sorted(set(external_locations(art.file(graph.file))))]
    else:
        plans = [r for r in art.manifest.engines.values() if r.graph == "model"]
        if len(plans) != 1:
            raise UnsupportedError(f"--plain tensorrt needs exactly one TensorRT engine in '{art.path}'",
                                   found=f"{len(plans)} engines",
                                   fix="run `edgekit build` on the target GPU (with the TensorRT of the Triton "
                                       "that will serve it) into a fresh copy of the artifact")
        files = [(art.file(plans[0].file), "model.plan")]
    kind = "KIND_GPU" if backend == "tensorrt" or opts.device in ("cuda", "tensorrt") else "KIND_CPU"
    tensors = []
    for direction, specs in (("input", graph.inputs), ("output", graph.outputs)):
        body = ",\n".join(f'  {{ name: "{t.name}" data_type: {_TRITON_DTYPE[t.dtype]} dims: '
                          f'[ {", ".join(str(d) if isinstance(d, int) else "-1" for d in t.shape[1:])} ] }}'
                          for t in specs)
        tensors.append(f"{direction} [\n{body}\n]")
    text = "\n".join([f'name: "{name}{PLAIN_SUFFIX}"', f'platform: "{PLATFORMS[backend]}"',
                      f"max_batch_size: {opts.max_batch}", *tensors,
                      f"instance_group [ {{ kind: {kind} count: {opts.instances} }} ]"]) + "\n"
    return text, files
