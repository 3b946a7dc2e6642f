"""classify: output conventions recorded (not assumed), calibration in any natural form, end-to-end parity.

The double-softmax case: a plain module ending in softmax (a Keras-style face/not-face CNN) used to
have `classify()` report softmax(probabilities) - 0.99 came back as 0.73.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.errors import ConfigError, InputError


def _cnn(head: nn.Module | None) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]
    net = nn.Sequential(*layers, *([head] if head is not None else []))
    with torch.no_grad():
        net[3].weight.mul_(40)  # confident: a 0.99 score, as a trained face detector gives
    return net.eval()


def _pixels(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(n)]


def _source_scores(net: nn.Module, clf: Any, images: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(clf.prepare(images)["pixel_values"])).numpy()


@pytest.mark.parametrize(("head", "recorded"), [(nn.Softmax(dim=1), "probabilities"),
                                                (nn.LogSoftmax(dim=1), "log_probabilities"),
                                                (nn.Sigmoid(), "probabilities"), (None, "softmax")])
def test_scores_are_what_the_model_outputs(tmp_path: Path, head: nn.Module | None, recorded: str) -> None:
    net = _cnn(head)
    edgekit.convert(net, tmp_path / "m", example_inputs=torch.rand(1, 3, 12, 12), labels=["face", "not face"])
    clf = edgekit.load(tmp_path / "m", device="cpu")
    assert clf.contract.scores == recorded
    images = _pixels()
    raw = _source_scores(net, clf, images)
    want = {"probabilities": raw, "log_probabilities": np.exp(raw),
            "softmax": np.exp(raw) / np.exp(raw).sum(1, keepdims=True)}[recorded]
    for preds, row in zip(clf.classify(images, top_k=2), want):
        for p in preds:
            assert abs(p.score - row[p.index]) < 1e-5
    assert clf.manifest.parity.end_to_end.scores_max_abs < 1e-5


def test_scores_override_at_convert(tmp_path: Path) -> None:
    net = _cnn(None)
    edgekit.convert(net, tmp_path / "m", example_inputs=torch.rand(1, 3, 12, 12), labels=["a", "b"], scores="sigmoid")
    clf = edgekit.load(tmp_path / "m", device="cpu")
    raw = _source_scores(net, clf, _pixels(1))[0]
    got = {p.index: p.score for p in clf.classify(_pixels(1)[0], top_k=2)}
    np.testing.assert_allclose([got[0], got[1]], 1 / (1 + np.exp(-raw)), atol=1e-5)
    with pytest.raises(ConfigError, match="unknown scores"):
        edgekit.convert(net, tmp_path / "bad", example_inputs=torch.rand(1, 3, 12, 12), labels=["a", "b"], scores="odds")


def test_hf_multi_label_folders_score_with_sigmoid(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=3, problem_type="multi_label_classification")
    ViTForImageClassification(cfg).eval().save_pretrained(tmp_path / "hf")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "hf")
    edgekit.convert(tmp_path / "hf", tmp_path / "m")
    clf = edgekit.load(tmp_path / "m", device="cpu")
    assert clf.contract.scores == "sigmoid"
    scores = [p.score for p in clf.classify(_pixels(1)[0], top_k=3)]
    assert abs(sum(scores) - 1.0) > 1e-3  # independent labels, not a distribution


CALIBRATION_FORMS = {
    "float tensors with batch axis": lambda: [torch.rand(2, 3, 12, 12) for _ in range(3)],
    "float tensors without batch axis": lambda: [torch.rand(3, 12, 12) for _ in range(5)],
    "one numpy batch": lambda: np.random.default_rng(0).random((6, 3, 12, 12), dtype=np.float32),
    "DataLoader of (x, y)": lambda: torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.rand(10, 3, 12, 12), torch.zeros(10, dtype=torch.long)), batch_size=4),
    "PIL images": lambda: [__import__("PIL.Image").Image.fromarray(p) for p in _pixels(3)],
    "uint8 arrays": lambda: _pixels(3),
    "uint8 batch of pictures": lambda: np.stack(_pixels(3)),
}


@pytest.mark.parametrize("form", sorted(CALIBRATION_FORMS))
def test_calibration_in_any_natural_form(tmp_path: Path, form: str) -> None:
    """int8 static quantization reads each form (the issue: `[torch.rand(1, 3, 32, 32), ...]` was refused)."""
    from edgekit.converters.calibration import read_classify

    read = read_classify(CALIBRATION_FORMS[form](), _image_input(), "pixel_values", (3, 12, 12), "float32",
                         lambda t: {})
    assert read.feeds and all(f["pixel_values"].shape[1:] == (3, 12, 12) for f in read.feeds)
    assert all(f["pixel_values"].dtype == np.float32 for f in read.feeds)


def test_calibration_tensors_reach_the_int8_convert(tmp_path: Path) -> None:
    net = _cnn(None)
    art = edgekit.convert(net, tmp_path / "m8", example_inputs=torch.rand(1, 3, 12, 12), labels=["a", "b"],
                          precision="int8", calibration=[torch.rand(1, 3, 12, 12) for _ in range(8)], strict=False)
    assert art.manifest.precision.produced == "int8"


def test_calibration_of_the_wrong_shape_names_the_expected_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"shape \[3, 12, 12\]"):
        edgekit.convert(_cnn(None), tmp_path / "m", example_inputs=torch.rand(1, 3, 12, 12), labels=["a", "b"],
                        precision="int8", calibration=[torch.rand(1, 3, 32, 32)])


def _image_input() -> Any:
    from edgekit.converters.specs.classify import image_input

    return image_input(3, (12, 12), {})


def test_edgekit_parity_reports_the_preprocessing_line(tmp_path: Path) -> None:
    """`edgekit parity` against an HF folder: raw photos through both pipelines, pre-processing on its own line."""
    from click.testing import CliRunner
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    from edgekit.cli import cli

    torch.manual_seed(0)
    cfg = ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3, image_size=32)
    ConvNextForImageClassification(cfg).eval().save_pretrained(tmp_path / "hf")
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path / "hf")  # crop_pct 0.875
    edgekit.convert(tmp_path / "hf", tmp_path / "m")
    out = CliRunner().invoke(cli, ["parity", str(tmp_path / "m"), "--against", str(tmp_path / "hf")])
    assert out.exit_code == 0, out.output
    assert "pre-processing: max abs difference 0" in out.output and "end to end: 6 raw inputs" in out.output
