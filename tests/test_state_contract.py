"""The decoder state contract without torch: typed entries, their JSON, TensorRT profiles from their
dims, and the one loop over them (a numpy Runner standing in for a graph: a hybrid with one
attention layer and one replaced state, fed stepwise, row by row for a padded batch, beams reordered)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.contract import GraphSpec, TensorSpec
from edgekit.contract.base import BATCH, PAST, SEQUENCE, TOTAL
from edgekit.contract.codec import ContractError, decode, encode
from edgekit.contract.generate import EncoderPart, GenerateSection, decoder_phases
from edgekit.contract.state import AttentionKV, ConvState, DecoderState, IndexerKeys, LSTMState, SSMState
from edgekit.contract.state.base import PROMPT_FLAG, STEP_INPUTS
from edgekit.runtimes.base import Runner
from edgekit.runtimes.tensorrt.profiles import choose_profiles
from edgekit.tasks.compactkv import CompactKV
from edgekit.tasks.state_loop import StateLoop

HYBRID = DecoderState((AttentionKV(0, 2, 4, 3), SSMState(1, 0, (2, 5))), prompt="stepwise")
VOCAB = 7


def test_every_kind_round_trips_through_the_manifest() -> None:
    state = DecoderState((AttentionKV(0, 2, 16, 8, window=64), IndexerKeys(0, 8), ConvState(1, 0, (8, 4)),
                          SSMState(1, 0, (2, 4, 8))))
    assert decode(DecoderState, encode(state), "cache") == state
    assert decode(DecoderState, encode(DecoderState((LSTMState(2, 8),), inputs=("input_ids",), prompt="stepwise")),
                  "cache").entries == (LSTMState(2, 8),)
    bad = encode(state)
    bad["entries"][2]["type"] = "no_such_state"
    with pytest.raises(ContractError, match=r"cache.entries\[2\].*\"type\" one of"):
        decode(DecoderState, bad, "cache")


def test_the_graph_needs_follow_the_entries() -> None:
    needs = HYBRID.needs()
    assert [n.name for n in needs.inputs] == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                                              "past_key_values.0.value", "ssm_state.1.0"]
    assert [(n.name, n.rank) for n in needs.outputs][1:] == [("present.0.key", 4), ("present.0.value", 4),
                                                             ("ssm_state_out.1.0", 3)]
    with pytest.raises(ValueError, match="attention_mask"):
        DecoderState((AttentionKV(0, 1, 4, 4),), inputs=("input_ids",))
    with pytest.raises(ValueError, match="compact"):
        DecoderState((AttentionKV(0, 1, 4, 4, compact=True),), prompt="stepwise")


def test_tensorrt_profiles_come_from_the_entries_dims() -> None:
    """A stepwise state has one phase (the decode step, one token); a state without slots has no past dim."""
    section = GenerateSection(None, True, (), None, 0, 64, HYBRID)
    graph = GraphSpec("model.onnx", tuple(TensorSpec(n.name, "int64" if i < 3 else "float32",
                                                     (BATCH, SEQUENCE) if i < 3 else (BATCH, 2, PAST, 4))
                                          for i, n in enumerate(HYBRID.needs().inputs[:4])), ())
    [(phase, dims)] = choose_profiles(section, "model", graph, max_batch=4)
    assert phase == "decode" and dims[SEQUENCE] == (1, 1, 1) and dims[PAST] == (1, 32, 63) and dims[BATCH][2] == 4
    pure = DecoderState((ConvState(0, 0, (4, 3)),), prompt="stepwise")
    assert decoder_phases(64, (1, 1, 8), pure) == [("decode", {BATCH: (1, 1, 8), SEQUENCE: (1, 1, 1)})]
    assert [p for p, _ in decoder_phases(64, (1, 1, 8), DecoderState((AttentionKV(0, 1, 4, 4),)))] == ["prompt", "decode"]
    assert TOTAL in decoder_phases(64, (1, 1, 8), HYBRID)[0][1]


def test_a_verify_profile_only_where_speculative_decoding_calls_one() -> None:
    kv = DecoderState((AttentionKV(0, 1, 4, 4),))
    names = lambda section, graph="model": [p for p, _ in section.call_shapes(graph)]  # noqa: E731
    assert names(GenerateSection(None, True, (), None, 0, 64, kv)) == ["prompt", "verify", "decode"]
    verify = dict(GenerateSection(None, True, (), None, 0, 3, kv).call_shapes("model"))["verify"]
    assert verify[SEQUENCE] == (2, 2, 2) and verify[TOTAL] == (3, 3, 4)  # a 3-token context: 2 slots, 2 tokens
    assert names(GenerateSection(None, True, (), None, 0, 2, kv)) == ["prompt", "decode"]  # no room for 2 tokens
    flagged = DecoderState((AttentionKV(0, 1, 4, 4),), inputs=(*STEP_INPUTS, PROMPT_FLAG))
    assert names(GenerateSection(None, True, (), None, 0, 64, flagged)) == ["prompt", "decode"]
    seq2seq = GenerateSection(None, True, (), None, 0, 64, kv, encoder=EncoderPart(0, 32))
    assert names(seq2seq, "decoder") == ["prompt", "decode"]  # drafts are not wired for encoder-decoders


class HybridRunner(Runner):
    """One token per call. The logits read both states: the attended keys' sum (over mask-1 slots)
    and an SSM state s' = 0.5 s + token; present keys/values are the token's value in every cell."""

    name = "numpy-hybrid"

    def __init__(self) -> None:
        f, i = "float32", "int64"
        ins = [TensorSpec("input_ids", i, (BATCH, SEQUENCE)), TensorSpec("attention_mask", i, (BATCH, TOTAL)),
               TensorSpec("position_ids", i, (BATCH, SEQUENCE)),
               TensorSpec("past_key_values.0.key", f, (BATCH, 2, PAST, 4)),
               TensorSpec("past_key_values.0.value", f, (BATCH, 2, PAST, 3)), TensorSpec("ssm_state.1.0", f, (BATCH, 2, 5))]
        outs = [TensorSpec("logits", f, (BATCH, SEQUENCE, VOCAB)), TensorSpec("present.0.key", f, (BATCH, 2, SEQUENCE, 4)),
                TensorSpec("present.0.value", f, (BATCH, 2, SEQUENCE, 3)), TensorSpec("ssm_state_out.1.0", f, (BATCH, 2, 5))]
        super().__init__(GraphSpec("hybrid.onnx", tuple(ins), tuple(outs)))

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        tok = feeds["input_ids"].astype(np.float32)  # (b, 1)
        b = tok.shape[0]
        seen = (feeds["past_key_values.0.key"][:, 0, :, 0] * feeds["attention_mask"][:, :-1]).sum(1)
        ssm = 0.5 * feeds["ssm_state.1.0"] + tok[:, :, None]
        score = seen + ssm[:, 0, 0] + tok[:, 0] + 3 * feeds["position_ids"][:, 0]
        logits = -np.abs(np.arange(VOCAB)[None] - (score[:, None] % VOCAB)).astype(np.float32)
        out = {"logits": logits[:, None], "present.0.key": np.broadcast_to(tok[:, None, :, None], (b, 2, 1, 4)).copy(),
               "present.0.value": np.broadcast_to(tok[:, None, :, None], (b, 2, 1, 3)).copy(), "ssm_state_out.1.0": ssm}
        return {k: out[k] for k in outputs}


def _alone(row: list[int], new: int) -> list[int]:
    """The same model with its state kept by hand, one unpadded row."""
    keys, ssm, got = [], 0.0, []
    for pos, t in enumerate(row + [None] * new):  # type: ignore[operator]
        if t is None:
            t = got[-1]
        ssm = 0.5 * ssm + t
        score = sum(keys) + ssm + t + 3 * pos
        keys.append(t)
        nxt = int(np.argmax(-np.abs(np.arange(VOCAB) - score % VOCAB)))
        if pos >= len(row) - 1:
            got.append(nxt)
    return got[:new]


def test_the_loop_feeds_a_hybrid_state_stepwise_row_by_row() -> None:
    ids = np.array([[0, 0, 3, 5], [1, 2, 3, 4]], np.int64)
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]], np.int64)
    with StateLoop(HybridRunner(), HYBRID, 2, 4 + 5 - 1) as loop:
        tokens = [loop.prefill(ids, mask).argmax(-1)]
        for _ in range(4):
            tokens.append(loop.step(tokens[-1]).argmax(-1))
        assert loop.mask[0].tolist()[:4] == [1, 1, 0, 0] and loop.filled == 8
    got = np.stack(tokens, 1)
    assert got.tolist() == [_alone([3, 5], 5), _alone([1, 2, 3, 4], 5)]


def test_a_beam_reorder_moves_every_tensor_of_a_row() -> None:
    with StateLoop(HybridRunner(), HYBRID, 2, 6) as loop:
        loop.prefill(np.array([[1, 2], [4, 6]], np.int64), np.ones((2, 2), np.int64))
        loop.step(np.array([3, 5]))
        loop.reorder(np.array([1, 1]))
        assert all(np.array_equal(a[0], a[1]) for a in loop.caches.values())
        assert loop.position[:, 0].tolist() == [3, 3]
        assert np.array_equal(loop.step(np.array([2, 2]))[0], loop.logits[1, 0])


# ---------------------------------------------------------------- the prompt flag (specs/state_floor.py)

FLAGGED_KV = (AttentionKV(0, 1, 2, 2),)


class FlagRunner(Runner):
    """One attention layer, any number of tokens per call; records each call's token count and prompt flag."""

    name = "numpy-flag"

    def __init__(self) -> None:
        f, i = "float32", "int64"
        ins = [TensorSpec("input_ids", i, (BATCH, SEQUENCE)), TensorSpec("attention_mask", i, (BATCH, TOTAL)),
               TensorSpec("position_ids", i, (BATCH, SEQUENCE)), TensorSpec(PROMPT_FLAG, i, (BATCH, 1)),
               TensorSpec("past_key_values.0.key", f, (BATCH, 1, PAST, 2)),
               TensorSpec("past_key_values.0.value", f, (BATCH, 1, PAST, 2))]
        outs = [TensorSpec("logits", f, (BATCH, SEQUENCE, VOCAB)), TensorSpec("present.0.key", f, (BATCH, 1, SEQUENCE, 2)),
                TensorSpec("present.0.value", f, (BATCH, 1, SEQUENCE, 2))]
        super().__init__(GraphSpec("flag.onnx", tuple(ins), tuple(outs)))
        self.calls: list[tuple[int, list[int]]] = []

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        b, n = feeds["input_ids"].shape
        self.calls.append((n, feeds[PROMPT_FLAG][:, 0].tolist()))
        kv = np.zeros((b, 1, n, 2), np.float32)
        out = {"logits": np.zeros((b, n, VOCAB), np.float32), "present.0.key": kv, "present.0.value": kv}
        return {k: out[k] for k in outputs}


