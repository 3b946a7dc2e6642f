"""Qwen2-VL / Qwen2.5-VL pre-processing (edgekit/preprocess/vision/qwen2_vl.py) against transformers'
own image processor, saved and loaded back with the PIL backend: the flat patches and the grid for
wide, tall, extreme, tiny, square and grayscale images, the placeholder the processor writes per image
(its own replace_image_token), `rope_index` against the model's get_rope_index (text only, one image,
two images, left padding), and the vision graph: the encoder module exported once, equal on onnxruntime
to get_image_features for three image sizes, Qwen2.5-VL's windows included.

Qwen2VLProcessor itself cannot be built here: transformers 5.23 checks its video processor's class,
which needs torchvision (not a dependency); its image part and its prompt rule are what is compared.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from coverage_models import tiny_tokenizer
from edgekit.contract.codec import decode, encode
from edgekit.contract.vision import ImageSteps
from edgekit.contract.vision.qwen2_vl import POSITIONS
from edgekit.converters.vision import qwen2_vl
from edgekit.preprocess.vision import image_prep
from edgekit.preprocess.vision.qwen2_vl import rope_index

PATCH, MERGE, IMAGE = 4, 2, "<|image_pad|>"
SPECIALS = ["<|vision_start|>", "<|vision_end|>", IMAGE, "<|video_pad|>"]


def _tokenizer() -> Any:
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for (h, w), mode in (((50, 120), "RGB"), ((300, 11), "RGB"), ((4, 500), "RGB"), ((5, 3), "RGB"),
                         ((64, 64), "RGB"), ((70, 41), "L"), ((200, 260), "RGB")):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        arr[: h // 2] //= 3  # edges, not only noise: the filters differ on them
        out.append(Image.fromarray(arr).convert(mode))
    return out


def _image_processor(folder: Path) -> Any:
    from transformers import AutoImageProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    factor = (PATCH * MERGE) ** 2  # min 4 and max 60 merged tokens: tiny images grow, large ones shrink
    Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE,
                             size={"shortest_edge": 4 * factor, "longest_edge": 60 * factor}).save_pretrained(folder)
    return AutoImageProcessor.from_pretrained(folder, backend="pil")


def _prep(ip: Any) -> Any:
    steps = qwen2_vl.steps(SimpleNamespace(image_processor=ip))  # what the processor holds for images
    assert decode(ImageSteps, encode(steps), "steps") == steps
    return image_prep(steps, IMAGE)


def test_patches_grid_and_prompt_match_the_processor(tmp_path: Path) -> None:
    from transformers import Qwen2VLProcessor

    ip = _image_processor(tmp_path)
    prep, tok = _prep(ip), _tokenizer()
    processor = SimpleNamespace(image_processor=ip, image_token=IMAGE)  # all replace_image_token reads
    grids = set()
    for img in _images():
        want = ip(img, return_tensors="np")
        got = prep.prepare(img)
        assert got.feeds["pixel_values"].shape == want["pixel_values"].shape, f"a {img.size} {img.mode} image"
        diff = np.abs(got.feeds["pixel_values"] - want["pixel_values"]).max()
        assert diff == 0.0, f"a {img.size} {img.mode} image: max diff {diff}"  # the same float32 operations
        assert got.grid == tuple(want["image_grid_thw"][0].tolist())
        assert got.placeholder == Qwen2VLProcessor.replace_image_token(processor, dict(want), 0)
        text = f"the cat <|vision_start|>{IMAGE}<|vision_end|> sat"
        ids = tok(prep.expand(text, [got]))["input_ids"]
        assert ids.count(tok.convert_tokens_to_ids(IMAGE)) == np.prod(got.grid) // MERGE**2
        assert got.feeds[POSITIONS].shape == (np.prod(got.grid), 2)
        grids.add(got.grid)
    # Shrunk to the 60-token budget (120x50 -> 96x40, 64x64 -> 56x56), grown to 4 tokens (3x5 -> 16x24),
    # the 125:1 and 27:1 images with a side of one merge group, and one as it is (260x200 -> 256x192).
    assert grids == {(1, 10, 24), (1, 14, 14), (1, 6, 4), (1, 2, 46), (1, 76, 2), (1, 18, 10), (1, 12, 16)}, grids


def test_positions_equal_the_vision_towers(tmp_path: Path) -> None:
    import torch
    from transformers.vision_utils import get_vision_position_ids

    prep = _prep(_image_processor(tmp_path))
    for img in _images()[:3]:
        got = prep.prepare(img)
        want = get_vision_position_ids(torch.tensor([got.grid]), MERGE).numpy()
        np.testing.assert_array_equal(got.feeds[POSITIONS], want)


def _model(family: str, vocab: int) -> Any:
    import torch
    import transformers

    text = dict(hidden_size=24, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=vocab,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]})
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=24, num_heads=2, mlp_ratio=2, patch_size=PATCH,
                      spatial_merge_size=MERGE)
        cls, config_cls = transformers.Qwen2VLForConditionalGeneration, transformers.Qwen2VLConfig
    else:  # windows of 16 px = 4 patches a side, block 1 attends to the whole image
        vision = dict(depth=2, hidden_size=32, out_hidden_size=24, intermediate_size=37, num_heads=2,
                      patch_size=PATCH, spatial_merge_size=MERGE, window_size=16, fullatt_block_indexes=[1])
        cls, config_cls = transformers.Qwen2_5_VLForConditionalGeneration, transformers.Qwen2_5_VLConfig
    tok = _tokenizer()
    config = config_cls(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE),
                        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"))
    torch.manual_seed(0)
    return cls(config).eval()


def test_rope_index_equals_get_rope_index() -> None:
    import torch

    tok = _tokenizer()
    tok.padding_side = "left"
    model = _model("qwen2_vl", len(tok))
    image_id = tok.convert_tokens_to_ids(IMAGE)
    a, b = (1, 4, 6), (1, 8, 2)  # two grids: 6 and 4 image tokens

    def prompt(*grids: tuple[int, int, int]) -> str:
        images = "".join(f" the <|vision_start|>{IMAGE * (t * h * w // MERGE**2)}<|vision_end|>" for t, h, w in grids)
        return f"a cat{images} sat on the mat"

    for texts, grids in (([prompt()], []), ([prompt(a)], [a]), ([prompt(a, b)], [a, b]),
                         ([prompt(b), prompt(a, b), prompt()], [b, a, b])):
        enc = tok(texts, return_tensors="np", padding=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        got, got_delta = rope_index(ids, image_id, grids, MERGE, mask)
        with torch.no_grad():
            want, want_delta = model.model.get_rope_index(
                torch.from_numpy(ids), mm_token_type_ids=torch.from_numpy((ids == image_id).astype(np.int32)),
                image_grid_thw=torch.tensor(grids) if grids else None, attention_mask=torch.from_numpy(mask))
        np.testing.assert_array_equal(got, want.numpy(), err_msg=f"{len(texts)} prompts, grids {grids}")
        np.testing.assert_array_equal(got_delta, want_delta.numpy())
        assert (mask == 0).any() == (len(texts) > 1)  # the batch case is left-padded


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_encoder_exports_once_for_every_image_size(tmp_path: Path, family: str) -> None:
    import onnxruntime as ort
    import torch

    prep = _prep(_image_processor(tmp_path))
    model = _model(family, len(_tokenizer()))
    module = qwen2_vl.encoder(model, prep.steps).eval()
    images = [prep.prepare(img) for img in (_images()[6], _images()[0], _images()[3])]  # grids 12x16, 8x16, 4x4
    patches = torch.export.Dim("patches", min=4, max=4096)
    feeds = {k: torch.from_numpy(v) for k, v in images[0].feeds.items()}
    torch.onnx.export(module, (), tmp_path / "vision.onnx", kwargs=feeds, dynamo=True, opset_version=18,
                      dynamic_shapes={"pixel_values": {0: patches}, POSITIONS: {0: patches}})
    session = ort.InferenceSession(tmp_path / "vision.onnx", providers=["CPUExecutionProvider"])
    for image in images:
        got = prep.features(session.run(None, image.feeds)[0], image)
        with torch.no_grad():
            want = model.model.get_image_features(torch.from_numpy(image.feeds["pixel_values"]),
                                                  torch.tensor([image.grid])).pooler_output
            want = torch.cat(list(want)).numpy() if isinstance(want, (list, tuple)) else want.numpy()
        assert got.shape == (image.placeholder.count(IMAGE), 24), (got.shape, image.grid)
        # Outputs of order 0.1, activations of order 1 inside, float32 (eps 1.2e-7) through two blocks and the
        # merger, softmax sums in another order: rounding only (measured 2e-8 - 5e-8 on 7 grids; the window
        # mask left out gives 9e-3).
        assert np.abs(got - want).max() <= 1e-6, np.abs(got - want).max()


def test_rows_range_holds_every_size() -> None:
    """An image's merged patches (its rows in the decoder's image_features) stay within the contract's
    range for every size smart_resize takes, up to its 200:1 aspect limit, small and large budgets."""
    from edgekit.contract.vision.qwen2_vl import Qwen2VLSteps
    from edgekit.preprocess.vision.qwen2_vl import smart_resize

    f = PATCH * MERGE
    for lo, hi in ((4, 60), (1, 2), (16, 16), (4, 16384)):
        steps = Qwen2VLSteps(lo * f * f, hi * f * f, PATCH, 2, MERGE, "bicubic", 1 / 255, (0.5,) * 3, (0.5,) * 3)
        low, opt, most = steps.rows()
        assert 1 == low <= opt == hi <= most
        sides = sorted({*range(1, 80), *(int(1.37 ** k) for k in range(60))})
        rows = [h * w // f ** 2 for h0 in sides for w0 in sides if max(h0, w0) <= 200 * min(h0, w0)
                for h, w in [smart_resize(h0, w0, f, steps.min_pixels, steps.max_pixels)]]
        assert low <= min(rows) and max(rows) <= most, (lo, hi, max(rows), most)
