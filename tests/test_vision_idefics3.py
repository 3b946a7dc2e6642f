"""Idefics3 / SmolVLM pre-processing (edgekit/preprocess/vision/idefics3.py) against transformers' own
processor, saved to a folder and loaded back with the PIL backend: the pixel values and the tile mask of
every image, the expanded prompt tokenized equal to the processor's input_ids, with and without image
splitting, for wide, tall, extreme, tiny, square and grayscale images; and the vision graph:
`get_image_features` exported per image (dynamic tile count) equal on onnxruntime, one row per image token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgekit.converters.vision import family_of
from coverage_models import tiny_tokenizer
from edgekit.contract.codec import decode, encode
from edgekit.contract.vision import ImageSteps
from edgekit.preprocess.vision import PreparedImage, image_prep

SPECIALS = (["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
            + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
TILE, LONGEST, SEQ = 32, 96, 4  # the vision tower below: 32 px tiles of 8 px patches, pixel shuffle 2 -> 4 rows


def _tokenizer() -> Any:
    from tokenizers import AddedToken

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.add_tokens([AddedToken("\n", normalized=False)])  # so that the prompt's newlines are tokens, compared too
    return tok


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for (h, w), mode in (((50, 120), "RGB"), ((300, 11), "RGB"), ((2, 500), "RGB"), ((5, 3), "RGB"),
                         ((64, 64), "RGB"), ((70, 41), "L"), ((32, 32), "RGB")):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[: h // 2] //= 3  # edges, not only noise: the filters differ on them
        out.append(Image.fromarray(arr).convert(mode))
    return out


def _processor(folder: Path, split: bool) -> Any:
    from transformers import AutoProcessor, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    ip = Idefics3ImageProcessorPil(size={"longest_edge": LONGEST}, max_image_size={"longest_edge": TILE},
                                   do_image_splitting=split)
    Idefics3Processor(ip, _tokenizer(), image_seq_len=SEQ).save_pretrained(folder)
    return AutoProcessor.from_pretrained(folder, backend="pil")


def _prep(processor: Any) -> Any:
    family = family_of(processor)
    steps = family.steps(processor)
    assert decode(ImageSteps, encode(steps), "steps") == steps  # what the artifact saves reads back the same
    return image_prep(steps, processor.image_token)


@pytest.mark.parametrize("split", [True, False])
def test_pixels_and_prompt_match_the_processor(tmp_path: Path, split: bool) -> None:
    processor = _processor(tmp_path, split)
    prep, tok = _prep(processor), processor.tokenizer
    tiles = set()
    for img in _images():
        want = processor(text=["the cat <image> sat"], images=[[img]], return_tensors="np")
        got = prep.prepare(img)
        for name in ("pixel_values", "pixel_attention_mask"):
            assert got.feeds[name].shape == want[name].shape, f"{name} of a {img.size} {img.mode} image"
            diff = np.abs(got.feeds[name].astype(np.float64) - want[name]).max()
            assert diff == 0.0, f"{name} of a {img.size} {img.mode} image: max diff {diff}"  # same float ops
        ids = tok(prep.expand("the cat <image> sat", [got]))["input_ids"]
        assert ids == want["input_ids"][0].tolist(), f"prompt of a {img.size} image"
        assert got.placeholder.count("<image>") == SEQ * got.feeds["pixel_values"].shape[1]
        tiles.add(got.feeds["pixel_values"].shape[1])
    # Split, every long side is resized to 96 = 3 tiles: grids of 1x3 / 3x1, 2x3 and 3x3, each + the global image.
    assert tiles == ({4, 7, 10} if split else {1}), tiles


def test_two_images_in_one_prompt(tmp_path: Path) -> None:
    processor = _processor(tmp_path, True)
    prep, (a, b) = _prep(processor), _images()[:2]
    text = "<image> the dog <image> ran"
    want = processor(text=[text], images=[[a, b]], return_tensors="np")
    got = [prep.prepare(a), prep.prepare(b)]
    assert processor.tokenizer(prep.expand(text, got))["input_ids"] == want["input_ids"][0].tolist()
    pixels = np.concatenate([g.feeds["pixel_values"] for g in got], axis=1)
    np.testing.assert_array_equal(pixels, want["pixel_values"])


def test_smolvlm_matches_its_image_processor_and_prompt() -> None:
    """SmolVLM's processor needs num2words (not a dependency here): its image processor and its prompt
    function, which the processor calls per image, are compared; the steps are Idefics3's."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    from edgekit.contract.vision.idefics3 import Idefics3Steps
    from edgekit.preprocess.vision.idefics3 import Idefics3Prep

    ip = SmolVLMImageProcessorPil(size={"longest_edge": LONGEST}, max_image_size={"longest_edge": TILE})
    steps = Idefics3Steps(LONGEST, TILE, True, SEQ, "lanczos", float(ip.rescale_factor), tuple(ip.image_mean),
                          tuple(ip.image_std), "<fake_token_around_image>", "<global-img>")
    prep = Idefics3Prep(steps, "<image>")
    for img in _images():
        want = ip(img.convert("RGB"), return_row_col_info=True, return_tensors="np")
        got: PreparedImage = prep.prepare(img)
        np.testing.assert_array_equal(got.feeds["pixel_values"], want["pixel_values"])
        assert got.placeholder == get_image_prompt_string(want["rows"][0][0], want["cols"][0][0], SEQ,
                                                          "<fake_token_around_image>", "<image>", "<global-img>")


