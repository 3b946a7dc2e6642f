"""PyTorch reference runner: the same feeds and output names as the ONNX graph, run in torch.

Used for parity (convert-time gate, `edgekit parity`) and `edgekit bench --against`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.manifest import GraphSpec
from edgekit.runtimes.base import Runner


class TorchRunner(Runner):
    name = "pytorch-cpu"

    def __init__(self, module: Any, graph: GraphSpec, input_names: list[str], output_names: list[str]) -> None:
        super().__init__(graph)
        import torch

        # A .pt2 source is an ExportedProgram; its .module() is the callable graph.
        self.module = module.module() if isinstance(module, torch.export.ExportedProgram) else module
        self.input_names = input_names
        self.output_names = output_names

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        values = dict(zip(self.output_names, result))
        return {n: values[n].detach().float().numpy() for n in outputs}
