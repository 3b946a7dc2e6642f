"""int4 quality side by side: edgekit against onnxruntime-genai's int4 of the same trained model.

A character-level Qwen2-shaped decoder (3 layers, d=128, 4 heads / 2 KV heads) is trained on the
pydoc topics with examples/train_char_gpt.py's corpus, tokenizer and loop (that example's own model
is GPT-2-shaped, which genai's builder does not take). Then edgekit int4 (the gate's pick, and
block 32 as genai uses) and genai's builder at fp32/int4 are scored on the same held-out windows,
teacher-forced: perplexity and next-token top-1 agreement with PyTorch. genai's logits are read one
appended token at a time, as it decodes.

    python benchmarks/int4_quality.py [--steps 600] [--out /tmp/int4-quality]     # about 2 minutes
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def train_folder(out: Path, steps: int) -> Path:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    import train_char_gpt as C

    folder = out / "char-qwen2-hf"
    if (folder / "config.json").is_file():
        return folder
    tok = C.char_tokenizer()
    train_ids = np.asarray(tok.encode(C.corpus()[0]).ids, np.int64)
    cfg = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    C.train(model, train_ids, steps, lr=3e-3)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>").save_pretrained(folder)
    return folder


def genai_logits(path: Path, windows: np.ndarray, vocab: int) -> np.ndarray:
    import onnxruntime_genai as og

    model = og.Model(str(path))
    out = []
    for w in windows:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(w) + 1)
        g = og.Generator(model, params)
        steps = []
        for t in range(len(w)):
            g.append_tokens(w[None, t : t + 1].astype(np.int32))
            steps.append(np.asarray(g.get_output("logits")).reshape(-1)[-vocab:])
        out.append(np.stack(steps))
    return np.stack(out)


def main(steps: int, out: Path) -> dict[str, dict[str, Any]]:
    import torch
    from transformers import Qwen2ForCausalLM

    import edgekit
    import train_char_gpt as C
    from edgekit.external_data import tensor_bytes

    out.mkdir(parents=True, exist_ok=True)
    folder = train_folder(out, steps)
    tok = C.char_tokenizer()
    test_text = C.corpus()[1]
    windows = C.held_out_windows(np.asarray(tok.encode(test_text).ids, np.int64), 64)
    held = [test_text[i : i + C.WINDOW] for i in range(0, 8 * C.WINDOW, C.WINDOW)]
    with torch.no_grad():
        ref = Qwen2ForCausalLM.from_pretrained(folder).eval()(torch.from_numpy(windows)).logits.numpy()

    def row(logits: np.ndarray, weights_bytes: int, setting: str) -> dict[str, Any]:
        return {"perplexity": C.perplexity(logits, windows), "top1": float((logits.argmax(-1) == ref.argmax(-1)).mean()),
                "weights_mb": weights_bytes / 1e6, "setting": setting}

    rows = {"pytorch fp32": row(ref, 0, "")}
    for name, kw in (("edgekit fp32", {"precision": "fp32"}), ("edgekit int4", {"precision": "int4"}),
                     ("edgekit int4 block 32", {"precision": "int4", "int4_block_size": 32})):
        art = edgekit.convert(folder, out / name.replace(" ", "-"), calibration=held, overwrite=True, strict=False, **kw)
        d = art.manifest.precision.details
        setting = f"block {d['block_size']}, accuracy level {d['accuracy_level']}" if "block_size" in d else ""
        with edgekit.load(art.path, device="cpu") as model:
            rows[name] = row(model.logits(windows), tensor_bytes(Path(art.path) / "model.onnx"), setting)
    for precision in ("fp32", "int4"):
        path = out / f"genai-{precision}"
        if not (path / "genai_config.json").is_file():
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(path),
                            "-p", precision, "-e", "cpu", "-c", str(out / "genai-cache")], check=True,
                           capture_output=True)
        rows[f"onnxruntime-genai {precision}"] = row(genai_logits(path, windows, tok.get_vocab_size()),
                                                     sum(f.stat().st_size for f in path.glob("*.onnx*")), "builder default")
    base = rows["pytorch fp32"]["perplexity"]
    print(f"held-out perplexity over {windows.size} characters, teacher-forced")
    print("| model | setting | perplexity | vs PyTorch | top-1 vs PyTorch | weights MB |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['setting']} | {r['perplexity']:.4f} | {100 * (r['perplexity'] / base - 1):+.2f}% "
              f"| {r['top1']:.4f} | {r['weights_mb']:.2f} |")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("/tmp/int4-quality"))
    args = ap.parse_args()
    main(args.steps, args.out)
