"""LLaVA-NeXT / LLaVA-OneVision anyres images: edgekit's numpy + Pillow pre-processing against the
processors themselves (tiny saved ones), and the vision graph's packing against the model's.

Pixel values are compared for equality: both sides resize the same uint8 image with the same PIL
filter, pad with zeros, rescale in float64 then float32 and normalize in float32 (no step rounds
differently). The feature rows are compared at the fp32 bound of tests/tolerances.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers as tf
from coverage_models import tiny_tokenizer
from PIL import Image
from tolerances import fp32_atol, network_width_and_stages

from edgekit.contract.codec import decode, encode
from edgekit.contract.vision import ROWS
from edgekit.contract.vision.anyres import PACK_INDEX, PACK_WEIGHT
from edgekit.converters.vision import family_of
from edgekit.errors import SourceError, UnsupportedError
from edgekit.preprocess.vision import image_prep
from edgekit.runtimes.tensorrt.runner import pick_profile

TOKEN = "<image>"
TILE, PATCH = 32, 8  # 4 x 4 feature rows per tile
# (height, width): wide and tall extremes (their unpadded maps keep 0 or 1 rows), smaller than a
# tile, exactly a grid, odd sizes whose padding splits unevenly.
SIZES = [(20, 50), (50, 20), (7, 200), (200, 7), (13, 13), (64, 64), (100, 40), (33, 97), (96, 95)]
NEXT_PINS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
OV_PINS = [[h, w] for h in (32, 64, 96) for w in (32, 64, 96)]
OV_RATIO = "anyres_max_2"  # maps over 2.2 tiles' rows shrink: the 2 x 2 and larger grids here


def _images(seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    return out + [Image.fromarray(rng.integers(0, 256, (30, 45), dtype=np.uint8))]  # grey: converted to RGB


def _tokenizer() -> Any:
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [TOKEN]})
    return tok


def _text_config(tok: Any) -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(tok)}


def _vision_config(kind: str) -> dict[str, Any]:
    return {"model_type": kind, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "image_size": TILE, "patch_size": PATCH}


@pytest.fixture(scope="module")
def next_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA-NeXT (CLIP tower, CLS dropped) with its processor, saved and read back."""
    folder = tmp_path_factory.mktemp("llava_next")
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = tf.LlavaNextConfig(vision_config=_vision_config("clip_vision_model"), text_config=_text_config(tok),
                             image_grid_pinpoints=NEXT_PINS, image_token_index=tok.convert_tokens_to_ids(TOKEN))
    tf.LlavaNextForConditionalGeneration(cfg).save_pretrained(folder)
    ip = tf.LlavaNextImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                       image_grid_pinpoints=NEXT_PINS)
    tf.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1).save_pretrained(folder)
    return folder


