"""edgekit artifacts served by the real Triton server (bundled with nvidia-pytriton), on loopback.

One server for the module holds every task: an image and a text classifier, a tiny GPT-2, a
wav2vec2-CTC and a Whisper recognizer (the last three with their streaming twins). Answers over HTTP and gRPC are compared
with the in-process calls on the same raw inputs; request counts and waits are bounded.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from reliability_models import converted, converted_gpt2, converted_w2v, converted_whisper
from serve_support import free_ports, png_bytes, serving_or_skip, speech_like, wav_bytes

PROTOCOLS = ["http", "grpc"]


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    serving_or_skip()
    f = tmp_path_factory
    return {"image": converted(f, "image"), "text": converted(f, "text"), "gpt": converted_gpt2(f),
            "ctc": converted_w2v(f), "whisper": converted_whisper(f)}


@pytest.fixture(scope="module")
def local(arts: dict[str, Path]) -> dict[str, Any]:
    return {name: edgekit.load(path, device="cpu") for name, path in arts.items()}


@pytest.fixture(scope="module")
def server(arts: dict[str, Path]) -> Any:
    http, grpc, metrics = free_ports(3)
    with edgekit.serve(list(arts.values()), names=list(arts), http_port=http, grpc_port=grpc, metrics_port=metrics,
                       device="cpu", max_batch=8, batch_delay_us=2000, streams=4) as s:
        yield s


def client(server: Any, protocol: str) -> Any:
    from edgekit.serving.client import Client

    return Client(server.http_url if protocol == "http" else server.grpc_url, protocol)


def same_predictions(got: Any, want: Any, atol: float = 0.0) -> None:
    got_rows, want_rows = (got, want) if isinstance(want[0], list) else ([got], [want])
    for g, w in zip(got_rows, want_rows, strict=True):
        assert [(p.label, p.index) for p in g] == [(p.label, p.index) for p in w]
        np.testing.assert_allclose([p.score for p in g], [np.float32(p.score) for p in w], rtol=0, atol=atol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classify_matches_in_process(server: Any, local: dict[str, Any], protocol: str, tmp_path: Path) -> None:
    c = client(server, protocol)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png_bytes(i, size=(20 + 7 * i, 31)))
    same_predictions(c.classify("image", [str(p) for p in paths], top_k=2), local["image"].classify(paths, top_k=2))
    same_predictions(c.classify("image", str(paths[0])), local["image"].classify(paths[0]))
    pixels = (np.random.default_rng(5).random((2, 17, 23, 3)) * 255).astype(np.uint8)
    same_predictions(c.classify("image", list(pixels), top_k=3), local["image"].classify(list(pixels), top_k=3))
    texts = ["the cat sat on the mat", "über naïve 東京 ☃ 🙂", "happy"]
    same_predictions(c.classify("text", texts, top_k=1), local["text"].classify(texts, top_k=1))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generate_matches_in_process(server: Any, local: dict[str, Any], protocol: str) -> None:
    c, gen = client(server, protocol), local["gpt"]
    for prompt in ["the cat", "über 東京 sat"]:
        assert c.generate("gpt", prompt, max_new_tokens=12) == gen.generate(prompt, max_new_tokens=12)
    sampled = {"do_sample": True, "top_k": 20, "top_p": 0.9, "temperature": 0.8, "seed": 3, "max_new_tokens": 10}
    assert c.generate("gpt", "the dog", **sampled) == gen.generate("the dog", **sampled)
    ids = np.array([[5, 6, 7, 8]])
    np.testing.assert_array_equal(c.generate("gpt", input_ids=ids, max_new_tokens=5),
                                  gen.generate(input_ids=ids, max_new_tokens=5))


def test_structured_output_per_request(server: Any, local: dict[str, Any]) -> None:
    """A schema, regex or grammar rides in OPTIONS with each request (generate's keywords pass through by
    name): the served answer is the in-process one, and it validates."""
    import json
    import re

    import jsonschema

    schema = {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1, "maximum": 99},
                                               "ok": {"type": "boolean"}},
              "required": ["qty", "ok"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    c, gen = client(server, "grpc"), local["gpt"]
    got = c.generate("gpt", "The order:", max_new_tokens=40, response_format=fmt)
    assert got == gen.generate("The order:", max_new_tokens=40, response_format=fmt)
    jsonschema.validate(json.loads(got), schema)
    assert re.fullmatch(r"[a-c]{2,4}-\d{2}", c.generate("gpt", "id:", max_new_tokens=12, regex=r"[a-c]{2,4}-\d{2}"))
    with pytest.raises(edgekit.InputError, match="uniqueItems"):  # refused by the server, by name
        c.generate("gpt", "x", response_format={"type": "json_schema", "json_schema": {
            "name": "u", "schema": {"type": "array", "uniqueItems": True}}})


def test_streamed_pieces_join_to_the_text(server: Any, local: dict[str, Any]) -> None:
    c, gen = client(server, "grpc"), local["gpt"]
    for prompt in ["the cat", "a 🙂 owl"]:
        pieces = list(c.stream("gpt", prompt, max_new_tokens=16))
        assert pieces == list(gen.generate(prompt, max_new_tokens=16, stream=True))
        assert "".join(pieces) == gen.generate(prompt, max_new_tokens=16)
    with pytest.raises(edgekit.InputError, match="streaming needs the gRPC protocol"):
        next(client(server, "http").stream("gpt", "the cat"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["ctc", "whisper"])
def test_recognize_matches_in_process(server: Any, local: dict[str, Any], protocol: str, name: str,
                                      tmp_path: Path) -> None:
    c, asr = client(server, protocol), local[name]
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(speech_like(1.5, 16000), 16000))
    assert c.recognize(name, wav) == asr.recognize(wav)  # file bytes: the file's own rate
    wave = speech_like(1.2, 22050, seed=1)
    assert c.recognize(name, wave, sample_rate=22050) == asr.recognize(wave, sample_rate=22050)  # PCM, resampled


@pytest.mark.parametrize("name", ["ctc", "whisper"])
def test_recognize_stream_over_grpc_equals_in_process(server: Any, local: dict[str, Any], name: str) -> None:
    """NAME_stream cuts the clip into chunk_s pieces and answers each StreamUpdate as recognize_stream does."""
    c, asr, rate = client(server, "grpc"), local[name], 22050
    wave = speech_like(2.0, rate, seed=4)
    opts: dict[str, Any] = {"lookahead_s": 0.3} if name == "ctc" else {"step_s": 1.0, "max_new_tokens": 8}
    got = list(c.recognize_stream(name, wave, sample_rate=rate, chunk_s=0.25, **opts))
    step = int(0.25 * rate)
    want = list(asr.recognize_stream((wave[i:i + step] for i in range(0, len(wave), step)), sample_rate=rate, **opts))
    assert len(got) == len(want) == 10 and got[-1].is_final and want[-1].text_final  # 8.0002 pieces + the end
    for g, w in zip(got, want):  # AUDIO_S travels as float32
        assert g == dataclasses.replace(w, audio_s=float(np.float32(w.audio_s)))
    with pytest.raises(edgekit.InputError, match="chunk_s"):
        list(c.recognize_stream(name, wave, sample_rate=rate, chunk_s=0))
    with pytest.raises(edgekit.InputError, match="recognize_stream got unknown options"):
        list(c.recognize_stream(name, wave, sample_rate=rate, beams=2))
    with pytest.raises(edgekit.InputError, match="streaming needs the gRPC protocol"):
        next(client(server, "http").recognize_stream(name, wave))


def test_32_clients_x_20_requests_equal_the_serial_answers(server: Any) -> None:
    """Dynamic batching joins concurrent requests; every answer must still be the serial one.

    Scores may differ in the last float32 bits when a row runs inside a bigger batch (onnxruntime's
    kernels block the batch differently), so they are compared to 1e-6; labels exactly."""
    images = [png_bytes(100 + i, size=(24, 24)) for i in range(20)]
    serial_client = client(server, "http")
    serial = [serial_client.classify("image", img, top_k=3) for img in images]
    errors: list[BaseException] = []
    answers: dict[tuple[int, int], Any] = {}

    def worker(t: int) -> None:
        try:
            c = client(server, PROTOCOLS[t % 2])
            for r in range(20):
                i = (t + r) % 20
                answers[(t, r)] = (i, c.classify("image", images[i], top_k=3))
        except BaseException as e:  # collected, re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=240)
    assert not errors, errors[:3]
    assert len(answers) == 32 * 20
    for i, got in answers.values():
        same_predictions(got, serial[i], atol=1e-6)
    stats = serial_client.conn.get_inference_statistics("image")["model_stats"][0]["batch_stats"]
    assert max(int(b["batch_size"]) for b in stats) > 1, "the dynamic batcher never joined two requests"


def test_malformed_requests_get_400_with_edgekits_message(server: Any) -> None:
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    h = th.InferenceServerClient(server.http_url)
    g = tg.InferenceServerClient(server.grpc_url)

    def refused(conn: Any, model: str, inputs: list[tuple[str, np.ndarray]], *expect: str) -> None:
        mod = th if conn is h else tg
        tensors = []
        for name, value in inputs:
            dtype = "BYTES" if value.dtype == object else {"float32": "FP32", "uint8": "UINT8", "int32": "INT32"}[
                str(value.dtype)]
            t = mod.InferInput(name, list(value.shape), dtype)
            t.set_data_from_numpy(value)
            tensors.append(t)
        with pytest.raises(InferenceServerException) as e:
            conn.infer(model, tensors)
        status = str(e.value.status())
        assert status == "400" if conn is h else status == "StatusCode.INVALID_ARGUMENT", status
        for text in expect:
            assert text in e.value.message(), e.value.message()

    for conn in (h, g):
        refused(conn, "image", [("IMAGE", np.array([[b"not an image"]], dtype=object))],
                "IMAGE row 0 is not an image PIL can read", "Fix: send the bytes of a JPEG")
        refused(conn, "image", [("PIXELS", np.zeros((1, 8, 8, 2), np.uint8))], "an image array must be HxW")
        refused(conn, "image", [("IMAGE", np.array([[png_bytes(0)]], dtype=object)),
                                ("PIXELS", np.zeros((1, 8, 8, 3), np.uint8))], "exactly one of the inputs IMAGE, PIXELS")
        # A dtype other than the one config.pbtxt declares is refused by Triton itself, before edgekit.
        refused(conn, "image", [("PIXELS", np.zeros((1, 8, 8, 3), np.float32))], "UINT8")
        refused(conn, "gpt", [("PROMPT", np.array([b"the cat"], dtype=object)),
                              ("OPTIONS", np.array([b'{"max_new_tokens": 4, "bogus": 1}'], dtype=object))],
                "generate got unknown arguments ['bogus']")
        refused(conn, "gpt", [("PROMPT", np.array([b"the cat"], dtype=object)),
                              ("OPTIONS", np.array([b"{max_new_tokens: 4"], dtype=object))],
                "OPTIONS must be one JSON object")
        refused(conn, "gpt", [("PROMPT", np.array([b"\xff\xfe"], dtype=object))], "PROMPT must be UTF-8 text")
        refused(conn, "ctc", [("AUDIO", np.array([b"RIFF...."], dtype=object))], "AUDIO is not a readable audio file")
        refused(conn, "ctc", [("PCM", np.zeros(1600, np.float32)),
                              ("OPTIONS", np.array([b'{"beam": 2}'], dtype=object))], "recognize got unknown options")
        refused(conn, "ctc", [("PCM", np.zeros(1600, np.float32)), ("SAMPLE_RATE", np.array([-5], np.int32))],
                "sample_rate must be a positive integer")
    # The server keeps serving.
    assert client(server, "grpc").classify("image", png_bytes(1))[0].label in ("cat", "dog", "owl")
    with pytest.raises(edgekit.InputError, match="generate got unknown arguments"):
        list(client(server, "grpc").stream("gpt", "the cat", bogus=1))


def test_a_client_that_disconnects_mid_stream_frees_its_generation(server: Any) -> None:
    c = client(server, "grpc")
    # eos_token_id=[]: nothing ends the 240 tokens early but the client going away (context: 256).
    got = list(c.stream("gpt", "the cat", max_new_tokens=240, eos_token_id=[], stop_after=2))
    assert len(got) == 2
    deadline, seen = time.monotonic() + 60, None
    while seen is None and time.monotonic() < deadline:
        seen = next((ln for ln in server.log().splitlines() if "the client cancelled the stream" in ln), None)
        time.sleep(0.2)
    assert seen is not None, "the model never saw the cancellation"
    pieces = int(seen.split("after ")[1].split(" pieces")[0])
    assert 2 <= pieces < 240, seen
    assert len(list(c.stream("gpt", "the cat", max_new_tokens=6))) >= 1  # and streams on


def test_metrics_endpoint(server: Any) -> None:
    client(server, "http").classify("image", png_bytes(2))
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="image",version="1"}' in text
    meta = json.loads(urllib.request.urlopen(f"http://{server.http_url}/v2/models/gpt_stream", timeout=10).read())
    assert {t["name"] for t in meta["inputs"]} == {"PROMPT", "INPUT_IDS", "OPTIONS"}
