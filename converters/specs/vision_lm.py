"""Vision-language decoders (transformers' image-text-to-text mapping): a "vision" graph per image and
the causal LM's key/value decoder with the image features merged at their placeholder tokens.

The vision graph is the family's own `get_image_features` (encoder + projector), traced per image, or
a family module's encoder where that is not traceable (converters/vision). The decoder graph embeds
the ids, puts row k of `image_features` at the k-th image token of the batch (masked_scatter's order,
as transformers' forward does) and runs the model on those embeddings with the causal LM's cache
(specs/causal_lm.py). Parity: the text-only checks of every generate spec, plus the raw image and
text through the artifact's own pre-processing against the processor and transformers' generate.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from edgekit.contract import GraphSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, TOTAL
from edgekit.contract.generate import STEP_INPUTS, GenerateSection
from edgekit.contract.state import AttentionKV, DecoderState
from edgekit.contract.vision import IMAGE_FEATURES, ROWS, VisionPart
from edgekit.converters.export import GraphExport
from edgekit.converters.sources import Source, auto_architectures
from edgekit.converters.spec import ConvertOptions, NoRuntimeGraph
from edgekit.converters.specs.causal_lm import (MAX_BATCH, MAX_LEN, Family, HFCausalLM, HFReference, KVDecoder,
                                                _tokenizer_json, decoder_state)
from edgekit.converters.specs.generate import GATES, torch_step
from edgekit.converters.vision_parity import IMAGE_GATES, PIXEL_GATE
from edgekit.converters.vision import family_of
from edgekit.errors import SourceError, UnsupportedError
from edgekit.parity_report import ParityReport

FEATURE_KEYS = ("image_token_id", "image_token_index")  # where configs name the placeholder id


class VisionEncoder(torch.nn.Module):
    """One image's processor outputs (positional, by `names`) -> (rows, hidden) float: the family's
    get_image_features (its vision tower, feature selection and projector)."""

    def __init__(self, model: Any, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *feeds: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(**dict(zip(self.names, feeds)), return_dict=True)
        rows = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(rows, (list, tuple)):
            rows = torch.cat([r.reshape(-1, r.shape[-1]) for r in rows], dim=0)
        return rows.reshape(-1, rows.shape[-1]).float()


def merge_features(embeds: torch.Tensor, is_image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Row k of `features` in place of the k-th image token, counted through the flattened batch (the
    order of transformers' masked_scatter). Image tokens past the rows given keep their embedding: a
    decode step feeds no rows, and a generated image token is embedded as transformers' generate does
    (it passes pixel_values to the prompt's forward only). A zero row first keeps the gather in range."""
    flat = is_image.reshape(-1).long()
    count = torch.cumsum(flat, 0)
    merged = (flat > 0) & (count <= features.shape[0])
    index = count * merged.long()
    table = torch.cat([features.new_zeros(1, embeds.shape[-1]), features.to(embeds.dtype)], dim=0)
    picked = table[index].reshape(embeds.shape)
    return torch.where(merged.reshape(is_image.shape)[..., None], picked, embeds)


class MediaKVDecoder(KVDecoder):
    """KVDecoder with media rows: (input_ids, attention_mask, position_ids, features, *past); the rows
    (an image's or an audio clip's, edgekit/contract/vision, contract/audio_lm) replace `token_id`."""

    def __init__(self, model: Any, kv: tuple[int, ...], token_id: int) -> None:
        super().__init__(model, kv)
        self.token_id = token_id
        # PaliGemma's decoder attends bidirectionally over every unmasked key (its text config says so), so
        # its prompt is one bidirectional block and a step sees all before it. transformers skips building
        # that mask when nothing is padded, and the traced skip would not hold for a prompt call: the graph
        # gets the mask itself, 4D, which transformers takes as is.
        self.bidirectional = getattr(model.config.get_text_config(), "use_bidirectional_attention", False) is True
        # Gemma 3 attends bidirectionally within each image's tokens (token_type_ids 1), causally elsewhere.
        self.image_blocks = "token_type_ids" in inspect.signature(model.forward).parameters and \
            model.config.model_type in ("gemma3",)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                features: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        is_image = input_ids == self.token_id
        embeds = merge_features(self.model.get_input_embeddings()(input_ids), is_image, features)
        extra: dict[str, torch.Tensor] = {}
        if self.image_blocks:
            extra["token_type_ids"] = is_image.long()
        mask: torch.Tensor = attention_mask
        if self.bidirectional:
            b, s = input_ids.shape
            mask = attention_mask.bool()[:, None, None, :].expand(b, 1, s, attention_mask.shape[1])
        return self.run(past, inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **extra)


