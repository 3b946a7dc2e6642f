"""Why Zamba2 (and NemotronH at real widths) fail fp32 generate parity: transformers' own prompt scan
floors the Mamba-2 time step at time_step_min and its one-token step does not
(converters/specs/state_space.py, `scan_only_floors`). On the sweep's tiny seeded Zamba2: the floor
is declared, it alone parts transformers' two paths, and without it edgekit's step module gives
transformers' whole-row logits (the fp32 convert then fails naming the floor: the sweep's row, scripts/coverage.py)."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import save_folder  # noqa: E402

from edgekit.converters.sources import resolve_source  # noqa: E402
from edgekit.converters.spec import ConvertOptions  # noqa: E402
from edgekit.converters.specs.state_space import HFStateSpaceLM, StateDecoder, StateReference  # noqa: E402

TOKENS = 64
# fp32 rounding over a two-layer model and TOKENS steps. Measured on these TOKENS ids (max abs diff over
# the logits' scale), floor off: transformers' scan vs its steps, and edgekit's step module vs the scan,
# both 2.1e-6; floor on: both 2.1e-3, twice the fp32 logits gate (1e-3), rising to 9.6e-3 at 128 tokens.
ROUNDING = 1e-4


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> HFStateSpaceLM:
    folder = save_folder("generate", "zamba2", tmp_path_factory.mktemp("zamba2") / "hf")
    spec = HFStateSpaceLM(resolve_source(folder, "generate"), ConvertOptions())
    assert isinstance(spec.reference, StateReference)
    return spec


def _ids(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, size=(1, TOKENS))


@contextlib.contextmanager
def _floors_off(spec: HFStateSpaceLM) -> Iterator[None]:
    """The same weights, the scan's floor at zero (a no-op after a softplus)."""
    mixers = [spec.model.get_submodule(f.module) for f in spec.floors]
    try:
        for mixer in mixers:
            mixer.time_step_limit = (0.0, float("inf"))
        yield
    finally:
        for mixer, f in zip(mixers, spec.floors):
            mixer.time_step_limit = (f.floor, float("inf"))


def _step_module_logits(spec: HFStateSpaceLM, ids: np.ndarray) -> np.ndarray:
    """edgekit's step module (what is exported) fed `ids` token by token from a zero state, eagerly."""
    import torch

    from edgekit.contract.state import SLOTS

    decoder = StateDecoder(spec.model, spec.layers)
    state = [torch.zeros(t.shape(1, 0)) for t in decoder.state.tensors()]
    logits = []
    with torch.no_grad():
        for i in range(ids.shape[1]):
            out = decoder(torch.from_numpy(ids[:, i:i + 1]), torch.ones((1, i + 1), dtype=torch.long),
                          torch.tensor([[i]]), *state)
            logits.append(out[0][:, -1].numpy())
            state = [torch.cat([s, n], 2) if t.update == SLOTS else n
                     for s, n, t in zip(state, out[1:], decoder.state.tensors())]
    return np.stack(logits, 1)


def _rel(want: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(want - got).max() / np.abs(want).max())


def test_the_floor_alone_parts_transformers_scan_and_step(spec: HFStateSpaceLM) -> None:
    assert [f.floor for f in spec.floors] == [0.001, 0.001]  # both Mamba-2 mixers, time_step_min
    ids = _ids(spec.reference.vocab)
    assert spec.reference.scan_vs_steps(ids) > 1e-3
    with _floors_off(spec):
        assert spec.reference.scan_vs_steps(ids) < ROUNDING


def test_without_the_floor_the_step_module_is_transformers_forward(spec: HFStateSpaceLM) -> None:
    # No other difference between the exported step and transformers: with the floor off, edgekit's
    # step module fed token by token gives transformers' whole-row logits; with it, it does not.
    ids = _ids(spec.reference.vocab)
    assert _rel(spec.reference.full_logits(ids), _step_module_logits(spec, ids)) > 1e-3
    with _floors_off(spec):
        assert _rel(spec.reference.full_logits(ids), _step_module_logits(spec, ids)) < ROUNDING
