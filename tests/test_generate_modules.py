"""`generate` for plain nn.Module decoders: a nanoGPT-style GPT trained here, with and without a cache.

The GPT follows nanoGPT's model.py shape (learned positions, pre-norm blocks, causal attention,
forward(idx, targets=None) -> (logits, loss) with only the last position's logits at inference).
`CachedGPT` is the same network with the past_key_values protocol of
edgekit/converters/specs/torch_decoder.py. Both artifacts must give the module's own greedy tokens.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tolerances import fp32_atol, transformer_stages

BLOCK = 64


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def attend(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        new = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        p = k.shape[2] - t
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        causal = torch.ones(t, p + t, dtype=torch.bool, device=x.device).tril(diagonal=p)
        allowed = causal[None, None] if mask is None else causal[None, None] & mask[:, None, None, :].bool()
        # The dtype's lowest value, not -inf: a left-pad row that may attend to nothing stays finite.
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min).softmax(-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x)), new


class GPT(nn.Module):
    """nanoGPT-style: forward(idx, targets=None) -> (logits, loss); last position only at inference."""

    def __init__(self, vocab: int, dim: int = 48, layers: int = 2, heads: int = 4, block_size: int = BLOCK) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(block_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f, self.lm_head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x, _ = block.attend(x, None, None)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """nanoGPT's own loop, greedy (temperature -> 0)."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return idx