class HFVisionLM(HFCausalLM):
    generic = False
    # Pre-processing is gated at every precision (it does not change with the graphs' precision); image
    # tokens at fp32 only, as the text's greedy tokens (below fp32 the text gates judge the decoder).
    gates = {p: {**g, "image_pixels_max_abs": PIXEL_GATE, "image_prompt_ids_equal": IMAGE_GATES["image_prompt_ids_equal"],
                 **(IMAGE_GATES if p == "fp32" else {})} for p, g in GATES.items()}

    @classmethod
    def matches(cls, src: Source, task: str | None) -> bool:
        return not src.is_plain and task in (None, "generate") and \
            src.architecture in auto_architectures("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES")

    def __init__(self, src: Source, options: ConvertOptions) -> None:  # not HFCausalLM's: that loads a causal LM
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.src, self.options = src, options
        assert src.hf_dir is not None
        try:
            self.processor = AutoProcessor.from_pretrained(src.hf_dir, backend="pil")
        except Exception as e:  # transformers raises OSError/ValueError/KeyError for missing or unknown processors
            raise SourceError(f"cannot load the processor of '{src.hf_dir}' ({type(e).__name__}: {str(e)[:200]})",
                              fix="save the model's processor beside it (processor.save_pretrained(folder))") from None
        fam = family_of(self.processor)
        self.steps = fam.steps(self.processor)
        self.image_token = fam.image_token(self.processor) if hasattr(fam, "image_token") else str(self.processor.image_token)
        self.model = AutoModelForImageTextToText.from_pretrained(src.hf_dir, dtype=torch.float32).eval()
        self.family = str(self.model.config.model_type)
        self.facts = Family()
        self.image_token_id = _image_token_id(self.model.config, self.processor, self.image_token)
        self.hidden = int(self.model.get_input_embeddings().embedding_dim)
        self.cache = decoder_state(self.model)
        if not all(isinstance(e, AttentionKV) for e in self.cache.entries):
            raise UnsupportedError(f"'{self.family}' keeps a decoder state other than keys/values",
                                   fix="vision-language generate supports key/value decoders")
        kv = tuple(e.layer for e in self.cache.entries)
        self.wrapper = MediaKVDecoder(self.model, kv, self.image_token_id)
        self.graph = GraphExport("model", self.wrapper, _example(self.model, self.cache, self.hidden, self.image_token_id),
                                 [*STEP_INPUTS, IMAGE_FEATURES, *self.cache.past()],
                                 ["logits", *self.cache.present()], _dynamic_shapes(len(self.cache.past())))
        self.vision = self._vision_graph(fam)
        self.tokenizer_json = _tokenizer_json(src)
        self.reference = VisionReference(self.model, self.graph)

    def _vision_graph(self, fam: Any) -> GraphExport:
        from edgekit.preprocess.vision import image_prep

        names = [n.name for n in self.steps.graph_inputs()]
        example = image_prep(self.steps, self.image_token).prepare(_probe_image())
        args = tuple(torch.from_numpy(np.ascontiguousarray(example.feeds[n])) for n in names)
        own = hasattr(fam, "encoder")
        module = fam.encoder(self.model, self.steps) if own else VisionEncoder(self.model, names)
        dims = fam.dims(self.steps) if hasattr(fam, "dims") else {}
        made = {d: Dim(d, min=1, max=1 << 16) for axes in dims.values() for d in axes.values()}  # one Dim per name
        dynamic: Any = tuple({axis: made[d] for axis, d in dims.get(n, {}).items()} or None for n in names)
        dynamic = None if not dims else dynamic if own else (dynamic,)  # VisionEncoder's varargs nest as one tuple
        return GraphExport("vision", module, args, names, [IMAGE_FEATURES], dynamic, int4_as_int8=True)

    def graphs(self) -> list[GraphExport]:
        return [self.vision, self.graph]

    def _shared_kv_graph(self) -> GraphExport:
        raise NoRuntimeGraph("the fused-attention stand-in (GroupQueryAttention over shared buffers) takes no "
                             "image_features input; the portable decoder merges the image rows")

    def contract(self, graphs: dict[str, GraphSpec]) -> GenerateSection:
        section = super().contract(graphs)
        part = VisionPart(self.steps, self.image_token, self.image_token_id, self.hidden)
        return dataclasses.replace(section, vision=part, chat=_processor_chat(self.src, self.processor) or section.chat)

    def parity(self, model: Any, precision: str, samples: int | None = None, calibration: Any = None) -> ParityReport:
        from edgekit.converters.vision_parity import image_parity

        report = super().parity(model, precision, samples, calibration)
        return image_parity(self, model, precision, report)


