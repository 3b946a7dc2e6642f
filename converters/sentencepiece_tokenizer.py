"""tokenizer.json for a sentencepiece-only transformers tokenizer (SpeechT5Tokenizer: a
SentencePieceBackend that transformers has no `tokenizers` converter for), for decoding only.

The pieces and scores become a Unigram model with a Metaspace decoder ("▁" is a space, the first one
dropped), sentencepiece's control/unknown pieces and the tokenizer's added tokens special at their
ids. Whether it decodes as the tokenizer does is checked on every single id and on seeded random id
sequences (`decodes_alike`): the caller refuses the folder where it does not.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SEQUENCES = 64  # random id sequences compared, each SEQUENCE_LENGTH long
SEQUENCE_LENGTH = 48


def sentencepiece_json(tok: Any) -> bytes:
    """The tokenizers form of `tok` (whose `sp_model` is a sentencepiece.SentencePieceProcessor)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    sp = tok.sp_model
    pieces = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    added = {int(i): t for i, t in tok.added_tokens_decoder.items() if int(i) >= len(pieces)}
    for i in range(len(pieces), max(added, default=len(pieces) - 1) + 1):  # added ids follow the pieces
        pieces.append((str(added[i]) if i in added else f"<unused_{i}>", 0.0))
    fast = Tokenizer(models.Unigram(pieces, unk_id=int(sp.unk_id()), byte_fallback=False))
    fast.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    fast.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    special = {pieces[i][0] for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    special |= {str(t) for t in tok.all_special_tokens} | {str(t) for t in added.values() if t.special}
    fast.add_special_tokens([AddedToken(s, special=True) for s in sorted(special)])
    return fast.to_str().encode("utf-8")


def decodes_alike(tok: Any, tokenizer_json: bytes) -> str:
    """"" where the tokenizer.json decodes every single id and the random sequences as `tok` does
    (special tokens skipped, ends stripped, as recognize prints text), else the first difference."""
    from tokenizers import Tokenizer

    fast = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    n = len(tok)
    rng = np.random.default_rng(0)
    rows = [[i] for i in range(n)] + [rng.integers(0, n, SEQUENCE_LENGTH).tolist() for _ in range(SEQUENCES)]
    for ids in rows:
        want = str(tok.decode(ids, skip_special_tokens=True)).strip()
        got = str(fast.decode(ids, skip_special_tokens=True)).strip()
        if got != want:
            return f"ids {ids[:12]}{'...' if len(ids) > 12 else ''} decode to {got!r}, {type(tok).__name__} {want!r}"
    return ""