def test_a_prompt_flag_is_an_input_only_where_declared() -> None:
    flagged = DecoderState(FLAGGED_KV, inputs=(*STEP_INPUTS, PROMPT_FLAG), prompt="stepwise")
    assert decode(DecoderState, encode(flagged), "cache") == flagged
    flag = flagged.needs().inputs[3]
    assert (flag.name, flag.dtypes, flag.rank) == (PROMPT_FLAG, ("int64",), 2)
    assert PROMPT_FLAG not in DecoderState(FLAGGED_KV).inputs
    with pytest.raises(ValueError, match="prompt_flag"):
        DecoderState(FLAGGED_KV, inputs=(*STEP_INPUTS, "prompt_mask"))
    # TensorRT: the flag's one dynamic dim is the batch, which every phase ranges.
    graph = FlagRunner().graph
    [(phase, dims)] = choose_profiles(GenerateSection(None, True, (), None, 0, 64, flagged), "model", graph, max_batch=4)
    assert phase == "decode" and dims[BATCH] == (1, 1, 4)


@pytest.mark.parametrize("prompt", ["whole", "stepwise", "compact"])
def test_the_loop_flags_the_prompt_calls_and_no_step(prompt: str) -> None:
    runner = FlagRunner()
    kv = (AttentionKV(0, 1, 2, 2, compact=True),) if prompt == "compact" else FLAGGED_KV
    state = DecoderState(kv, inputs=(*STEP_INPUTS, PROMPT_FLAG), prompt="stepwise" if prompt == "stepwise" else "whole")
    ids = np.array([[0, 3, 5], [1, 2, 4]], np.int64)
    for mask in (np.ones_like(ids), (ids != 0).astype(np.int64)):  # unpadded, then row 0 left-padded
        runner.calls.clear()
        loop = CompactKV(runner, state, 2) if prompt == "compact" else StateLoop(runner, state, 2, 3 + 2)
        loop.prefill(ids, mask)
        loop.step(np.array([1, 1]))
        loop.step(np.array([1, 1]))
        loop.close()
        if prompt != "stepwise":
            want = [(3, [1, 1])]
        elif mask.all():
            want = [(1, [1, 1])] * 3
        else:  # each row's real tokens alone
            want = [(1, [1])] * 2 + [(1, [1])] * 3
        assert runner.calls == want + [(1, [0, 0])] * 2
