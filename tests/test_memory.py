"""The memory estimate (edgekit/memory.py) against what is really there, and load's refusal.

- weights: the estimate's bytes per graph equal the tensors onnx itself reads from the files (data
  and external data), for the graph load really runs (stand-in or portable), fp32 and int4;
- cache and prompt logits: equal to the buffers the generator allocates for a call of that context;
- load refuses with MemoryFitError when the probe says too little is free, and loads when enough;
- `edgekit info --context` prints and emits the same numbers; the estimate imports no torch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.artifact import open_artifact
from edgekit.cli import cli
from edgekit.external_data import ELEMENT_BITS, tensor_bytes
from edgekit.memory import Availability, SystemMemory, estimate
from edgekit.tasks.generator import cache_for
from reliability_models import converted, converted_gpt2


@dataclass(frozen=True)
class FixedMemory:
    """A MemoryProbe that reports `free` bytes on every device and records what it was asked."""

    free: int

    def available(self, device: str) -> Availability:
        return Availability(self.free, f"a test probe for {device}")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_gpt2(tmp_path_factory)


def onnx_tensor_bytes(path: Path) -> int:
    """The bytes of every tensor of an ONNX file as the onnx package reads them (external data loaded)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    total = 0
    for t in _get_all_tensors(onnx.load(str(path))):
        data = onnx.numpy_helper.to_array(t)
        bits = ELEMENT_BITS.get(t.data_type)
        # onnx unpacks 4-bit tensors to a byte each; the file (and the runtime) holds two per byte.
        total += (data.size * bits + 7) // 8 if bits == 4 else data.nbytes
    return total


def test_element_sizes_match_onnx() -> None:
    import onnx

    for dtype, bits in ELEMENT_BITS.items():
        if bits != 4:
            assert onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize * 8 == bits, dtype
    assert onnx.TensorProto.DESCRIPTOR.fields_by_name["dims"].number == 1
    assert onnx.TensorProto.DESCRIPTOR.fields_by_name["data_type"].number == 2


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_weights_are_the_tensor_bytes_of_the_graph_load_runs(precision: str,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    art = open_artifact(converted_gpt2(tmp_path_factory, precision))
    for portable in (False, True):
        model = edgekit.load(art.path, device="cpu", portable=portable)
        est = estimate(art, "cpu", portable=portable)
        # The stand-in (fused attention, a shared cache) where one is proven, else the portable graph.
        assert model.decoder.kv_layout == ("slots" if portable else "shared")
        assert [(w.graph, w.file) for w in est.weights] == [("model", "model.onnx" if portable else "model.ort.onnx")]
        for w in est.weights:
            assert w.bytes == onnx_tensor_bytes(art.file(w.file)) > 0
    # The stand-in and the portable graph hold different tensors (fused attention): counted per graph.
    assert tensor_bytes(art.file("model.onnx")) != tensor_bytes(art.file("model.ort.onnx"))


@pytest.mark.parametrize("portable", [False, True])  # the shared-buffer cache and the slot cache
@pytest.mark.parametrize(("context", "batch"), [(40, 1), (256, 3)])
def test_cache_and_logits_are_what_the_generator_allocates(gpt2: Path, portable: bool, context: int,
                                                           batch: int) -> None:
    model = edgekit.load(gpt2, device="cpu", portable=portable)
    est = estimate(model.artifact, "cpu", context, batch, portable=portable)
    prompt, new = context - 9, 9  # prompt + new tokens = context, as generate sizes its cache
    state = cache_for(model.decoder, model.contract.cache, batch, prompt, new)
    try:
        buffers = state.caches  # type: ignore[union-attr]
        assert type(state).__name__ == ("StateLoop" if portable else "SharedKVCache")
        assert est.cache_bytes == sum(a.nbytes for a in buffers.values())
        state.prefill(np.ones((batch, context - 1), np.int64), np.ones((batch, context - 1), np.int64))
        # The shared-buffer cache lays the runner's logits out again in a second array; the slot cache keeps them.
        assert est.logits_bytes == (1 if portable else 2) * state.prompt_logits.nbytes  # type: ignore[union-attr]
    finally:
        state.close()


def test_load_refuses_when_the_model_does_not_fit(gpt2: Path) -> None:
    art = open_artifact(gpt2)
    need = estimate(art, "cpu", 200, 2).total_bytes
    with pytest.raises(edgekit.MemoryFitError) as e:
        edgekit.load(gpt2, device="cpu", max_context=200, batch=2, memory=FixedMemory(need - 1))
    msg = str(e.value)
    assert f"context 200 with 2 row(s)" in msg and f"{need / 2**20:.1f} MiB" in msg
    assert f"{(need - 1) / 2**20:.1f} MiB free (a test probe for cpu)" in msg
    assert "max_context" in (e.value.fix or "") and "int4" in (e.value.fix or "")
    assert isinstance(e.value, edgekit.EdgekitError) and e.value.exit_code == 2
    model = edgekit.load(gpt2, device="cpu", max_context=200, batch=2, memory=FixedMemory(need))
    assert model.generate(input_ids=np.array([[5, 6], [7, 8]]), max_new_tokens=3).shape == (2, 5)
    # The default context is the model's own: more than 200 tokens' worth.
    with pytest.raises(edgekit.MemoryFitError, match=f"context {model.max_context} "):
        edgekit.load(gpt2, device="cpu", batch=2, memory=FixedMemory(need))


@pytest.mark.parametrize("bad", [1, 10**6, 2.5, True])
def test_max_context_outside_the_model_is_a_config_error(gpt2: Path, bad: object) -> None:
    with pytest.raises(edgekit.ConfigError, match="max_context"):
        edgekit.load(gpt2, device="cpu", max_context=bad)  # type: ignore[arg-type]


def test_max_context_on_a_classifier_is_a_config_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    art = converted(tmp_path_factory, "tensor")
    with pytest.raises(edgekit.ConfigError, match="generate artifacts"):
        edgekit.load(art, device="cpu", max_context=64)
    est = estimate(open_artifact(art), "cpu")
    assert est.cache_bytes == est.logits_bytes == 0 and est.weights_bytes > 0


def _meminfo(tmp_path: Path, kib: int) -> Path:
    p = tmp_path / "meminfo"
    p.write_text(f"MemTotal:       32000000 kB\nMemFree:         1000 kB\nMemAvailable:   {kib} kB\n")
    return p


def test_system_memory_reads_meminfo_and_the_cgroup_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "user.slice" / "job").mkdir(parents=True)
    own = tmp_path / "self-cgroup"
    own.write_text("0::/user.slice/job\n")
    probe = SystemMemory(_meminfo(tmp_path, 4_000_000), root, own)
    assert probe.available("cpu") == Availability(4_000_000 * 1024, f"MemAvailable in {tmp_path / 'meminfo'}")
    (root / "user.slice" / "job" / "memory.max").write_text("max\n")
    (root / "user.slice" / "job" / "memory.current").write_text("123\n")
    assert probe.available("cpu").bytes == 4_000_000 * 1024  # no limit
    (root / "user.slice" / "job" / "memory.max").write_text(f"{1 << 30}\n")
    (root / "user.slice" / "job" / "memory.current").write_text(f"{1 << 28}\n")
    free = probe.available("cpu")
    assert free.bytes == (1 << 30) - (1 << 28) and "memory.max" in free.source
    with pytest.raises(edgekit.MemoryFitError, match="MemAvailable"):
        SystemMemory(tmp_path / "self-cgroup", root, own).available("cpu")


