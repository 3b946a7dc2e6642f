"""Tiny vision-language folders: a seeded random model of each family with its own processor, saved as a
user's folder is (model, tokenizer, processor), for the vision generate tests and the coverage sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from coverage_models import tiny_tokenizer

# Decoder (hidden, heads) and vision tower (hidden, heads) per shape: "tiny" heads of 8, "real" heads of 64.
SIZES = {"tiny": ((32, 4), (32, 2)), "real": ((256, 4), (128, 2))}


def _tokenizer(*specials: str, **named: str) -> Any:
    """The tiny word-level tokenizer with the family's special tokens; `named` ones are also attributes
    (tok.boi_token, tok.boi_token_id), as Gemma 3's processor reads them."""
    from transformers import PreTrainedTokenizerFast

    tok = tiny_tokenizer()
    if named:
        tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, **tok.special_tokens_map,
                                      extra_special_tokens=named)
    tok.add_special_tokens({"additional_special_tokens": [*specials, *named.values()]})
    return tok


def save_llava(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """LLaVA: a CLIP vision tower (30x30 images, 6x6 patches: 25 rows), a Llama decoder, CLIP's processor."""
    import torch
    (hidden, heads), (vh, vheads) = SIZES[shape]
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = _tokenizer("<image>")
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=2, num_attention_heads=vheads,
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


def save_vipllava(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """VipLLaVA: LLaVA with features from several vision layers, saved with LLaVA's processor."""
    import torch
    (hidden, heads), (vh, vheads) = SIZES[shape]
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaProcessor, VipLlavaConfig,
                              VipLlavaForConditionalGeneration)

    tok = _tokenizer("<image>")
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=3, num_attention_heads=vheads,
                              image_size=30, patch_size=6)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512)
    config = VipLlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_layers=[-2, -1])
    torch.manual_seed(seed)
    model = VipLlavaForConditionalGeneration(config).eval()
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}),
                          tokenizer=tok, patch_size=6, vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_paligemma(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """PaliGemma: a SigLIP tower (28x28 images, 7x7 patches: 16 rows), a Gemma decoder, its processor."""
    import torch
    (hidden, heads), (vh, vheads) = SIZES[shape]
    from transformers import (GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessor, SiglipVisionConfig)

    tok = _tokenizer("<image>")
    vision = SiglipVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=2, num_attention_heads=vheads,
                                image_size=28, patch_size=7, projection_dim=hidden)
    text = GemmaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=1, head_dim=hidden // heads,
                       max_position_embeddings=512)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                             projection_dim=hidden)
    config.vision_config.projection_dim = hidden
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    ip = SiglipImageProcessor(size={"height": 28, "width": 28})
    ip.image_seq_length = 16
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_gemma3(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """Gemma 3: a SigLIP tower (28x28, 7x7 patches pooled to 4 rows), Gemma 3's decoder and processor."""
    import torch
    (hidden, heads), (vh, vheads) = SIZES[shape]
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              Gemma3TextConfig, SiglipVisionConfig)

    tok = _tokenizer(boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    vision = SiglipVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=2, num_attention_heads=vheads,
                                image_size=28, patch_size=7)
    text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=heads, num_key_value_heads=1, head_dim=hidden // heads,
                            max_position_embeddings=512, sliding_window=64)
    ids = tok.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>", "<image_soft_token>"])
    config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=4, boi_token_index=ids[0],
                          eoi_token_index=ids[1], image_token_index=ids[2])
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    proc = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 28, "width": 28}), tokenizer=tok,
                           image_seq_length=4)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


BUILDERS = {"llava": save_llava, "vipllava": save_vipllava, "paligemma": save_paligemma, "gemma3": save_gemma3}


def save(family: str, folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """The family's tiny folder, or why the sweep has none (a ValueError naming the processor)."""
    folder.mkdir(parents=True, exist_ok=True)
    if family in BUILDERS:
        return BUILDERS[family](folder, seed, shape)
    raise ValueError(no_builder(family))


def no_builder(family: str) -> str:
    """Why a family has no tiny folder here: its processor is not one edgekit reproduces in numpy."""
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from edgekit.converters.vision import supported

    proc = PROCESSOR_MAPPING_NAMES.get(family)
    image = IMAGE_PROCESSOR_MAPPING_NAMES.get(family) or {}
    if proc is None:
        return "transformers names no processor for it"
    if isinstance(image, dict) and image and "pil" not in image:
        return f"its image processor {image.get('torchvision')} has only a torchvision backend (not installable beside torch 2.13)"
    if proc not in supported():
        return f"its processor {proc} is not reproduced in numpy by edgekit (converters/vision)"
    return f"no tiny folder builder for it yet (its processor {proc} is supported)"


def check(folder: Path, art: Path, precision: str) -> str:
    """From the raw image and text to the text the user reads: edgekit's generate against transformers'
    (processor, generate, decode) on two images of different sizes, one prompt each, batched; '' when equal."""
    import copy

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import edgekit
    from edgekit.converters.vision_parity import PROMPTS, images

    gen = edgekit.load(art, device="cpu")
    proc = AutoProcessor.from_pretrained(folder, backend="pil")
    proc.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    trigger = getattr(gen.vision.part.steps, "trigger", gen.vision.part.image_token)
    texts, pics = [f"{trigger} {p}" for p in PROMPTS], [[p] for p in images()]
    enc = proc(text=texts, images=pics, padding=True, return_tensors="pt")
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id, cfg.pad_token_id, cfg.max_new_tokens, cfg.do_sample = None, 0, 12, False
    with torch.no_grad():
        ids = model.generate(**enc, generation_config=cfg)[:, enc["input_ids"].shape[1]:]
    want = proc.batch_decode(ids, skip_special_tokens=True)
    got = gen.generate(texts, images=pics, max_new_tokens=12, eos_token_id=[])
    if got != want:
        return f"texts differ: edgekit {got!r:.200}, transformers {want!r:.200}"
    if len(set(" ".join(want).split())) < 3:
        return f"the tiny model's answers are too uniform to tell models apart: {want!r:.120}"
    return ""
