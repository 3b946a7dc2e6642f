"""The PyTorch side of parity and `edgekit bench --against`: the graph's feeds and names, run in torch."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgekit.contract import GraphSpec
from edgekit.converters.wrappers import callable_module
from edgekit.runtimes.base import Runner


class TorchRunner(Runner):
    """Runs the module a graph was exported from, with the graph's input and output names."""

    name = "pytorch-cpu"

    def __init__(self, module: Any, graph: GraphSpec, input_names: list[str], output_names: list[str]) -> None:
        super().__init__(graph)
        self.module = callable_module(module)
        self.input_names = input_names
        self.output_names = output_names

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        values = dict(zip(self.output_names, result))
        return {n: values[n].detach().float().numpy() for n in outputs}
