"""Keys/values of a step graph (state_space.py) laid out as transformers' left padding lays them out.

The runtime keeps a row's keys in preallocated slots (edgekit/tasks/state_loop.py): its tokens in
the first slots, unfilled ones masked after them (and, for the shorter rows of a left-padded
prompt, between its prompt and its generated tokens). A model that takes positions from the
cache length instead of position_ids then sees wrong distances: Inkling's relative logits
(InklingRelativeLogits) place the query at `get_query_offset()` (the cache length) and the keys at
`arange(kv_length)`, so an unfilled slot between a key and the query adds one to their distance.
Such a graph moves each row's filled slots to the end before the model reads them (masked slots
first, as transformers' left padding has them): the distances between real tokens are then the
row's own, whatever the slots.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from edgekit.contract.state import SLOTS
from edgekit.errors import UnsupportedError

if TYPE_CHECKING:
    from edgekit.converters.specs.state_space import StateDecoder

GAP = 3  # unfilled slots the probe puts between the past and the current token


def right_aligned(mask: torch.Tensor) -> torch.Tensor:
    """For the (batch, slots + 1) mask of a step (the last column: this token), (batch, slots): the
    slot each position reads, the masked slots first and then the filled ones, each in slot order.
    A scatter of the destinations, no sort (TensorRT's TopK caps k at 3840; the slots may be more)."""
    real = (mask[:, :-1] != 0).long()
    empty = 1 - real
    dest = torch.where(real > 0, empty.sum(1, keepdim=True) + real.cumsum(1) - 1, empty.cumsum(1) - 1)
    return torch.zeros_like(dest).scatter(1, dest, torch.arange(dest.shape[1]).expand_as(dest))


def aligned_mask(mask: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return torch.cat([mask[:, :-1].gather(1, order), mask[:, -1:]], dim=1)


def aligned(past: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Keys or values (batch, heads, slots, dim) in the order of `right_aligned`."""
    return past.gather(2, order[:, None, :, None].expand(-1, past.shape[1], -1, past.shape[3]))


def choose_layout(decoder: StateDecoder) -> None:
    """Align the decoder's keys (`decoder.align`) where unfilled slots change its logits; refuse where
    they still do once aligned: the model then reads the cache length itself (an absolute position),
    which a slot cache with one length for all rows cannot give each row."""
    decoder.align = False
    if not depends_on_slots(decoder):
        return
    decoder.align = True
    if depends_on_slots(decoder):
        raise UnsupportedError(f"'{decoder.model.config.model_type}' reads the length of its key/value cache as "
                               "the current position",
                               found="its step logits change with masked, unfilled cache slots, even with the "
                                     "filled slots moved last (as transformers' left padding has them)",
                               fix="generate supports step graphs whose attention takes positions from position_ids "
                                   "or from distances between keys; this family is not supported")


def depends_on_slots(decoder: StateDecoder) -> bool:
    """Whether a step's logits change when GAP masked, unfilled slots sit between a four-token past
    (fed one token per call) and the current token, in PyTorch."""
    if not decoder.attends:
        return False
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(decoder.model.config.vocab_size), (1, 5), generator=g)
    flat = _empty(decoder)
    with torch.no_grad():
        for t in range(4):
            out = decoder(ids[:, t : t + 1], *decoder.small(torch.ones((1, t + 1), dtype=torch.long),
                                                            torch.tensor([[t]]), prompt=False), *flat)
            flat = _advanced(decoder, flat, list(out[1:]))
        pos = torch.tensor([[4]])
        compact = decoder(ids[:, 4:], *decoder.small(torch.ones((1, 5), dtype=torch.long), pos, prompt=False), *flat)[0]
        gapped = [torch.cat([t, t.new_zeros((*t.shape[:2], GAP, t.shape[3]))], dim=2) if kv else t
                  for t, kv in zip(flat, _is_kv(decoder))]
        mask = torch.tensor([[1] * 4 + [0] * GAP + [1]])
        slotted = decoder(ids[:, 4:], *decoder.small(mask, pos, prompt=False), *gapped)[0]
    # The same tokens in the same order either way: only the float sums over more (zero-weighted) keys
    # differ, a few fp32 roundings; a misplaced position changes logits at their own scale.
    return not torch.allclose(compact, slotted, rtol=1e-4, atol=1e-5)


def _is_kv(decoder: StateDecoder) -> list[bool]:
    return [t.update == SLOTS for t in decoder.state.tensors()]


def _empty(decoder: StateDecoder) -> list[torch.Tensor]:
    return [torch.zeros(t.initial_shape(1)) for t in decoder.state.tensors()]


def _advanced(decoder: StateDecoder, flat: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
    """The state after a step: keys/values appended, conv/SSM states replaced."""
    return [torch.cat([old, step], dim=2) if kv else step for old, step, kv in zip(flat, new, _is_kv(decoder))]
