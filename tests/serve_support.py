"""Helpers for the Triton serving tests: free ports, WAV/PNG bytes, a process tree's leftovers."""
from __future__ import annotations

import io
import socket
from contextlib import ExitStack

import numpy as np
import pytest


def serving_or_skip() -> None:
    """Skip, with the reason, where the platform cannot run the bundled Triton (not Linux x86-64/arm64,
    or a Python without a stub). A missing [serve] install is an error, not a skip: the test command installs it."""
    from edgekit.errors import BackendUnavailableError
    from edgekit.serving.bundle import find_bundle

    try:
        find_bundle()
    except BackendUnavailableError as e:
        if "not installed" in str(e):
            raise
        pytest.skip(f"the bundled Triton cannot run here: {e}")


def free_ports(n: int) -> list[int]:
    """n distinct ports the OS reports free on 127.0.0.1 (held together while asking, so they differ)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def png_bytes(seed: int, size: tuple[int, int] = (30, 26)) -> bytes:
    from PIL import Image

    img = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-sounding waveform (harmonics under an envelope + a little noise)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 900)))
    wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
