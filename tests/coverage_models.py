"""The coverage sweep: every architecture in transformers' auto mappings for four tasks, small and random.

For each (task, model_type, shape): build a random config from the family's own config class (sizes
shrunk by the keys it has; shape "tiny": heads of 8, "real": heads of 64 with the family's own rotary
settings, see _REAL_INTS; hybrids keep one layer of each kind, and families whose defaults build no
runnable model get what their checkpoints set, _FAMILY_KW), save model + tokenizer / image processor /
feature extractor to a folder, convert it at fp32 (optionally fp16, int8) and compare from the raw
input to the answer with transformers, as a user of the folder would call it:
  generate        text in: prompt ids, greedy new ids and new text identical to the tokenizer's and
                  `model.generate`'s (eos off on both sides; _check_generate)
  classify-text   probabilities within 1e-4 of `pipeline("text-classification", top_k=None)`
  classify-image  probabilities within 1e-4 of `pipeline("image-classification")` on odd-size photos
  recognize       transcripts equal to `pipeline("automatic-speech-recognition")`'s
The pipelines run the folder's own pre-processing, so edgekit's tokenizer / image / audio
pre-processing is compared with it on the way. `outcome(...)` returns an `Outcome` (status "pass" |
"refused" | "fail" | "skip", reason; for generate the graph onnxruntime runs); the test
(tests/test_coverage.py) and the README table (scripts/coverage.py) both read it.
"""
from __future__ import annotations

import json
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.manifest import Manifest

PROB_TOL = 1e-4
TASKS = ("generate", "classify-text", "classify-image", "recognize", "image-text-to-text")
_MAPPINGS = {
    "generate": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "classify-text": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "classify-image": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "recognize": "MODEL_FOR_CTC_MAPPING_NAMES",
    "image-text-to-text": "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
}

# Families that are not a single-modality model of the task, or need code from the Hub: skipped, with why
# (not for image-text-to-text, whose families are multimodal by definition: tests/vision_models.py).
SKIPPED: dict[str, str] = {
    "timm_wrapper": "wraps a timm model loaded from the Hub (remote code / weights), not a transformers architecture",
    "clip": "multimodal (text + vision tower); the image classifier needs the joint config",
    "metaclip_2": "multimodal (text + vision tower)",
    "siglip": "multimodal (text + vision tower)",
    "siglip2": "multimodal (text + vision tower)",
    "shieldgemma2": "multimodal (Gemma 3 vision-language model)",
    "perceiver": "multimodal (one family with text, image and audio pre-processors)",
    "layoutlm": "multimodal (text + layout boxes)",
    "layoutlmv2": "multimodal (text + layout + image)",
    "layoutlmv3": "multimodal (text + layout + image)",
    "lilt": "multimodal (text + layout boxes)",
    "markuplm": "multimodal (text + HTML xpaths)",
    "tapas": "multimodal (text + table)",
    "modernvbert": "multimodal (vision-language encoder)",
    "ultravbert": "multimodal (vision-language encoder)",
    "donut-swin": "the vision encoder of an image-to-text model",
    "fuyu": "multimodal (image patches + text)",
    "got_ocr2": "multimodal (image + text)",
    "emu3": "multimodal (image tokens + text)",
    "mllama": "multimodal (vision-language)",
    "phi4_multimodal": "multimodal (vision + audio + text)",
    "moshi": "multimodal (audio codec + text)",
    "musicgen": "audio codes generation (multi-codebook), not a text decoder",
    "musicgen_melody": "audio codes generation (multi-codebook), not a text decoder",
    "moss_transcribe_diarize": "multimodal (speech + text)",
    "gemma3": "multimodal (vision-language); the text-only gemma3_text is covered",
    "gemma3n": "multimodal (vision + audio + text); gemma3n_text is covered",
    "gemma4": "multimodal; gemma4_text is covered",
    "gemma4_unified": "multimodal; gemma4_unified_text is covered",
    "qwen3_5": "multimodal (vision-language); qwen3_5_text is covered",
    "qwen3_5_moe": "multimodal (vision-language); qwen3_5_moe_text is covered",
    "qwen4_exp": "multimodal; qwen4_exp_text is covered",
    "llama4": "multimodal (vision-language); llama4_text is covered",
    "dots3_note": "multimodal; dots3_note_text is covered",
    "git": "multimodal (image-to-text decoder)",
    "trocr": "image-to-text decoder (needs the vision encoder's states)",
    "mistral4": "multimodal (vision-language)",
    "t5gemma2": "multimodal encoder-decoder",
    # Speculative-decoding drafters: their forward raises unless given the target model's inputs_embeds
    # and shared_kv_states (transformers 5.23, modeling_gemma4_*assistant.py).
    # In transformers' speech seq2seq mapping, but no speech recognizer: their output is not a transcript.
    "dia": "text-to-speech (audio codes out, from text), not speech recognition",
    "vibevoice": "text-to-speech (speech latents out), not speech recognition",
    "pop2piano": "audio to piano MIDI tokens, not speech recognition",
    "gemma4_assistant": "transformers 5.23 cannot run generate on it alone: it is a speculative-decoding "
                        "assistant whose forward needs the target Gemma 4 model's inputs_embeds and shared KV states",
    "gemma4_unified_assistant": "transformers 5.23 cannot run generate on it alone: it is a speculative-decoding "
                                "assistant whose forward needs the target Gemma 4 Unified model's inputs_embeds and "
                                "shared KV states",
}


# recognize also sweeps the speech encoder-decoders (Whisper, Moonshine, ...) beside the CTC models.
SPEECH_SEQ2SEQ = "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"


def families(task: str) -> list[str]:
    from transformers.models.auto import modeling_auto

    names = set(getattr(modeling_auto, _MAPPINGS[task]))
    if task == "recognize":
        names |= set(getattr(modeling_auto, SPEECH_SEQ2SEQ))
    return sorted(names)


def is_speech_seq2seq(family: str) -> bool:
    from transformers.models.auto import modeling_auto

    return family in getattr(modeling_auto, SPEECH_SEQ2SEQ)


@dataclass
class Outcome:
    task: str
    family: str
    precision: str
    status: str  # "pass" | "refused" | "fail" | "skip"
    reason: str = ""
    seconds: float = 0.0
    shape: str = "tiny"  # one of SHAPES
    graph: str = ""  # generate: the decoder graph onnxruntime runs (runtime_graph)
    graph_note: str = ""  # generate, portable graph: why no onnxruntime stand-in, where the manifest says

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# ---------------------------------------------------------------- tiny configs