class VisionReference(HFReference):
    """HFReference whose teacher-forced logits feed the decoder wrapper no image rows, and whose decode
    steps run the wrapper's cached program (a prompt call, then one token per call): a prefix-LM
    (PaliGemma attends bidirectionally over its whole prompt) computes other logits for a token fed as
    a step than as a prompt position, and transformers' generate feeds it as a step."""

    def decode_logits(self, ids: np.ndarray, steps: int) -> np.ndarray:
        g = self.graph
        hidden = g.args[3].shape[1]
        b, n = ids.shape
        past = [torch.zeros((b, a.shape[1], 0, a.shape[3])) for a in g.args[4:]]
        out = []
        with torch.inference_mode():
            for start, end in [(0, n - steps), *((t, t + 1) for t in range(n - steps, n))]:
                x = torch.from_numpy(ids[:, start:end])
                mask = torch.ones((b, end), dtype=torch.long)
                pos = torch.arange(start, end).expand(b, end - start)
                logits, *new = g.module(x, mask, pos, torch.zeros(0, hidden), *past)
                past = [torch.cat([p, q], dim=2) for p, q in zip(past, new)]
                out.append(logits.float().numpy())
        return np.concatenate(out, axis=1)

    def __init__(self, model: Any, graph: GraphExport) -> None:
        self.model, self.graph = model, graph
        self.vocab = int(model.get_output_embeddings().out_features)

    def full_logits(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": np.cumsum(mask, axis=1) - 1,
                 IMAGE_FEATURES: np.zeros((0, self.graph.args[3].shape[1]), np.float32)}
        for i, name in enumerate(self.graph.input_names[4:]):
            shape = self.graph.args[4 + i].shape
            feeds[name] = np.zeros((ids.shape[0], shape[1], 0, shape[3]), np.float32)
        return torch_step(self.graph.module, self.graph.input_names, self.graph.output_names, feeds)["logits"]


def _image_token_id(config: Any, processor: Any, token: str) -> int:
    ids = processor.tokenizer.convert_tokens_to_ids([token])
    named = next((int(v) for k in FEATURE_KEYS if isinstance(v := getattr(config, k, None), int)), None)
    if named is not None and ids and ids[0] != named:
        raise SourceError(f"the processor's image token {token!r} is id {ids[0]}, the model's config says {named}",
                          fix="save the processor and model of one checkpoint together")
    return named if named is not None else int(ids[0])


def _processor_chat(src: Source, processor: Any) -> Any:
    """The processor's chat template (vision models keep theirs beside the processor), as ChatTemplate."""
    from edgekit.contract.generate import ChatTemplate

    template = getattr(processor, "chat_template", None)
    if not isinstance(template, str):
        return None
    tok = processor.tokenizer
    return ChatTemplate(template, {k: str(v) for k, v in tok.special_tokens_map.items() if isinstance(v, str)})


def _probe_image() -> Any:
    from PIL import Image

    rng = np.random.default_rng(0)
    # Large and oblong: tiling families give several tiles, so no traced tile dim is 1 (torch.export would fix it).
    return Image.fromarray(rng.integers(0, 256, (150, 260, 3), dtype=np.uint8))


def _example(model: Any, state: DecoderState, hidden: int, token_id: int) -> tuple[Any, ...]:
    # Batch 2, 4 new tokens after 3 past, 3 feature rows (no dim 0 or 1: torch.export would specialise it).
    b, s, p = 2, 4, 3
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (b, s), generator=gen)
    ids[0, 1:] = token_id  # 3 placeholder tokens for the 3 feature rows: the merge traced as it runs
    mask = torch.ones((b, p + s), dtype=torch.long)
    pos = torch.arange(p, p + s).expand(b, s).contiguous()
    past = tuple(torch.zeros(t.shape(b, p)) for t in state.tensors())
    return (ids, mask, pos, torch.zeros(3, hidden), *past)


def _dynamic_shapes(tensors: int, rows_dim: str = ROWS) -> tuple[Any, ...]:
    batch = Dim(BATCH, min=1, max=MAX_BATCH)
    seq = Dim(SEQUENCE, min=1, max=MAX_LEN)
    past = Dim(PAST, min=0, max=MAX_LEN)
    total = Dim(TOTAL, min=1, max=2 * MAX_LEN)
    rows = Dim(rows_dim, min=0, max=MAX_LEN)
    kv = tuple({0: batch, 2: past} for _ in range(tensors))
    return ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, {0: rows}, kv)
