"""Multi-turn chat that keeps the decoder's cache between turns instead of recomputing the history.

Each turn renders the whole chat with the model's template (as `generate(messages=...)` does),
finds the longest common token prefix with what the cache holds, rolls the cache back to it (the
`rollback` speculative decoding uses: the slots past it are masked and overwritten, nothing is
copied) and feeds only the tokens after it, in one call (`verify`). The prefix is found on tokens,
not text: the answer's tokens as decoded and re-tokenized by the template need not be the ones
generated, and the template may close a turn with tokens the model never fed (its end marker), so
only what is token-identical is kept. Decoding then runs as `generate`'s greedy or sampling loop,
so each answer is the one a fresh `generate(messages=<the same history>)` gives.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.contract.generate import verify_refusal
from edgekit.errors import ConfigError
from edgekit.tasks.options import GenerateOptions
from edgekit.tasks.search import DecodeState, Searched, sample
from edgekit.tasks.speculative import Verifier, catch_up
from edgekit.tasks.structured import OutputFormat

if TYPE_CHECKING:
    from edgekit.tasks.generator import Generator


class Conversation:
    """A chat with one model whose decoder cache lives from turn to turn; `close()` frees it.

    `reused_tokens` and `last_prefill_tokens` say, for the last turn, how many prompt tokens came
    from the cache and how many were fed; `last_prefill_s` how long feeding them took.
    """

    def __init__(self, gen: Generator, system: str | None = None, context: int | None = None) -> None:
        why = ("an encoder-decoder's decoder prompt is its start token alone" if gen.is_encoder_decoder else
               "a vision-language prompt's image rows are not kept between turns" if gen.vision is not None else
               verify_refusal(gen.contract.cache))
        if why is not None:
            raise ConfigError(f"a conversation keeps the decoder's cache between turns, which this model cannot roll "
                              f"back: {why}", found=repr(gen),
                              fix="call generate(messages=<the whole history>) each turn for this model")
        limit = gen.max_context
        self.context = limit if context is None else context
        if isinstance(self.context, bool) or not isinstance(self.context, int) or not 1 < self.context <= limit:
            raise ConfigError(f"context must be an integer from 2 to the model's {limit} tokens", found=repr(context))
        from edgekit.tasks.generator import cache_for  # here: generator.py imports this module

        self.gen = gen
        self.messages: list[dict[str, Any]] = [] if system is None else [{"role": "system", "content": system}]
        # Sized once for the whole conversation: the last token of a sequence is never fed.
        self.state: Verifier = cache_for(gen.decoder, gen.contract.cache, 1, self.context, 0)  # type: ignore[assignment]
        self.fed = np.zeros(0, np.int64)  # the tokens the cache holds, in order
        self.reused_tokens = 0
        self.last_prefill_tokens = 0
        self.last_prefill_s = 0.0

    def say(self, text: str, seed: int | None = None, eos_token_id: int | list[int] | None = None,
            response_format: Any = None, grammar: str | None = None, regex: str | None = None,
            **options: Any) -> str:
        """Append the user turn, answer it (greedy, or sampling with do_sample=True) and append the answer.
        Options are generate's, one sequence: max_new_tokens, do_sample, temperature, top_k, ...
        `response_format=`, `grammar=` or `regex=` (generate's structured output) shape this turn's
        answer only; the cache is kept as for any turn."""
        gen = self.gen
        gen._check_keywords(options)
        fmt = OutputFormat.make(response_format, grammar, regex)
        opts = GenerateOptions.make(options, gen.contract.generation)
        if opts.num_beams > 1 or opts.num_return_sequences > 1 or opts.return_dict_in_generate:
            raise ConfigError("a conversation answers with one greedy or sampled sequence",
                              found=f"num_beams={opts.num_beams}, num_return_sequences={opts.num_return_sequences}, "
                                    f"return_dict_in_generate={opts.return_dict_in_generate}",
                              fix="call generate(messages=conv.messages + [...]) for beams or several sequences")
        from edgekit.tasks.generator import _pad_id, _until_eos, token_ids

        c = gen.contract
        pad, eos = _pad_id(c.pad_token_id), tuple(token_ids(c.eos_token_id if eos_token_id is None else eos_token_id))
        messages = [*self.messages, {"role": "user", "content": text}]
        prompt = gen._prompt(None, None, None, messages, pad, eos, None)
        length = prompt.ids.shape[1]
        total = opts.total_length(length, gen.max_context)
        if total > self.context:
            raise ConfigError(f"the conversation has outgrown its context of {self.context} tokens",
                              found=f"{length} prompt tokens + {total - length} new",
                              fix="start a new conversation (conv.close(); gen.conversation(...)), perhaps with "
                                  "a summary of this one as its system turn, or use fewer max_new_tokens")
        run = gen._start(prompt, opts, pad, eos, [], seed, fmt, feed=self._feed)
        out = Searched(run.seqs)
        try:
            for _ in sample(run.state, run.logits, run.seqs, run.pipeline, run.stop, pad, out, (False, False)):
                pass
        finally:  # what the cache holds, however the loop ended: every chosen token but the last was fed
            self.fed = np.concatenate([prompt.ids[0], out.sequences[0, length:-1]])
        new = out.sequences[0, length:]
        if run.grammar is not None:
            run.grammar.warn_incomplete(new[None], set(eos))
        answer = gen.decode(_until_eos(new, set(eos)))
        self.messages = [*messages, {"role": "assistant", "content": answer}]
        return answer

    def _feed(self, ids: np.ndarray) -> tuple[DecodeState, np.ndarray]:
        """Roll the cache back to its longest common prefix with `ids` and feed the rest; at least
        the last token is fed, for its logits. Returns the state and those logits (1, vocab)."""
        start = time.perf_counter()
        logits, same = catch_up(self.state, self.fed, ids)
        self.fed = self.fed[:same]
        self.reused_tokens, self.last_prefill_tokens = same, len(ids) - same
        self.last_prefill_s = time.perf_counter() - start
        return self.state, logits  # type: ignore[return-value]

    def close(self) -> None:
        """Free the cache (it may hold GPU memory). Safe to call twice."""
        self.state.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
