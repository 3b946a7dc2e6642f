"""Fixed-size states replaced by every call: convolution windows, SSM / linear-attention states, LSTM h/c."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgekit.contract.base import BATCH
from edgekit.contract.state.base import REPLACE, StateEntry, StateTensor


@dataclass(frozen=True)
class _LayerState(StateEntry):
    """One state tensor of layer `layer`, the `index`-th of its kind there; `shape` the dims after batch."""

    prefix: ClassVar[str]
    layer: int
    index: int
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self._check_sizes(*self.shape, self.layer + 1, self.index + 1)

    def tensors(self) -> tuple[StateTensor, ...]:
        n = f"{self.layer}.{self.index}"
        return (StateTensor(f"{self.prefix}.{n}", f"{self.prefix}_out.{n}", (BATCH, *self.shape), REPLACE),)


@dataclass(frozen=True)
class ConvState(_LayerState):
    """A causal convolution's last inputs (Mamba, LFM2's short convolutions): (channels, kernel)."""

    tag: ClassVar[str] = "conv_state"
    prefix: ClassVar[str] = "conv_state"


@dataclass(frozen=True)
class SSMState(_LayerState):
    """A selective state-space or linear-attention recurrent state (Mamba's (channels, state),
    Mamba-2's (heads, head_dim, state), gated delta rules, RWKV's time/channel-mix states, xLSTM's mLSTM
    matrix memory, normaliser and maximum)."""

    tag: ClassVar[str] = "ssm_state"
    prefix: ClassVar[str] = "ssm_state"


@dataclass(frozen=True)
class LSTMState(StateEntry):
    """An LSTM's hidden and cell states, (batch, layers, hidden) each: the plain-module generators."""

    tag: ClassVar[str] = "lstm_state"
    layers: int
    hidden: int

    def __post_init__(self) -> None:
        self._check_sizes(self.layers, self.hidden)

    def tensors(self) -> tuple[StateTensor, ...]:
        return tuple(StateTensor(f"state.{k}", f"state_out.{k}", (BATCH, self.layers, self.hidden), REPLACE)
                     for k in ("h", "c"))