_INTS = {  # key -> tiny value, set where the family's config has the key
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "n_embed": 32, "dim": 32, "embed_dim": 32, "word_embed_proj_dim": 32,
    "emb_dim": 32,  # XLM / FlauBERT's width (their hidden_size is an alias of it)
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2, "decoder_layers": 2, "encoder_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "decoder_attention_heads": 4, "encoder_attention_heads": 4,
    "num_key_value_heads": 2, "num_kv_heads": 2, "multi_query_group_num": 2,
    "intermediate_size": 64, "ffn_dim": 64, "n_inner": 64, "d_ff": 64, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64,
    "ffn_hidden_size": 64, "d_inner": 64, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "head_dim": 8, "kv_channels": 8, "attention_head_size": 8,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_topk": 2,
    "top_k": 2, "n_shared_experts": 1, "num_shared_experts": 1, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
    "qk_head_dim": 16, "max_position_embeddings": 256, "n_positions": 256, "n_ctx": 256, "seq_length": 256,
    "embedding_size": 32, "projection_dim": 32, "rotary_dim": 4, "conv_kernel": 4, "state_size": 8,
    "time_step_rank": 4, "mamba_d_state": 8, "mamba_n_heads": 4, "mamba_d_head": 8, "ssm_state_size": 8,
    "mamba_expand": 2, "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
    "linear_value_head_dim": 8, "type_vocab_size": 2, "num_labels": 3,
}
_VISION_INTS = {"image_size": 32, "embed_dim": 16, "hidden_size": 32, "num_channels": 3, "embedding_size": 16,
                "hidden_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "encoder_stride": 4, "window_size": 4, "num_labels": 3, "neck_hidden_sizes": None}

# The "real" shape: real attention head sizes (64) at a tiny depth and width, so the graphs are the
# ones real checkpoints get (onnxruntime's fused attention takes head sizes that are multiples of 16;
# the tiny shape's 8 takes the portable path). Rotary settings (partial_rotary_factor, rotary_pct,
# rope_*) stay the family's defaults in both shapes; an absolute rotary_dim keeps the default's
# fraction of the head (_real_rotary_dim). None: the family's default is kept (latent attention's
# own head sizes, which are real ones already).
SHAPES = ("tiny", "real")
_HIDDEN = ("hidden_size", "d_model", "n_embd", "n_embed", "dim", "embed_dim", "word_embed_proj_dim",
           "embedding_size", "projection_dim", "emb_dim")
_HEADS = ("num_attention_heads", "n_head", "n_heads", "decoder_attention_heads", "encoder_attention_heads")
_REAL_INTS: dict[str, int | None] = {
    **dict.fromkeys(_HIDDEN, 4 * 64), **dict.fromkeys(_HEADS, 4),
    "head_dim": 64, "kv_channels": 64, "attention_head_size": 64,
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "d_ff", "decoder_ffn_dim", "encoder_ffn_dim",
                     "ffn_hidden_size", "d_inner"), 512),
    "moe_intermediate_size": 256, "shared_expert_intermediate_size": 256, "kv_lora_rank": 64, "q_lora_rank": 64,
    "qk_rope_head_dim": None, "qk_nope_head_dim": None, "v_head_dim": None, "qk_head_dim": None,
    "mamba_n_heads": 8, "mamba_d_head": 64, "linear_key_head_dim": 64, "linear_value_head_dim": 64,
}
_VISION_REAL_INTS: dict[str, int | None] = {"hidden_size": 4 * 64, "num_attention_heads": 4, "intermediate_size": 512}


def _shape_ints(task: str, shape: str) -> dict[str, int | None]:
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
    if task == "classify-image":
        return {**_VISION_INTS, **(_VISION_REAL_INTS if shape == "real" else {})}
    return {**_INTS, **(_REAL_INTS if shape == "real" else {})}


