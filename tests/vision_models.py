"""Tiny vision-language folders: a seeded random model of each family with its own processor, saved as a
user's folder is (model, tokenizer, processor), for the vision generate tests and the coverage sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from coverage_models import tiny_tokenizer


def _tokenizer(*specials: str) -> Any:
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


def save_llava(folder: Path, seed: int = 0, hidden: int = 32, heads: int = 4) -> Path:
    """LLaVA: a CLIP vision tower (30x30 images, 6x6 patches: 25 rows), a Llama decoder, CLIP's processor."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = _tokenizer("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=6)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}),
                          tokenizer=tok, patch_size=6, vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
