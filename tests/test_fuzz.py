"""Fuzzing every user-facing input path: whatever comes in, what comes out is a valid answer or an
`EdgekitError` -- never a raw numpy/PIL/onnxruntime exception, never an interpreter abort."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import edgekit
from edgekit.errors import ArtifactError, EdgekitError, InputError
from reliability_models import IMAGE_LABELS, TEXT_LABELS, WORDS, converted

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted(tmp_path_factory, "image"), device="cpu")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return edgekit.load(converted(tmp_path_factory, "text"), device="cpu")


def _classify_or_edgekit_error(model: Any, x: Any, labels: list[str], top_k: Any = 3) -> None:
    try:
        out = model.classify(x, top_k=top_k)
    except EdgekitError:
        return
    rows = out if out and isinstance(out[0], list) else [out]
    for row in rows:
        assert 1 <= len(row) <= len(labels) and {p.label for p in row} <= set(labels)
        scores = [p.score for p in row]
        assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------ images

DTYPES = ["uint8", "int8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool", "complex64", "object"]


def _damaged(draw: Any, data: bytes) -> bytes:
    """A valid file's bytes, whole, truncated, with flipped bytes, or replaced by garbage."""
    how = draw(st.sampled_from(["whole", "truncate", "flip", "garbage"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    if how == "garbage":
        return draw(st.binary(max_size=512))
    return data


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    shape = draw(st.lists(st.integers(0, 40), max_size=5).filter(lambda s: int(np.prod(s)) <= 40_000))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "object":
        return np.full(shape, None, dtype=object)
    values = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 255.0, 1e30]))
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@FUZZ
@given(x=arrays())
def test_image_arrays_of_any_dtype_and_rank(image_model: Any, x: np.ndarray) -> None:
    _classify_or_edgekit_error(image_model, x, IMAGE_LABELS)


@FUZZ
@given(x=arrays(), name=st.sampled_from(["pixel_values", "input_ids", "x"]))
def test_raw_forward_with_any_array(image_model: Any, x: np.ndarray, name: str) -> None:
    try:
        out = image_model(**{name: x})
    except EdgekitError:
        return
    assert out["logits"].shape == (x.shape[0], len(IMAGE_LABELS))


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "I;16", "La"]


@FUZZ
@given(mode=st.sampled_from(MODES), w=st.integers(1, 64), h=st.integers(1, 64), seed=st.integers(0, 999))
def test_pil_images_of_odd_sizes_and_modes(image_model: Any, mode: str, w: int, h: int, seed: int) -> None:
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    try:
        img = rgb.convert(mode)
    except ValueError:
        img = Image.new(mode, (w, h))
    _classify_or_edgekit_error(image_model, img, IMAGE_LABELS)


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    buf = io.BytesIO()
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]))
    side = draw(st.integers(1, 40))
    Image.fromarray(np.full((side, side, 3), draw(st.integers(0, 255)), np.uint8)).save(buf, format=fmt)
    return _damaged(draw, buf.getvalue())


@FUZZ
@given(data=image_files(), suffix=st.sampled_from([".png", ".jpg", ".bin", ""]))
def test_image_files_whole_truncated_or_garbage(image_model: Any, tmp_path: Path, data: bytes, suffix: str) -> None:
    p = tmp_path / f"img{suffix}"
    p.write_bytes(data)
    _classify_or_edgekit_error(image_model, str(p), IMAGE_LABELS)
    _classify_or_edgekit_error(image_model, [p, p], IMAGE_LABELS)


@FUZZ
@given(path=st.text(max_size=30))
def test_image_paths_of_any_text(image_model: Any, path: str) -> None:
    _classify_or_edgekit_error(image_model, path, IMAGE_LABELS)


@FUZZ
@given(top_k=st.one_of(st.integers(-5, 10**9), st.floats(allow_nan=True), st.none(), st.text(max_size=3), st.booleans()))
def test_top_k_of_any_value(image_model: Any, top_k: Any) -> None:
    _classify_or_edgekit_error(image_model, np.zeros((24, 24, 3), np.uint8), IMAGE_LABELS, top_k)


@FUZZ
@given(batch=st.lists(st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.floats(), st.just([]),
                                st.just(np.zeros((8, 8, 3), np.uint8))), max_size=4))
def test_batches_of_mixed_junk(image_model: Any, batch: list[Any]) -> None:
    _classify_or_edgekit_error(image_model, batch, IMAGE_LABELS)


# ------------------------------------------------------------------ texts

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # control, format, private use, surrogates


@FUZZ
@given(text=st.one_of(st.text(ANY_CHAR, max_size=200),
                      st.lists(st.sampled_from(WORDS + ["\x00", "\u202e", "\ufeff", "\ud800", "\n\t"]),
                               max_size=300).map(" ".join)))
def test_texts_with_any_unicode(text_model: Any, text: str) -> None:
    _classify_or_edgekit_error(text_model, text, TEXT_LABELS)
    _classify_or_edgekit_error(text_model, [text, "the cat"], TEXT_LABELS)


