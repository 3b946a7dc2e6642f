"""TensorRT (10.3 through 11.x, names-based API): engine build, fingerprints, runner, on NVIDIA GPUs and Jetson.

    build.py        `edgekit build`: plans from the artifact's ONNX, strongly typed, timing cache, progress
    profiles.py     optimization profiles from the contract's named dims (pure Python)
    fingerprint.py  what a plan was built for, and why it cannot run here (pure Python)
    runner.py       TrtRunner / TrtStepper: device buffers, execution contexts, CUDA graphs for decode
    logger.py       TensorRT's log into `logging`, errors kept for the exception message
Nothing here is imported by `import edgekit`; `probe()` and `open_runners()` import tensorrt.
"""
from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from edgekit.errors import BackendUnavailableError, EngineError
from edgekit.runtimes.options import RunOptions

if TYPE_CHECKING:
    from edgekit.artifact import Artifact
    from edgekit.runtimes.base import Runner


def import_trt() -> ModuleType:
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer is not
        raise BackendUnavailableError(
            "TensorRT engines were asked for but TensorRT is not installed",
            found=f"import tensorrt failed ({e})",
            fix="pip install 'edgekit[tensorrt]' on a machine with an NVIDIA GPU (JetPack ships TensorRT on Jetson); "
                "or convert here with --target cuda and run `edgekit build OUT` on the GPU machine",
        ) from None
    return trt


def probe() -> tuple[bool, str]:
    """(usable, why): TensorRT importable, cuda-python importable, and a CUDA GPU present."""
    from edgekit.runtimes.cuda import cuda_call, import_cudart

    try:
        trt = import_trt()
    except BackendUnavailableError as e:
        return False, f"tensorrt is not installed ({e.found})"
    try:
        cudart = import_cudart()
        count = cuda_call(cudart, cudart.cudaGetDeviceCount())
    except (BackendUnavailableError, EngineError) as e:
        return False, str(e)
    if count < 1:
        return False, "no CUDA GPU is visible"
    return True, f"TensorRT {trt.__version__}, {count} GPU(s)"


def open_runners(art: Artifact, portable: bool = False, options: RunOptions | None = None) -> dict[str, Runner]:
    """Runners over the artifact's engines (always built from the portable graphs), with
    `options.tensorrt` (options.threads is onnxruntime's CPU pool: TensorRT computes on the GPU)."""
    from edgekit.runtimes.tensorrt.runner import open_artifact_runners

    return open_artifact_runners(art, (options or RunOptions()).tensorrt)
