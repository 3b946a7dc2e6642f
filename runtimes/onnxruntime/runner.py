"""onnxruntime runners and the decode-step loop over IO binding (host memory on the CPU, device memory on CUDA)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ArtifactError, BackendUnavailableError, InputError
from edgekit.contract import GraphSpec
from edgekit.runtimes.base import Runner, StepSpec, Stepper
from edgekit.runtimes.cuda import copy_slot, copy_whole, cuda_call, gather_rows, import_cudart
from edgekit.runtimes.onnxruntime import PROVIDERS

# TF32 (onnxruntime's CUDA default) rounds fp32 matmuls to a 10-bit mantissa: an fp32 artifact would
# silently run at lower precision than asked and lose token-for-token parity with PyTorch (whose
# matmuls stay fp32 by default). fp16 graphs are unaffected.
_OPTIONS: dict[str, dict[str, str]] = {"cpu": {}, "cuda": {"use_tf32": "0"}}


class OrtRunner(Runner):
    """One `InferenceSession`; onnxruntime's `run` is thread-safe, so one runner serves all threads."""

    def __init__(self, path: Path, graph: GraphSpec, device: str = "cpu", threads: int | None = None,
                 kv_layout: str = "slots") -> None:
        super().__init__(graph)
        self.kv_layout = kv_layout
        import onnxruntime as ort

        if device not in PROVIDERS:
            raise BackendUnavailableError(f"onnxruntime has no device '{device}'", found=f"devices {list(PROVIDERS)}")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime's {provider} is not available",
                found=f"providers {ort.get_available_providers()}",
                fix="install onnxruntime-gpu (pip install 'edgekit[gpu]') on a machine with an NVIDIA GPU",
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: onnxruntime picks (all physical cores)
        opts.log_severity_level = 3  # warnings from the optimizer are ours to explain, not to print
        try:
            # Only the CPU provider, never a silent second choice: the user asked for this device.
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=[(provider, _OPTIONS[device])])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"onnxruntime cannot load '{path.name}': {e}", fix="convert the model again") from None
        self.name = f"onnxruntime-{device}"
        self.device = device

    def _run_impl(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(outputs, feeds)
        except Exception as e:
            # Shapes the graph cannot take (e.g. an image far smaller than the network's receptive field).
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise InputError(f"the model cannot run on these inputs: {e}", found=f"shapes {shapes}") from None
        return dict(zip(outputs, values))

    def _stepper_impl(self, spec: StepSpec) -> Stepper:
        if self.device == "cpu":
            return OrtStepper(self._session, spec, HostMemory())
        return OrtStepper(self._session, spec, DeviceMemory(import_cudart(), self.device))


class _Buf:
    """An OrtValue, its shape and dtype, and for host memory the numpy array it shares memory with."""

    def __init__(self, value: Any, shape: tuple[int, ...], dtype: np.dtype, array: np.ndarray | None = None) -> None:
        self.value, self.shape, self.dtype, self.array = value, shape, np.dtype(dtype), array


class HostMemory:
    """CPU: OrtValues over numpy arrays, so the caller's in-place writes are what the graph reads."""

    def wrap(self, array: np.ndarray) -> _Buf:
        import onnxruntime as ort

        return _Buf(ort.OrtValue.ortvalue_from_numpy(array), array.shape, array.dtype, array)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> _Buf:
        return self.wrap(np.zeros(shape, dtype))

    def upload(self, buf: _Buf, array: np.ndarray) -> None:
        if buf.array is not array:
            np.copyto(buf.array, array)

    device = "cpu"

    def write_slot(self, cache: _Buf, new: _Buf, slot: int) -> None:
        assert cache.array is not None and new.array is not None
        cache.array[:, :, slot] = new.array[:, :, 0]

    def write_slots(self, cache: _Buf, value: Any, slot: int) -> None:
        """An OrtValue (batch, heads, n, dim) this memory's device holds into slots [slot, slot + n)."""
        assert cache.array is not None
        new = value.numpy()
        cache.array[:, :, slot : slot + new.shape[2]] = new

    def replace(self, cache: _Buf, value: Any) -> None:
        """An OrtValue of the cache's shape over the cache (a recurrent state's next contents)."""
        assert cache.array is not None
        np.copyto(cache.array, value.numpy())

    def reorder(self, buf: _Buf, rows: np.ndarray) -> None:
        assert buf.array is not None
        buf.array[...] = buf.array[rows]  # in place: the bound address stays

    def finish(self) -> None:
        pass  # numpy writes are done when they return

    def close(self) -> None:
        pass


class DeviceMemory:
    """A GPU (onnxruntime's allocator): caches live there; slot writes are device-side copies.

    `device` is onnxruntime's device name ("cuda"); the tests run this same class with "cpu"
    and a cuda-python fake that copies host memory, so its offsets and pitches are checked in CI.
    """

    def __init__(self, cu: Any, device: str) -> None:
        self.cu, self.device = cu, device
        self.stream = cuda_call(cu, cu.cudaStreamCreate())
        self._scratch: _Buf | None = None  # staging for row reorders, made on the first one

    def wrap(self, array: np.ndarray) -> _Buf:
        buf = self.empty(array.shape, array.dtype)
        self.upload(buf, array)
        return buf

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> _Buf:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, 0)
        return _Buf(value, tuple(shape), dtype)

    def upload(self, buf: _Buf, array: np.ndarray) -> None:
        if array.size:  # an empty tensor (a decode step's zero image rows) has no bytes to send
            buf.value.update_inplace(array)  # a synchronous host-to-device copy

    def write_slot(self, cache: _Buf, new: _Buf, slot: int) -> None:
        copy_slot(self.cu, cache.value.data_ptr(), new.value.data_ptr(), cache.shape, cache.dtype.itemsize, slot,
                  self.stream)

    def write_slots(self, cache: _Buf, value: Any, slot: int) -> None:
        copy_slot(self.cu, cache.value.data_ptr(), value.data_ptr(), cache.shape, cache.dtype.itemsize, slot,
                  self.stream, count=value.shape()[2])

    def replace(self, cache: _Buf, value: Any) -> None:
        copy_whole(self.cu, cache.value.data_ptr(), value.data_ptr(), int(np.prod(cache.shape)) * cache.dtype.itemsize,
                   self.stream)

    def reorder(self, buf: _Buf, rows: np.ndarray) -> None:
        nbytes = int(np.prod(buf.shape)) * buf.dtype.itemsize
        if self._scratch is None or self._scratch.shape[0] < nbytes:
            self._scratch = self.empty((nbytes,), np.dtype(np.uint8))
        gather_rows(self.cu, buf.value.data_ptr(), self._scratch.value.data_ptr(), rows, nbytes // buf.shape[0],
                    self.stream)

    def finish(self) -> None:
        # onnxruntime's next run is on its own stream: the slot writes must be done before it starts.
        cuda_call(self.cu, self.cu.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        if self.stream is not None:
            cuda_call(self.cu, self.cu.cudaStreamDestroy(self.stream))
            self.stream = None


class OrtStepper(Stepper):
    """A decode loop through onnxruntime's IO binding: every buffer is bound once, at a fixed
    address; a step sends the small inputs, runs, and writes the new cache slots in place (or, for
    a shared-buffer graph, the graph writes them: its present outputs are bound to the caches)."""

    def __init__(self, session: Any, spec: StepSpec, memory: HostMemory | DeviceMemory) -> None:
        super().__init__(spec)
        self._session, self._mem = session, memory
        self._binding = session.io_binding()
        self._inputs = {n: memory.wrap(a) for n, a in spec.inputs.items()}
        self._caches = {n: memory.wrap(a) for n, a in spec.caches.items()}
        self._new: dict[str, _Buf] = {}
        for name, buf in {**self._inputs, **self._caches}.items():
            self._binding.bind_ortvalue_input(name, buf.value)
        for out, cache in spec.writes.items():
            b, h, _, d = spec.caches[cache].shape
            self._new[out] = memory.empty((b, h, 1, d), spec.caches[cache].dtype)
            self._binding.bind_ortvalue_output(out, self._new[out].value)
        for out, cache in spec.shared.items():
            self._binding.bind_ortvalue_output(out, self._caches[cache].value)
        for out, cache in spec.replaces.items():  # the next state, copied over the state after each step
            self._new[out] = memory.empty(spec.caches[cache].shape, spec.caches[cache].dtype)
            self._binding.bind_ortvalue_output(out, self._new[out].value)
        for name, host in spec.outputs.items():  # onnxruntime copies these to the host buffer itself
            self._binding.bind_output(name, "cpu", 0, host.dtype, list(host.shape), host.ctypes.data)

    def _step_impl(self, slot: int) -> None:
        for name, array in self.spec.inputs.items():
            self._mem.upload(self._inputs[name], array)
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as e:
            raise InputError(f"the model cannot run on these inputs: {e}") from None
        for out, cache in self.spec.writes.items():
            self._mem.write_slot(self._caches[cache], self._new[out], slot)
        for out, cache in self.spec.replaces.items():
            self._mem.replace(self._caches[cache], self._new[out].value)
        self._mem.finish()  # one synchronize for all the step's writes

    def _run_impl(self, feeds: dict[str, np.ndarray], slot: int) -> dict[str, np.ndarray]:
        # A binding of its own: the step's stays as it was; the caches are the same buffers.
        binding = self._session.io_binding()
        keep: list[_Buf] = []  # the feeds' buffers live until the run is done
        for name, array in feeds.items():
            keep.append(self._mem.wrap(array))
            binding.bind_ortvalue_input(name, keep[-1].value)
        for name, buf in self._caches.items():
            if name not in feeds:
                binding.bind_ortvalue_input(name, buf.value)
        for out, cache in self.spec.shared.items():
            binding.bind_ortvalue_output(out, self._caches[cache].value)
        written, names = [*self.spec.writes, *self.spec.replaces], list(self.spec.outputs)
        for name in written:  # sized by the run; copied into the cache slots below, on the device
            binding.bind_output(name, self._mem.device)
        for name in names:
            binding.bind_output(name, "cpu")
        try:
            self._session.run_with_iobinding(binding)
        except Exception as e:
            raise InputError(f"the model cannot run on these inputs: {e}") from None
        values = binding.get_outputs()[len(self.spec.shared):]
        for name, value in zip(written, values):
            if name in self.spec.writes:
                self._mem.write_slots(self._caches[self.spec.writes[name]], value, slot)
            else:
                self._mem.replace(self._caches[self.spec.replaces[name]], value)
        self._mem.finish()
        return {name: v.numpy() for name, v in zip(names, values[len(written):])}

    def _reorder_impl(self, rows: np.ndarray, caches: list[str]) -> None:
        for name in caches:
            self._mem.reorder(self._caches[name], rows)
        self._mem.finish()  # done before onnxruntime's next run, on its own stream

    def close(self) -> None:
        self._mem.close()
