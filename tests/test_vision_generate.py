"""Vision-language generate from a saved LLaVA folder: the convert's parity (raw image and text against the
processor and transformers' generate, greedy and beams), then the calls users make: images=, messages with
image parts (the processor's chat template), `edgekit run ART photo.png --prompt`, and clear errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli
from edgekit.converters.vision_parity import images
from edgekit.errors import ConfigError, InputError
from vision_models import converted_llava


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return converted_llava(tmp_path_factory)  # strict: fails unless parity holds (tests below read its report)


def test_convert_proves_images_end_to_end(llava: tuple[Path, Path]) -> None:
    m = edgekit.load(llava[1], device="cpu").artifact.manifest
    got = m.parity.measures
    assert m.parity.passed and set(m.graphs) == {"vision", "model"}
    assert got["image_greedy_agreement"] == 1.0 and got["image_beam_agreement"] == 1.0
    assert got["image_prompt_ids_equal"] == 1.0 and got["image_pixels_max_abs"] <= 1e-5
    assert got["image_logits_max_rel"] <= 1e-3
    pre = m.parity.end_to_end.preprocess  # reported on its own line, as for image classification
    assert pre is not None and pre.passed and pre.tokens_differ == 0 and "LlavaProcessor" in pre.summary
    info = CliRunner().invoke(cli, ["info", str(llava[1])])
    assert "pre-processing at convert: PASS" in info.output


def _first_logits(gen: Any, prompt: str, pics: list[Any]) -> np.ndarray:
    out = gen.generate(prompt, images=pics, max_new_tokens=1, return_dict_in_generate=True, output_logits=True)
    return np.asarray(out.logits[0])


def test_images_change_the_answer_and_messages_match_text(llava: tuple[Path, Path]) -> None:
    gen = edgekit.load(llava[1], device="cpu")
    a, b = images()
    # The image rows reach the decoder: another image gives other logits (an ignored image would not).
    assert np.abs(_first_logits(gen, "<image> the cat", [a]) - _first_logits(gen, "<image> the cat", [b])).max() > 1e-3
    # Messages with an image part: the processor's own chat template and images, as transformers'
    # apply_chat_template(tokenize=True) + generate + decode give them.
    import copy

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    msgs = [{"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "the cat"}]}]
    proc = AutoProcessor.from_pretrained(llava[0], backend="pil")
    enc = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(llava[0]).eval()
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id, cfg.pad_token_id, cfg.max_new_tokens, cfg.do_sample = None, 0, 6, False
    with torch.no_grad():
        ids = model.generate(**enc, generation_config=cfg)[0, enc["input_ids"].shape[1]:]
    assert gen.generate(messages=msgs, max_new_tokens=6, eos_token_id=[]) == proc.decode(ids, skip_special_tokens=True)
    # Two prompts, an image each (a flat list: one per prompt), batched and left-padded like one at a time.
    both = gen.generate(["<image> the cat", "<image> a big red dog ran"], images=[a, b], max_new_tokens=6)
    assert both == [gen.generate("<image> the cat", images=[a], max_new_tokens=6),
                    gen.generate("<image> a big red dog ran", images=[b], max_new_tokens=6)]


def test_bad_image_calls_are_clear(llava: tuple[Path, Path]) -> None:
    gen = edgekit.load(llava[1], device="cpu")
    a, _ = images()
    with pytest.raises(InputError, match="image placeholders"):
        gen.generate("the cat", images=[a])  # no <image> in the text for the image
    with pytest.raises(InputError, match="1 image placeholders '<image>' for 0 images"):
        gen.generate("<image> the cat")  # a placeholder without an image
    with pytest.raises(ConfigError, match="images= goes with text prompts"):
        gen.generate(messages=[{"role": "user", "content": "hi"}], images=[a])
    with pytest.raises(InputError, match="not a readable image"):
        gen.generate("<image> the cat", images=[str(llava[0] / "config.json")])


def test_cli_runs_an_image_with_a_prompt(llava: tuple[Path, Path], tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    images()[0].save(photo)
    res = CliRunner().invoke(cli, ["run", str(llava[1]), str(photo), "--prompt", "the cat", "--max-new-tokens", "5",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    gen = edgekit.load(llava[1], device="cpu")
    msgs = [{"role": "user", "content": [{"type": "image", "image": str(photo)}, {"type": "text", "text": "the cat"}]}]
    assert data["results"][0]["text"] == gen.generate(messages=msgs, max_new_tokens=5)


def test_gpu_loops_send_the_image_rows_once(llava: tuple[Path, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The onnxruntime CUDA loop (fake device memory) and TensorRT (tests/trt_fakes.py) give the CPU's text;
    the prompt's image rows go up once, the decode steps' empty image_features copy nothing, and every
    named dim of both graphs has a profile range that holds them (zero rows in the decode profile)."""
    import shutil

    import trt_fakes as F
    from edgekit.manifest import Manifest
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper
    from edgekit.runtimes.tensorrt import build as T
    from edgekit.runtimes.tensorrt.profiles import choose_profiles

    a, _ = images()
    with edgekit.load(llava[1], device="cpu") as m:
        want = m.generate("<image> the cat", images=[a], max_new_tokens=6, eos_token_id=[])
        vision = m.contract.vision
        image_rows = (vision.steps.rows()[0], vision.hidden)
        sent: list[tuple[int, ...]] = []

        class Recorded(DeviceMemory):
            def upload(self, buf: Any, array: np.ndarray) -> None:
                sent.append(array.shape)
                super().upload(buf, array)

        runner = m.runners["model"]
        runner._stepper_impl = lambda spec: OrtStepper(runner._session, spec, Recorded(F.make_cudart(F.Calls()), "cpu"))
        assert m.generate("<image> the cat", images=[a], max_new_tokens=6, eos_token_id=[]) == want
    assert sent.count(image_rows) == 1 and sent.count((0, vision.hidden)) == 6  # the binding's, then 5 steps

    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    art = tmp_path / "art"
    shutil.copytree(llava[1], art)
    manifest = Manifest.load(art)
    T.build_engines(art, manifest, T.BuildOptions())
    for name, graph in manifest.graphs.items():
        for _, dims in choose_profiles(manifest.contract, name, graph):
            assert set(dims) == graph.dims() and all(lo <= opt <= hi for lo, opt, hi in dims.values())
    prompt, verify, decode = (dict(p) for _, p in choose_profiles(manifest.contract, "model", manifest.graph("model")))
    assert decode["image_rows"] == verify["image_rows"] == (0, 0, 0) and prompt["image_rows"][0] == 0
    assert prompt["image_rows"][2] == min(vision.max_images * image_rows[0], manifest.contract.max_context)
    with edgekit.load(art, device="tensorrt") as m:
        assert m.generate("<image> the cat", images=[a], max_new_tokens=6, eos_token_id=[]) == want
    up = [n for kind, n in calls.copies if kind == "cudaMemcpyHostToDevice"]
    assert up.count(image_rows[0] * image_rows[1] * 4) == 1 and 0 not in up
    assert sys.modules["cuda.bindings.runtime"].live == {}
