"""A plain module that takes only its own image size, converted with a pre-processing that neither
resizes nor crops: the end-to-end parity feeds it images the declared pipeline accepts (issue 17)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SIDE = 48
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
PRE = {"resize": None, "mean": MEAN, "std": STD}  # normalize only: no resize, no crop


def _fixed_size_cnn() -> object:
    """Conv layers then a Linear over the flattened 48x48 map: no adaptive pooling, so any other size fails."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 5))
    return net.eval()


def _pictures(n: int, seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> list[object]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def _torch_scores(net: object, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = net(torch.from_numpy(x)).double()  # type: ignore[operator]
    return torch.softmax(logits, -1).numpy()


@pytest.mark.parametrize("calibrated", [False, True], ids=["no-calibration", "calibration-images"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fixed_size_module_converts_and_matches(tmp_path: Path, precision: str, calibrated: bool) -> None:
    import torch

    import edgekit

    net = _fixed_size_cnn()
    with pytest.raises(RuntimeError):  # the premise: the module really takes 48x48 only
        net(torch.rand(1, 3, 45, 61))  # type: ignore[operator]
    calibration = _pictures(10, 1) if calibrated else None
    art = edgekit.convert(net, tmp_path / "m", example_inputs=torch.rand(1, 3, SIDE, SIDE), preprocess=PRE, task="classify",
                          precision=precision, calibration=calibration)
    report = art.manifest.parity
    assert report.passed, report.summary
    e2e = report.end_to_end
    assert e2e is not None and e2e.samples == (10 if calibrated else 6)

    clf = edgekit.load(tmp_path / "m", device="cpu")
    pics = _pictures(12, 2)
    x = clf.prepare(pics)["pixel_values"]
    # The declared steps only: (pixels / 255 - mean) / std, NCHW.
    arr = np.stack([np.asarray(p, np.float64) for p in pics]) / 255
    want_x = ((arr - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, want_x, atol=1e-5)
    got = clf.scores(clf.logits(pics)).astype(np.float64)
    ref = _torch_scores(net, x)
    # Softmax scores lie in [0, 1]: fp32 keeps ~1e-7 relative per op over 3 layers; fp16 rounds
    # weights and activations to 2^-11 relative, a few 1e-3 on the logits after 3 layers.
    assert np.abs(got - ref).max() <= {"fp32": 1e-5, "fp16": 1e-2}[precision]
    if precision == "fp32":  # fp16 may flip a near tie; fp32 is within 1e-5 of PyTorch
        assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_any_size_pipeline_still_gets_odd_photos(tmp_path: Path) -> None:
    """With a resize in the pipeline every size is accepted: the parity still runs the odd-size photos."""
    import torch

    import edgekit

    art = edgekit.convert(_fixed_size_cnn(), tmp_path / "m", example_inputs=torch.rand(1, 3, SIDE, SIDE),
                          preprocess={"mean": MEAN, "std": STD}, task="classify", precision="fp32")
    report = art.manifest.parity
    assert report.passed, report.summary
    from edgekit.converters.classify_parity import photos, raw_inputs

    clf = edgekit.load(tmp_path / "m", device="cpu")
    raw = raw_inputs(clf.contract.input, [])
    assert [p.size for p in raw] == [p.size for p in photos()]
    assert len({p.size for p in raw}) > 1 and report.end_to_end is not None and report.end_to_end.samples == len(raw)


def test_fixed_size_photos_keep_their_modes() -> None:
    """Without a resize the invented photos are of the model's size, in the same modes as the odd ones."""
    from edgekit.contract.classify import ImageInput
    from edgekit.converters.classify_parity import photos, raw_inputs

    x = ImageInput("pixel_values", (SIDE, 40), None, None, "bilinear", 1 / 255, (0.0,) * 3, (1.0,) * 3, "RGB", "NCHW")
    raw = raw_inputs(x, [])
    assert {p.size for p in raw} == {(40, SIDE)}  # PIL: (width, height)
    assert [p.mode for p in raw] == [p.mode for p in photos()]
    given = _pictures(3, 0)
    assert raw_inputs(x, given) == given
