"""A decoder's state between calls: typed entries, one per layer (or group of layers).

Each entry class owns its tensors (names and dims) and says how a call updates them; the decode
loop (edgekit/tasks/state_loop.py), beam search, the manifest codec and every backend's stepper
read only that, never a kind's name. Three update mechanisms cover every kind:

    "slots"    the output holds this call's tokens on axis 2 of (batch, X, past_sequence, Y); the
               loop writes them at the next free slots of a buffer sized once per call, and a past
               slot is attended iff its attention-mask column is 1 (attention keys/values).
    "append"   the same tensors, but the past holds exactly the tokens so far (it grows by
               concatenation): models whose answer depends on where the past slots sit.
    "replace"  the output is the whole next state, the input's shape (a convolution's window, an
               SSM or linear-attention state, an LSTM's h/c); the prompt starts from zeros.

Batch is axis 0 of every state tensor, so a beam reorder is one row gather for all kinds. A new
kind is one module in this package defining a `StateEntry` subclass (found by `kinds()`).
"""
from edgekit.contract.state.base import APPEND, REPLACE, SLOT_AXIS, SLOTS, DecoderState, StateEntry, StateTensor, kinds
from edgekit.contract.state.kinds_attention import AttentionKV, IndexerKeys
from edgekit.contract.state.kinds_memory import HiddenMemory, TokenEmbedding
from edgekit.contract.state.kinds_recurrent import ConvState, LSTMState, SSMState

__all__ = ["APPEND", "REPLACE", "SLOT_AXIS", "SLOTS", "AttentionKV", "ConvState", "DecoderState", "HiddenMemory", "IndexerKeys",
           "LSTMState", "SSMState", "StateEntry", "StateTensor", "TokenEmbedding", "kinds"]
