"""Every kind of classify source: nn.Module (+preprocess override), .pt2, factory string, HF folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from classify_models import LABELS, bert_folder, calibration, example_input, held_out, trained_cnn
from tolerances import fp32_atol, network_width_and_stages


def test_pt2_source(session_dir: Path, tmp_path: Path) -> None:
    import torch

    import edgekit

    model = trained_cnn("mnist")
    program = torch.export.export(model, (example_input("mnist").expand(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    pt2 = tmp_path / "digits.pt2"
    torch.export.save(program, str(pt2))
    art = edgekit.convert(str(pt2), tmp_path / "art", labels=LABELS)
    m = art.manifest
    assert m.source.origin == "pt2" and m.parity.passed, m.parity
    clf = edgekit.load(art.path, device="cpu")
    pics, _ = held_out("mnist", 5)
    x = clf.prepare(list(pics))["pixel_values"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clf(pixel_values=x)["logits"], ref, rtol=1e-4, atol=1e-4)  # batch 5: dynamic


def test_factory_string_and_parity_against_it(tmp_path: Path) -> None:
    import edgekit
    from edgekit.manifest import SourceInfo

    art = edgekit.convert("classify_models:mnist_factory", tmp_path / "f", precision="int8",
                          calibration=calibration("mnist"))
    assert art.manifest.source == SourceInfo("factory", "classify_models:mnist_factory", art.manifest.source.sha256)
    report = edgekit.parity(art.path, against="classify_models:mnist_factory", samples=16)
    assert report.passed, report.summary
    assert report.precision == "int8" and report.outputs["logits"]["top1"] >= 0.9


def test_hf_folder_parity_later(session_dir: Path) -> None:
    """`edgekit.parity` re-resolves an HF folder and compares at sequence lengths never traced."""
    import edgekit

    folder = bert_folder(session_dir)
    art = edgekit.convert(str(folder), session_dir / "bert-parity-fp16", precision="fp16")
    report = edgekit.parity(art.path, against=str(folder), samples=20)
    assert report.passed and report.samples == 3, report
    assert report.outputs["logits"]["cosine"] > 0.999


def test_module_preprocess_override(tmp_path: Path) -> None:
    """`preprocess` overrides mean/std/size: the artifact reproduces the user's torch pipeline."""
    import torch

    import edgekit

    model = trained_cnn("mnist")
    pre = {"mean": [0.1], "std": [0.8], "interpolation": "bicubic"}
    art = edgekit.convert(model, tmp_path / "p", example_inputs=example_input("mnist"), labels=LABELS, preprocess=pre)
    assert art.manifest.contract.input.mean == (0.1,) and art.manifest.contract.input.size == (28, 28)
    clf = edgekit.load(art.path, device="cpu")
    from PIL import Image

    pics, _ = held_out("mnist", 4)
    big = [Image.fromarray(p).resize((56, 56), Image.NEAREST) for p in pics]  # resized back by edgekit
    x = np.stack([np.asarray(im.resize((28, 28), Image.BICUBIC), np.float32)[None] / 255.0 for im in big])
    with torch.no_grad():
        ref = model(torch.from_numpy((x - 0.1) / 0.8)).numpy()
    # fp32 onnxruntime against fp32 torch: round-off only (tests/tolerances.py)
    np.testing.assert_allclose(clf.logits(big), ref, atol=fp32_atol(ref, *network_width_and_stages(model)), rtol=0)
