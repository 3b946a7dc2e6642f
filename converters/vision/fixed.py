"""`FixedImages` from LLaVA's, PaliGemma's and Gemma 3's processors: one fixed-size tensor per image
(the classification pipeline's steps, converters/image_processors.py) and a fixed number of rows."""
from __future__ import annotations

from typing import Any

from edgekit.contract.vision.fixed import FixedImages
from edgekit.converters.image_processors import processor_keys
from edgekit.converters.specs.classify import image_input
from edgekit.errors import UnsupportedError

PROCESSORS = ("LlavaProcessor", "PaliGemmaProcessor", "Gemma3Processor")


def steps(processor: Any) -> FixedImages:
    ip, tok = processor.image_processor, processor.tokenizer
    keys = processor_keys(ip, 3)
    image = image_input(3, tuple(keys["size"]), keys)
    name = type(processor).__name__
    if name == "LlavaProcessor":
        n = _llava_tokens(processor, image.size)
        return FixedImages(image, n, trigger=processor.image_token)
    if name == "PaliGemmaProcessor":
        return FixedImages(image, int(processor.image_seq_length), trigger=processor.image_token,
                           layout="paligemma", bos_token=str(tok.bos_token))
    # Gemma3Processor: the user's boi token becomes "\n\n<boi>" + image tokens + "<eoi>\n\n".
    return FixedImages(image, int(processor.image_seq_length), trigger=tok.boi_token,
                       before=f"\n\n{tok.boi_token}", after=f"{tok.eoi_token}\n\n")


def image_token(processor: Any) -> str:
    """The token whose embeddings the features replace."""
    name = type(processor).__name__
    return str(processor.tokenizer.image_token if name == "Gemma3Processor" else processor.image_token)


def _llava_tokens(processor: Any, size: tuple[int, int]) -> int:
    """LlavaProcessor's count: (H / patch) * (W / patch) patches, plus the CLS rows it keeps, minus
    the one the "default" strategy drops."""
    patch = processor.patch_size
    if patch is None:
        raise UnsupportedError("this LlavaProcessor has no patch_size, so the image's token count is unknown",
                               fix="set patch_size in processor_config.json")
    n = (size[0] // patch) * (size[1] // patch) + int(processor.num_additional_image_tokens)
    return n - 1 if processor.vision_feature_select_strategy == "default" else n
