"""BLT (byte latent transformer) is refused by name by the KV decoder spec: with a cache, BltModel.forward
patches and runs its global transformer (which keeps no cache) over the new tokens alone, so transformers'
cached generate is not the model of the whole sequence. The test pins that fact on the sweep's tiny BLT
(transformers 5.23: the cached and uncached greedy tokens part at new token 2) beside the refusal, so a
transformers that caches BLT's global transformer fails here and the refusal gets revisited."""
from __future__ import annotations

from pathlib import Path

import pytest

from coverage_models import TEXTS, eos_off, save_folder
from edgekit.errors import UnsupportedError


def test_blt_is_refused_by_name_as_its_cached_generate_is_not_the_model(tmp_path: Path) -> None:
    import torch

    import edgekit

    folder = save_folder("generate", "blt", tmp_path / "hf")
    tok, model = eos_off(folder, 8)
    enc = tok([TEXTS[0]], return_tensors="pt")
    with torch.no_grad():
        cached, whole = model.generate(**enc), model.generate(**enc, use_cache=False)
    assert not torch.equal(cached, whole), "transformers' cached BLT generate now equals its uncached one"
    with pytest.raises(UnsupportedError, match="'blt' cannot run as edgekit's decoder graph") as e:
        edgekit.convert(folder, tmp_path / "art", precision="fp32")
    assert "global transformer" in str(e.value.found)
