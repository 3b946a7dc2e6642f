"""A vision-language artifact (the tiny LLaVA) served by the real Triton server on loopback: images as
encoded file bytes (IMAGE) or uint8 arrays (PIXELS) beside the prompt give the in-process text, and a
bad image is refused with edgekit's message. One artifact, one server; requests are few and short."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.converters.vision_parity import images
from serve_support import free_ports, serving_or_skip
from vision_models import converted_llava

PROMPT = "<image> the cat"


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    serving_or_skip()
    return converted_llava(tmp_path_factory)[1]  # shared with tests/test_vision_generate.py


@pytest.fixture(scope="module")
def server(art: Path) -> Any:
    http, grpc, metrics = free_ports(3)
    with edgekit.serve([art], names=["llava"], http_port=http, grpc_port=grpc, metrics_port=metrics,
                       device="cpu", streams=2) as s:
        yield s


def _client(server: Any, protocol: str) -> Any:
    from edgekit.serving.client import Client

    return Client(server.http_url if protocol == "http" else server.grpc_url, protocol)


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_served_text_equals_in_process_generate(server: Any, art: Path, tmp_path: Path) -> None:
    from PIL import Image

    gen = edgekit.load(art, device="cpu")
    a, b = images()
    path = tmp_path / "b.png"
    b.save(path)
    opts = {"max_new_tokens": 6, "eos_token_id": []}  # no early stop: six tokens each, every one compared
    pixels = np.asarray(b)
    want_bytes = gen.generate(PROMPT, images=[Image.open(io.BytesIO(_png(a)))], **opts)
    want_pixels = gen.generate(PROMPT, images=[pixels], **opts)
    assert want_bytes != want_pixels  # the two images give two answers: the image reaches the decoder
    two = "<image> and <image> the cat"
    for protocol in ("http", "grpc"):
        c = _client(server, protocol)
        assert c.generate("llava", PROMPT, images=[_png(a)], **opts) == want_bytes
        assert c.generate("llava", PROMPT, images=[pixels], **opts) == want_pixels
        assert c.generate("llava", PROMPT, images=[path], **opts) == want_pixels  # a path: its PNG bytes
        assert c.generate("llava", two, images=[_png(a), path], **opts) == gen.generate(two, images=[a, b], **opts)
    pieces = list(_client(server, "grpc").stream("llava", PROMPT, images=[pixels], **opts))
    assert pieces == list(gen.generate(PROMPT, images=[pixels], stream=True, **opts))


def test_bad_images_are_refused_with_edgekits_message(server: Any, art: Path) -> None:
    import tritonclient.http as th

    c = _client(server, "http")
    with pytest.raises(edgekit.InputError, match="IMAGE 0 is not an image PIL can read"):
        c.generate("llava", PROMPT, images=[b"not an image"], max_new_tokens=2)
    with pytest.raises(edgekit.InputError, match="an image array must be HxW, HxWx1, HxWx3 or HxWx4"):
        c.generate("llava", PROMPT, images=[np.zeros((8, 8, 2), np.uint8)], max_new_tokens=2)
    with pytest.raises(edgekit.InputError, match="image placeholders"):
        c.generate("llava", "the cat", images=[_png(images()[0])], max_new_tokens=2)  # no <image> for it
    with pytest.raises(edgekit.InputError, match="images travel in the IMAGE or PIXELS tensors"):
        c.generate("llava", PROMPT, images=[_png(images()[0])], messages=[
            {"role": "user", "content": [{"type": "image", "image": str(art / "manifest.json")}]}])
    # Both image tensors at once: their order against each other is unknown, so refused.
    tensors = []
    for name, value, dtype in (("PROMPT", np.array([PROMPT.encode()], dtype=object), "BYTES"),
                               ("IMAGE", np.array([_png(images()[0])], dtype=object), "BYTES"),
                               ("PIXELS", np.zeros((1, 8, 8, 3), np.uint8), "UINT8")):
        t = th.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        tensors.append(t)
    with pytest.raises(edgekit.InputError, match="as IMAGE or as PIXELS, not both"):
        c._infer("llava", tensors)
    meta = c.conn.get_model_metadata("llava")
    assert {t["name"] for t in meta["inputs"]} == {"PROMPT", "INPUT_IDS", "OPTIONS", "IMAGE", "PIXELS"}
    # The server serves on after the refusals.
    assert isinstance(c.generate("llava", PROMPT, images=[_png(images()[0])], max_new_tokens=2), str)