def _onevision_processor(folder: Path, tok: Any) -> Any:
    """The saved image processor inside a LlavaOnevisionProcessor. Its __init__ demands a video
    processor, which transformers only builds with torchvision (not installed here), so the fields
    its __init__ sets are set directly: replace_image_token reads only these."""
    ip = tf.LlavaOnevisionImageProcessorPil(size={"height": TILE, "width": TILE}, image_grid_pinpoints=OV_PINS)
    ip.save_pretrained(folder)
    proc = tf.LlavaOnevisionProcessor.__new__(tf.LlavaOnevisionProcessor)
    proc.image_processor = tf.AutoImageProcessor.from_pretrained(folder, backend="pil")
    proc.tokenizer, proc.image_token, proc.vision_aspect_ratio = tok, TOKEN, OV_RATIO
    proc.num_image_tokens, proc.vision_feature_select_strategy = (TILE // PATCH) ** 2, "full"  # SigLIP: no CLS
    return proc


def test_llava_next_matches_processor(next_folder: Path) -> None:
    proc = tf.AutoProcessor.from_pretrained(next_folder, backend="pil")
    steps = family_of(proc).steps(proc)
    assert decode(type(steps), encode(steps), "steps") == steps
    prep = image_prep(steps, TOKEN)
    images, token_id = _images(0), proc.image_token_id
    for img in images:
        want = proc(text=[f"look {TOKEN} here"], images=[img], return_tensors="np")
        got = prep.prepare(img)
        np.testing.assert_array_equal(got.feeds["pixel_values"], want["pixel_values"][0], err_msg=str(img.size))
        rows = len(got.feeds["pack_index"])
        assert rows == int((want["input_ids"] == token_id).sum()) == got.placeholder.count(TOKEN), img.size
        ids = proc.tokenizer(prep.expand(f"look {TOKEN} here", [got]))["input_ids"]
        assert ids == want["input_ids"][0].tolist(), img.size
    pair = [prep.prepare(x) for x in images[2:4]]  # two images in one prompt: expanded in order
    want = proc(text=[f"{TOKEN} and {TOKEN}"], images=images[2:4], return_tensors="np")
    assert proc.tokenizer(prep.expand(f"{TOKEN} and {TOKEN}", pair))["input_ids"] == want["input_ids"][0].tolist()
    proc.num_additional_image_tokens = 0  # CLS dropped but not counted: transformers' own counts disagree too
    with pytest.raises(UnsupportedError, match="15 feature rows"):
        family_of(proc).steps(proc)


def test_llava_onevision_matches_processor(tmp_path: Path) -> None:
    tok = _tokenizer()
    proc = _onevision_processor(tmp_path, tok)
    steps = family_of(proc).steps(proc)
    assert decode(type(steps), encode(steps), "steps") == steps
    prep = image_prep(steps, TOKEN)
    shrunk = 0
    for img in _images(1):
        want = proc.image_processor([img], return_tensors="np")
        got = prep.prepare(img)
        np.testing.assert_array_equal(got.feeds["pixel_values"], want["pixel_values"][0], err_msg=str(img.size))
        assert got.placeholder == proc.replace_image_token(want, 0), img.size
        assert got.feeds["pack_index"].shape == got.feeds["pack_weight"].shape == (got.placeholder.count(TOKEN), 4)
        shrunk += bool((got.feeds["pack_weight"][:, 1:] != 0).any())
    assert shrunk >= 3  # the bilinear shrink is exercised, not only the plain gather


def _features(model: Any, ip: Any, img: Any, **kw: Any) -> np.ndarray:
    want = ip([img], return_tensors="pt")
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=want["pixel_values"], image_sizes=want["image_sizes"], **kw)
    return out.pooler_output[0].numpy()


def _vision_profile(steps: Any, sess: Any) -> tuple[list[Any], dict[str, Any]]:
    """The exported graph's inputs and the one TensorRT profile its artifact gets."""
    from edgekit.contract import GenerateSection, GraphSpec, TensorSpec
    from edgekit.contract.generate import kv_state
    from edgekit.contract.vision import VisionPart
    from edgekit.runtimes.tensorrt.profiles import choose_profiles

    dtypes = {"tensor(float)": "float32", "tensor(int64)": "int64"}
    graph = GraphSpec("vision.onnx", tuple(TensorSpec(i.name, dtypes[i.type], tuple(i.shape)) for i in sess.get_inputs()), ())
    section = GenerateSection(None, True, (), None, 0, 64, kv_state(1, 2, 16), vision=VisionPart(steps, TOKEN, 1, 32))
    [(_, dims)] = choose_profiles(section, "vision", graph)
    assert set(dims) == graph.dims() and all(lo <= opt <= hi for lo, opt, hi in dims.values())
    return list(graph.inputs), dims


def test_llava_next_vision_graph_matches_model(next_folder: Path, tmp_path: Path) -> None:
    """The exported graph (dynamic tiles and rows) against get_image_features + pack_image_features."""
    import onnxruntime as ort

    proc = tf.AutoProcessor.from_pretrained(next_folder, backend="pil")
    model = tf.LlavaNextForConditionalGeneration.from_pretrained(next_folder).eval()
    module = family_of(proc)
    steps = module.steps(proc)
    prep, enc = image_prep(steps, TOKEN), module.encoder(model, steps).eval()
    images = [_images(2)[i] for i in (0, 3, 7)]  # 3, 4 and 5 tiles
    first, names = prep.prepare(images[0]).feeds, [n.name for n in steps.graph_inputs()]
    axes = module.dims(steps)  # as the vision-LM spec exports it: these axes vary per image
    dynamic = {n: {a: torch.export.Dim(d, min=1, max=1 << 16) for a, d in axes[n].items()} for n in names}
    path = tmp_path / "vision.onnx"
    torch.onnx.export(enc, tuple(torch.tensor(first[n]) for n in names), path, dynamo=True, opset_version=18,
                      input_names=names, output_names=["image_features"], dynamic_shapes=dynamic)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [sess.get_inputs()[0].shape[0], sess.get_outputs()[0].shape[0]] == [module.TILES, ROWS]
    profile = _vision_profile(steps, sess)  # TensorRT's, from the contract: every named dim of the graph
    width, stages = network_width_and_stages(enc)
    for img in images:
        feeds = prep.prepare(img).feeds
        assert pick_profile(profile[0], [profile[1]], feeds) == 0  # raises where a size is outside it
        got = sess.run(None, feeds)[0]
        want = _features(model, proc.image_processor, img)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=fp32_atol(want, width, stages), err_msg=str(img.size))


