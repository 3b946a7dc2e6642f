"""Zamba2's Mamba-2 mixers floor the time step at time_step_min in transformers' prompt scan and not
in its one-token step (converters/specs/state_floor.py), so generate runs its prompt and its new
tokens through two programs. On the sweep's tiny seeded Zamba2: the step graph takes the prompt flag
and runs the scan's program on flagged rows, the step's on the others (without the flag its logits
are neither program's); edgekit's tokens are transformers' generate's."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from coverage_models import TEXTS, eos_off, save_folder  # noqa: E402

import edgekit  # noqa: E402
from edgekit.converters.sources import resolve_source  # noqa: E402
from edgekit.converters.spec import ConvertOptions  # noqa: E402
from edgekit.converters.specs.state_space import HFStateSpaceLM, StateDecoder, StateReference  # noqa: E402
from edgekit.converters.specs.generate import DecodeReference  # noqa: E402

TOKENS, PROMPT = 64, 40
# fp32 rounding over a two-layer model and TOKENS steps: the step module against transformers' own
# paths measured at 1.7e-6 and 1.3e-6 of the logits' scale, the floor's effect at 8e-4 to 2e-3.
ROUNDING = 1e-4
NEW = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_folder("generate", "zamba2", tmp_path_factory.mktemp("zamba2") / "hf")


@pytest.fixture(scope="module")
def spec(folder: Path) -> HFStateSpaceLM:
    spec = HFStateSpaceLM(resolve_source(folder, "generate"), ConvertOptions())
    assert isinstance(spec.reference, StateReference)
    return spec


def _ids(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, size=(1, TOKENS))


def _step_module_logits(spec: HFStateSpaceLM, ids: np.ndarray, prompt: int) -> np.ndarray:
    """edgekit's step module (what is exported) fed `ids` token by token from a zero state, eagerly,
    the first `prompt` tokens flagged as prompt."""
    import torch

    from edgekit.contract.state import SLOTS

    decoder = StateDecoder(spec.model, spec.layers, spec.floors)
    state = [torch.zeros(t.shape(1, 0)) for t in decoder.state.tensors()]
    logits = []
    with torch.no_grad():
        for i in range(ids.shape[1]):
            small = decoder.small(torch.ones((1, i + 1), dtype=torch.long), torch.tensor([[i]]), prompt=i < prompt)
            out = decoder(torch.from_numpy(ids[:, i:i + 1]), *small, *state)
            logits.append(out[0][:, -1].numpy())
            state = [torch.cat([s, n], 2) if t.update == SLOTS else n
                     for s, n, t in zip(state, out[1:], decoder.state.tensors())]
    return np.stack(logits, 1)


def _rel(want: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(want - got).max() / np.abs(want).max())


def test_the_floors_declare_the_prompt_flag(spec: HFStateSpaceLM) -> None:
    assert [f.floor for f in spec.floors] == [0.001, 0.001]  # both Mamba-2 mixers, time_step_min
    assert spec.cache.inputs == ("input_ids", "attention_mask", "position_ids", "prompt_flag")
    assert isinstance(spec.reference, DecodeReference)  # parity's decode steps: transformers' cached steps


def test_the_flag_runs_the_scan_and_its_absence_the_step(spec: HFStateSpaceLM) -> None:
    ids = _ids(spec.reference.vocab)
    scan, cached = spec.reference.full_logits(ids), spec.reference.decode_logits(ids, TOKENS - PROMPT)
    # All flagged: transformers' whole-row scan. The first PROMPT flagged: its prefill, then its steps.
    assert _rel(scan, _step_module_logits(spec, ids, TOKENS)) < ROUNDING
    assert _rel(cached, _step_module_logits(spec, ids, PROMPT)) < ROUNDING
    # None flagged (the step graph before the flag): neither, by far more than rounding (measured
    # 2.1e-3 from the scan, 8.2e-4 from the prefill + steps).
    unflagged = _step_module_logits(spec, ids, 0)
    assert min(_rel(scan, unflagged), _rel(cached, unflagged)) > 5 * ROUNDING


def test_tokens_equal_transformers_generate(folder: Path, tmp_path: Path) -> None:
    import torch

    # The parity gate (fp32 tokens, and decode-step logits against transformers' cached steps) on the
    # test's short prompts: natural-text rows of 128 tokens would take three times as long here.
    art = edgekit.convert(folder, tmp_path / "fp32", calibration=TEXTS).path
    manifest = json.loads((art / "edgekit.json").read_text())
    assert manifest["parity"]["passed"] and manifest["contract"]["cache"]["inputs"][-1] == "prompt_flag"
    tok, model = eos_off(folder, NEW)
    gen = edgekit.load(art, device="cpu")
    for prompts in ([TEXTS[0]], TEXTS):  # batch 1, then four prompts of different lengths, left-padded
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            want = model.generate(**enc, do_sample=False).numpy()
        got = gen.generate(input_ids=enc["input_ids"].numpy(), attention_mask=enc["attention_mask"].numpy(),
                           max_new_tokens=NEW, eos_token_id=[], forced_eos_token_id=None, do_sample=False)
        n = enc["input_ids"].shape[1]
        np.testing.assert_array_equal(np.asarray(got)[:, n:], want[:, n:], err_msg=f"batch {len(prompts)}")
