"""Tiny vision-language folders: a seeded random model of each family with its own processor, saved as a
user's folder is (model, tokenizer, processor), for the vision generate tests and the coverage sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coverage_models import tiny_tokenizer

# Decoder (hidden, heads) and vision tower (hidden, heads) per shape: "tiny" heads of 8, "real" heads of 64.
SIZES = {"tiny": ((32, 4), (32, 2)), "real": ((256, 4), (128, 2))}

# LLaVA-1.5's conversation layout: image parts become the image token, the answer follows "ASSISTANT:".
CHAT = ("{% for m in messages %}{{ m['role'] | upper }}: {% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}{% endif %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


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


def _llama(tok: Any, shape: str, positions: int = 512) -> Any:
    from transformers import LlamaConfig

    (hidden, heads), _ = SIZES[shape]
    return LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=positions)


def _clip(shape: str, image: int, patch: int, layers: int = 2) -> Any:
    from transformers import CLIPVisionConfig

    _, (vh, vheads) = SIZES[shape]
    return CLIPVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=layers, num_attention_heads=vheads,
                            image_size=image, patch_size=patch)


def _llava_like(folder: Path, seed: int, shape: str, model_class: str, layers: int, chat: str | None, **config: Any) -> Path:
    """A CLIP tower (30x30 images, 6x6 patches: 25 rows) and a Llama decoder, saved with LLaVA's processor."""
    import torch
    import transformers

    tok = _tokenizer("<image>")
    cfg = getattr(transformers, model_class.replace("ForConditionalGeneration", "Config"))(
        vision_config=_clip(shape, 30, 6, layers), text_config=_llama(tok, shape),
        image_token_index=tok.convert_tokens_to_ids("<image>"), **config)
    torch.manual_seed(seed)
    getattr(transformers, model_class)(cfg).eval().save_pretrained(folder)
    ip = transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    transformers.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=6, vision_feature_select_strategy="default",
                                image_token="<image>", num_additional_image_tokens=1,
                                chat_template=chat).save_pretrained(folder)
    return folder


def save_llava(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """LLaVA-1.5's layout: features from the second-to-last layer, CLS dropped; a chat template."""
    return _llava_like(folder, seed, shape, "LlavaForConditionalGeneration", 2, CHAT, vision_feature_layer=-2,
                       vision_feature_select_strategy="default")


def save_vipllava(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """VipLLaVA: features from several vision layers, saved with LLaVA's processor."""
    return _llava_like(folder, seed, shape, "VipLlavaForConditionalGeneration", 3, None, vision_feature_layers=[-2, -1])


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


def save_llava_next(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """LLaVA-NeXT: CLIP tiles of 32 px (8 px patches: 16 rows a tile), any-resolution grids up to 2 x 2 tiles."""
    import torch
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    pins = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
    tok = _tokenizer("<image>")
    config = LlavaNextConfig(vision_config=_clip(shape, 32, 8), text_config=_llama(tok, shape, 1024), image_grid_pinpoints=pins,
                             image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=pins)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def save_idefics3(folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """Idefics3: 32 px tiles of 8 px patches, pixel shuffle 2 (4 rows a tile), images split up to 96 px."""
    import torch
    from tokenizers import AddedToken
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    (hidden, heads), (vh, vheads) = SIZES[shape]
    tok = _tokenizer("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                     *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
    tok.add_tokens([AddedToken("\n", normalized=False)])
    config = Idefics3Config(
        vision_config=dict(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=2, num_attention_heads=vheads,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), vocab_size=len(tok),
                         max_position_embeddings=1024),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 96}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    model.save_pretrained(folder)
    Idefics3Processor(ip, tok, image_seq_len=4).save_pretrained(folder)
    return folder


BUILDERS = {"llava": save_llava, "vipllava": save_vipllava, "paligemma": save_paligemma, "gemma3": save_gemma3,
            "llava_next": save_llava_next, "idefics3": save_idefics3}


def converted_llava(factory: Any) -> tuple[Path, Path]:
    """The tiny LLaVA folder and its artifact (strict convert: parity held), made at most once per session."""
    import edgekit

    root = factory.getbasetemp() / "vision-models" / "llava"
    if not (root / "art" / "edgekit.json").is_file():
        edgekit.convert(save_llava(root / "hf"), root / "art", overwrite=True)
    return root / "hf", root / "art"


def save(family: str, folder: Path, seed: int = 0, shape: str = "tiny") -> Path:
    """The family's tiny folder, or why the sweep has none (a ValueError naming the processor)."""
    folder.mkdir(parents=True, exist_ok=True)
    if family in BUILDERS:
        return BUILDERS[family](folder, seed, shape)
    raise ValueError(no_builder(family))


# Families whose processor edgekit reads but which the sweep cannot build or run here, and why.
NOT_BUILT = {
    "llava_next_video": "transformers 5.23 builds LlavaNextVideoProcessor only with its video processor, which needs "
                        "torchvision (not installable beside torch 2.13); its image path is LLaVA-NeXT's (passing)",
    "llava_onevision": "transformers 5.23 builds LlavaOnevisionProcessor only with its video processor, which needs "
                       "torchvision; its pre-processing and vision graph are checked in tests/test_vision_anyres.py",
    "smolvlm": "transformers 5.23 builds SmolVLMProcessor only with num2words and a video processor (torchvision); "
               "its image processor and prompt are checked in tests/test_vision_idefics3.py",
    "qwen2_vl": "its decoder takes M-RoPE positions (3 rows) that edgekit's decoder graph does not take yet, and "
                "Qwen2VLProcessor needs torchvision's video processor; pre-processing, the numpy rope index and the "
                "vision graph are checked in tests/test_vision_qwen2_vl.py",
    "qwen2_5_vl": "as qwen2_vl: M-RoPE positions not taken by the decoder graph yet; its processor needs torchvision",
    "t5gemma2": "an encoder-decoder: edgekit's vision-language generate is decoder-only",
}


def no_builder(family: str) -> str:
    """Why a family has no tiny folder here: its processor is not one edgekit reproduces in numpy."""
    if family in NOT_BUILT:
        return NOT_BUILT[family]
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
        first = model(**enc).logits[:, -1].numpy()
    want = proc.batch_decode(ids, skip_special_tokens=True)
    got = gen.generate(texts, images=pics, max_new_tokens=12, eos_token_id=[])
    if got != want:
        return f"texts differ: edgekit {got!r:.200}, transformers {want!r:.200}"
    # Random tiny decoders repeat a token or two, so equal texts alone tell little: the first step's
    # logits (the images' rows merged, the masks) must match too, as at convert (fp32: 1e-3 of their scale).
    out = gen.generate(texts, images=pics, max_new_tokens=1, eos_token_id=[], return_dict_in_generate=True,
                       output_logits=True)
    rel = float(np.abs(np.asarray(out.logits[0]) - first).max() / np.abs(first).max())
    limit = 1e-3 if precision == "fp32" else 0.05
    return "" if rel <= limit else f"first-step logits with images differ by {rel:.2g} of their scale (limit {limit})"
