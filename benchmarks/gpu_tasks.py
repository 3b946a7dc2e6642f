"""The rows of `benchmarks/gpu_check.py`: one function per task, each filling a row dict.

Every row converts a random-init model with `edgekit.convert` (the speculative row reuses the generate
row's), runs the PyTorch model first (reference
outputs, timings, peak memory), frees it, then loads the artifact with `edgekit.load(device=...)` and
runs the same inputs. A row dict is filled as it goes, so a row that raises keeps what it measured.
PyTorch's fp16 reference is the model cast with `.half()` (inputs cast too), not autocast: both sides
then hold fp16 weights, while autocast would keep some ops (softmax, norms) in fp32 on its own list.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "speech"))  # tiny_whisper
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_classify import median_ms  # noqa: E402
from benchmarks.bench_generate import timed  # noqa: E402

# fp32 classify gate: TF32 tensor cores (cuDNN convolutions on both sides by default) give ~1e-3
# relative error; 1e-2 of the largest logit, as tests/test_tensorrt_gpu.py allows.
CLASSIFY_FP32_MAX_REL = 1e-2

# Model shapes and workloads. "full" is what the issue asks for; "small" keeps a CPU run under a minute.
SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "classify": {"width": 64, "size": 224, "batches": (1, 32), "repeat": 20,
                     "name": "ResNet-18, 224x224, width 64, 10 classes"},
        "generate": {"config": {}, "prompt": 64, "new": 128, "prompts": 2, "batch": 8, "runs": 3,
                     "name": "GPT-2 small shape: 12 layers, d=768, 12 heads, vocab 50257"},
        "recognize": {"whisper": {"d_model": 384, "layers": 4, "heads": 6, "vocab_size": 51865, "init_std": 0.05},
                      "seconds": 29.5, "tokens": 64, "runs": 3,
                      "name": "Whisper-tiny shape: d=384, 4+4 layers, 6 heads, vocab 51865"},
        "speculative": {"prompts": 4, "period": 6, "new": 96, "drafts": 10},
    },
    "small": {
        "classify": {"width": 8, "size": 32, "batches": (1, 32), "repeat": 3,
                     "name": "ResNet-18 layout, 32x32, width 8, 10 classes"},
        "generate": {"config": {"n_embd": 64, "n_layer": 2, "n_head": 2, "vocab_size": 512, "n_positions": 128},
                     "prompt": 8, "new": 16, "prompts": 2, "batch": 4, "runs": 1,
                     "name": "GPT-2 layout: 2 layers, d=64, 2 heads, vocab 512"},
        "recognize": {"whisper": {"d_model": 64, "layers": 2, "heads": 4}, "seconds": 3.0, "tokens": 16, "runs": 1,
                      "name": "Whisper layout: d=64, 2+2 layers, 4 heads, vocab 2115"},
        "speculative": {"prompts": 2, "period": 6, "new": 32, "drafts": 4},
    },
}


@dataclass
class Ctx:
    """What every row needs: the two devices, the shapes and where to put models and artifacts."""

    device: str  # edgekit: cpu | cuda | tensorrt
    torch_device: str  # cpu | cuda
    shapes: dict[str, dict[str, Any]]
    work: Path
    artifacts: dict[tuple[str, str], Path] = field(default_factory=dict)  # (task, precision) -> converted this run

    @property
    def target(self) -> str:
        return self.device  # convert's target names match the devices (cpu, cuda, tensorrt)

    def sync(self) -> None:
        import torch

        if self.torch_device == "cuda":
            torch.cuda.synchronize()


def gpu_used_mib() -> float | None:
    """Memory used on GPU 0 as nvidia-smi reports it (all processes), or None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    r = subprocess.run([exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                       capture_output=True, text=True, timeout=60)
    return float(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None


class TorchPeak:
    """torch.cuda.max_memory_allocated over a block, in MiB; None on the CPU."""

    def __init__(self, ctx: Ctx) -> None:
        self.cuda = ctx.torch_device == "cuda"
        self.mib: float | None = None

    def __enter__(self) -> TorchPeak:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20


class EdgekitMemory:
    """nvidia-smi used memory after the edgekit runs minus before the load (the onnxruntime/TensorRT
    arena and workspaces; the CUDA context is shared with PyTorch, whose cache is emptied first)."""

    def __init__(self, ctx: Ctx) -> None:
        self.on_gpu = ctx.device != "cpu"
        self.before: float | None = None
        self.mib: float | None = None

    def start(self) -> None:
        if self.on_gpu:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.before = gpu_used_mib()

    def stop(self) -> None:
        after = gpu_used_mib() if self.on_gpu else None
        self.mib = None if after is None or self.before is None else after - self.before


def _free_torch(ctx: Ctx) -> None:
    import gc

    import torch

    gc.collect()
    if ctx.torch_device == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def edgekit_side(ctx: Ctx, path: Path, row: dict[str, Any]) -> Iterator[tuple[Any, EdgekitMemory]]:
    """A row's edgekit half, after PyTorch's: PyTorch's cached GPU memory freed, the artifact loaded on
    the device (its runner's name in the row), and the memory it takes measured from before the load
    to the end of the block, while it is still loaded."""
    import edgekit

    _free_torch(ctx)
    mem = EdgekitMemory(ctx)
    mem.start()
    with edgekit.load(path, device=ctx.device) as m:
        row["edgekit_device"] = m.device
        yield m, mem
        mem.stop()



def _convert(ctx: Ctx, source: Any, task: str, precision: str, row: dict[str, Any], **kwargs: Any) -> Path:
    import time

    import edgekit

    out = ctx.work / f"{task}-{precision}"
    t = time.perf_counter()
    art = edgekit.convert(source, out, precision=precision, target=ctx.target, overwrite=True, strict=False, **kwargs)
    row["convert_s"] = time.perf_counter() - t
    par = art.manifest.parity  # measured by convert on onnxruntime CPU, against PyTorch CPU
    row["convert_parity"] = {"passed": par.passed, "summary": par.summary} if par else None
    ctx.artifacts[(task, precision)] = art.path
    return art.path


def _memory(row: dict[str, Any], torch_peak: TorchPeak, ek: EdgekitMemory) -> None:
    row["memory_mib"] = {"pytorch_peak_allocated": torch_peak.mib, "edgekit_nvidia_smi_delta": ek.mib}


# ---------------------------------------------------------------------------------------------- classify


def _logit_parity(got: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """max_abs, max_rel (max_abs over the largest |reference|), top-1 agreement, and top-1 flips on
    samples whose reference top-2 margin exceeds twice max_abs (a flip there is not a near-tie)."""
    diff = float(np.abs(got - ref).max())
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flips = got.argmax(1) != ref.argmax(1)
    return {"max_abs": diff, "max_rel": diff / max(float(np.abs(ref).max()), 1e-12),
            "top1_agreement": float(1 - flips.mean()), "unexplained_flips": int((flips & (margin > 2 * diff)).sum()),
            "samples": int(len(ref))}


def classify(ctx: Ctx, precision: str, row: dict[str, Any]) -> None:
    import torch

    import edgekit
    from benchmarks.models import resnet18, structured_images

    s = ctx.shapes["classify"]
    row["model"] = s["name"]
    src = resnet18(width=s["width"], size=s["size"])
    path = _convert(ctx, src["model"], "classify", precision, row, example_inputs=src["example_inputs"],
                    labels=src["labels"])
    x = structured_images(max(s["batches"]), size=s["size"], seed=3).numpy()
    dev, dtype = torch.device(ctx.torch_device), torch.float16 if precision == "fp16" else torch.float32

    def torch_runner(net: Any, dt: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(xb: np.ndarray) -> np.ndarray:  # numpy in, numpy out: what the edgekit call does too
            with torch.inference_mode():
                y = net(torch.from_numpy(xb).to(dev, dt)).float().cpu().numpy()
            ctx.sync()
            return y

        return run

    fp32 = copy.deepcopy(src["model"]).to(dev).eval()
    ref32 = torch_runner(fp32, torch.float32)(x)
    net = fp32.half() if precision == "fp16" else fp32
    run_torch = torch_runner(net, dtype)
    row["reference"] = f"PyTorch {precision}{' (.half())' if precision == 'fp16' else ''} on {ctx.torch_device}"
    speed: dict[str, Any] = {}
    with TorchPeak(ctx) as peak:
        ref = run_torch(x)
        for b in s["batches"]:
            speed[f"batch{b}"] = {"pytorch_ms": median_ms(lambda b=b: run_torch(x[:b]), s["repeat"])}
    del net, fp32, run_torch
    with edgekit_side(ctx, path, row) as (m, mem):
        got = m(pixel_values=x)["logits"].astype(np.float32)
        for b in s["batches"]:
            speed[f"batch{b}"]["edgekit_ms"] = median_ms(lambda b=b: m(pixel_values=x[:b]), s["repeat"])
    for v in speed.values():
        v["speedup"] = v["pytorch_ms"] / v["edgekit_ms"]
    row["speed"] = speed
    _memory(row, peak, mem)
    par = _logit_parity(got, ref)
    if precision == "fp16":
        par["vs_pytorch_fp32"] = _logit_parity(got, ref32)
    row["parity"] = par
    if precision == "fp32":
        row["parity_passed"] = par["max_rel"] <= CLASSIFY_FP32_MAX_REL and par["unexplained_flips"] == 0
        row["parity_rule"] = f"max_rel <= {CLASSIFY_FP32_MAX_REL} and no top-1 flip outside a near-tie"


# ---------------------------------------------------------------------------------------------- tokens


def token_agreement(got: list[list[int]], ref: list[list[int]]) -> dict[str, Any]:
    """Position-wise agreement of token sequences (a length difference counts as disagreement)."""
    same = total = 0
    first: int | None = None
    for g, r in zip(got, ref):
        n = max(len(g), len(r))
        hits = [i < len(g) and i < len(r) and g[i] == r[i] for i in range(n)]
        same, total = same + sum(hits), total + n
        if not all(hits):
            miss = hits.index(False)
            first = miss if first is None else min(first, miss)
    return {"agreement": same / max(total, 1), "identical_sequences": sum(g == r for g, r in zip(got, ref)),
            "sequences": len(ref), "tokens_compared": total, "first_divergence": first}


def _gate_tokens(row: dict[str, Any], precision: str) -> None:
    if precision == "fp32":
        p = row["parity"]
        row["parity_passed"] = p["identical_sequences"] == p["sequences"]
        row["parity_rule"] = "every greedy token identical"


# ---------------------------------------------------------------------------------------------- generate


def generate(ctx: Ctx, precision: str, row: dict[str, Any]) -> None:
    import torch
    from transformers import GPT2LMHeadModel

    import edgekit

    s = ctx.shapes["generate"]
    row["model"] = s["name"]
    folder = _gpt2_folder(ctx)
    path = _convert(ctx, folder, "generate", precision, row)
    dev, dtype = torch.device(ctx.torch_device), torch.float16 if precision == "fp16" else torch.float32
    hf = GPT2LMHeadModel.from_pretrained(folder).to(dev, dtype).eval()
    hf.generation_config.eos_token_id = None  # no early stop: both sides make exactly `new` tokens
    hf.generation_config.pad_token_id = 0
    vocab = hf.config.vocab_size
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, vocab - 1, size=(s["prompts"], s["prompt"])).astype(np.int64)
    batch = rng.integers(0, vocab - 1, size=(s["batch"], s["prompt"])).astype(np.int64)
    row["reference"] = f"transformers generate, {precision}{' (.half())' if precision == 'fp16' else ''} " \
                       f"on {ctx.torch_device}, greedy, {s['new']} new tokens"

    def torch_gen(ids: np.ndarray) -> Callable[[int], np.ndarray]:
        def run(n: int) -> np.ndarray:
            t = torch.from_numpy(ids).to(dev)
            with torch.inference_mode():
                out = hf.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n, do_sample=False)
            ctx.sync()
            return out.cpu().numpy()

        return run

    with TorchPeak(ctx) as peak:
        ref = [torch_gen(p[None])(s["new"])[0, s["prompt"]:].tolist() for p in prompts]
        t1, tb = timed(torch_gen(prompts[:1]), s["runs"], s["new"]), timed(torch_gen(batch), s["runs"], s["new"])
    del hf
    with edgekit_side(ctx, path, row) as (m, mem):
        def ek_gen(ids: np.ndarray) -> Callable[[int], np.ndarray]:
            return lambda n: m.generate(input_ids=ids, max_new_tokens=n, eos_token_id=[])

        got = [ek_gen(p[None])(s["new"])[0, s["prompt"]:].tolist() for p in prompts]
        e1, eb = timed(ek_gen(prompts[:1]), s["runs"], s["new"]), timed(ek_gen(batch), s["runs"], s["new"])
    row["speed"] = {
        "prompt_ms": {"pytorch": t1["prompt_ms"], "edgekit": e1["prompt_ms"], "prompt_tokens": s["prompt"]},
        "decode_tok_s_batch1": {"pytorch": t1["decode_tok_s"], "edgekit": e1["decode_tok_s"]},
        f"decode_tok_s_batch{s['batch']}": {"pytorch": tb["decode_tok_s"] * s["batch"],
                                            "edgekit": eb["decode_tok_s"] * s["batch"]},
    }
    for k, v in row["speed"].items():  # ms: lower is better; tok/s: higher is better
        v["speedup"] = v["pytorch"] / v["edgekit"] if k.endswith("_ms") else v["edgekit"] / v["pytorch"]
    _memory(row, peak, mem)
    row["parity"] = token_agreement(got, ref)
    _gate_tokens(row, precision)


def _gpt2_folder(ctx: Ctx) -> Path:
    from benchmarks.models import gpt2_random_folder

    s = ctx.shapes["generate"]
    return gpt2_random_folder(ctx.work / f"gpt2-{'small' if s['config'] else 'full'}", **s["config"])


# ---------------------------------------------------------------------------------------------- speculative


def speculative(ctx: Ctx, precision: str, row: dict[str, Any]) -> None:
    """Speculative greedy decoding with prompt-lookup drafts (each verify call checks the drafts in one
    decoder call: TensorRT's "verify" profile, onnxruntime CUDA's resident cache) on the generate row's
    model and artifact (converted here only when that row did not run). Parity: its tokens against
    edgekit's plain greedy on the same device, which speculative decoding must reproduce. Speed:
    transformers' prompt-lookup generate vs edgekit's, whole calls (prompt + new tokens)."""
    import time

    import torch
    from transformers import GPT2LMHeadModel

    import edgekit

    s, g = ctx.shapes["speculative"], ctx.shapes["generate"]
    row["model"] = g["name"]
    folder = _gpt2_folder(ctx)
    path = ctx.artifacts.get(("generate", precision)) or _convert(ctx, folder, "generate", precision, row)
    dev, dtype = torch.device(ctx.torch_device), torch.float16 if precision == "fp16" else torch.float32
    hf = GPT2LMHeadModel.from_pretrained(folder).to(dev, dtype).eval()
    hf.generation_config.eos_token_id = None  # no early stop: every call makes exactly `new` tokens
    hf.generation_config.pad_token_id = 0
    # Prompts that repeat themselves (a period of random tokens, three times), so that lookups find n-grams.
    rng = np.random.default_rng(1)
    prompts = np.tile(rng.integers(0, hf.config.vocab_size - 1, size=(s["prompts"], s["period"])), 3).astype(np.int64)
    row["reference"] = f"edgekit plain greedy on the same device, {s['new']} new tokens; " \
                       f"prompt_lookup_num_tokens={s['drafts']}"

    def torch_lookup(ids: np.ndarray) -> list[int]:
        t = torch.from_numpy(ids[None]).to(dev)
        with torch.inference_mode():
            out = hf.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=s["new"], do_sample=False,
                              prompt_lookup_num_tokens=s["drafts"])
        ctx.sync()
        return out[0, ids.shape[0]:].cpu().tolist()

    with TorchPeak(ctx) as peak:
        torch_lookup(prompts[0])  # warm-up
        t = time.perf_counter()
        hf_tokens = [torch_lookup(p) for p in prompts]
        pt_s = time.perf_counter() - t
    del hf
    with edgekit_side(ctx, path, row) as (m, mem):
        ask = dict(max_new_tokens=s["new"], eos_token_id=[])
        plain = [m.generate(input_ids=p[None], **ask)[0, p.shape[0]:].tolist() for p in prompts]
        m.generate(input_ids=prompts[0][None], prompt_lookup_num_tokens=s["drafts"], **ask)  # warm-up
        t = time.perf_counter()
        outs = [m.generate(input_ids=p[None], prompt_lookup_num_tokens=s["drafts"], return_dict_in_generate=True, **ask)
                for p in prompts]
        ek_s = time.perf_counter() - t
    _memory(row, peak, mem)
    got = [o.sequences[0, prompts.shape[1]:].tolist() for o in outs]
    made = [o.speculation for o in outs]
    steps, tokens = sum(x.steps for x in made), sum(x.tokens for x in made)
    row["speculation"] = {"steps": steps, "tokens": tokens, "drafted": sum(x.drafted for x in made),
                          "accepted": sum(x.accepted for x in made), "tokens_per_step": tokens / max(steps, 1)}
    n = len(prompts) * s["new"]
    row["speed"] = {"prompt_lookup_tok_s": {"pytorch": n / pt_s, "edgekit": n / ek_s, "speedup": pt_s / ek_s}}
    row["parity"] = token_agreement(got, plain)
    row["vs_pytorch_prompt_lookup"] = token_agreement(got, hf_tokens)
    _gate_tokens(row, precision)


# ---------------------------------------------------------------------------------------------- recognize


def recognize(ctx: Ctx, precision: str, row: dict[str, Any]) -> None:
    import torch
    from tiny_whisper import make_tiny_whisper
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    import edgekit
    from edgekit.converters.specs.ctc import synthetic_audio  # the speech-like test signal convert uses

    s = ctx.shapes["recognize"]
    row["model"] = s["name"]
    w = s["whisper"]
    folder = ctx.work / f"whisper-{w['d_model']}"
    if not (folder / "config.json").is_file():
        make_tiny_whisper(folder, **w)
    path = _convert(ctx, folder, "recognize", precision, row)
    dev, dtype = torch.device(ctx.torch_device), torch.float16 if precision == "fp16" else torch.float32
    hf = WhisperForConditionalGeneration.from_pretrained(folder).to(dev, dtype).eval()
    fe = WhisperFeatureExtractor.from_pretrained(folder)
    waves = [synthetic_audio(s["seconds"], 16000, seed) for seed in (0, 1)]
    row["reference"] = f"transformers Whisper generate, {precision}{' (.half())' if precision == 'fp16' else ''} " \
                       f"on {ctx.torch_device}, greedy, language en, up to {s['tokens']} tokens"

    def hf_tokens(feats: Any) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(feats.to(dev, dtype), language="en", max_new_tokens=s["tokens"],
                              return_dict_in_generate=True)
        ctx.sync()
        return [int(t) for t in out.sequences[0].cpu()]

    def hf_run() -> list[int]:  # the whole PyTorch path: its feature extractor, then generate
        return hf_tokens(fe(waves[0], sampling_rate=16000, return_tensors="pt").input_features)

    with edgekit.load(path, device="cpu") as cpu_model:  # the same log-mel features for both sides
        feats = [cpu_model.features(wv) for wv in waves]
    with TorchPeak(ctx) as peak:
        ref = [hf_tokens(torch.from_numpy(f)[None]) for f in feats]
        pt_ms = median_ms(hf_run, s["runs"])
    del hf
    with edgekit_side(ctx, path, row) as (m, mem):
        got = [m.greedy_tokens(f, language="en", max_new_tokens=s["tokens"]) for f in feats]
        ek_ms = median_ms(lambda: m.recognize(waves[0], language="en", max_new_tokens=s["tokens"]), s["runs"])
    row["speed"] = {"real_time_factor": {"pytorch": pt_ms / 1e3 / s["seconds"], "edgekit": ek_ms / 1e3 / s["seconds"],
                                         "audio_seconds": s["seconds"], "speedup": pt_ms / ek_ms}}
    _memory(row, peak, mem)
    row["parity"] = token_agreement(got, ref)
    _gate_tokens(row, precision)


# speculative after generate: it runs on the artifacts that row converted.
TASKS: dict[str, Callable[[Ctx, str, dict[str, Any]], None]] = {
    "classify": classify, "generate": generate, "speculative": speculative, "recognize": recognize,
}