def test_info_context_prints_the_estimate(gpt2: Path) -> None:
    est = estimate(open_artifact(gpt2), "cpu", 128, 2)
    r = CliRunner().invoke(cli, ["info", str(gpt2), "--context", "128", "--batch", "2"])
    assert r.exit_code == 0, r.output
    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    assert f"memory on cpu at context 128, 2 row(s): {mib(est.total_bytes)}" in r.stdout
    assert f"weights model (model.ort.onnx): {mib(est.weights_bytes)}" in r.stdout
    assert f"cache: {mib(est.cache_bytes)} (float32 state (AttentionKV) of 2 entries" in r.stdout
    assert "127 slots x 2 rows" in r.stdout
    assert f"overhead: {mib(est.overhead_bytes)}" in r.stdout
    data = json.loads(CliRunner().invoke(cli, ["info", str(gpt2), "--context", "128", "--batch", "2", "--json"]).stdout)
    assert data["memory"]["total_bytes"] == est.total_bytes and data["memory"]["cache_bytes"] == est.cache_bytes
    assert "memory" not in json.loads(CliRunner().invoke(cli, ["info", str(gpt2), "--json"]).stdout)
    r = CliRunner().invoke(cli, ["info", str(gpt2), "--context", str(10**6)])
    assert r.exit_code == 2 and "max_context" in r.output


_NO_TORCH = r"""
import sys
from edgekit.artifact import open_artifact
from edgekit.memory import SystemMemory, check_fits, estimate
est = estimate(open_artifact(sys.argv[1]), "cpu", 64, 1)
check_fits(est, SystemMemory())
heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m.startswith("edgekit.converters")]
print(sorted(heavy))
"""


def test_the_estimate_imports_no_torch(gpt2: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, str(gpt2)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_seq2seq_cache_counts_the_encoders_keys_values(tmp_path_factory: pytest.TempPathFactory) -> None:
    from reliability_models import converted_seq2seq

    model = edgekit.load(converted_seq2seq(tmp_path_factory), device="cpu")
    enc = model.contract.encoder
    assert enc is not None
    context, batch = 20, 2
    est = estimate(model.artifact, "cpu", context, batch)
    ids = np.full((batch, enc.max_source), 5, np.int64)  # the longest input the encoder takes
    state = model._decoder_state(ids, np.ones_like(ids), np.arange(batch), 1, context - 1)
    try:
        cross = sum(a.nbytes for n, a in state.resident.items() if n.startswith("cross."))  # type: ignore[union-attr]
        assert est.cache_bytes == sum(a.nbytes for a in state.caches.values()) + cross  # type: ignore[union-attr]
        assert est.logits_bytes == 0  # the decoder's prompt is its start token
    finally:
        state.close()
