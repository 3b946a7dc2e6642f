"""Bad input to classify, convert and load: a clear edgekit error every time, nothing lost."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classify_models import LABELS, cnn_artifact, example_input, trained_cnn

import edgekit
from edgekit.errors import (
    ArtifactError, ArtifactVersionError, ChecksumError, ConfigError, ExportError, InputError, OutputExistsError,
)


@pytest.fixture(scope="module")
def clf(session_dir: Path):  # type: ignore[no-untyped-def]
    return edgekit.load(cnn_artifact(session_dir, "cifar", "fp32"), device="cpu")


def test_wrong_image_files(clf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "cat.png"
    fake.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        clf.classify(fake)
    with pytest.raises(InputError, match="no image file"):
        clf.classify(str(tmp_path / "missing.jpg"))
    with pytest.raises(InputError, match="uint8"):
        clf.classify(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError, match="HxW"):
        clf.classify(np.zeros((32, 32, 5), np.uint8))
    with pytest.raises(InputError, match="cannot take"):
        clf.classify(12345)


def test_odd_images_are_converted_not_refused(clf) -> None:  # type: ignore[no-untyped-def]
    """Grey, RGBA and odd sizes are valid pictures: converted to the recorded channels and size."""
    from PIL import Image

    grey = np.full((10, 50), 128, np.uint8)
    rgba = Image.fromarray(np.full((40, 40, 4), 200, np.uint8), "RGBA")
    out = clf.classify([grey, rgba, np.zeros((3, 300, 3), np.uint8)], top_k=2)
    assert len(out) == 3 and all(len(p) == 2 for p in out)


def test_wrong_shape_dtype_rank_in_raw_calls(clf) -> None:  # type: ignore[no-untyped-def]
    good = np.zeros((2, 3, 32, 32), np.float32)
    assert clf(pixel_values=good)["logits"].shape == (2, 10)
    with pytest.raises(InputError, match="must be float32"):
        clf(pixel_values=good.astype(np.float64))
    with pytest.raises(InputError, match="rank 4"):
        clf(pixel_values=good[0])
    with pytest.raises(InputError, match="size 3 on axis 1"):
        clf(pixel_values=np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(InputError, match="empty batch"):
        clf(pixel_values=np.zeros((0, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="do not match"):
        clf(image=good)
    with pytest.raises(InputError):  # too small for the network's valid convolutions
        clf(pixel_values=np.zeros((1, 3, 32, 8), np.float32))


def test_empty_batch_and_bad_top_k(clf) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="empty batch"):
        clf.classify([])
    with pytest.raises(InputError, match="top_k"):
        clf.classify(np.zeros((32, 32, 3), np.uint8), top_k=0)


def test_text_model_takes_strings(session_dir: Path) -> None:
    from classify_models import bert_folder

    art = session_dir / "bert-bad-input"
    if not art.exists():
        edgekit.convert(str(bert_folder(session_dir)), art)
    text = edgekit.load(art, device="cpu")
    with pytest.raises(InputError, match="strings"):
        text.classify([b"bytes"])
    with pytest.raises(InputError, match="cannot take"):
        text.classify(3.5)


def test_unknown_task_and_precision(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task 'segment'"):
        edgekit.convert(trained_cnn("mnist"), tmp_path / "t", task="segment", example_inputs=example_input("mnist"))
    with pytest.raises(ConfigError, match="unknown precision"):
        edgekit.convert(trained_cnn("mnist"), tmp_path / "t", precision="int3", labels=LABELS)
    with pytest.raises(ConfigError, match="calibration"):
        edgekit.convert(trained_cnn("mnist"), tmp_path / "t", precision="int8", labels=LABELS,
                        example_inputs=example_input("mnist"))
    assert not (tmp_path / "t").exists()


def _bessel(channels: int = 4):  # type: ignore[no-untyped-def]
    """A classifier using an op the ONNX exporter has no translation for."""
    import torch

    class Bessel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(channels, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.special.bessel_j0(x.flatten(1)[:, :channels]))

    return Bessel().eval()


def test_unexportable_source_names_the_op(tmp_path: Path) -> None:
    import torch

    with pytest.raises(ExportError, match="bessel_j0") as e:
        edgekit.convert(_bessel(), tmp_path / "b", example_inputs=torch.rand(1, 4), labels=["a", "b", "c"])
    assert "Fix:" in str(e.value)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".edgekit-tmp-*"))


def _copy(session_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(cnn_artifact(session_dir, "cifar", "fp32"), dst)
    return dst


def test_missing_or_altered_files(session_dir: Path, tmp_path: Path) -> None:
    art = _copy(session_dir, tmp_path)
    data = art / "weights.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="sha256"):
        edgekit.load(art)
    data.unlink()
    with pytest.raises(ArtifactError, match="missing 'weights.data'"):
        edgekit.load(art)
    (art / "edgekit.json").unlink()
    with pytest.raises(ArtifactError, match="not an edgekit artifact"):
        edgekit.load(art)


def test_newer_manifest_format(session_dir: Path, tmp_path: Path) -> None:
    art = _copy(session_dir, tmp_path)
    m = json.loads((art / "edgekit.json").read_text())
    m["format_version"] = 99
    (art / "edgekit.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactVersionError, match="format version 99.*upgrade edgekit"):
        edgekit.load(art)


def test_existing_output_needs_overwrite_and_failed_convert_loses_nothing(session_dir: Path, tmp_path: Path) -> None:
    art = _copy(session_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    with pytest.raises(OutputExistsError, match="already exists"):
        edgekit.convert(trained_cnn("cifar"), art, example_inputs=example_input("cifar"), labels=LABELS)
    # overwrite=True but the convert fails half-way (export): the old artifact is intact.
    with pytest.raises(ExportError):
        edgekit.convert(_bessel(), art, example_inputs=example_input("cifar"), labels=["a", "b", "c"], overwrite=True)
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before
    assert not list(tmp_path.glob(".edgekit-*"))
    assert edgekit.load(art).classify(np.zeros((32, 32, 3), np.uint8))