@FUZZ
@given(x=st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.lists(st.integers(), max_size=3), arrays()))
def test_text_model_given_non_text(text_model: Any, x: Any) -> None:
    _classify_or_edgekit_error(text_model, x, TEXT_LABELS)


# ------------------------------------------------------------------ manifests

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document, to pick one and replace what is there."""
    out = [prefix]
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


@pytest.fixture(scope="module")
def manifest_art(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    art = converted(tmp_path_factory, "image")
    return art, json.loads((art / "edgekit.json").read_text())


def _kind(v: Any) -> str:
    """A JSON value's kind; ints and floats are one ("number"), as the contract's float fields take ints."""
    return {bool: "bool", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(v), "null")


@FUZZ
@given(data=st.data())
def test_manifests_with_any_field_replaced(manifest_art: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory,
                                           data: st.DataObject) -> None:
    """Any manifest field given a value of another kind is refused at load, as an ArtifactError that
    names it. Null is left out (an optional field takes it), and a graph dim takes a number (a fixed
    size) or a string (a named dynamic dim) by the format, so a dim gets neither."""
    src, manifest = manifest_art
    art = tmp_path_factory.mktemp("manifest")
    for f in src.iterdir():
        os.link(f, art / f.name)  # hard links: cheap, and the manifest is rewritten, not edited
    (art / "edgekit.json").unlink()
    doc = json.loads(json.dumps(manifest))
    path = data.draw(st.sampled_from([p for p in _paths(doc) if p and p[0] not in ("versions", "source")]))
    target = doc
    for k in path[:-1]:
        target = target[k]
    allowed = {"number", "string"} if len(path) > 1 and path[-2] == "shape" else {_kind(target[path[-1]])}
    value = data.draw(JSON.filter(lambda v: v is not None and _kind(v) not in allowed))
    target[path[-1]] = value
    (art / "edgekit.json").write_text(json.dumps(doc))
    try:
        with pytest.raises(ArtifactError):
            edgekit.load(art, device="cpu")
    finally:
        shutil.rmtree(art)


def test_every_manifest_field_refuses_each_other_kind(manifest_art: tuple[Path, dict[str, Any]],
                                                     tmp_path: Path) -> None:
    """The fuzz above, exhaustively: every field, one value of each other kind (same rules)."""
    src, manifest = manifest_art
    for f in src.iterdir():
        if f.name != "edgekit.json":
            os.link(f, tmp_path / f.name)
    kinds = [True, 7, 2.5, "x", [1], {"a": 1}]
    accepted = []
    for path in [p for p in _paths(manifest) if p and p[0] not in ("versions", "source")]:
        doc = json.loads(json.dumps(manifest))
        target = doc
        for k in path[:-1]:
            target = target[k]
        allowed = {"number", "string"} if len(path) > 1 and path[-2] == "shape" else {_kind(target[path[-1]])}
        for value in (v for v in kinds if _kind(v) not in allowed):
            target[path[-1]] = value
            (tmp_path / "edgekit.json").write_text(json.dumps(doc))
            try:
                edgekit.load(tmp_path, device="cpu")
                accepted.append((path, value))
            except ArtifactError:
                pass
    assert not accepted, f"manifest values of the wrong kind loaded: {accepted[:6]}"


@FUZZ
@given(doc=st.one_of(JSON, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_manifest_that_is_any_json_or_garbage(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    art = tmp_path_factory.mktemp("garbage")
    (art / "edgekit.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(EdgekitError):
        edgekit.load(art, device="cpu")


# ------------------------------------------------------------------ artifact bytes (in a child: an abort must not take pytest down)

_CHILD = r"""
import json, shutil, sys
import numpy as np
import edgekit
from edgekit.artifact import sha256_file
from edgekit.errors import EdgekitError
src, work, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
outcomes = {"ok": 0, "edgekit": 0}
for i in range(n):
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    rel = ["model.onnx", "weights.data"][i % 2]
    data = bytearray(open(f"{work}/{rel}", "rb").read())
    how = i % 3
    if how == 0:
        data = data[: int(rng.integers(0, len(data)))]
    elif how == 1:
        for _ in range(int(rng.integers(1, 16))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    else:
        start = int(rng.integers(0, len(data)))
        data[start:start + 64] = rng.integers(0, 256, 64).astype(np.uint8).tobytes()
    open(f"{work}/{rel}", "wb").write(bytes(data))
    m = json.load(open(f"{work}/edgekit.json"))
    m["files"][rel] = sha256_file(__import__("pathlib").Path(work) / rel)  # get past the checksum
    json.dump(m, open(f"{work}/edgekit.json", "w"))
    try:
        model = edgekit.load(work, device="cpu")
        model.classify(np.zeros((24, 24, 3), np.uint8), top_k=2)
        outcomes["ok"] += 1
    except EdgekitError:
        outcomes["edgekit"] += 1
print(json.dumps(outcomes))
"""


def test_corrupted_graph_and_weights_give_edgekit_errors_not_aborts(tmp_path_factory: pytest.TempPathFactory,
                                                                    tmp_path: Path) -> None:
    src = converted(tmp_path_factory, "image")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    r = subprocess.run([sys.executable, str(script), str(src), str(tmp_path / "work"), "0", "60"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    outcomes = json.loads(r.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == 60 and outcomes["edgekit"] > 0


# ------------------------------------------------------------------ generate: prompts, ids, options


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from reliability_models import converted_gpt2

    return edgekit.load(converted_gpt2(tmp_path_factory), device="cpu")


def _generate_or_edgekit_error(model: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        out = model.generate(*args, **kwargs)
        return list(out) if kwargs.get("stream") else out
    except EdgekitError:
        return None


@FUZZ
@given(prompt=st.one_of(st.text(ANY_CHAR, max_size=80), st.sampled_from(["", " ", "\x00", "\ud800x", "\u202e\ufeff"])),
       stream=st.booleans())
def test_prompts_with_any_unicode(generator: Any, prompt: str, stream: bool) -> None:
    out = _generate_or_edgekit_error(generator, prompt, max_new_tokens=3, stream=stream)
    if out is not None:
        assert isinstance(out, str) or all(isinstance(p, str) for p in out)


@FUZZ
@given(ids=arrays(), big=st.sampled_from([None, -1, 10**6, 2**62]))
def test_input_ids_of_any_dtype_rank_and_value(generator: Any, ids: np.ndarray, big: int | None) -> None:
    if big is not None and ids.size and ids.dtype.kind in "iu" and ids.dtype.itemsize == 8:
        ids.flat[0] = big
    out = _generate_or_edgekit_error(generator, input_ids=ids, max_new_tokens=2)
    if out is not None:  # the prompt rows kept, then one or two new tokens (fewer only where all rows end)
        assert out.dtype == np.int64 and out.shape[0] == ids.shape[0] and 1 <= out.shape[1] - ids.shape[1] <= 2
        assert np.array_equal(out[:, : ids.shape[1]], ids)


NUMBERS = st.one_of(st.none(), st.integers(-3, 400), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=2))


@FUZZ
@given(max_new_tokens=NUMBERS, temperature=NUMBERS, top_k=NUMBERS, top_p=NUMBERS, repetition_penalty=NUMBERS,
       do_sample=st.one_of(st.none(), st.booleans(), st.integers(0, 2)), seed=NUMBERS)
def test_generation_options_of_any_value(generator: Any, **options: Any) -> None:
    out = _generate_or_edgekit_error(generator, "def f(", **options)
    if out is not None:
        assert isinstance(out, str)


@FUZZ
@given(prompts=st.lists(st.one_of(st.text(max_size=20), st.none(), st.integers(), st.binary(max_size=4)), max_size=4))
def test_prompt_batches_of_mixed_junk(generator: Any, prompts: list[Any]) -> None:
    out = _generate_or_edgekit_error(generator, prompts, max_new_tokens=2)
    if out is not None:
        assert isinstance(out, list) and len(out) == len(prompts)


# ------------------------------------------------------------------ recognize: waveforms and audio files


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from reliability_models import converted_w2v

    return edgekit.load(converted_w2v(tmp_path_factory), device="cpu")


def _recognize_or_edgekit_error(model: Any, *args: Any, **kwargs: Any) -> None:
    from edgekit.results import Transcript

    try:
        out = model.recognize(*args, **kwargs)
    except EdgekitError:
        return
    assert isinstance(out, Transcript) and isinstance(out.text, str)


@FUZZ
@given(wave=arrays(), rate=st.one_of(st.none(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.booleans()))
def test_waveforms_of_any_dtype_rank_and_rate(recognizer: Any, wave: np.ndarray, rate: Any) -> None:
    _recognize_or_edgekit_error(recognizer, wave, sample_rate=rate)


@st.composite
def audio_files(draw: st.DrawFn) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    fmt = draw(st.sampled_from(["WAV", "FLAC", "OGG"]))
    rate = draw(st.sampled_from([8000, 16000, 22050, 44100]))
    n = draw(st.integers(1, 4000))
    channels = draw(st.integers(1, 3))
    wave = np.random.default_rng(draw(st.integers(0, 999))).uniform(-1, 1, (n, channels)).astype(np.float32)
    sf.write(buf, wave, rate, format=fmt)
    return _damaged(draw, buf.getvalue())


@FUZZ
@given(data=audio_files(), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ""]))
def test_audio_files_whole_truncated_or_garbage(recognizer: Any, tmp_path: Path, data: bytes, suffix: str) -> None:
    p = tmp_path / f"clip{suffix}"
    p.write_bytes(data)
    _recognize_or_edgekit_error(recognizer, str(p))
    _recognize_or_edgekit_error(recognizer, p, sample_rate=16000)  # a rate with a file: refused, not crashed
