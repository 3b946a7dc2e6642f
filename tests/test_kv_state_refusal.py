"""A causal LM whose attention layers also keep conv / recurrent state is not a KV-cache decoder:
the KV graph would drop that state and decode steps would go wrong (ZAYA's CCA layers keep their q/k
convolution window and delayed value; dropped, the steps' logits move by ~0.8 of a 3.2 logit scale
on the first step), so the KV spec refuses it, saying what it found."""
from __future__ import annotations

import pytest

from coverage_models import tiny_config
from edgekit.errors import UnsupportedError


def test_attention_layers_that_also_keep_state_are_refused_by_the_kv_spec() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from edgekit.converters.specs.causal_lm import decoder_state

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("zaya", "generate", vocab=64)).eval()
    with pytest.raises(UnsupportedError, match="keeps something other than keys/values") as e:
        decoder_state(model)
    assert "LinearAttentionAndFullAttentionLayer" in str(e.value.found)
