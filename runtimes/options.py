"""What a caller asks of the backends when loading (`edgekit.load(..., threads=, tensorrt=)`), typed.

These were environment variables read deep in the runners; an argument says at the call what the
model runs with, and two models in one process can differ. Pure Python: `import edgekit` may load it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.errors import ConfigError


@dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT's run-time choices.

    `dla_core`: on a Jetson, run the plan `edgekit build --dla-core N` made for core N (None: the GPU
    plan). `cuda_graphs`: capture a decode step as a CUDA graph and replay it (False runs every step
    as a plain launch, for profilers). `context_wait_s`: how long a call waits for a free execution
    context (`edgekit build --contexts N` makes N) before an EngineError says all stayed busy.

    >>> TensorRTOptions(dla_core=0, cuda_graphs=False).context_wait_s
    300.0
    """

    dla_core: int | None = None
    cuda_graphs: bool = True
    context_wait_s: float = 300.0

    def __post_init__(self) -> None:
        if self.dla_core is not None and (isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int)
                                          or self.dla_core < 0):
            raise ConfigError("dla_core must be a DLA core number (an integer >= 0) or None",
                              found=repr(self.dla_core))
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError("cuda_graphs must be True or False", found=repr(self.cuda_graphs))
        wait = self.context_wait_s
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait > 0:
            raise ConfigError("context_wait_s must be a number of seconds > 0", found=repr(wait))


@dataclass(frozen=True)
class RunOptions:
    """Every backend's load-time choices; each backend reads its own. `threads`: onnxruntime's CPU
    threads per session (None: all cores)."""

    threads: int | None = None
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    def __post_init__(self) -> None:
        t = self.threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise ConfigError("threads must be an integer >= 1", found=repr(t), fix="leave it out for all cores")
        if not isinstance(self.tensorrt, TensorRTOptions):
            raise ConfigError("tensorrt= takes edgekit.TensorRTOptions(...)", found=type(self.tensorrt).__name__)
