"""SEW-D's squeezed encoder, made exportable with a dynamic samples axis.

`SEWDEncoder` averages frame pairs (squeeze_factor), runs the transformer on the shorter
sequence, upsamples it back and pads the end when the frame count was odd:
`if hidden_states.shape[1] < n_input_timesteps: pad(...)`. torch.export takes that branch for the
traced length only, so the program guards "frames are even" and an odd frame count (most lengths)
is refused, or wrong once in ONNX. While exporting, the encoder's forward is swapped, per instance
and restored after, for the same steps with the pad always applied: a pad of zero frames when the
count was even, the same values otherwise. PyTorch runs (parity's reference) keep the model's own.

The export names the samples axis with a string (`DEFERRED_GUARDS`): the pooled length
(`AvgPool1d`, (F - 2) // 2 + 1) and the positional convolution's (F // 2) are one number written
two ways that torch's solver cannot prove equal, so a `Dim` with bounds stops at "Constraints
violated"; a string dim keeps those true guards as the program's runtime checks instead.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from edgekit.converters.expert_loops import swapped_forwards

# model_type -> why its samples axis is exported as a string dim (torch.export's Dim.DYNAMIC).
DEFERRED_GUARDS: dict[str, str] = {"sew-d": "pooled and positional lengths are equal only modulo floor division"}


def _sew_d_encoder(self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   **kwargs: Any) -> Any:
    """transformers' SEWDEncoder.forward (5.x) with the trailing pad unconditional."""
    from transformers.modeling_outputs import BaseModelOutput

    squeeze = self.config.squeeze_factor
    if attention_mask is None:
        attention_mask = torch.ones((hidden_states.shape[0], hidden_states.shape[1] // squeeze), dtype=torch.long,
                                    device=hidden_states.device)
    else:
        hidden_states[~attention_mask.unsqueeze(-1).repeat(1, 1, hidden_states.shape[2]).bool()] = 0.0
        attention_mask = torch.nn.functional.max_pool1d(attention_mask.float().unsqueeze(1), kernel_size=squeeze,
                                                        stride=squeeze).squeeze(1).long()
    n_input_timesteps = hidden_states.shape[1]
    hidden_states = hidden_states.transpose(1, 2)
    position_embeddings = self.pos_conv_embed(hidden_states)
    pooled_hidden_states = self.pool(hidden_states)
    hidden_states = pooled_hidden_states + position_embeddings[..., : pooled_hidden_states.size(-1)]
    hidden_states = hidden_states.transpose(1, 2)
    encoder_outputs = self.encoder(hidden_states, attention_mask, **kwargs)
    hidden_states = self.upsample(encoder_outputs.last_hidden_state)
    hidden_states = torch.nn.functional.pad(hidden_states, (0, 0, 0, n_input_timesteps - hidden_states.shape[1]))
    return BaseModelOutput(last_hidden_state=hidden_states)


@contextlib.contextmanager
def padded_upsampling(model: Any) -> Iterator[None]:
    """While torch.export traces: `_sew_d_encoder` on each SEWDEncoder of `model`."""
    with swapped_forwards(model, {"SEWDEncoder": _sew_d_encoder}):
        yield
