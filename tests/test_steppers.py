"""Decode loops with the KV cache kept on the backend's side (`Runner.stepper`), on the CPU.

The GPU step loops are checked here with their real code and fake device memory: the onnxruntime
CUDA loop (`DeviceMemory`) runs with onnxruntime's own allocator on "cpu" and a cuda-python fake
whose 2-D copy moves host memory, and the TensorRT loop runs against the recording fakes of
trt_fakes.py (the fake engine runs the ONNX on fake device memory; a fake CUDA graph replays
the launches captured, with the addresses seen at capture). Tokens must equal the host loop's.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgekit.converters.kv_geometry import KVGeometry
import edgekit
import trt_fakes as F
from edgekit.contract.base import BATCH
from edgekit.contract.generate import GenerateSection
from edgekit.contract.state import DecoderState
from edgekit.contract.state.base import PROMPT_FLAG
from edgekit.converters.export import GraphExport
from edgekit.converters.specs.generate import GeneratorSpec
from edgekit.errors import InputError
from edgekit.runtimes.base import HostStepper, StepSpec

NEW = 12


@pytest.fixture(scope="module")
def gpt2_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reliability_models import converted_gpt2

    return converted_gpt2(tmp_path_factory)  # the tiny GPT-2 (gm.save_tiny), converted once per session


@pytest.fixture(scope="module")
def prompts() -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([[0, 0, 5, 9, 13], [7, 8, 9, 10, 11]], np.int64)
    return ids, (ids != 0).astype(np.int64)


@pytest.fixture(scope="module")
def host_tokens(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    with edgekit.load(gpt2_art, device="cpu") as m:
        return m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)


def _through(model: Any, make: Any) -> None:
    runner = model.runners["model"]
    runner._stepper_impl = lambda spec: make(runner, spec)  # an instance attribute: this model only


@pytest.mark.parametrize("portable", [True, False], ids=["slot-writes", "shared-buffers"])
def test_cpu_loop_binds_the_callers_arrays(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray],
                                           host_tokens: np.ndarray, portable: bool) -> None:
    # The reference (HostStepper: one visible `run` per step) gives the tokens the bound loop gives.
    with edgekit.load(gpt2_art, device="cpu", portable=portable) as m:
        _through(m, HostStepper)
        got = m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)
    np.testing.assert_array_equal(got, host_tokens)


def test_onnxruntime_device_loop_writes_slots_device_side(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray],
                                                           host_tokens: np.ndarray) -> None:
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper

    calls = F.Calls()
    cu = F.make_cudart(calls)
    with edgekit.load(gpt2_art, device="cpu", portable=True) as m:
        _through(m, lambda r, spec: OrtStepper(r._session, spec, DeviceMemory(cu, "cpu")))
        got = m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)
        cfg = KVGeometry.of(m.contract.cache)
    np.testing.assert_array_equal(got, host_tokens)
    # The prompt's keys/values go into the resident cache device-side (one strided copy of 5 slots per
    # cache tensor), then one strided copy per cache tensor per decode step: batch*heads rows of
    # head_dim floats into rows `slots` long (slots = prompt + new - 1).
    rows, width = 2 * cfg.heads, cfg.head_dim * 4
    prompt = [((5 + NEW - 1) * width, 5 * width, rows)] * (2 * cfg.layers)
    assert calls.copies_2d == prompt + [((5 + NEW - 1) * width, width, rows)] * (2 * cfg.layers * (NEW - 1))


def test_onnxruntime_device_loop_with_shared_buffers_copies_nothing(
        gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray], host_tokens: np.ndarray) -> None:
    """The fused-attention graph writes the cache itself: the prompt goes straight into the resident
    buffers (`Stepper.run`) and no step copies a slot, on the host or the device."""
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper

    calls = F.Calls()
    cu = F.make_cudart(calls)
    with edgekit.load(gpt2_art, device="cpu") as m:
        assert m.runners["model"].kv_layout == "shared"
        made: list[OrtStepper] = []
        _through(m, lambda r, spec: made.append(OrtStepper(r._session, spec, DeviceMemory(cu, "cpu"))) or made[-1])
        got = m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)
    np.testing.assert_array_equal(got, host_tokens)
    assert len(made) == 1 and calls.copies_2d == [] and set(made[0].spec.shared.values()) == set(made[0].spec.caches)


def test_step_spec_is_checked_once(gpt2_art: Path) -> None:
    with edgekit.load(gpt2_art, device="cpu") as m:
        runner = m.runners["model"]
        spec = StepSpec({"input_ids": np.zeros((1, 1), np.int64)}, {}, {"present.0.key": "nope"}, {})
        with pytest.raises(InputError, match="do not match"):
            runner.stepper(spec)


# ---------------------------------------------------------------- TensorRT (fakes)

@pytest.fixture()
def trt_art(gpt2_art: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, F.Calls]:
    import shutil

    from edgekit.runtimes.tensorrt import build as T
    from edgekit.manifest import Manifest

    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    art = tmp_path / "gpt2"
    shutil.copytree(gpt2_art, art)
    T.build_engines(art, Manifest.load(art), T.BuildOptions())
    return art, calls


def _generate_on_tensorrt(art: Path, prompts: tuple[np.ndarray, np.ndarray], graphs: bool = True) -> np.ndarray:
    with edgekit.load(art, device="tensorrt", tensorrt=edgekit.TensorRTOptions(cuda_graphs=graphs)) as m:
        assert m.device == "tensorrt"
        first = m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)
        again = m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW)
        np.testing.assert_array_equal(again, first)
    assert sys.modules["cuda.bindings.runtime"].live == {}  # every device buffer freed
    return first


def test_tensorrt_decode_replays_a_cuda_graph(trt_art: tuple[Path, F.Calls], prompts: tuple[np.ndarray, np.ndarray],
                                              host_tokens: np.ndarray) -> None:
    art, calls = trt_art
    np.testing.assert_array_equal(_generate_on_tensorrt(art, prompts), host_tokens)
    # Per generate call: the prompt run, one plain decode launch, then NEW - 2 graph replays.
    assert calls.graph_launches == 2 * (NEW - 2)
    assert calls.executes == 2 * (1 + 1 + NEW - 2)
    # The prompt run and the decode loop lease the same context in turn; no profile clash.
    assert calls.contexts == 1 and calls.profile_clashes == 0


def test_tensorrt_decode_without_a_graph_says_so(trt_art: tuple[Path, F.Calls], prompts: tuple[np.ndarray, np.ndarray],
                                                 host_tokens: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    art, calls = trt_art
    calls.capture_fails = True
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        np.testing.assert_array_equal(_generate_on_tensorrt(art, prompts), host_tokens)
    assert calls.graph_launches == 0 and calls.executes == 2 * (1 + NEW - 1)
    assert "could not be captured as a CUDA graph" in caplog.text


def test_cuda_graphs_can_be_turned_off(trt_art: tuple[Path, F.Calls], prompts: tuple[np.ndarray, np.ndarray],
                                       host_tokens: np.ndarray) -> None:
    art, calls = trt_art
    np.testing.assert_array_equal(_generate_on_tensorrt(art, prompts, graphs=False), host_tokens)
    assert calls.graph_launches == 0 and not calls.captured


# A prompt whose greedy text the tiny GPT-2 partly repeats: prompt lookup's drafts are kept and rejected.
SPEC_PROMPT = np.tile(np.array([[118, 257, 166, 10, 229, 218]], np.int64), 3)


def test_tensorrt_verifies_drafts_on_their_profile_between_graph_replays(
        trt_art: tuple[Path, F.Calls], gpt2_art: Path) -> None:
    """Speculative decoding on the TensorRT loop: each verify call is a plain launch on the "verify"
    profile, with its keys/values written at the next cache slots device-side, and the decode steps
    after it replay the CUDA graph captured at the first step (the bindings restored as captured)."""
    art, calls = trt_art
    ask = dict(input_ids=SPEC_PROMPT, max_new_tokens=40, return_dict_in_generate=True, output_scores=True)
    with edgekit.load(gpt2_art, device="cpu") as m:
        plain = m.generate(**ask)
    with edgekit.load(art, device="tensorrt") as m:
        calls.runs.clear()
        got = m.generate(**ask, prompt_lookup_num_tokens=4)
        names = [p.name for p in m.decoder.record.fingerprint.profiles]
    np.testing.assert_array_equal(got.sequences, plain.sequences)
    for a, b in zip(got.scores, plain.scores):  # tests/test_speculative.py's bound: 32 ulps of the largest logit
        np.testing.assert_allclose(a, b, rtol=0, atol=32 * np.finfo(np.float32).eps * float(np.abs(b).max()))
    s = got.speculation
    assert 0 < s.accepted < s.drafted, s  # drafts kept and drafts rolled back
    assert names == ["prompt", "verify", "decode"]
    prompt, verify, decode = range(3)  # the loop's context holds the first copy of the profiles
    runs = calls.runs  # (profile, input_ids shape, replayed)
    assert runs[0] == (prompt, SPEC_PROMPT.shape, False) and len(runs) == 1 + s.steps
    checks = [r for r in runs[1:] if r[1][1] > 1]
    steps = [r for r in runs[1:] if r[1][1] == 1]
    assert len(checks) == s.steps - len(steps) > 0 and all(r[0] == verify and not r[2] for r in checks)
    assert all(r[0] == decode for r in steps) and [r[2] for r in steps] == [False] + [True] * (len(steps) - 1)
    assert any(a[1][1] > 1 and b[2] for a, b in zip(runs[1:], runs[2:]))  # a replay right after a verify
    assert calls.stale_replays == 0 and calls.shape_refusals == 0 and calls.profile_clashes == 0


def test_tensorrt_feeds_more_tokens_than_its_verify_profile_in_calls_that_fit(
        trt_art: tuple[Path, F.Calls], gpt2_art: Path) -> None:
    """Drafts longer than the verify profile's 32 tokens (a conversation's new turn goes through the
    same call): consecutive verify calls of at most 32 tokens, and the CPU's tokens. The drafter is
    the same weights on the CPU, so its 40 drafts are all kept and each check is 41 tokens. The
    cache spans the whole context (as a conversation's does): then only the verify profile takes
    more than one token after it."""
    art, calls = trt_art
    with edgekit.load(gpt2_art, device="cpu") as cpu, edgekit.load(art, device="tensorrt") as m:
        ask = dict(input_ids=SPEC_PROMPT, max_new_tokens=m.max_context - SPEC_PROMPT.shape[1], return_dict_in_generate=True)
        plain = cpu.generate(**ask)
        assert m.decoder.tokens_per_call(m.max_context - 1) == 32  # the verify profile's end
        calls.runs.clear()
        got = m.generate(**ask, assistant_model=cpu, num_assistant_tokens=40, assistant_confidence_threshold=0)
    np.testing.assert_array_equal(got.sequences, plain.sequences)
    sizes = [r[1][1] for r in calls.runs[1:]]
    assert sizes[:2] == [32, 9] and got.speculation.drafted >= 40, (sizes, got.speculation)
    assert calls.shape_refusals == 0 and calls.stale_replays == 0


def test_an_engine_built_without_the_verify_profile_asks_for_a_build(trt_art: tuple[Path, F.Calls]) -> None:
    """A plan from before the verify phase: refused at load with the build fix; `edgekit build` makes the
    new one and removes the old (no edgekit can load it again)."""
    from dataclasses import replace

    from edgekit.errors import EngineError
    from edgekit.manifest import Manifest
    from edgekit.runtimes.tensorrt import build as T

    art, _ = trt_art
    m = Manifest.load(art)
    [new] = m.engines.values()
    old = replace(new.fingerprint, profiles=tuple(p for p in new.fingerprint.profiles if p.name != "verify"))
    (art / new.file).rename(art / "engines" / f"{old.id}.plan")
    m.engines.clear()
    m.engines[old.id] = replace(new, file=f"engines/{old.id}.plan", fingerprint=old)
    m.save(art)
    with pytest.raises(EngineError, match=r"profiles \['prompt', 'decode'\] \(built\) vs "
                                          r"\['prompt', 'verify', 'decode'\]") as e:
        edgekit.load(art, device="tensorrt")
    assert "edgekit build" in str(e.value)
    T.build_engines(art, Manifest.load(art), T.BuildOptions())
    with edgekit.load(art, device="tensorrt") as loaded:
        assert loaded.decoder.record.fingerprint == new.fingerprint
    assert list(Manifest.load(art).engines) == [new.fingerprint.id] and sorted(art.glob("engines/*.plan")) == [
        art / new.file]


def test_cuda_session_keeps_fp32_matmuls_in_fp32(gpt2_art: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime's CUDA provider defaults to TF32; an fp32 artifact must not run below fp32.
    import onnxruntime as ort

    from edgekit.artifact import open_artifact
    from edgekit.runtimes.onnxruntime.runner import OrtRunner

    seen: list[Any] = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: seen.append(k["providers"]))
    art = open_artifact(gpt2_art)
    OrtRunner(art.file(art.manifest.graphs["model"].file), art.manifest.graphs["model"], device="cuda")
    assert seen == [[("CUDAExecutionProvider", {"use_tf32": "0"})]]


# ---------------------------------------------------------------- beam search: cache rows reordered in place

BEAMS = 3


@pytest.fixture(scope="module")
def host_beams(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    with edgekit.load(gpt2_art, device="cpu") as m:
        return _beams(m, prompts)


def _beams(m: Any, prompts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    # One prompt: its BEAMS rows fit the engine's default batch range (1..4); a wider beam batch
    # needs `edgekit build --max-batch`.
    return m.generate(input_ids=prompts[0][1:], attention_mask=prompts[1][1:], max_new_tokens=NEW, num_beams=BEAMS,
                      num_return_sequences=2)


def test_beams_through_the_host_loop(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray],
                                     host_beams: np.ndarray) -> None:
    with edgekit.load(gpt2_art, device="cpu") as m:
        _through(m, HostStepper)
        np.testing.assert_array_equal(_beams(m, prompts), host_beams)


def test_onnxruntime_device_loop_reorders_beams_device_side(gpt2_art: Path, prompts: tuple[np.ndarray, np.ndarray],
                                                             host_beams: np.ndarray) -> None:
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper

    calls = F.Calls()
    cu = F.make_cudart(calls)
    with edgekit.load(gpt2_art, device="cpu") as m:
        _through(m, lambda r, spec: OrtStepper(r._session, spec, DeviceMemory(cu, "cpu")))
        np.testing.assert_array_equal(_beams(m, prompts), host_beams)
        cfg = KVGeometry.of(m.contract.cache)
    # Every reorder copy is device to device, one cache row (heads * slots * dim floats) at a time.
    row = cfg.heads * (5 + NEW - 1) * cfg.head_dim * 4
    assert calls.copies and all(kind == "cudaMemcpyDeviceToDevice" and n == row for kind, n in calls.copies)


def test_tensorrt_decode_reorders_beams_on_the_device(trt_art: tuple[Path, F.Calls],
                                                      prompts: tuple[np.ndarray, np.ndarray],
                                                      host_beams: np.ndarray) -> None:
    art, calls = trt_art
    with edgekit.load(art, device="tensorrt") as m:
        calls.copies.clear()
        np.testing.assert_array_equal(_beams(m, prompts), host_beams)
        cfg = KVGeometry.of(m.contract.cache)
    cache_bytes = BEAMS * cfg.heads * (5 + NEW - 1) * cfg.head_dim * 4
    up = [n for kind, n in calls.copies if kind == "cudaMemcpyHostToDevice"]
    down = [n for kind, n in calls.copies if kind == "cudaMemcpyDeviceToHost"]
    d2d = [n for kind, n in calls.copies if kind == "cudaMemcpyDeviceToDevice"]
    # The caches go up once (when the loop starts); per step only token, mask and position go up
    # and the logits come down; beam reorders are device-side row copies.
    assert sum(n == cache_bytes for n in up) == 2 * cfg.layers and d2d
    assert max(n for n in up if n != cache_bytes) < cache_bytes // 10
    logits = BEAMS * m.decoder.outputs[0].shape[-1] * 4
    assert cache_bytes not in down and down.count(logits) >= NEW - 2  # each step: the logits, no cache
    assert calls.graph_launches > 0  # the CUDA graph survives the reorders (same addresses)


# ---------------------------------------------------------------- replaced states (SSM, conv, LSTM kinds)

@pytest.fixture(scope="module")
def decay_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-token step graph whose state is replaced every step (tests/test_new_state_kind.py's kind)."""
    from test_new_state_kind import DecayLM  # its state kind and spec, defined there

    return edgekit.convert(DecayLM().eval(), tmp_path_factory.mktemp("decay") / "art", task="generate").path


def _decay(m: Any, prompts: tuple[np.ndarray, np.ndarray], beams: int = 1) -> np.ndarray:
    return m.generate(input_ids=prompts[0], attention_mask=prompts[1], max_new_tokens=NEW, num_beams=beams)


def test_onnxruntime_device_loop_replaces_states_device_side(decay_art: Path,
                                                             prompts: tuple[np.ndarray, np.ndarray]) -> None:
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper

    with edgekit.load(decay_art, device="cpu") as m:
        want, want_beams = _decay(m, prompts), _decay(m, prompts, BEAMS)
        calls = F.Calls()
        _through(m, lambda r, spec: OrtStepper(r._session, spec, DeviceMemory(F.make_cudart(calls), "cpu")))
        np.testing.assert_array_equal(_decay(m, prompts), want)
        state = m.contract.cache.tensors()[0]
        # The padded batch's prompt runs row by row on the host; then one device-side copy of the
        # next state over the state per decode step, and nothing else of the state crosses.
        state_bytes = int(np.prod(state.shape(2, 0))) * 4
        assert calls.copies == [("cudaMemcpyDeviceToDevice", state_bytes)] * (NEW - 1)
        np.testing.assert_array_equal(_decay(m, prompts, BEAMS), want_beams)


def test_tensorrt_loop_replaces_states_on_the_device(decay_art: Path, prompts: tuple[np.ndarray, np.ndarray],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from edgekit.manifest import Manifest
    from edgekit.runtimes.tensorrt import build as T

    with edgekit.load(decay_art, device="cpu") as m:
        want = _decay(m, (prompts[0][1:], prompts[1][1:]), BEAMS)
    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    art = tmp_path / "decay"
    shutil.copytree(decay_art, art)
    T.build_engines(art, Manifest.load(art), T.BuildOptions())
    with edgekit.load(art, device="tensorrt") as m:
        calls.copies.clear()
        np.testing.assert_array_equal(_decay(m, (prompts[0][1:], prompts[1][1:]), BEAMS), want)
    d2d = [n for kind, n in calls.copies if kind == "cudaMemcpyDeviceToDevice"]
    assert d2d and calls.graph_launches > 0  # state replaced and beams reordered device-side; graph replays


# ---------------------------------------------------------------- a prompt flag (contract/state/base.py PROMPT_FLAG)

class FlagDecayLM(torch.nn.Module):
    """test_new_state_kind's DecayLM whose prompt runs another program than its steps: a prompt token
    (prompt_flag 1) decays the state by 0.4, a generated one by 0.7."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.emb = torch.nn.Parameter(torch.randn(24, 16, generator=g))
        self.out = torch.nn.Parameter(torch.randn(16, 24, generator=g))

    def forward(self, ids: torch.Tensor, flag: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = 0.7 - 0.3 * flag.float()
        h = a * h + (1 - a) * torch.tanh(self.emb[ids[:, 0]])
        return (h @ self.out)[:, None], h


class FlagDecayReference:
    """The module's own loop, one unpadded row at a time: prompt tokens flagged, new ones not."""

    def __init__(self, module: FlagDecayLM) -> None:
        self.module, self.vocab = module, 24

    def _run(self, row: np.ndarray, prompt: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        h, logits = torch.zeros((1, 16)), []
        for i, t in enumerate(row):
            out, h = self.module(torch.tensor([[int(t)]]), torch.tensor([[int(i < prompt)]]), h)
            logits.append(out[:, 0])
        return logits, h

    def greedy(self, ids: np.ndarray, mask: np.ndarray, new: int, flag: int = 1) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for row, m in zip(ids, mask):
                logits, h = self._run(row[m.astype(bool)], len(row) * flag)
                got = [int(logits[-1].argmax())]
                for _ in range(new - 1):
                    out, h = self.module(torch.tensor([[got[-1]]]), torch.tensor([[0]]), h)
                    got.append(int(out[0, 0].argmax()))
                rows.append(got)
        return np.asarray(rows, np.int64)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        return self.decode_logits(ids, 0)

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:  # its steps are not its prompt's program
        with torch.no_grad():
            return np.stack([torch.cat(self._run(r, len(r) - steps)[0]).numpy() for r in ids])


class FlagDecaySpec(GeneratorSpec):
    @classmethod
    def matches(cls, src: Any, task: str | None) -> bool:
        return src.is_plain and task == "generate" and isinstance(src.module, FlagDecayLM)

    def __init__(self, src: Any, options: Any) -> None:
        from test_new_state_kind import DecayState  # its state kind, defined there
        from torch.export import Dim

        super().__init__(src, options)
        self.family = "flag-decay-lm"
        self.state = DecoderState((DecayState(16),), inputs=("input_ids", PROMPT_FLAG), prompt="stepwise")
        batch = Dim(BATCH, min=1, max=64)
        example = (torch.zeros((2, 1), dtype=torch.long), torch.tensor([[1], [0]]), torch.zeros((2, 16)))
        self.graph = GraphExport("model", src.module.eval(), example, ["input_ids", PROMPT_FLAG, *self.state.past()],
                                 ["logits", *self.state.present()], ({0: batch}, {0: batch}, {0: batch}))
        self.reference = FlagDecayReference(src.module)

    def graphs(self) -> list[GraphExport]:
        return [self.graph]

    def contract(self, graphs: dict[str, Any]) -> GenerateSection:
        return GenerateSection(tokenizer=None, add_special_tokens=False, eos_token_id=(), bos_token_id=None,
                               pad_token_id=0, max_context=64, cache=self.state)


@pytest.fixture(scope="module")
def flag_art(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlagDecayLM, Path]:
    module = FlagDecayLM().eval()
    # fp32 parity: greedy tokens identical, decode steps against the module's own cached steps
    return module, edgekit.convert(module, tmp_path_factory.mktemp("flag") / "art", task="generate").path


def test_every_loop_sends_the_prompt_flag(flag_art: tuple[FlagDecayLM, Path], prompts: tuple[np.ndarray, np.ndarray],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from edgekit.manifest import Manifest
    from edgekit.runtimes.onnxruntime.runner import DeviceMemory, OrtStepper
    from edgekit.runtimes.tensorrt import build as T

    module, art = flag_art
    want = FlagDecayReference(module).greedy(*prompts, NEW)
    assert not np.array_equal(FlagDecayReference(module).greedy(*prompts, NEW, flag=0), want)  # the flag matters
    with edgekit.load(art, device="cpu") as m:
        np.testing.assert_array_equal(_decay(m, prompts)[:, 5:], want)  # onnxruntime's CPU loop
        _through(m, lambda r, spec: OrtStepper(r._session, spec, DeviceMemory(F.make_cudart(F.Calls()), "cpu")))
        np.testing.assert_array_equal(_decay(m, prompts)[:, 5:], want)  # its device loop
    calls = F.Calls()
    F.install(monkeypatch, F.make_trt(calls), F.make_cudart(calls))
    shutil.copytree(art, tmp_path / "flag")
    T.build_engines(tmp_path / "flag", Manifest.load(tmp_path / "flag"), T.BuildOptions())
    with edgekit.load(tmp_path / "flag", device="tensorrt") as m:
        np.testing.assert_array_equal(_decay(m, prompts)[:, 5:], want)  # TensorRT's, a CUDA graph replayed
    assert calls.graph_launches > 0
