"""TensorRT builder and runner control flow on the CPU, against recording fakes (tests/trt_fakes.py).

What is real here: profile choice, fingerprints, plan files and manifest records, timing-cache
reuse, mismatch detection, the runner's buffer/profile/stream logic (the fake engine runs the
ONNX with onnxruntime on fake device memory). What is not: TensorRT itself (see gpu.md).
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import trt_fakes as F
from edgekit.runtimes.tensorrt import build as T
from edgekit.engines import EngineRecord, Machine
from edgekit.errors import BackendUnavailableError, EngineError, InputError
from edgekit.contract import ClassifySection, CtcSection, GenerateSection, GraphSpec, TensorSpec, WhisperSection
from edgekit.contract.classify import TensorInput
from edgekit.contract.generate import kv_state
from edgekit.contract.recognize import Chunking
from edgekit.manifest import Manifest
from edgekit.runtimes.tensorrt import profiles as P


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def cnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import edgekit

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    out = tmp_path_factory.mktemp("trt") / "cnn"
    edgekit.convert(net, out, example_inputs=torch.rand(1, 3, 16, 16), labels=["a", "b", "c"])
    return out


@pytest.fixture()
def art(cnn_artifact: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cnn"
    shutil.copytree(cnn_artifact, dst)
    return dst


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> F.Calls:
    c = F.Calls()
    F.install(monkeypatch, F.make_trt(c, dla_cores=2), F.make_cudart(c))
    return c


def _graph(inputs: list[TensorSpec]) -> GraphSpec:
    return GraphSpec("model.onnx", tuple(inputs), (TensorSpec("logits", "float32", ("batch", 3)),))


def _classify() -> ClassifySection:
    return ClassifySection(TensorInput("x"), ("a", "b", "c"))


def _generate(max_context: int) -> GenerateSection:
    return GenerateSection(None, True, (), None, 0, max_context, kv_state(1, 2, 16))


def _whisper(max_length: int, max_target_positions: int) -> WhisperSection:
    return WhisperSection(Chunking(16000, 30.0, 5.0), 80, 400, 160, 480000, "tokenizer.json", kv_state(1, 6, 64),
                          1, 2, 3, False, {}, {}, (), (), None, max_length, max_target_positions, 0.02)


def _ctc(features: str, chunk_length_s: float) -> CtcSection:
    return CtcSection(Chunking(16000, chunk_length_s, 2.0), features, False, 400, 160, 80,  # type: ignore[arg-type]
                      "input_values", ("_", "a"), 0, " ", ())


def _build(folder: Path, **opts: object) -> EngineRecord:
    m = Manifest.load(folder)
    records = T.build_engines(folder, m, T.BuildOptions(**opts))  # type: ignore[arg-type]
    return records["model"]


# ---------------------------------------------------------------- profiles

def test_classify_profile_is_one_batch_range() -> None:
    g = _graph([TensorSpec("pixel_values", "float32", ("batch", 3, 16, 16))])
    assert P.choose_profiles(_classify(), "model", g) == [("all", {"batch": (1, 8, 32)})]
    shapes = P.input_shapes(g, {"batch": (1, 8, 32)})
    assert shapes == {"pixel_values": ([1, 3, 16, 16], [8, 3, 16, 16], [32, 3, 16, 16])}


def test_generation_gets_prompt_verify_and_decode_profiles() -> None:
    g = _graph([
        TensorSpec("input_ids", "int64", ("batch", "sequence")),
        TensorSpec("attention_mask", "int64", ("batch", "past_sequence + sequence")),
        TensorSpec("past_key_0", "float16", ("batch", 2, "past_sequence", 16)),
    ])
    (p_name, prompt), (v_name, verify), (d_name, decode) = P.choose_profiles(_generate(256), "model", g)
    assert (p_name, v_name, d_name) == ("prompt", "verify", "decode")
    assert prompt["sequence"] == (1, 128, 256) and prompt["past_sequence"] == (0, 0, 255)
    assert decode["sequence"] == (1, 1, 1) and decode["past_sequence"] == (1, 128, 255)
    assert decode["past_sequence + sequence"] == (2, 129, 256)  # derived dims add up
    assert prompt["batch"] == decode["batch"] == (1, 1, 4)
    # Speculative decoding's verify: one row, its token and up to 31 drafts after the whole resident cache.
    assert verify == {"batch": (1, 1, 1), "sequence": (2, 16, 32), "past_sequence": (1, 128, 255),
                      "past_sequence + sequence": (3, 144, 287)}
    shapes = P.input_shapes(g, decode)
    assert shapes["past_key_0"] == ([1, 2, 1, 16], [1, 2, 128, 16], [4, 2, 255, 16])
    assert "input_ids" in shapes and shapes["input_ids"][2] == [4, 1]


def test_generator_and_whisper_dims_as_exported() -> None:
    # The generate export: past 0 at the prompt, a preallocated past at decode; mask = past + current.
    kv = ("batch", 2, "past_sequence", 8)
    g = _graph([TensorSpec("input_ids", "int64", ("batch", "sequence")),
                TensorSpec("attention_mask", "int64", ("batch", "total_sequence")),
                TensorSpec("position_ids", "int64", ("batch", "sequence")),
                TensorSpec("past_key_values.0.key", "float32", kv)])
    (_, prompt), (_, verify), (_, decode) = P.choose_profiles(_generate(1024), "model", g)
    assert prompt["total_sequence"] == (1, 128, 1024) and decode["total_sequence"] == (2, 513, 1024)
    assert verify["total_sequence"] == (3, 528, 1055)  # past + tokens: 1023 slots and 32 tokens at most
    # Whisper's decoder has the same dims; its context is the position table (max_target_positions),
    # which max_new_tokens may use past max_length.
    w = _graph([TensorSpec("input_ids", "int64", ("batch", "sequence")),
                TensorSpec("attention_mask", "int64", ("batch", "total_sequence")),
                TensorSpec("position_ids", "int64", ("batch", "sequence")),
                TensorSpec("past_key_values.0.key", "float32", ("batch", 6, "past_sequence", 64))])
    (_, wp), (_, wd) = P.choose_profiles(_whisper(200, 448), "decoder", w)
    # Prompt: up to 448 tokens on an empty cache. Decode: one token on a cache of up to 447 slots.
    assert wp == {"batch": (1, 1, 4), "past_sequence": (0, 0, 447), "sequence": (1, 128, 448),
                  "total_sequence": (1, 128, 448)}
    assert wd == {"batch": (1, 1, 4), "past_sequence": (1, 224, 447), "sequence": (1, 1, 1),
                  "total_sequence": (2, 225, 448)}
    # CTC on waveforms: chunks of chunk_length_s; on features: frames from the hop length.
    ctc = _graph([TensorSpec("input_values", "float32", ("batch", "samples"))])
    [(_, dims)] = P.choose_profiles(_ctc("waveform", 20.0), "model", ctc)
    feats = _graph([TensorSpec("input_features", "float32", ("batch", 80, "frames"))])
    [(_, frames)] = P.choose_profiles(_ctc("log-mel", 20.0), "model", feats)
    assert dims["samples"] == (1600, 320000, 320000) and frames["frames"][2] == 2001


def test_recognize_frames_and_overrides_and_unknown_dims() -> None:
    g = _graph([TensorSpec("input_features", "float32", ("batch", 80, "frames"))])
    section = _ctc("log-mel", 9.99)  # 159840 samples: 1000 frames of 160
    [(_, dims)] = P.choose_profiles(section, "model", g, max_batch=2)
    assert dims == {"batch": (1, 1, 2), "frames": (1, 1000, 1000)}
    [(_, dims)] = P.choose_profiles(section, "model", g, shapes={"frames": (100, 200, 300)})
    assert dims["frames"] == (100, 200, 300)
    odd = _graph([TensorSpec("x", "float32", ("batch", "height"))])
    with pytest.raises(EngineError, match="'height'.*--shape height=MIN,OPT,MAX"):
        P.choose_profiles(_classify(), "model", odd)
    static = _graph([TensorSpec("x", "float32", (1, 3))])
    assert P.choose_profiles(_classify(), "model", static) == []


def test_runner_picks_the_profile_of_each_call() -> None:
    from edgekit.runtimes.tensorrt.runner import pick_profile

    inputs = [TensorSpec("ids", "int64", ["batch", "sequence"]), TensorSpec("past", "float32", ["batch", "past_sequence"])]
    profiles = [{"batch": [1, 1, 4], "sequence": [1, 128, 256], "past_sequence": [0, 0, 255]},
                {"batch": [1, 1, 1], "sequence": [2, 16, 32], "past_sequence": [1, 128, 255]},
                {"batch": [1, 1, 4], "sequence": [1, 1, 1], "past_sequence": [1, 128, 255]}]
    feeds = lambda s, p, b=1: {"ids": np.zeros((b, s), np.int64), "past": np.zeros((b, p), np.float32)}  # noqa: E731
    assert pick_profile(inputs, profiles, feeds(7, 0)) == 0
    assert pick_profile(inputs, profiles, feeds(1, 7)) == 2
    assert pick_profile(inputs, profiles, feeds(5, 7)) == 1  # drafts checked over the cache: verify
    assert pick_profile(inputs, profiles, feeds(33, 7)) == 0  # more than verify takes: the prompt's
    assert pick_profile(inputs, profiles, feeds(5, 7, 2)) == 0  # verify is one row
    assert pick_profile(inputs, profiles, feeds(1, 0)) == 0  # first token of an empty cache: prompt
    with pytest.raises(InputError, match="outside the TensorRT engine's profiles"):
        pick_profile(inputs, profiles, feeds(300, 0))


# ---------------------------------------------------------------- building

def test_build_writes_plan_record_and_timing_cache_then_reuses(art: Path, calls: F.Calls) -> None:
    record = _build(art, workspace_mb=512)
    plan = art / record.file
    assert plan.is_file() and plan.parent.name == "engines" and plan.suffix == ".plan"
    assert record.file == f"engines/{plan.stem}.plan" and plan.stem.startswith("model-h100-80gb-hbm3-sm90-trt10.3.0-fp32-")
    assert Manifest.load(art).engines[plan.stem] == record
    assert calls.config["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert calls.config["pool:WORKSPACE"] == 512 << 20
    # One copy of the profile set per execution context that may run at once (default 2).
    assert calls.profiles == [{"pixel_values": ([1, 3, 16, 16], [8, 3, 16, 16], [32, 3, 16, 16])}] * 2
    assert record.fingerprint.contexts == 2 and len(record.fingerprint.profiles) == 1
    cache = art / "engines" / "timing.cache"
    assert cache.read_bytes() == b"tactic;" and calls.timing_cache_loaded == [b""]

    again = _build(art)
    assert calls.builds == 1 and again == record  # same fingerprint: reused, not rebuilt

    _build(art, rebuild=True)
    assert calls.builds == 2
    assert calls.timing_cache_loaded == [b"", b"tactic;"]  # the kept cache was handed to the builder
    assert cache.read_bytes() == b"tactic;tactic;"


def test_other_profile_gets_its_own_plan(art: Path, calls: F.Calls) -> None:
    a, b = _build(art), _build(art, max_batch=4)
    assert a.file != b.file and calls.builds == 2
    assert len(Manifest.load(art).engines) == 2


def test_every_parser_error_is_reported(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = F.Calls()
    errors = [(3, "/conv/Conv", "Conv", "unsupported dilation"), (7, "/gelu/Erf", "Erf", "no fp8 kernel")]
    F.install(monkeypatch, F.make_trt(c, parse_errors=errors), F.make_cudart(c))
    with pytest.raises(EngineError) as e:
        _build(art)
    text = str(e.value)
    assert "(2 errors)" in text and "/conv/Conv (Conv): unsupported dilation" in text
    assert "/gelu/Erf (Erf): no fp8 kernel" in text and c.builds == 0


def test_failed_build_reports_trt_log(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = F.Calls()
    F.install(monkeypatch, F.make_trt(c, build_fails=True), F.make_cudart(c))
    with pytest.raises(EngineError, match="out of workspace for tactic X.*--workspace"):
        _build(art)
    assert not list((art / "engines").glob("*.plan"))


def test_dla_core_with_gpu_fallback(art: Path, calls: F.Calls) -> None:
    record = _build(art, dla_core=1)
    assert calls.config["DLA_core"] == 1 and repr(calls.config["default_device_type"]) == "DLA"
    assert "GPU_FALLBACK" in calls.flags and "-dla1-" in record.file
    with pytest.raises(EngineError, match="DLA core 2 was asked for.*has 2 DLA cores"):
        _build(art, dla_core=2)


def test_compatibility_options_change_the_fingerprint(art: Path, calls: F.Calls) -> None:
    record = _build(art, hardware_compatible=True, version_compatible=True, optimization_level=5)
    assert repr(calls.config["hardware_compatibility_level"]) == "AMPERE_PLUS"
    assert "VERSION_COMPATIBLE" in calls.flags and calls.config["builder_optimization_level"] == 5
    fp = record.fingerprint
    assert (fp.gpu, fp.cc, fp.trt) == ("ampere+", "8.0+", "10") and record.version_compatible


def test_progress_monitor_reports_steps_with_eta(art: Path, calls: F.Calls) -> None:
    seen: list[tuple] = []
    _build(art, progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert seen == [("Building engine", 1, 3), ("Building engine", 2, 3), ("Building engine", 3, 3)]
    assert [s[2] for s in calls.progress] == [True, True, True]  # never cancels

    clock = iter([0.0, 10.0, 30.0])
    eta = T.Eta(None, clock=lambda: next(clock))
    eta.start("Tactic search", None, 4)
    assert eta.step("Tactic search", 0) == pytest.approx(30.0)  # 10 s for 1 of 4 steps
    assert eta.step("Tactic search", 1) == pytest.approx(30.0)  # 30 s for 2 of 4


def test_tensorrt_missing_is_a_clear_error(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    F.install(monkeypatch, None, None)
    with pytest.raises(BackendUnavailableError, match=r"not installed.*pip install 'edgekit\[tensorrt\]'"):
        _build(art)


# ---------------------------------------------------------------- running

def test_load_tensorrt_runs_like_cpu_and_reuses_buffers(art: Path, calls: F.Calls) -> None:
    import edgekit

    _build(art)
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 16, 16), dtype=np.float32)
    with edgekit.load(art, device="tensorrt") as gpu, edgekit.load(art, device="cpu") as cpu:
        assert gpu.device == "tensorrt" and cpu.device == "onnxruntime-cpu"
        np.testing.assert_allclose(gpu(pixel_values=x)["logits"], cpu(pixel_values=x)["logits"], rtol=1e-6)
        mallocs = calls.mallocs
        gpu(pixel_values=x)
        assert calls.mallocs == mallocs  # same shapes: buffers reused
        big = rng.random((5, 3, 16, 16), dtype=np.float32)
        np.testing.assert_allclose(gpu(pixel_values=big)["logits"], cpu(pixel_values=big)["logits"], rtol=1e-6)
        image = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
        assert gpu.classify(image, top_k=3) == cpu.classify(image, top_k=3)
        with pytest.raises(InputError, match="outside the TensorRT engine's profiles"):
            gpu(pixel_values=np.zeros((33, 3, 16, 16), np.float32))
    assert calls.deserialized == 1 and calls.profile_switches == [0]


def test_concurrent_callers_share_contexts_each_with_its_own_profile(art: Path, calls: F.Calls) -> None:
    import edgekit

    _build(art)  # contexts=2: two copies of the profile set
    x = np.ones((1, 3, 16, 16), np.float32)
    model = edgekit.load(art, device="tensorrt")
    want = model(pixel_values=x)["logits"]
    results: list[np.ndarray] = []
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait()
        results.extend(model(pixel_values=x)["logits"] for _ in range(5))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 30 and all(np.array_equal(r, want) for r in results)
    # Never more contexts than profile copies, and TensorRT never asked for a profile another holds.
    assert calls.contexts <= 2 and calls.profile_clashes == 0
    assert set(calls.profile_switches) <= {0, 1}
    cudart = __import__("sys").modules["cuda.bindings.runtime"]
    model.close()
    assert cudart.live == {}  # every device buffer freed


def test_busy_contexts_are_waited_for_then_reported(art: Path, calls: F.Calls) -> None:
    import edgekit

    _build(art, contexts=1)
    with edgekit.load(art, device="tensorrt", tensorrt=edgekit.TensorRTOptions(context_wait_s=0.2)) as model:
        runner = model.runners["model"]
        held = runner.lease()  # e.g. an open generate stream in this thread
        with pytest.raises(EngineError, match="1 TensorRT execution contexts stayed busy") as err:
            model(pixel_values=np.ones((1, 3, 16, 16), np.float32))
        assert "--contexts N" in (err.value.fix or "")
        runner.give_back(held)
        model(pixel_values=np.ones((1, 3, 16, 16), np.float32))  # free again: runs
    with pytest.raises(edgekit.ConfigError, match="contexts"):
        T.BuildOptions(contexts=0)


@pytest.mark.parametrize("gpu,cc,version,what", [
    (b"NVIDIA A100-SXM4-40GB", (8, 0), "10.3.0", "GPU NVIDIA H100 80GB HBM3 sm9.0 \\(built\\) vs NVIDIA A100-SXM4-40GB sm8.0"),
    (b"NVIDIA H100 80GB HBM3", (9, 0), "10.4.0", "TensorRT 10.3.0 \\(built\\) vs 10.4.0"),
])
def test_mismatched_engine_is_refused_before_deserializing(art: Path, monkeypatch: pytest.MonkeyPatch,
                                                           gpu: bytes, cc: tuple, version: str, what: str) -> None:
    import edgekit

    c = F.Calls()
    F.install(monkeypatch, F.make_trt(c), F.make_cudart(c))
    _build(art)
    F.install(monkeypatch, F.make_trt(c, version=version), F.make_cudart(c, gpu=gpu, cc=cc))
    with pytest.raises(EngineError, match=what) as e:
        edgekit.load(art, device="tensorrt")
    assert f"edgekit build {art} --device tensorrt" in str(e.value) and c.deserialized == 0


def test_version_compatible_engine_runs_on_newer_minor(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekit

    c = F.Calls()
    F.install(monkeypatch, F.make_trt(c), F.make_cudart(c))
    _build(art, version_compatible=True)
    F.install(monkeypatch, F.make_trt(c, version="10.7.0"), F.make_cudart(c))
    assert edgekit.load(art, device="tensorrt").device == "tensorrt"
    F.install(monkeypatch, F.make_trt(c, version="11.4.0"), F.make_cudart(c))
    with pytest.raises(EngineError, match="TensorRT 10.x"):
        edgekit.load(art, device="tensorrt")


def test_altered_or_missing_engine_is_refused(art: Path, calls: F.Calls) -> None:
    import edgekit

    with pytest.raises(EngineError, match="no engine was built for this artifact.*edgekit build"):
        edgekit.load(art, device="tensorrt")
    record = _build(art)
    (art / record.file).write_bytes(b"garbage")
    with pytest.raises(EngineError, match="altered"):
        edgekit.load(art, device="tensorrt")
    (art / record.file).unlink()
    with pytest.raises(EngineError, match="missing"):
        edgekit.load(art, device="tensorrt")
    assert calls.deserialized == 0


def test_engine_tensorrt_rejects_is_reported(art: Path, calls: F.Calls) -> None:
    import edgekit

    record = _build(art)
    path = art / record.file
    path.write_bytes(b"not a plan")
    m = Manifest.load(art)
    key = Path(record.file).stem
    m.engines[key] = replace(m.engines[key], sha256=__import__("hashlib").sha256(b"not a plan").hexdigest())
    m.save(art)
    with pytest.raises(EngineError, match="TensorRT refused.*magic tag mismatch"):
        edgekit.load(art, device="tensorrt")


# ---------------------------------------------------------------- device selection

def test_tensorrt_unavailable_says_why_and_how(art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekit

    F.install(monkeypatch, None, None)
    with pytest.raises(BackendUnavailableError) as e:
        edgekit.load(art, device="tensorrt")
    text = str(e.value)
    assert "tensorrt is not installed" in text and "pip install 'edgekit[tensorrt]'" in text


def test_no_gpu_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.runtimes.tensorrt import probe

    c = F.Calls()
    F.install(monkeypatch, F.make_trt(c), F.make_cudart(c, count=0))
    assert probe() == (False, "no CUDA GPU is visible")
    F.install(monkeypatch, F.make_trt(c), F.make_cudart(c))
    assert probe() == (True, "TensorRT 10.3.0, 1 GPU(s)")


def test_auto_on_this_machine_is_cpu_and_says_so(art: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import edgekit

    F.install(monkeypatch, None, None)
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.INFO, logger="edgekit"):
        model = edgekit.load(art, device="auto")
    assert model.device == "onnxruntime-cpu"
    assert [r.message for r in caplog.records if "running" in r.message] == ["edgekit: running cnn on onnxruntime-cpu"]


def test_auto_prefers_tensorrt_when_it_has_an_engine(art: Path, calls: F.Calls) -> None:
    import edgekit

    _build(art)
    assert edgekit.load(art, device="auto").device == "tensorrt"


def test_fingerprint_roundtrip() -> None:
    from edgekit.contract.codec import decode, encode
    from edgekit.engines import Fingerprint
    from edgekit.runtimes.tensorrt.fingerprint import make_fingerprint, mismatches

    m = Machine("Orin", "8.7", "10.3.0")
    fp = make_fingerprint("decoder", "ab" * 32, m, "int8", [("prompt", {"past": (0, 1, 8), "batch": (1, 1, 4)})],
                          dla_core=0)
    assert decode(Fingerprint, json.loads(json.dumps(encode(fp))), "fingerprint") == fp
    # The id of edgekit's earlier (untyped) records: plans built before keep their names.
    assert fp.id == "decoder-orin-sm87-trt10.3.0-int8-dla0-2d29967908cf"
    assert mismatches(fp, m, "ab" * 32, "int8") == []
    assert mismatches(fp, m, "cd" * 32, "fp16") == [
        f"ONNX graph {'ab' * 6} (built) vs {'cd' * 6} (artifact now)", "precision int8 (built) vs fp16 (artifact)"]
    hw = make_fingerprint("m", "x", m, "fp16", [], hardware_compatible=True)
    assert mismatches(hw, Machine("T4", "7.5", "10.3.0"), "x", "fp16") == [
        "hardware-compatible plan needs compute capability 8.0+, this GPU is 7.5"]


def test_dla_or_gpu_plan_chosen_at_load(art: Path, calls: F.Calls) -> None:
    from edgekit.artifact import open_artifact
    from edgekit.runtimes.tensorrt.runner import current_machine, select_engine

    dla = _build(art, dla_core=1)
    gpu = _build(art)
    a = open_artifact(art)
    machine = current_machine(__import__("sys").modules["tensorrt"])
    assert select_engine(a, "model", machine).file == gpu.file
    assert select_engine(a, "model", machine, dla=1).file == dla.file
    import edgekit  # the same choice through load's options, and `edgekit run --dla-core`

    for options, plan in ((edgekit.TensorRTOptions(), gpu), (edgekit.TensorRTOptions(dla_core=1), dla)):
        with edgekit.load(art, device="tensorrt", tensorrt=options) as model:
            assert model.runners["model"].record.file == plan.file  # type: ignore[attr-defined]


def test_convert_with_tensorrt_target_builds_engines(tmp_path: Path, calls: F.Calls) -> None:
    import torch

    import edgekit

    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    art = edgekit.convert(net, tmp_path / "m", example_inputs=torch.rand(1, 3, 2, 2), labels=["x", "y"], target="tensorrt")
    [record] = art.manifest.engines.values()
    assert (art.path / record.file).is_file() and calls.builds == 1
    assert edgekit.load(art.path, device="tensorrt").device == "tensorrt"


def test_convert_with_tensorrt_target_without_tensorrt_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import edgekit

    F.install(monkeypatch, None, None)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    with pytest.raises(BackendUnavailableError, match="--target cuda and run `edgekit build OUT`"):
        edgekit.convert(net, tmp_path / "m", example_inputs=torch.rand(1, 3, 2, 2), labels=["x", "y"], target="tensorrt")
    assert not (tmp_path / "m").exists()  # nothing half-built is left behind


def test_plans_of_an_older_onnx_are_pruned(art: Path, calls: F.Calls) -> None:
    old = _build(art)
    m = Manifest.load(art)
    key = Path(old.file).stem  # as if built from an older graph:
    m.engines[key] = replace(old, fingerprint=replace(old.fingerprint, onnx_sha256="0" * 64))
    m.save(art)
    other_gpu = _build(art, hardware_compatible=True)
    assert list(Manifest.load(art).engines) == [Path(other_gpu.file).stem]
    assert not (art / old.file).exists() and (art / other_gpu.file).exists()