def test_image_features_export_per_image(tmp_path: Path) -> None:
    """get_image_features exports as it is (no encoder module): one graph for any tile count, equal on
    onnxruntime for images of 4, 7 and 10 tiles, with one row per image token of the prompt."""
    import onnxruntime as ort
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    processor = _processor(tmp_path, True)
    prep = _prep(processor)
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=TILE, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=24, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=len(processor.tokenizer)),
        scale_factor=2, image_token_id=processor.image_token_id)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()

    class Features(torch.nn.Module):
        def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
            out = model.get_image_features(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask)
            return torch.cat(out.pooler_output)

    images = [prep.prepare(img) for img in _images()[:2]]  # 7 and 4 tiles (exported at 7), then 10
    tiles = torch.export.Dim("tiles", min=1, max=64)
    feeds = {k: torch.from_numpy(v) for k, v in images[0].feeds.items()}
    torch.onnx.export(Features().eval(), (), tmp_path / "vision.onnx", kwargs=feeds, dynamo=True, opset_version=18,
                      dynamic_shapes={"pixel_values": {1: tiles}, "pixel_attention_mask": {1: tiles}})
    session = ort.InferenceSession(tmp_path / "vision.onnx", providers=["CPUExecutionProvider"])
    for image in [images[0], images[1], prep.prepare(_images()[4])]:
        got = prep.features(session.run(None, image.feeds)[0], image)
        with torch.no_grad():
            want = Features()(**{k: torch.from_numpy(v) for k, v in image.feeds.items()}).numpy()
        assert got.shape == (image.placeholder.count("<image>"), 24)
        # Values of order 1 (0.7-0.77), float32 (eps 1.2e-7) through one encoder layer and the connector:
        # a few ulps of rounding where onnxruntime fuses or orders sums differently (measured 3.0e-7 - 3.6e-7).
        assert np.abs(got - want).max() <= 2e-6, np.abs(got - want).max()


@pytest.mark.parametrize("split", [True, False])
def test_profile_ranges_hold_every_image(tmp_path: Path, split: bool) -> None:
    """The vision graph's tiles and an image's rows (the TensorRT profiles) hold what the real
    pre-processing gives, and its largest images reach the maximum."""
    from edgekit.contract.vision import TILES
    from edgekit.converters.vision import idefics3

    processor = _processor(tmp_path, split)
    steps = family_of(processor).steps(processor)
    # 96 px long side in 32 px tiles: 3 x 3 tiles + the global image at most; one tile unsplit.
    tiles = (1, 10, 10) if split else (1, 1, 1)
    assert steps.dim_ranges() == {TILES: tiles} and steps.rows() == tuple(t * SEQ for t in tiles)
    assert idefics3.dims(steps) == {"pixel_values": {1: TILES}, "pixel_attention_mask": {1: TILES}}
    prep = _prep(processor)
    big = [Image.new("RGB", (w, h)) for h, w in ((96, 96), (97, 95), (4000, 3999), (1, 5000), (33, 1))]
    got = [prep.prepare(img) for img in [*_images(), *big]]
    counts = [g.feeds["pixel_values"].shape[1] for g in got]
    assert all(tiles[0] <= n <= tiles[2] for n in counts) and max(counts) == tiles[2]
    assert [g.placeholder.count(processor.image_token) for g in got] == [n * SEQ for n in counts]