def test_llava_onevision_packing_matches_model(tmp_path: Path) -> None:
    """OneVision's module (gather + the shrink's weighted taps) against the model's packing."""
    tok = _tokenizer()
    proc = _onevision_processor(tmp_path, tok)
    torch.manual_seed(0)
    cfg = tf.LlavaOnevisionConfig(vision_config=_vision_config("siglip_vision_model"), text_config=_text_config(tok),
                                  image_grid_pinpoints=OV_PINS, vision_aspect_ratio=OV_RATIO,
                                  image_token_index=tok.convert_tokens_to_ids(TOKEN))
    model = tf.LlavaOnevisionForConditionalGeneration(cfg).eval()
    module = family_of(proc)
    steps = module.steps(proc)
    prep, enc = image_prep(steps, TOKEN), module.encoder(model, steps).eval()
    width, stages = network_width_and_stages(enc)
    for img in _images(3)[:7]:
        feeds = prep.prepare(img).feeds
        with torch.no_grad():
            got = enc(*(torch.tensor(feeds[n]) for n in ("pixel_values", "pack_index", "pack_weight"))).numpy()
        want = _features(model, proc.image_processor, img, vision_aspect_ratio=OV_RATIO)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=fp32_atol(want, width, stages), err_msg=str(img.size))
    cfg.image_grid_pinpoints = OV_PINS[:4]
    with pytest.raises(SourceError, match="grid_pinpoints"):
        module.encoder(model, steps)


def _rows_and_dims(steps: Any, module: Any, images: list[Any]) -> tuple[list[int], dict[str, list[int]]]:
    """Each image's feature rows and each named dim of the vision graph, from the real pre-processing,
    checked inside the contract's ranges (the TensorRT profile of the vision graph)."""
    ranges, rows = steps.dim_ranges(), steps.rows()
    assert all(lo <= opt <= hi for lo, opt, hi in [*ranges.values(), rows])
    prep, got_rows, got_dims = image_prep(steps, TOKEN), [], {d: [] for d in ranges}
    for img in images:
        image = prep.prepare(img)
        got_rows.append(image.placeholder.count(TOKEN))
        assert rows[0] <= got_rows[-1] <= rows[2], img.size
        for name, axes in module.dims(steps).items():
            for axis, dim in axes.items():
                got_dims[dim].append(image.feeds[name].shape[axis])
                assert ranges[dim][0] <= got_dims[dim][-1] <= ranges[dim][2], (img.size, name, dim)
    return got_rows, got_dims


def test_profile_ranges_hold_every_image(next_folder: Path, tmp_path: Path) -> None:
    sizes = [*SIZES, (1, 300), (300, 1), (2000, 1500), (5, 5), (64, 64), (640, 640), (32, 96), (96, 32)]
    images = [Image.new("RGB", (w, h)) for h, w in sizes]
    proc = tf.AutoProcessor.from_pretrained(next_folder, backend="pil")
    steps, module = family_of(proc).steps(proc), family_of(proc)
    # NEXT_PINS in 32 px tiles of 4 x 4 rows: grids 1x2, 2x1, 2x2, 3x1, 1x3 (+1 whole-image tile); the
    # most rows: 16 base + the 2x2 grid's 8 x 8 map + 8 newlines (a square image keeps it all).
    assert steps.dim_ranges() == {module.TILES: (3, 5, 5), ROWS: (16, 88, 88)} and steps.rows() == (16, 88, 88)
    rows, dims = _rows_and_dims(steps, module, images)
    assert max(rows) == 88 and max(dims[module.TILES]) == 5 and min(dims[module.TILES]) == 3
    ov = _onevision_processor(tmp_path, _tokenizer())
    steps = family_of(ov).steps(ov)
    rows, dims = _rows_and_dims(steps, module, images)
    assert dims[ROWS] == [r for r in rows for _ in (PACK_INDEX, PACK_WEIGHT)]  # both carry an image's rows
    assert max(dims[module.TILES]) == steps.dim_ranges()[module.TILES][2] == 10
