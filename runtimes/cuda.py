"""CUDA through cuda-python (`cuda.bindings.runtime`): device memory without torch on the device.

Shared by the TensorRT runner and the onnxruntime CUDA step loop. Only names present in
cuda-python 12.9 and 13 are used (tests/test_trt_bindings_contract.py checks them).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import BackendUnavailableError, EngineError


def import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+), or `cuda.cudart` before."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as e:
            raise BackendUnavailableError(
                "the GPU path needs cuda-python for device memory", found=f"import failed ({e})",
                fix="pip install 'edgekit[gpu]' (cuda-python)",
            ) from None
    return cudart


def cuda_call(cudart: Any, result: Any) -> Any:
    """Unpack cuda-python's (err, *values) and raise on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise EngineError("a CUDA call failed", found=f"{err}: {text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def free_device_memory() -> int:
    """Bytes free on the current CUDA device (cudaMemGetInfo: free, total)."""
    cudart = import_cudart()
    free, _ = cuda_call(cudart, cudart.cudaMemGetInfo())
    return int(free)


def copy_slot(cu: Any, dst: int, src: int, cache_shape: tuple[int, ...], itemsize: int, slot: int,
              stream: Any, count: int = 1) -> None:
    """Write a (batch, heads, count, dim) tensor at `src` into slots [slot, slot + count) of a
    (batch, heads, slots, dim) cache at `dst`, device to device, as one strided 2-D copy
    (batch*heads rows of count*dim).

    Why not a view: the slots are not contiguous in the cache (rows are `slots*dim` apart), so the
    graph's output cannot be pointed at them; one cudaMemcpy2DAsync per tensor is the cheapest write.
    """
    b, h, slots, d = cache_shape
    row = d * itemsize
    cuda_call(cu, cu.cudaMemcpy2DAsync(dst + slot * row, slots * row, src, count * row, count * row, b * h,
                                       cu.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))


def copy_whole(cu: Any, dst: int, src: int, nbytes: int, stream: Any) -> None:
    """A replaced state: the graph's output at `src` over the state at `dst`, device to device. Two
    buffers, not one bound as input and output: the graph reads the state while it writes the next."""
    cuda_call(cu, cu.cudaMemcpyAsync(dst, src, nbytes, cu.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))


def gather_rows(cu: Any, ptr: int, scratch: int, rows: np.ndarray, row_bytes: int, stream: Any) -> None:
    """Row i of the (batch, ...) tensor at `ptr` becomes its row rows[i], device to device.

    Each moved row is staged in `scratch` (at least batch * row_bytes) first, since a row may be
    both a source and a destination. Rows that stay put are not copied: in beam search most do.
    """
    d2d = cu.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    moved = [i for i, r in enumerate(rows.tolist()) if r != i]
    for i in moved:
        cuda_call(cu, cu.cudaMemcpyAsync(scratch + i * row_bytes, ptr + int(rows[i]) * row_bytes, row_bytes, d2d,
                                         stream))
    for i in moved:
        cuda_call(cu, cu.cudaMemcpyAsync(ptr + i * row_bytes, scratch + i * row_bytes, row_bytes, d2d, stream))


class DeviceBuffers:
    """Named device allocations that grow when asked for more and are reused otherwise."""

    def __init__(self, cu: Any) -> None:
        self.cu = cu
        self.held: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def get(self, name: str, nbytes: int) -> int:
        ptr, size = self.held.get(name, (0, 0))
        if size < nbytes or ptr == 0:
            if ptr:
                cuda_call(self.cu, self.cu.cudaFree(ptr))
            ptr = int(cuda_call(self.cu, self.cu.cudaMalloc(max(nbytes, 1))))
            self.held[name] = (ptr, max(nbytes, 1))
        return ptr

    def upload(self, name: str, array: np.ndarray, stream: Any) -> int:
        """`array` into buffer `name`; an empty array (a decode step's zero image rows) copies nothing
        and still gets an address (TensorRT takes one for every tensor)."""
        ptr = self.get(name, array.nbytes)
        if array.nbytes:
            cuda_call(self.cu, self.cu.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                                       self.cu.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        return ptr

    def download(self, name: str, array: np.ndarray, stream: Any) -> None:
        cuda_call(self.cu, self.cu.cudaMemcpyAsync(array.ctypes.data, self.held[name][0], array.nbytes,
                                                   self.cu.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def free(self) -> None:
        for ptr, _ in self.held.values():
            cuda_call(self.cu, self.cu.cudaFree(ptr))
        self.held.clear()