class CachedGPT(GPT):
    """The same network with the past_key_values protocol (torch_decoder.py)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,  # type: ignore[override]
                past_key_values: Any = None) -> tuple[torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
        x = self.wte(input_ids) + self.wpe(position_ids)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block.attend(x, None if past_key_values is None else past_key_values[i], attention_mask)
            present.append(kv)
        return self.lm_head(self.ln_f(x)), tuple(present)


@functools.cache
def trained() -> tuple[GPT, Any]:
    """A char GPT trained for a few hundred steps on the pydoc topics (seconds on 2 cores)."""
    from examples.train_char_gpt import char_tokenizer, corpus

    tok = char_tokenizer()
    ids = torch.tensor(tok.encode(corpus()[0][:60000]).ids)
    torch.manual_seed(0)
    model = GPT(tok.get_vocab_size())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        starts = torch.randint(0, len(ids) - BLOCK - 1, (16,), generator=g)
        xy = torch.stack([ids[s : s + BLOCK + 1] for s in starts])
        _, loss = model(xy[:, :-1], xy[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


PROMPTS = ["The for statement", "class "]


def _convert(module: nn.Module, tok: Any, out: Path) -> Any:
    import edgekit

    if not (out / "edgekit.json").is_file():  # converted once per session
        edgekit.convert(module, out, task="generate", tokenizer=tok)
    return edgekit.load(out, device="cpu")


def test_nanogpt_without_cache_is_token_identical(session_dir: Path) -> None:
    model, tok = trained()
    lm = _convert(model, tok, session_dir / "nanogpt")
    assert lm.manifest.family == "torch-decoder" and lm.contract.cache.tag == "full"
    assert lm.manifest.parity.measures["greedy_agreement"] == 1.0
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt).ids])
        want = model.generate(ids, 30)[0, ids.shape[1]:].tolist()
        got = lm.generate(input_ids=ids.numpy(), max_new_tokens=30, eos_token_id=[])[0, ids.shape[1]:].tolist()
        assert got == want, prompt
    # A batch of two lengths (run unpadded), and text in, text out.
    texts = lm.generate(PROMPTS, max_new_tokens=12)
    assert texts == [lm.generate(p, max_new_tokens=12) for p in PROMPTS]


def test_module_with_its_own_cache_is_token_identical(tmp_path: Path) -> None:
    model, tok = trained()
    cached = CachedGPT(tok.get_vocab_size())
    cached.load_state_dict(model.state_dict())
    lm = _convert(cached.eval(), tok, tmp_path / "gpt-kv")
    assert lm.manifest.family == "torch-kv-decoder" and {e.tag for e in lm.contract.cache.entries} == {"attention_kv"}
    assert lm.manifest.parity.measures["greedy_agreement"] == 1.0
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt).ids])
        want = model.generate(ids, 30)[0, ids.shape[1]:].tolist()  # the uncached module's own tokens
        got = lm.generate(input_ids=ids.numpy(), max_new_tokens=30, eos_token_id=[])[0, ids.shape[1]:].tolist()
        assert got == want, prompt


def test_full_sequence_state_reorders_rows(session_dir: Path) -> None:
    """Beam search keeps rows in a new order, some repeated: reorder() then step() follows them."""
    from edgekit.tasks.fullseq import FullSequenceState

    model, tok = trained()
    lm = _convert(model, tok, session_dir / "nanogpt")
    rows = [tok.encode(p).ids for p in PROMPTS]
    from edgekit.tasks.generator import left_pad

    ids, mask = left_pad(rows, 0)
    state = FullSequenceState(lm.runners["model"], lm.contract.cache, 2, ids.shape[1], 4)
    state.prefill(ids, mask)
    state.reorder(np.array([1, 1, 0]))
    got = state.step(np.array([5, 6, 7]))
    with torch.no_grad():
        for i, (src, t) in enumerate(((1, 5), (1, 6), (0, 7))):
            want = model(torch.tensor([rows[src] + [t]]))[0][0, -1].numpy()
            # fp32 onnxruntime against fp32 torch: round-off only (tests/tolerances.py)
            atol = fp32_atol(want, 4 * model.lm_head.in_features, transformer_stages(len(model.blocks)))
            np.testing.assert_allclose(got[i], want, atol=atol, rtol=0)


def test_a_module_that_breaks_the_protocol_is_refused() -> None:
    import edgekit
    from edgekit.errors import SourceError

    class Bad(nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, position_ids: Any = None,
                    past_key_values: Any = None) -> torch.Tensor:
            return input_ids.float()

    with pytest.raises(SourceError, match="past_key_values protocol"):
        edgekit.convert(Bad(), "/tmp/never-written", task="generate", preprocess={"max_context": 16})


def test_compact_cache_for_alibi_decoders_reorders_rows(tmp_path: Path) -> None:
    """MPT biases attention by key index (ALiBi): masked, unfilled slots would shift it, so the runtime
    keeps a compact cache (detected at convert). Its reorder() (beam search) keeps rows in a new order."""
    import edgekit
    from edgekit.tasks.compactkv import CompactKV
    from edgekit.tasks.generator import left_pad
    from transformers import MptConfig, MptForCausalLM

    torch.manual_seed(0)
    MptForCausalLM(MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=64,
                             initializer_range=0.2)).eval().save_pretrained(tmp_path / "hf")
    edgekit.convert(tmp_path / "hf", tmp_path / "m")  # the gate: greedy tokens identical to transformers
    lm = edgekit.load(tmp_path / "m", device="cpu")
    assert lm.contract.cache.compact
    rows = [[5, 6, 7, 8], [9, 10]]
    ids, mask = left_pad(rows, 0)
    state = CompactKV(lm.runners["model"], lm.contract.cache, 2)
    state.prefill(ids, mask)
    state.reorder(np.array([1, 1, 0]))
    got = state.step(np.array([11, 12, 13]))
    for i, (src, t) in enumerate(((1, 11), (1, 12), (0, 13))):
        one = CompactKV(lm.runners["model"], lm.contract.cache, 1)
        one.prefill(ids[src : src + 1], mask[src : src + 1])  # the same row, with the batch's left padding
        want = one.step(np.array([t]))[0]  # one graph at two batch sizes: round-off only (tests/tolerances.py)
        atol = fp32_atol(want, 4 * 32, transformer_stages(2))  # the MptConfig above: d_model 32 (x4 MLP), 2 layers
        np.testing.assert_allclose(got[i], want, atol=atol, rtol=0)


def test_tiny_epsilons_survive_the_graph_optimizer(tmp_path: Path) -> None:
    """onnxscript's no-op rules matched `x + 1e-8` as `x + 0`: an RMSNorm with eps 1e-8 (Helium) then
    took rsqrt(0) on a pad token's zero embedding and a left-padded batch came back non-finite."""
    import onnxruntime as ort

    from edgekit.converters.export import GraphExport, export_graph

    class RMSNorm(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8)

    export_graph(GraphExport("m", RMSNorm(), (torch.rand(2, 3, 4),), ["x"], ["y"]), tmp_path / "m.onnx")
    y = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": np.zeros((2, 3, 4), np.float32)})[0]
    assert np.isfinite(y).all()