def _real_rotary_dim(base: dict[str, Any]) -> int | None:
    """An absolute rotary_dim (GPT-J, CodeGen...) as the same fraction of a 64 head as the default's of
    the default head; None where the default rotates the whole head (or the head is not known)."""
    rotary = base.get("rotary_dim")
    hidden = next((base[k] for k in _HIDDEN if isinstance(base.get(k), int)), None)
    heads = next((base[k] for k in _HEADS if isinstance(base.get(k), int)), None)
    if not isinstance(rotary, int) or not hidden or not heads:
        return None
    return max(2, 2 * round(64 * rotary / (hidden // heads) / 2))


def _shrink_list(key: str, value: list[Any], shape: str = "tiny") -> list[Any] | None:
    """Per-stage lists of vision configs: one block per stage, narrow stages (tiny: one head of 8 to 32;
    real: heads of 64, one more per stage as the stage widens)."""
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    width = 64 if shape == "real" else 8
    if key in ("depths", "num_block_repeats", "num_layers", "stage_num_blocks", "blocks_per_stage"):
        return [1] * len(value)
    if key in ("hidden_sizes", "embed_dims", "embed_dim", "neck_hidden_sizes", "dims", "widths", "in_channels",
               "out_channels", "embedding_dims", "hidden_size", "stage_out_channels"):
        return [width * min(i + 1, 4) for i in range(len(value))]
    if key in ("num_heads", "num_attention_heads", "heads"):
        return [min(i + 1, 4) if shape == "real" else 1 for i in range(len(value))]
    return None


# Vision families whose stage lists constrain each other: their own numbers, made small.
# "lists": False keeps the default per-stage lists (they are scaled by coefficients instead).
_VISION_FAMILIES: dict[str, dict[str, Any]] = {
    "swin": dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, patch_size=4),
    "swinv2": dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, patch_size=4),
    "bit": dict(num_groups=2),
    "efficientnet": dict(lists=False, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128),
    "levit": dict(lists=False, image_size=64, hidden_sizes=[16, 32, 48], key_dim=[4, 4, 4], depths=[1, 1, 1],
                  num_attention_heads=[2, 2, 2]),
    "hgnet_v2": dict(lists=False),
    "textnet": dict(lists=False),
    "mobilevitv2": dict(lists=False, width_multiplier=0.25, image_size=64),
    "hiera": dict(image_size=[64, 64], embed_dim=16, num_heads=[1, 1, 1, 1], depths=[1, 1, 1, 1],
                  masked_unit_size=[8, 8], query_stride=[2, 2], patch_stride=[4, 4]),
}


# Layer kinds that keep a fixed-size state instead of a growing key/value cache (transformers 5.23's
# layer_types names, Recurrent Gemma's block_types).
_STATE_KINDS = ("linear_attention", "conv", "recurrent")
_LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _hybrid_layers(base: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """A hybrid's per-layer kind lists, one layer of each kind in the default's order (more layers where
    it has more than two kinds). Shrinking the depth alone lets the config re-derive the list from its
    period, which at two layers leaves only state layers (Qwen3-Next: attention every 4th) and
    transformers' cache cannot then measure the sequence (`get_seq_length` needs an attention layer),
    or, for a fixed default list (Zamba2's 54), fails validation."""
    lists = {k: base[k] for k in ("layer_types", "layers_block_type", "block_types") if isinstance(base.get(k), list)}
    kinds = {k: list(dict.fromkeys(v)) for k, v in lists.items()}
    hybrid = {k: v for k, v in kinds.items() if any(x in _STATE_KINDS for x in v) and len(v) > 1}
    if not hybrid:
        return {}
    count = next((k for k in _LAYER_COUNTS if k in kw), "num_hidden_layers")
    n = max(kw.get(count, 2), *(len(v) for v in hybrid.values()))
    out: dict[str, Any] = {count: n}
    for key, value in hybrid.items():
        out[key] = value + value[-1:] * (n - len(value))
    if isinstance(base.get("mlp_layer_types"), list):  # dense / sparse per layer: the same depth
        mlp = list(dict.fromkeys(base["mlp_layer_types"]))
        out["mlp_layer_types"] = (mlp + mlp[-1:] * n)[:n]
    return out


def _mamba_widths(base: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """Mamba-2 mixers: heads x head size must equal expand x hidden (the configs validate it), so the
    head count follows from the shrunk width at the shape's head size (8 tiny, 64 real)."""
    hidden = kw.get("hidden_size")
    if not isinstance(hidden, int):
        return {}
    if "mamba_n_heads" in base and isinstance(kw.get("mamba_d_head"), int):
        width = base.get("mamba_expand", 2) * hidden
        out = {"mamba_n_heads": width // kw["mamba_d_head"]}
        if base.get("mamba_d_ssm") is not None:  # Falcon-H1: an absolute mixer width (1024) overrides expand
            out["mamba_d_ssm"] = width
        return out
    if {"num_heads", "expand", "n_groups"} <= base.keys() and isinstance(kw.get("head_dim"), int):  # Mamba2
        return {"num_heads": base["expand"] * hidden // kw["head_dim"]}
    return {}


def _blt_parts(kw: dict[str, Any], ints: dict[str, int | None]) -> dict[str, Any]:
    """BLT's four sub-models keep their checkpoint sizes whatever the top config's are (configuration_blt.py:
    a 25-layer global transformer 2048 wide, a 9-layer local decoder and a 14-layer entropy patcher, and
    6 hash-embedding tables of 500,002 rows x 1024: 4.6e9 weights, 17 GB at fp32), so each gets the
    shape's width, heads and two layers (the encoder its default one), and tables of 1024 rows. The
    global transformer stays cross_attn_k (2) x the local width with heads of the same size, as in the
    checkpoint (2048 = 2 x 1024), so the encoder's patch states reach it without a projection. BltConfig
    declares no num_hidden_layers, which its cached forward needs (it builds DynamicCache(config=...) for
    the encoder's and the decoder's layers): the deeper of the two, as transformers' BLT tests set it."""
    local = {"hidden_size": ints["hidden_size"], "num_attention_heads": ints["num_attention_heads"],
             "intermediate_size": ints["intermediate_size"]}
    wide = 2 * int(ints["hidden_size"] or 0)
    both = {**local, "hidden_size_global": wide}
    return {"patcher_config": {**local, "num_hidden_layers": 2},
            "encoder_config": {**both, "num_hidden_layers": 1}, "decoder_config": {**both, "num_hidden_layers": 2},
            "global_config": {"hidden_size": wide, "num_attention_heads": 2 * int(ints["num_attention_heads"] or 0),
                              "intermediate_size": 2 * int(ints["intermediate_size"] or 0), "num_hidden_layers": 2},
            "encoder_hash_byte_group_vocab": 1024, "num_hidden_layers": 2}


# Families whose defaults cannot make a small model that runs generate: what each needs, and why.
# Each takes (the keyword arguments so far, the shape's ints) and returns the ones to set.
_FamilyKw = Callable[[dict[str, Any], dict[str, int | None]], dict[str, Any]]
_FAMILY_KW: dict[str, _FamilyKw] = {
    # Bamba-9B and Granite-4.0-H interleave attention layers; the default configs are all Mamba, and
    # transformers' generate needs an attention layer to measure the cache (`get_seq_length`).
    "bamba": lambda kw, ints: {"attn_layer_indices": [kw["num_hidden_layers"] - 1]},
    "granitemoehybrid": lambda kw, ints: {"layer_types": ["linear_attention", "full_attention"]},
    # Jamba places attention at i % attn_layer_period == attn_layer_offset (8 / 4): none in 2 layers.
    "jamba": lambda kw, ints: {"attn_layer_period": 2, "attn_layer_offset": 1},
    # LFM2-MoE checkpoints list their layer kinds; the default config has none (layer_types None).
    # num_dense_layers 2 would leave no MoE layer in two.
    "lfm2_moe": lambda kw, ints: {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    # Gemma 3n's last num_kv_shared_layers (15 of 35) reuse the cache of the last earlier layer of their
    # kind, and the config checks that every kind has one: two layers producing, two reusing.
    "gemma3n_text": lambda kw, ints: {"num_hidden_layers": 4, "num_kv_shared_layers": 2,
                                      "layer_types": ["sliding_attention", "full_attention"] * 2},
    # GPT-Neo's per-layer kinds come from attention_types (pattern, repeats): 12 repeats of two.
    "gpt_neo": lambda kw, ints: {"attention_types": [[["global", "local"], kw["num_layers"] // 2]]},
    # DBRX reads attn_config.rope_theta, which DbrxAttentionConfig's defaults lack, and clamps q/k/v to
    # clip_qkv, which torch's clamp refuses as None (checkpoints set both: dbrx-instruct's clip_qkv is 8);
    # the experts' width lives in ffn_config.
    "dbrx": lambda kw, ints: {"attn_config": {"kv_n_heads": kw["num_key_value_heads"], "rope_theta": 10000.0,
                                              "clip_qkv": 8.0},
                              "ffn_config": {"ffn_hidden_size": ints["ffn_hidden_size"]}},
    # Cohere Compass keys its rotary settings by layer type; the default config has none.
    "cohere_compass_text": lambda kw, ints: {"rope_parameters": {"full_attention": {"rope_type": "default",
                                                                                    "rope_theta": 10000.0}}},
    # Reformer's axial position embeddings split the hidden size (64 + 192 of 256): the same split.
    "reformer": lambda kw, ints: {"axial_pos_embds_dim": [kw["hidden_size"] // 4, kw["hidden_size"] * 3 // 4]},
    # xLSTM rounds its query / value widths (hidden x 0.5, x 1.0) up to multiples of 64; at hidden 32 they
    # no longer match its recurrent state ("matC_old has wrong shape"). 128 needs no rounding (64, 128).
    "xlstm": lambda kw, ints: {"hidden_size": max(kw["hidden_size"], 128)},
    # Kimi Linear and Bailing hybrid name their routing keys num_experts_per_token / num_expert_group
    # (the standard names are aliases, absent from to_dict): 8 of 4 experts, or 8 groups of 4, break top-k.
    "kimi_linear": lambda kw, ints: {"num_experts_per_tok": ints["num_experts_per_tok"], "n_group": ints["n_group"]},
    "bailing_hybrid": lambda kw, ints: {"num_experts_per_tok": ints["num_experts_per_tok"], "n_group": ints["n_group"]},
    # Qwen4-Exp's indexed_attention layers build a QSA indexer whose sizes default to None; checkpoints
    # set them. One key head (it validates that) and a budget of 16 tokens in blocks of 4, so the
    # selection is exercised once a prompt plus new tokens pass 16. Blocks tied at the cut are kept in
    # torch's unspecified topk order (converters/indexers.py): 16 query heads and no pad id (its zero
    # embedding row, once generated, gives a query of zeros that ties every block) keep the seeded model's
    # scores at the cut distinct (with 4 heads and the pad id, 10 of 143 generate steps' cuts were ties).
    "qwen4_exp_text": lambda kw, ints: {"pad_token_id": None, "indexer_n_heads": 16,
                                        "indexer_kv_heads": 1,
                                        "indexer_head_dim": kw["head_dim"], "indexer_budget": 16,
                                        "indexer_compress_ratio": 4},
    "blt": _blt_parts,
    # JetMoE's config names no pad id (JetMoeConfig's default, None). With the tokenizer's 0 as its pad id,
    # row 0 of the embedding is zero (nn.Embedding padding_idx), and where the random model emits id 0
    # as a new token, its next step's first attention router (JetMoeMoA routes the layer's normed input)
    # reads zeros: all four logits tie at exactly 0.0. torch.topk's order of tied values is unspecified
    # (its docs; on CPU it picks experts [2, 3]) and ONNX TopK's is lower index first ([0, 1]), so the
    # tokens then part (at real width new token 7; transformers with a lower-index-first topk gives
    # edgekit's 32 tokens exactly). Generate still pads with the tokenizer's 0 (masked either way).
    "jetmoe": lambda kw, ints: {"pad_token_id": None},
    # ZAYA supports one expert per token only (its config validates it).
    "zaya": lambda kw, ints: {"num_experts_per_tok": 1},
    # X-MOD's adapters need a language; the default config names one (en_XX) but selects none.
    "xmod": lambda kw, ints: {"default_language": "en_XX"},
    # Parakeet-CTC and LASR-CTC hold their conformer in encoder_config (24 and 17 layers of 1024 / 512
    # by default, 0.4 GB): the shape's ints there, and a narrow subsampling stack.
    "parakeet_ctc": lambda kw, ints: {"encoder_config": _sub_config("parakeet_encoder", ints)},
    "lasr_ctc": lambda kw, ints: {"encoder_config": _sub_config("lasr_encoder", ints)},
    # Granite Speech 5 CTC holds its conformer in encoder_config, whose self-conditioning CTC head must
    # have the CTC vocabulary (GraniteSpeech5CTCConfig.validate_architecture); one key/value head per head.
    "granite_speech5_ctc": lambda kw, ints: {"encoder_config": {
        **{k: v for k, v in _sub_config("granite_speech5_encoder", ints).items()
           if k not in ("num_key_value_heads", "subsampling_conv_channels")}, "vocab_size": len(CTC_VOCAB)}},
    # Canary: a Parakeet FastConformer encoder_config (as its checkpoints: unscaled input) and a
    # decoder_config whose vocabulary must be the model's (CanaryConfig.validate_architecture), both at
    # the shape's width so the cross-attention reads the encoder's states; the tokenizer's ids in both.
    "canary": lambda kw, ints: {
        "encoder_config": {**_sub_config("parakeet_encoder", ints), "scale_input": False},
        "decoder_config": {**{k: v for k, v in ints.items() if k in _config_keys("canary_decoder") and v is not None},
                           "num_key_value_heads": ints["num_attention_heads"], "vocab_size": len(tiny_tokenizer()),
                           "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}},
    # Kyutai STT embeds the text token and each Mimi codebook's token in one table of vocab_size +
    # num_codebooks x codebook_vocab_size + 1 rows, the last row the audio padding (the default's 69569 =
    # 4001 + 32 x 2049): the same layout at the tiny vocab, 4 codebooks of 65 codes, a narrow Mimi codec.
    "kyutai_speech_to_text": lambda kw, ints: {
        "num_codebooks": 4, "codebook_vocab_size": 65, "audio_bos_token_id": 64,
        "audio_pad_token_id": len(tiny_tokenizer()) + 4 * 65,
        "codec_config": {"hidden_size": 32, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 64,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8, "codebook_size": 64,
                         "codebook_dim": 16, "vector_quantization_hidden_dimension": 16, "num_quantizers": 4,
                         "upsample_groups": 32}},
    # Moonshine names its depths and heads per stack (6 layers, 8 heads by default): two layers, the
    # shape's heads (tiny 8 wide, real 64), every head its own key/value head as in the checkpoints.
    "moonshine": lambda kw, ints: {**{f"{s}_num_hidden_layers": 2 for s in ("encoder", "decoder")},
                                   **{f"{s}_num_{h}": ints["num_attention_heads"] for s in ("encoder", "decoder")
                                      for h in ("attention_heads", "key_value_heads")}},
    # Speech2Text's subsampling convolutions are 1024 channels wide by default.
    "speech_to_text": lambda kw, ints: {"conv_channels": 2 * int(ints["d_model"] or 0)},
    # Audio LLMs hold their sizes in sub-configs (a 3-7 B-weight text model, a 1280-wide 32-layer audio encoder by
    # default: minutes to build), which the top-level ints do not reach: the shape's ints in each.
    "granite_speech": lambda kw, ints: _granite_speech_parts("granite_speech", ints),
    "granite_speech_plus": lambda kw, ints: _granite_speech_parts("granite_speech_plus", ints),
    # VibeVoice-ASR's two tokenizer encoders double num_filters (32) over 6 downsamplings, 3 blocks per
    # stage (0.3 G weights in the last stage alone): one block per stage from 8 filters.
    "vibevoice_asr": lambda kw, ints: _parts("vibevoice_asr", ints, **dict.fromkeys(
        ("acoustic_tokenizer_encoder_config", "semantic_tokenizer_encoder_config"),
        {"depths": [1] * 7, "num_filters": 8})),
    "voxtral_realtime": lambda kw, ints: _parts("voxtral_realtime", ints),
    # MoonshineStreamingConfig declares no num_key_value_heads, which its decoder layers read (transformers
    # 5.23 modeling_moonshine_streaming.py): checkpoints' config.json set it (every head its own).
    "moonshine_streaming": lambda kw, ints: {**_parts("moonshine_streaming", ints),
                                             "num_key_value_heads": ints["num_attention_heads"]},
    # Cohere ASR's Parakeet encoder is 48 layers of 1280 by default (7 GB at fp32), as parakeet_ctc's.
    "cohere_asr": lambda kw, ints: {"encoder_config": _sub_config("parakeet_encoder", ints)},
    "speech-encoder-decoder": lambda kw, ints: _speech_encoder_decoder(ints),
    # SeamlessM4T's speech encoder (a conformer) is 24 layers of 16 heads by default, beside the text stacks.
    **dict.fromkeys(("seamless_m4t", "seamless_m4t_v2"), lambda kw, ints: {
        "speech_encoder_layers": 2, "speech_encoder_attention_heads": ints["num_attention_heads"],
        "speech_encoder_intermediate_size": ints["intermediate_size"]}),
    # SpeechT5's waveform pre-net is wav2vec2's convolution stack: per-layer lists (the shared int conv_kernel
    # above is a Mamba setting), three narrow layers as in the CTC folders (_save_ctc).
    "speecht5": lambda kw, ints: {"conv_dim": [32, 32, 32], "conv_stride": [5, 4, 4], "conv_kernel": [10, 8, 8],
                                  "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2},
}


def _speech_encoder_decoder(ints: dict[str, int | None]) -> dict[str, Any]:
    """SpeechEncoderDecoderModel's default pair is a 12-layer wav2vec2 and BERT. The checkpoints pair a
    wav2vec2 (XLS-R) encoder with an mBART decoder, the encoder wider than the decoder in some
    (xls-r-1b: 1280 into 1024, through enc_to_dec_proj): here twice as wide, heads of the same size."""
    from transformers import CONFIG_MAPPING

    def small(model_type: str, scale: int, **over: Any) -> dict[str, Any]:
        base = CONFIG_MAPPING[model_type]().to_dict()
        sized = {k: v * scale if k in _HIDDEN + _HEADS or "ffn" in k or k == "intermediate_size" else v
                 for k, v in ints.items() if k in base and v is not None}
        return {"model_type": model_type, **sized, **over}

    encoder = small("wav2vec2", 2, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                    do_stable_layer_norm=True, initializer_range=0.5)
    decoder = small("mbart", 1, vocab_size=len(tiny_tokenizer()), is_decoder=True, add_cross_attention=True,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.2, tie_word_embeddings=False)
    return {"encoder": encoder, "decoder": decoder}


def _parts(model_type: str, ints: dict[str, int | None], **override: dict[str, Any]) -> dict[str, Any]:
    """Every sub-config of a composite config (the dicts with a model_type) with the shape's ints where
    it has the key; its text vocabulary kept (special token ids such as the audio token index sit in it)."""
    from transformers import CONFIG_MAPPING

    base = CONFIG_MAPPING[model_type]().to_dict()
    out: dict[str, Any] = {}
    for key, sub in base.items():
        if isinstance(sub, dict) and "model_type" in sub:
            small = {k: v for k, v in ints.items() if k in sub and v is not None}
            out[key] = {**small, **override.get(key, {})}
    return out


def _granite_speech_parts(model_type: str, ints: dict[str, int | None]) -> dict[str, Any]:
    """Granite Speech: its conformer names its sizes hidden_dim / num_heads / dim_head, and the Q-Former
    projector reads the encoder's states (encoder_hidden_size = the encoder's hidden_dim)."""
    width, heads = int(ints["hidden_size"] or 0), int(ints["num_attention_heads"] or 0)
    return _parts(model_type, ints, encoder_config={"hidden_dim": width, "num_heads": heads,
                                                    "dim_head": width // heads, "num_layers": 2},
                  projector_config={"encoder_hidden_size": width})


# Families whose random model at real width is too deep for an fp32 comparison: what the "real" shape
# sets instead (real head sizes, not real depth). HRM-Text runs its two stacks H_cycles x (L_cycles + 1)
# times, each run's input the sum of earlier runs' normed outputs (no residual across runs); at width
# 256 and initializer_range 0.2 (a linear's gain 0.2 x sqrt(256) = 3.2) each run multiplies rounding
# ~4x: PyTorch's own fp32 logits differ from its float64 logits by 0.37-0.98 of their scale at the
# default 8 runs of 2 layers (H 2, L 3), and with 1 layer by 3-4e-3 at 6 runs, 2-3e-4 at 4, 1.1-1.7e-5
# at 2 (3 seeds each; a 2-layer Llama at this width: 5-8e-6). Only 2 runs keep rounding under generate
# parity's 1e-4 tie rule (converters/specs/generate.py TIE_REL). The tiny shape keeps the default
# cycles (rounding 1e-6 there), so reused stacks' cache slots are compared at tiny width.
_REAL_DEPTH: dict[str, dict[str, Any]] = {
    "hrm_text": {"num_hidden_layers": 1, "H_cycles": 1, "L_cycles": 1},
}


def _config_keys(model_type: str) -> set[str]:
    from transformers import CONFIG_MAPPING

    return set(CONFIG_MAPPING[model_type]().to_dict())


def _sub_config(model_type: str, ints: dict[str, int | None]) -> dict[str, Any]:
    from transformers import CONFIG_MAPPING

    base = CONFIG_MAPPING[model_type]().to_dict()
    return {**{k: v for k, v in ints.items() if k in base and v is not None}, "subsampling_conv_channels": 16}


def tiny_config(model_type: str, task: str, vocab: int, shape: str = "tiny", **extra: Any) -> Any:
    """The family's config with few layers and a small vocab; `shape` "tiny" (heads of 8) or "real"
    (heads of 64, see _REAL_INTS)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    base = cls().to_dict()
    kw: dict[str, Any] = {k: v for k, v in _shape_ints(task, shape).items() if k in base and v is not None}
    if shape == "real" and "rotary_dim" in base:
        kw.pop("rotary_dim")
        if (rotary := _real_rotary_dim(base)) is not None:
            kw["rotary_dim"] = rotary
    if task == "classify-image":
        family = dict(_VISION_FAMILIES.get(model_type, {}))
        if family.pop("lists", True):
            for k, v in base.items():
                if isinstance(v, list):
                    small = _shrink_list(k, v, shape)
                    if small is not None:
                        kw[k] = small
        if "hidden_sizes" in base and isinstance(kw.get("num_attention_heads"), int):
            kw.pop("num_attention_heads")
        kw.update({k: v for k, v in family.items() if k in base})
    else:
        kw.update(_hybrid_layers(base, kw))
        kw.update(_mamba_widths(base, kw))
        if model_type in _FAMILY_KW:
            kw.update(_FAMILY_KW[model_type](kw, _shape_ints(task, shape)))
        if shape == "real":
            kw.update(_REAL_DEPTH.get(model_type, {}))
    if "vocab_size" in base:
        kw["vocab_size"] = vocab
    for k in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if k in base and k not in kw:  # the tokenizer's ids, unless the family's entry above says otherwise
            kw[k] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}[k]
    if "mask_token_id" in base:  # the tokenizer's [MASK]: XLM's default 0 is the pad id here, and XLM's generate
        kw["mask_token_id"] = 6  # appends it, so its hidden state would be masked out and every token the same
    if "kv_lora_rank" in base and "num_key_value_heads" in kw:  # latent attention (MLA): one KV head per head
        kw["num_key_value_heads"] = kw.get("num_attention_heads", 4)
    if "sliding_window" in base and base["sliding_window"] is not None:
        kw["sliding_window"] = 128
    if "initializer_range" in base:
        kw["initializer_range"] = 0.2  # the default 0.02 makes a tiny random model repeat one token
    kw.update(extra)
    if "tie_word_embeddings" in base:
        kw["tie_word_embeddings"] = False
    if "is_decoder" in base and task == "generate":
        kw["is_decoder"] = True
    return cls(**kw)


# ---------------------------------------------------------------- the saved folders

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "big", "small", "red", "blue", "and", "is", "was",
         "very", "not", "good", "bad", "day", "night", "sun", "moon", "tree", "house"]


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer with [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, [CLS]=4, [SEP]=5, [MASK]=6."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # [BOS] text [EOS], as real tokenizers add: BART-style classifiers pool on the eos token.
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


TEXTS = ["the cat sat on the mat", "a big red dog ran", "night", "the sun was very good and the moon was not bad"]


def assert_generate_equal(gen: Any, tok: Any, want: Callable[[Any, Any], np.ndarray], label: str, **kw: Any) -> None:
    """edgekit's `gen.generate(**kw)` against `want(input_ids, attention_mask)` (transformers' ids, prompt
    included) on one prompt, then TEXTS left-padded; every new token compared (eos off), and the tiny
    model must not repeat one token (a check that could not tell two models apart would be no check)."""
    for prompts in ([TEXTS[0]], TEXTS):
        enc = tok(prompts, return_tensors="pt", padding=True)
        expect = want(enc["input_ids"], enc["attention_mask"])
        got = gen.generate(input_ids=enc["input_ids"].numpy(), attention_mask=enc["attention_mask"].numpy(),
                           eos_token_id=[], forced_eos_token_id=None, **kw)
        n = enc["input_ids"].shape[1]
        np.testing.assert_array_equal(np.asarray(got)[:, n:], expect[:, n:], err_msg=f"{label} {len(prompts)}")
        assert all(len(set(row)) > 2 for row in expect[:, n:].tolist())


def _auto_model(task: str) -> Any:
    import transformers

    return getattr(transformers, {"generate": "AutoModelForCausalLM", "classify-text": "AutoModelForSequenceClassification",
                                  "classify-image": "AutoModelForImageClassification",
                                  "recognize": "AutoModelForCTC"}[task])


def _architecture(task: str, family: str) -> str:
    return _architecture_of(_MAPPINGS[task], family)


def _architecture_of(mapping: str, family: str) -> str:
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, mapping)[family]
    return str(names[0] if isinstance(names, (tuple, list)) else names)


def save_folder(task: str, family: str, folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if task == "image-text-to-text":
        import vision_models

        return vision_models.save(family, folder, seed, shape)
    tok = tiny_tokenizer()
    if task == "recognize":
        import audio_lm_models

        if family in audio_lm_models.BUILDERS:  # audio-language models: their tokenizer holds the prompt's tokens
            return audio_lm_models.save(family, folder, seed, shape)
        if is_speech_seq2seq(family):
            return _save_speech_seq2seq(family, folder, seed, shape)
        return _save_ctc(family, folder, seed, shape)
    config = tiny_config(family, task, vocab=len(tok), shape=shape)
    if task in ("classify-text", "classify-image"):
        config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
        config.label2id = {v: k for k, v in config.id2label.items()}
        config.num_labels = 3
    config.architectures = [_architecture(task, family)]  # some mappings hold several classes
    torch.manual_seed(seed)
    model = _auto_model(task).from_config(config).eval()
    with torch.no_grad():
        # Some families initialise their MoE router to zeros: every expert then ties, and PyTorch's and
        # onnxruntime's top-k break ties differently. Trained routers never tie: give them random weights.
        for name, p in model.named_parameters():
            if ("router" in name or name.endswith("gate.weight")) and p.ndim == 2 and not p.any():
                p.normal_(0.0, 0.2)
    with torch.no_grad():  # the tiny config must run in PyTorch itself, else it is the sweep's problem
        if task == "classify-image" and model.main_input_name == "pixel_values":
            side = getattr(config, "image_size", 32) or 32
            side = int(side[0] if isinstance(side, (list, tuple)) else side)
            model(pixel_values=torch.rand(1, int(getattr(config, "num_channels", 3)), side, side))
        else:
            model(input_ids=torch.tensor([[1, 7, 8, 9, 10, 2]]))
    model.save_pretrained(folder)
    if task in ("classify-text", "generate"):  # generate: text in, as a user calls it (_check_generate)
        tok.save_pretrained(folder)
        _as_transformers_loads_it(folder, tok)
    elif task == "classify-image":
        _save_image_processor(family, folder, config)
    return folder


def _as_transformers_loads_it(folder: Path, tok: Any) -> None:
    """Re-save the folder's tokenizer as transformers loads it where that differs from the one saved.
    transformers 5 forces its own class for some model types whatever tokenizer_config.json names
    (tokenization_auto's MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS: Qwen2, Qwen3.5-MoE...), and that class
    builds its own pipeline (Qwen3_5Tokenizer: NFC, a split regex, byte-level BPE) from the saved vocab and
    merges only: the word-level tokenizer saved is then not what transformers runs on the folder. A real
    checkpoint's tokenizer.json is the pipeline its class builds; so is the folder's after this (its
    prompts tokenize into fewer ids: the word-level vocab has no byte-level merges)."""
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(folder)
    except Exception:  # the check loads it again and reports why it fails (a failure, not a skip)
        return
    if loaded(TEXTS)["input_ids"] != tok(TEXTS)["input_ids"]:
        loaded.save_pretrained(folder)


def _save_image_processor(family: str, folder: Path, config: Any) -> None:
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    import transformers

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(family) or {}
    name = names.get("pil") or names.get("torchvision") if isinstance(names, dict) else (
        names[0] if isinstance(names, tuple) else names)
    if isinstance(names, dict):
        name = names.get("pil") or next(iter(names.values()))
    proc = getattr(transformers, str(name))()
    side = getattr(config, "image_size", 32) or 32
    side = int(side[0] if isinstance(side, (list, tuple)) else side)
    size = getattr(proc, "size", None) or {}
    # The family's own convention (crop_pct, shortest_edge, crop...), scaled to the tiny side.
    if "shortest_edge" in size and "longest_edge" not in size:
        proc.size = {"shortest_edge": side}
    elif "shortest_edge" in size:
        proc.size = {"shortest_edge": side, "longest_edge": side * 2}
    else:
        proc.size = {"height": side, "width": side}
    if getattr(proc, "crop_size", None):
        proc.crop_size = {"height": side, "width": side}
    proc.save_pretrained(folder)


CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]


def _save_ctc(family: str, folder: Path, seed: int, shape: str) -> Path:
    import torch
    from transformers import Wav2Vec2CTCTokenizer

    vocab = CTC_VOCAB
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(folder)
    extra = {k: v for k, v in dict(conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                     initializer_range=0.5).items()}
    from transformers import CONFIG_MAPPING

    base = CONFIG_MAPPING[family]().to_dict()
    config = tiny_config(family, "recognize", vocab=len(vocab), shape=shape,
                         **{k: v for k, v in extra.items() if k in base})
    _ctc_extractor(config).save_pretrained(folder)
    torch.manual_seed(seed)
    _auto_model("recognize").from_config(config).eval().save_pretrained(folder)
    return folder


def _save_speech_seq2seq(family: str, folder: Path, seed: int, shape: str) -> Path:
    """A speech encoder-decoder with the tiny word-level tokenizer ([BOS] starts, [EOS] ends) and the
    feature extractor its checkpoints ship; Whisper is examples/speech/tiny_whisper.py's (its own
    tokenizer and generation config: language, task and timestamp tokens), at the shape's width."""
    import sys

    import torch
    import transformers
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

    if family == "whisper":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "speech"))
        from tiny_whisper import make_tiny_whisper

        ints = _shape_ints("recognize", shape)
        return make_tiny_whisper(folder, d_model=int(ints["d_model"] or 0), heads=int(ints["num_attention_heads"] or 0),
                                 seed=seed)
    tok = tiny_tokenizer()
    config = tiny_config(family, "recognize", vocab=len(tok), shape=shape)
    config.decoder_start_token_id = 1
    config.architectures = [_architecture_of(SPEECH_SEQ2SEQ, family)]
    torch.manual_seed(seed)
    transformers.AutoModelForSpeechSeq2Seq.from_config(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    kind = FEATURE_EXTRACTOR_MAPPING_NAMES.get(family)
    if kind is not None:
        getattr(transformers, kind)().save_pretrained(folder)
    elif family == "speech-encoder-decoder":  # XLS-R's: normalized waveform, with its attention mask
        transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    elif family == "moonshine_streaming":  # the raw waveform (its encoder normalizes each frame), with its mask
        transformers.Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=True).save_pretrained(folder)
    return folder


def _ctc_extractor(config: Any) -> Any:
    """The feature extractor a family's checkpoints ship (the waveform one unless it takes filterbanks),
    sized to the tiny config's feature width."""
    import transformers

    enc = getattr(config, "encoder_config", None) or config
    if config.model_type == "parakeet_ctc":
        return transformers.ParakeetFeatureExtractor(feature_size=enc.num_mel_bins)
    if config.model_type == "lasr_ctc":
        return transformers.LasrFeatureExtractor(feature_size=enc.num_mel_bins)
    if config.model_type == "granite_speech5_ctc":  # log-mel and deltas, two frames stacked: 4 x 80 wide
        return transformers.GraniteSpeech5FeatureExtractor(num_mel_bins=enc.num_mel_bins)
    if config.model_type == "wav2vec2-bert":  # facebook/w2v-bert-2.0: 80 Kaldi mels, 2 frames stacked
        mels = config.feature_projection_input_dim // 2
        return transformers.SeamlessM4TFeatureExtractor(feature_size=mels, num_mel_bins=mels, stride=2)
    return transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)


# ---------------------------------------------------------------- the checks


def outcome(task: str, family: str, precision: str = "fp32", work: Path | None = None,
            shape: str = "tiny") -> Outcome:
    """Build, convert and compare one family at one shape; never raises (the reason says what happened).

    "refused" is only a clear refusal at convert (_is_refusal). Any other error at convert (a
    ParityError, a raw exception, an onnxruntime error), any error at all once the artifact converted
    (it must then answer), and answers that differ from transformers' are "fail".
    """
    import time

    import edgekit
    from edgekit.manifest import Manifest

    if family in SKIPPED and task != "image-text-to-text":
        return Outcome(task, family, precision, "skip", SKIPPED[family], shape=shape)
    start = time.perf_counter()
    graph, note = "", ""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp)
        try:
            folder = save_folder(task, family, root / "hf", shape=shape)
        except Exception as e:  # the sweep's own config could not be built for this family
            return Outcome(task, family, precision, "skip", f"no {shape} config: {_short(e)}", shape=shape)
        try:
            edgekit.convert(folder, root / "art", precision=precision)
        except Exception as e:
            status = "refused" if _is_refusal(e) else "fail"
            return Outcome(task, family, precision, status, _error(e), time.perf_counter() - start, shape)
        try:
            if task == "generate":
                graph, note = runtime_graph(Manifest.load(root / "art"))
            problem = CHECKS[task](folder, root / "art", precision)
        except Exception as e:  # it converted, so it must answer: whatever raised, a failure
            problem = _error(e)
    status = "pass" if not problem else "fail"
    return Outcome(task, family, precision, status, problem, time.perf_counter() - start, shape, graph, note)


def _is_refusal(e: BaseException) -> bool:
    """edgekit deciding, at convert, that it does not support the family: an error for an unsupported
    source, family or option, with what it found or how to fix it. An ExportError is no decision (the
    PyTorch -> ONNX export broke on an operator or a shape: a gap to fix, as a family that exports at
    one shape and not the other shows), so it is a failure, as is a ParityError or a raw exception."""
    from edgekit.errors import ConfigError, SourceError, UnsupportedError

    return isinstance(e, (UnsupportedError, ConfigError, SourceError)) and bool(e.found or e.fix)


def runtime_graph(manifest: Manifest) -> tuple[str, str]:
    """("onnxruntime-gqa", "") where a proven onnxruntime stand-in replaces the decoder graph "model"
    (Manifest.runtime_graphs), else ("portable", why no stand-in is used: Manifest.runtime_graph_notes)."""
    if any(rg.replaces == "model" for rg in manifest.runtime_graphs.values()):
        return "onnxruntime-gqa", ""
    return "portable", manifest.runtime_graph_notes.get("model", "")


def _error(e: BaseException) -> str:
    from edgekit.errors import EdgekitError

    where = "" if isinstance(e, EdgekitError) else f" @ {traceback.extract_tb(e.__traceback__)[-1].name}"
    return f"{type(e).__name__}: {_short(e)}{where}"


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


NEW_TOKENS = 32
BEAMS, BEAM_TOKENS = 3, 12


def _check_generate(folder: Path, art: Path, precision: str) -> str:
    """Text in, as a user calls it: edgekit's `generate` (its tokenizer, left padding, cache loop) against
    transformers' `model.generate` on the same prompt texts, greedy, NEW_TOKENS new tokens, eos and
    forced eos switched off on both sides so every token is compared; one prompt, then four of
    different lengths. The prompt ids must equal the folder's tokenizer's; at fp32 the new ids and
    the decoded new text must be identical (lower precisions may diverge: only the prompt is checked), and
    so must beam search's best sequences (BEAMS beams, BEAM_TOKENS new tokens)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import edgekit

    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    # The model's own generation config, eos off: generate() fills a passed config's unset fields from
    # the model's, so the model's is replaced (as converters/specs/causal_lm.py's reference does).
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id = cfg.forced_eos_token_id = None
    cfg.pad_token_id, cfg.max_new_tokens, cfg.do_sample = tok.pad_token_id, NEW_TOKENS, False
    model.generation_config = cfg
    gen = edgekit.load(art, device="cpu")
    for prompts in ([TEXTS[0]], TEXTS):
        enc = tok(prompts, return_tensors="pt", padding=True)
        want = _transformers_generate(model, enc["input_ids"], enc["attention_mask"])
        out = gen.generate(prompts, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=[],
                           forced_eos_token_id=None, return_dict_in_generate=True)
        got, n = np.asarray(out.sequences), enc["input_ids"].shape[1]
        real = enc["attention_mask"].numpy().astype(bool)  # pads are never attended: their ids may differ
        if got.shape[1] < n or not np.array_equal(got[:, :n][real], want[:, :n][real]):
            return f"prompt ids {got[:, :n].tolist()} vs the tokenizer's {want[:, :n].tolist()}"
        if precision != "fp32":
            continue
        if got.shape != want.shape:
            return f"{got.shape[1] - n} new tokens vs transformers' {want.shape[1] - n} (eos is off on both sides)"
        if not np.array_equal(got[:, n:], want[:, n:]):  # the prompts were compared above
            row, col = (int(i[0]) for i in np.nonzero(got[:, n:] != want[:, n:]))
            return (f"greedy tokens differ from transformers' generate (prompt {row} of {len(prompts)}, new token "
                    f"{col}): {got[row, n:].tolist()} vs {want[row, n:].tolist()}")
        texts = [tok.decode(row[n:], skip_special_tokens=True) for row in want]
        if list(out.texts) != texts:
            return f"new text {list(out.texts)!r} vs transformers' decode {texts!r}"
        # Beam search: every beam's state reordered each step (keys/values, conv/SSM states).
        want = _transformers_generate(model, enc["input_ids"], enc["attention_mask"], num_beams=BEAMS,
                                      max_new_tokens=BEAM_TOKENS)
        got = np.asarray(gen.generate(prompts, max_new_tokens=BEAM_TOKENS, num_beams=BEAMS, do_sample=False,
                                      eos_token_id=[], forced_eos_token_id=None, return_dict_in_generate=True).sequences)
        if got.shape != want.shape or not np.array_equal(got[:, n:], want[:, n:]):
            return (f"beam search ({BEAMS} beams) differs from transformers' generate ({len(prompts)} prompts): "
                    f"{got[:, n:].tolist()} vs {want[:, n:].tolist()}")
    return ""


# transformers 5.23 families whose batched generate is not each row's own answer, so the reference runs
# each row alone (unpadded, batch 1). RWKV ignores attention_mask (pads would be read as tokens), and
# its one-token step broadcasts the (batch, hidden) token shift against (batch, 1, hidden) hidden
# states (modeling_rwkv.py, RwkvSelfAttention.extract_key_value): at batch > 1 each row's step runs
# over every row, logits (batch, batch, vocab); an unpadded batch already differs from its rows alone.
# xLSTM's forward takes no attention_mask (pads would be read as tokens).
ROWS_ALONE = {"rwkv", "xlstm"}
# Families whose cache transformers' beam search cannot reorder (it raises "cannot use beam search
# with a cache"): RWKV's state is a plain list, xLSTM's xLSTMCache has no reorder_cache. Recurrent
# Gemma's recurrent blocks keep their state in their modules, which reorder_cache never reaches (its
# beams continue from other beams' recurrences). MiniMax's MiniMaxCache reorders its attention layers
# only, not the lightning states in its list. Their reference beam search runs uncached
# (use_cache=False, every step reruns the whole row): the same search over the same scores.
UNCACHED_BEAMS = {"rwkv", "recurrent_gemma", "xlstm", "minimax"}


def eos_off(folder: Path, new: int) -> tuple[Any, Any]:
    """transformers' left-padding tokenizer and fp32 model of `folder`, the model's own generation
    config with eos off (every new token is compared) and `new` new tokens."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id = cfg.forced_eos_token_id = None
    cfg.pad_token_id, cfg.max_new_tokens = tok.pad_token_id, new
    model.generation_config = cfg
    return tok, model


def _transformers_generate(model: Any, ids: Any, mask: Any, **kw: Any) -> np.ndarray:
    """transformers' generate on the padded batch; row by row, unpadded, where its generate drops the
    attention mask (XLM's and XLNet's prepare_inputs_for_generation: pads would then be read as
    tokens, so a row's answer would depend on the others' lengths) or the family is in ROWS_ALONE."""
    import torch

    family = model.config.model_type
    if kw.get("num_beams", 1) > 1 and family in UNCACHED_BEAMS:
        kw["use_cache"] = False
    with torch.no_grad():
        keeps_mask = model.prepare_inputs_for_generation(ids, attention_mask=mask).get("attention_mask") is not None
        if ids.shape[0] == 1 or (keeps_mask and family not in ROWS_ALONE):
            return model.generate(input_ids=ids, attention_mask=mask, **kw).numpy()
        rows = [row[m.bool()][None] for row, m in zip(ids, mask)]
        new = [model.generate(input_ids=r, attention_mask=torch.ones_like(r), **kw)[:, r.shape[1]:] for r in rows]
    return torch.cat([ids, torch.cat(new)], dim=1).numpy()


def _check_text(folder: Path, art: Path, precision: str) -> str:
    from transformers import pipeline

    import edgekit

    pipe = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    clf = edgekit.load(art, device="cpu")
    worst = 0.0
    for batch in ([TEXTS[0]], TEXTS):
        want = pipe(batch)
        got = clf.classify(batch, top_k=3)
        for w, g in zip(want, got):
            wd = {p["label"]: p["score"] for p in w}
            worst = max(worst, max(abs(wd[p.label] - p.score) for p in g))
    return _prob_problem(worst, precision)


def photos() -> list[Any]:
    """Photos of odd sizes and modes: non-square both ways, grayscale, RGBA."""
    from PIL import Image

    rng = np.random.default_rng(3)
    out = []
    for (h, w), mode in (((45, 61), "RGB"), ((70, 37), "RGB"), ((33, 33), "L"), ((50, 80), "RGBA")):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 7) % 256], -1)
        noise = rng.integers(0, 40, size=(h, w, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        out.append(img.convert(mode) if mode != "RGBA" else img.convert("RGBA"))
    return out


def _check_image(folder: Path, art: Path, precision: str) -> str:
    from transformers import pipeline

    import edgekit

    pipe = pipeline("image-classification", model=str(folder), top_k=3, device="cpu")
    clf = edgekit.load(art, device="cpu")
    pics = photos()
    worst = 0.0
    want = pipe([p.convert("RGB") for p in pics])
    got = clf.classify(pics, top_k=3)
    for w, g in zip(want, got):
        wd = {p["label"]: p["score"] for p in w}
        worst = max(worst, max(abs(wd[p.label] - p.score) for p in g))
    return _prob_problem(worst, precision)


def _prob_problem(worst: float, precision: str) -> str:
    tol = {"fp32": PROB_TOL, "fp16": 1e-2, "int8": 0.1}.get(precision, 0.2)
    return "" if worst <= tol else f"probabilities differ from the transformers pipeline by {worst:.3g} (> {tol:g})"


def speech() -> list[np.ndarray]:
    from edgekit.converters.specs.ctc import synthetic_audio

    return [synthetic_audio(s, 16000, i) for i, s in enumerate((1.1, 2.3))]


def _check_ctc(folder: Path, art: Path, precision: str) -> str:
    from transformers import pipeline

    import edgekit

    pipe = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    asr = edgekit.load(art, device="cpu")
    for wave in speech():
        # edgekit's one convention: bos/eos (<s>, </s>) are never printed; the pipeline prints them.
        want = pipe(wave.copy())["text"].replace("<s>", "").replace("</s>", "")
        got = asr.recognize(wave, sample_rate=16000).text
        if " ".join(want.split()) != got and precision == "fp32":
            return f"transcript {got!r} vs the pipeline's {want!r}"
    return ""


SPEECH_TOKENS = 24  # new tokens compared per call (eos may end both sooner)


def _check_recognize(folder: Path, art: Path, precision: str) -> str:
    import audio_lm_models

    family = json.loads((folder / "config.json").read_text())["model_type"]
    if family in audio_lm_models.BUILDERS:
        return audio_lm_models.check(folder, art, precision, SPEECH_TOKENS, speech())
    return _check_speech_seq2seq(folder, art, precision) if is_speech_seq2seq(family) else _check_ctc(folder, art, precision)


def _check_speech_seq2seq(folder: Path, art: Path, precision: str) -> str:
    """The folder's feature extractor and transformers' generate against edgekit's front end and loop on
    the same waveforms: at fp32 the tokens identical greedy and with BEAMS beams (SPEECH_TOKENS new
    tokens at most; eos may end both sooner), and recognize's text that of transformers' greedy tokens
    (the folder's own length is the spec's parity at convert); Whisper asked for English, as the spec's
    parity asks."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq

    import edgekit
    from edgekit.converters.specs.speech_seq2seq import DITHER_DROPPED
    from edgekit.converters.specs.whisper import hf_whisper_tokens

    fe = AutoFeatureExtractor.from_pretrained(folder)
    if type(fe).__name__ in DITHER_DROPPED:  # edgekit's convention: the front end without dither noise
        fe = AutoFeatureExtractor.from_pretrained(folder, dither=0.0)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, dtype=torch.float32).eval()
    asr = edgekit.load(art, device="cpu")
    lang = {"language": "en"} if model.config.model_type == "whisper" else {}
    # MoonshineStreamingProcessor's audio kwargs: the waveform padded to whole 5 ms frames.
    pad = {"padding": True, "pad_to_multiple_of": 80} if model.config.model_type == "moonshine_streaming" else {}
    for wave in speech():
        out = fe(wave, sampling_rate=16000, return_tensors="pt", **pad)
        # SpeechEncoderDecoderModel's main input is "inputs": its encoder's names the extractor's output.
        feats = out[model.get_encoder().main_input_name]
        # The extractor's frame mask, as generate(**processor(audio)) passes it (Canary's and Cohere ASR's
        # mark their last frame as padding; Moonshine Streaming's encoder attends within sliding windows only
        # when given one).
        masked = {"attention_mask": out["attention_mask"]} if "attention_mask" in out and not lang else {}
        for beams, new in ((1, SPEECH_TOKENS), (BEAMS, SPEECH_TOKENS), (1, -1)):
            if recognize := new < 0:  # recognize, as a user calls it, against transformers' greedy tokens
                new = SPEECH_TOKENS
            if lang:  # Whisper: the raw token stream with its prompt, as the spec's parity reads it
                want = hf_whisper_tokens(model, feats, max_new_tokens=new, num_beams=beams, **lang)
            else:
                with torch.inference_mode():
                    want = [int(t) for t in model.generate(feats, num_beams=beams, max_new_tokens=new,
                                                           do_sample=False, **masked)[0]]
            if recognize:
                got_text = asr.recognize(wave, sample_rate=16000, max_new_tokens=new, **lang).text
                want_text = asr.decode_text(want)
                if got_text != want_text and precision == "fp32":
                    return f"transcript {got_text!r} vs transformers' generate {want_text!r}"
                continue
            got = asr.decode_tokens(asr.features(wave), max_new_tokens=new, num_beams=beams, **lang)
            if got != want and precision == "fp32":
                return f"{beams}-beam tokens {got} vs transformers' generate {want}"
    return ""


def _check_vision(folder: Path, art: Path, precision: str) -> str:
    import vision_models

    return vision_models.check(folder, art, precision)


CHECKS = {"generate": _check_generate, "classify-text": _check_text, "classify-image": _check_image,
          "recognize": _check_recognize, "image-text-to-text": _check_vision}
