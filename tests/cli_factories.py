"""Factories for CLI tests: `edgekit convert cli_factories:tiny_cnn` (tests/ is on sys.path)."""
from __future__ import annotations

from typing import Any


def tiny_cnn() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()
    return {"model": net, "example_inputs": torch.rand(1, 3, 24, 24), "labels": ["cat", "dog", "owl"]}


def not_a_model() -> int:
    return 42
