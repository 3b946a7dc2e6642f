"""Chat: the tokenizer's chat template rendered as transformers' `apply_chat_template`, and `run --chat`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
import generate_models as gm
from edgekit.errors import ConfigError, InputError
from reliability_models import converted_gpt2

# ChatML with a default system turn, the special-token variable, a loop control and a check.
TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations start with a "
    "user or system turn') }}{% endif %}"
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are terse.<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m['content'] == '' %}{% continue %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATS = [
    [{"role": "user", "content": "What does the for statement do?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "  def?  "},
     {"role": "assistant", "content": "A definition."}, {"role": "user", "content": ""},
     {"role": "user", "content": "And class?"}],
]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    from transformers import AutoTokenizer

    tok = gm.train_tokenizer()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    root = tmp_path_factory.mktemp("chat")
    src = gm.save_tiny("llama", root / "hf", tok)
    (src / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": TEMPLATE, "bos_token": "<eos>",
        "eos_token": "<|im_end|>", "pad_token": "<pad>"}))
    art = edgekit.convert(src, root / "art").path
    return src, art, AutoTokenizer.from_pretrained(src)


def test_prompt_ids_equal_apply_chat_template(chat_model: tuple[Path, Path, Any]) -> None:
    src, art, hf_tok = chat_model
    model = edgekit.load(art, device="cpu")
    assert model.contract.chat is not None and model.contract.chat.special_tokens["bos_token"] == "<eos>"
    for conv in CHATS:
        want = hf_tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
        text = model.chat_prompt(conv)[0]
        assert text == hf_tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        assert model.encode([text], special=False)[0] == list(want)
        ids = np.array([want], np.int64)
        reply = model.generate(messages=conv, max_new_tokens=8, eos_token_id=[])
        out = model.generate(input_ids=ids, max_new_tokens=8, eos_token_id=[])
        assert reply == model.decode(out[0, ids.shape[1]:])
    batch = model.generate(messages=CHATS, max_new_tokens=6, eos_token_id=[])
    assert isinstance(batch, list) and len(batch) == 2
    pieces = list(model.generate(messages=CHATS[0], max_new_tokens=8, eos_token_id=[], stream=True))
    assert "".join(pieces) == model.generate(messages=CHATS[0], max_new_tokens=8, eos_token_id=[])


def test_generation_matches_transformers_on_the_chat_prompt(chat_model: tuple[Path, Path, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    src, art, hf_tok = chat_model
    enc = hf_tok.apply_chat_template(CHATS[1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(src).eval().generate(**enc, max_new_tokens=10, num_beams=3)
    got = edgekit.load(art, device="cpu").generate(messages=CHATS[1], max_new_tokens=10, num_beams=3)
    assert got == hf_tok.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_template_errors_and_the_sandbox(chat_model: tuple[Path, Path, Any],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from edgekit.tasks import chat

    model = edgekit.load(chat_model[1], device="cpu")
    with pytest.raises(InputError, match="start with a user"):
        model.generate(messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(InputError):
        model.generate(messages=[])
    with pytest.raises(InputError, match="could not render"):  # the sandbox refuses Python internals
        chat.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", [{"role": "user", "content": "x"}], {})
    with pytest.raises(InputError, match="could not render"):
        chat.render("{% set ns = namespace(_x=1) %}", [{"role": "user", "content": "x"}], {})
    gpt = converted_gpt2(tmp_path_factory)  # no chat template in its tokenizer folder
    with pytest.raises(ConfigError, match="no chat template"):
        edgekit.load(gpt, device="cpu").generate(messages=CHATS[0])


def test_cli_chat_turns(chat_model: tuple[Path, Path, Any]) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    art = chat_model[1]
    r = CliRunner().invoke(cli, ["run", str(art), "--chat", "--max-new-tokens", "5", "--json"],
                           input="What is a tuple?\n\nAnd a list?\n")
    assert r.exit_code == 0, r.output
    turns = json.loads(r.stdout)["results"]
    assert [t["user"] for t in turns] == ["What is a tuple?", "And a list?"]
    model = edgekit.load(art, device="cpu")
    first = model.generate(messages=[{"role": "user", "content": "What is a tuple?"}], max_new_tokens=5,
                           do_sample=False)
    second = model.generate(messages=[{"role": "user", "content": "What is a tuple?"},
                                      {"role": "assistant", "content": first},
                                      {"role": "user", "content": "And a list?"}], max_new_tokens=5)
    assert [t["assistant"] for t in turns] == [first, second]
    r = CliRunner().invoke(cli, ["run", str(art), "--chat", "--prompt", "Hi", "--max-new-tokens", "4"])
    assert r.exit_code == 0 and r.output.strip() == model.generate(messages=[{"role": "user", "content": "Hi"}],
                                                                    max_new_tokens=4).strip()


@pytest.mark.parametrize("portable", [False, True], ids=["fused-attention", "portable-slots"])
def test_conversation_reuses_the_cache_and_answers_as_generate(chat_model: tuple[Path, Path, Any],
                                                               portable: bool) -> None:
    # Each turn must give exactly the tokens of a fresh generate on the whole history, while feeding
    # only the tokens after the longest prefix the cache already holds (the earlier turns).
    _, art, _ = chat_model
    model = edgekit.load(art, device="cpu", portable=portable)
    turns = [("What does the for statement do?", {}), ("And while?", {}),
             ("Say it in French.", {"do_sample": True, "temperature": 0.9, "seed": 3})]
    with model.conversation(system="Answer in one line.") as conv:
        held = np.zeros(0, np.int64)  # what the cache holds after each turn: the prompt and the answer but its last token
        for i, (text, opts) in enumerate(turns):
            history = [*conv.messages, {"role": "user", "content": text}]
            ids = np.array(model.encode(model.chat_prompt(history), special=False)[0], np.int64)
            fresh = model.generate(input_ids=ids[None], max_new_tokens=6, eos_token_id=[], **opts)
            assert conv.say(text, max_new_tokens=6, eos_token_id=[], **opts) == model.decode(fresh[0, len(ids):])
            assert conv.messages[:-1] == history and conv.messages[-1]["role"] == "assistant"
            n = min(len(held), len(ids))
            same = int(np.argmin(np.append(held[:n] == ids[:n], False)))
            assert (conv.reused_tokens, conv.last_prefill_tokens) == (same, len(ids) - same)
            if i:  # the whole earlier prompt came from the cache, and fewer tokens than the prompt were fed
                assert same >= len(prompt) and conv.last_prefill_tokens < len(ids) // 2
            prompt, held = ids, np.concatenate([ids, fresh[0, len(ids):-1]])
        with pytest.raises(ConfigError, match="a conversation answers with one"):
            conv.say("More?", num_beams=2)
    with pytest.raises(ConfigError, match="context must be an integer from 2"):
        model.conversation(context=model.max_context + 1)
    with model.conversation(context=40) as small, pytest.raises(ConfigError, match="outgrown its context of 40"):
        small.say("What does the for statement do?", max_new_tokens=30)


def test_conversation_turn_with_a_schema(chat_model: tuple[Path, Path, Any]) -> None:
    # A turn's schema shapes that turn's answer only: turn 2 answers in JSON with the cache of turn 1
    # kept, token for token a fresh structured generate of the same history; turn 3 is plain again.
    import jsonschema

    _, art, _ = chat_model
    model = edgekit.load(art, device="cpu")
    # Bounded (enum, integer range): a random model never chooses to close a free string.
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["answer", "n"], "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    turns = [("What does the for statement do?", {}), ("Is it a loop?", {"response_format": rf}),
             ("And while?", {})]
    with model.conversation(system="Answer in one line.") as conv:
        prompt = 0
        for text, opts in turns:
            history = [*conv.messages, {"role": "user", "content": text}]
            fresh = model.generate(messages=history, max_new_tokens=40, return_dict_in_generate=True, **opts)
            assert conv.say(text, max_new_tokens=40, **opts) == fresh.texts[0]
            assert np.array_equal(conv.fed, fresh.sequences[0, :-1])  # the prompt and the answer but its last token
            assert conv.reused_tokens >= prompt  # the earlier turns came from the cache
            prompt = len(model.encode(model.chat_prompt(history), special=False)[0])
            if opts:  # complete: the grammar ended it at eos, inside max_new_tokens
                jsonschema.validate(json.loads(fresh.texts[0]), schema)
                assert fresh.sequences[0, -1] in model.contract.eos_token_id and fresh.sequences.shape[1] < prompt + 40
        with pytest.raises(ConfigError, match="one of response_format=, grammar= and regex="):
            conv.say("Again?", response_format=rf, regex="a")
