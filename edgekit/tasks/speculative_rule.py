"""How the target judges a draft at one verified position: transformers' two cases
(`GenerationMixin._assisted_decoding`, step 3).

Case 2, drafts without their drafter's probabilities (prompt lookup; and any drafter when greedy): the
target chooses its own token from its processed scores exactly as plain greedy or sampling does, and the
draft is kept if it is that token. A kept token is then a choice of the target given its prefix, so the
output is plain greedy's tokens, or plain sampling's distribution.

Case 1, sampling with drafts an assistant sampled from its own processed distribution q
(`_speculative_sampling`; Leviathan et al. 2023, algorithm 1): the target keeps draft x with probability
min(1, p(x) / q(x)), and at the first rejection draws from normalize(max(0, p - q)); a position past the
last draft draws from p. Each kept token is distributed as p given its prefix, whatever q is.
p and q come from the same processors: the call's logits processors, the grammar's mask, then the warpers
(temperature, top-k, top-p, min-p, typical-p), as transformers hands the target's processor list to the
assistant's own generate (it drops only min-length there; here q keeps it, which only brings q nearer p).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.tasks.processors import LogitsPipeline
from edgekit.tasks.sampling import TokenChooser, softmax
from edgekit.tasks.search import Searched, _check


@dataclass(frozen=True)
class Drafts:
    """Proposed next tokens; `q`: per draft, the probabilities (vocab,) it was sampled from (case 1)."""

    tokens: np.ndarray  # (k,) int64
    q: np.ndarray | None = None  # (k, vocab) float64

    def cut(self, n: int) -> Drafts:
        return Drafts(self.tokens[:n], None if self.q is None else self.q[:n])


def target_scores(pipeline: LogitsPipeline, out: Searched, logits: np.ndarray, record: tuple[bool, bool]) -> np.ndarray:
    """The target's processed scores (1, vocab) after the text so far, as plain decoding makes them
    (tasks/search.py `sample`): recorded when asked, checked against the grammar."""
    x = _check(logits, np.ones(1, bool))
    scores = pipeline(out.sequences, x)
    if record[0]:
        out.scores.append(scores)
    if record[1]:
        out.logits.append(x)
    if pipeline.grammar is not None:
        pipeline.grammar.check_choice(scores, np.ones(1, bool))
    return scores


def judge(chooser: TokenChooser, scores: np.ndarray, draft: int | None, q: np.ndarray | None) -> tuple[int, bool]:
    """The token at a verified position from the target's scores (1, vocab), and whether it is the draft
    (None: the position past the last draft)."""
    if draft is None or q is None:  # case 2
        token = int(chooser.choose(scores)[0])
        return token, token == draft
    p = softmax(scores[0].astype(np.float64))
    # q[draft] > 0: the draft was drawn from q. `<` keeps a draft the target refuses (p = 0) out for
    # every uniform in [0, 1), and keeps a draft with p >= q always.
    if chooser.uniform() < p[draft] / q[draft]:
        return draft, True
    residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    # p < q at the draft forces p > q at some other token (both sum to 1); only rounding can leave
    # nothing, when p and q agree to rounding, and p itself is then that distribution.
    return int(chooser.draw((residual / total if total > 0 else p)[None])[0]), False
