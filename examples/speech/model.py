"""A small character CTC recognizer: 40 log-mel bands -> dilated 1-D convolutions -> characters.

The features are computed by edgekit's numpy front end (`log_mel`, what "features": "log-mel" in
`PREPROCESS` makes the deployed artifact compute), so what the model saw in training is exactly
what the artifact feeds it.
"""
from __future__ import annotations

import numpy as np

from edgekit.preprocess.audio import log_mel

LABELS = ["<blank>", " ", *sorted(set("zero one two three four five six seven eight nine") - {" "})]
PREPROCESS = {"sample_rate": 16000, "features": "log-mel", "n_fft": 400, "hop_length": 160, "n_mels": 40,
              "blank_id": 0, "word_delimiter": " "}


def features(wave: np.ndarray) -> np.ndarray:
    p = PREPROCESS
    return log_mel(wave, p["sample_rate"], p["n_fft"], p["hop_length"], p["n_mels"]).astype(np.float32)


def encode(text: str) -> list[int]:
    return [LABELS.index(c) for c in text]


def build(channels: int = 128) -> "torch.nn.Module":  # noqa: F821 - torch is imported lazily
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dilation: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(channels, channels, 5, padding=2 * dilation, dilation=dilation)
            self.norm = nn.BatchNorm1d(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.relu(self.norm(self.conv(x)))

    class DigitCTC(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv1d(PREPROCESS["n_mels"], channels, 5, padding=2), nn.ReLU(),
                                      nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU())
            self.blocks = nn.Sequential(*[Block(d) for d in (1, 2, 4, 8, 1)])
            self.head = nn.Conv1d(channels, len(LABELS), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Per-utterance normalization: the model does not care about recording gain.
            x = (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, keepdim=True) + 1e-5)
            return self.head(self.blocks(self.stem(x))).transpose(1, 2)  # (batch, frames, labels)

    return DigitCTC().eval()


def save_weights(model: "torch.nn.Module", path: str) -> None:  # noqa: F821
    np.savez_compressed(path, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def load_weights(path: str) -> "torch.nn.Module":  # noqa: F821
    import torch

    model = build()
    with np.load(path, allow_pickle=False) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return model.eval()
