"""fp32 tolerances derived from the computation compared, not from one passing run.

Two fp32 evaluations of one network (onnxruntime's kernels against PyTorch's, or one graph at two
shapes) round differently. One rounding errs by at most eps32 (1.19e-7) of the value; a dot product
of K terms gathers about sqrt(K) of them (round-off adds like a random walk: Higham & Mary, "A New
Approach to Probabilistic Rounding Error Analysis", SIAM J. Sci. Comput. 41(5), 2019), and every
sequential matmul stage passes on what came before it, so the errors of `stages` stages add. Measured
on the values' scale (max |x|: normalization and residual adds keep activations on the output's
order), the difference stays under

    atol = SAFETY * eps32 * sqrt(K) * stages * max|x|

SAFETY = 4 covers the constant of the probabilistic bound (about 2 sigma each side) and the
softmax/normalization steps between the matmuls. A real regression (a wrong mask, position or
cache slot) moves these values by a sizeable fraction of max|x|, hundreds of times this bound.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
SAFETY = 4.0
# Sequential matmul stages per transformer layer: q/k/v projections (one stage, side by side), QK^T,
# attention x V, output projection, the feed-forward's two matmuls; a decoder layer with
# cross-attention has a second attention block (4 more stages).
LAYER_STAGES = 6
CROSS_STAGES = 4


def transformer_stages(layers: int, cross_layers: int = 0) -> int:
    """Stages from the input to the logits: `layers` transformer layers (of them `cross_layers`
    with cross-attention) and the output head."""
    return layers * LAYER_STAGES + cross_layers * CROSS_STAGES + 1


def fp32_atol(reference: np.ndarray, width: int, stages: int) -> float:
    """The bound above for values like `reference` (finite entries give the scale), computed through
    `stages` stages whose widest reduction sums `width` products."""
    finite = np.abs(np.asarray(reference, np.float64))
    scale = float(finite[np.isfinite(finite)].max())
    return SAFETY * EPS32 * math.sqrt(width) * stages * scale


def network_width_and_stages(module: Any) -> tuple[int, int]:
    """For a torch network of convolutions and linear layers: its widest reduction (input channels
    per group x kernel area, or input features) and how many such layers it has (the depth along
    its longest path is at most that)."""
    from torch import nn

    layers = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    widths = [m.in_features if isinstance(m, nn.Linear) else m.in_channels // m.groups * math.prod(m.kernel_size)
              for m in layers]
    return max(widths), len(layers)
