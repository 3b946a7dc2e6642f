"""Chat prompts: the tokenizer's chat template rendered as transformers' `apply_chat_template` does.

The template is untrusted code from the model's folder, so it runs in Jinja's immutable sandbox
with exactly the environment transformers builds (`_compile_jinja_template`): trim_blocks,
lstrip_blocks, loop controls, `{% generation %}` blocks, the `tojson` filter, `raise_exception`,
`strftime_now`, and `dict` / `namespace` that refuse underscore names. Messages are rebuilt from
plain JSON types before the template sees them. The special tokens (bos_token, eos_token, ...)
are passed as template variables, and the rendered text is tokenized without adding special
tokens, so the prompt ids equal `apply_chat_template(..., add_generation_prompt=True)`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from edgekit.errors import ConfigError, InputError

Messages = Sequence[Mapping[str, Any]]


def conversations(messages: Any) -> tuple[list[list[dict[str, Any]]], bool]:
    """One conversation (a list of message dicts) or a list of them -> (conversations, batched)."""
    batched = isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], (list, tuple))
    convs = list(messages) if batched else [messages]
    if not convs or any(not isinstance(c, (list, tuple)) or not c for c in convs):
        raise InputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts "
                         "(or a list of such conversations)", found=type(messages).__name__)
    out = []
    for conv in convs:
        if not all(isinstance(m, Mapping) for m in conv):
            raise InputError("every chat message must be a dict", found=repr(conv)[:80],
                             fix="use [{'role': 'user', 'content': 'Hi'}]")
        out.append([{k: _plain(v) for k, v in m.items() if v is not None} for m in conv])
    return out, batched


def render(template: str, conversation: list[dict[str, Any]], special_tokens: Mapping[str, str],
           add_generation_prompt: bool = True) -> str:
    """The prompt text transformers renders for this conversation."""
    try:
        return _compiled(template).render(messages=conversation, tools=None, documents=None,
                                          add_generation_prompt=add_generation_prompt, **dict(special_tokens))
    except ImportError:
        raise
    except Exception as e:  # the template's own raise_exception, or a Jinja error inside it
        raise InputError(f"the chat template could not render these messages: {e}",
                         fix="check the roles and their order against the model's template") from None


def _plain(value: Any) -> Any:
    """Only JSON types reach the template (transformers' `_plain_template_data`)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    return f"<{type(value).__name__}>"


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError("chat prompts need jinja2, which is not installed", fix="pip install 'jinja2>=3.1.6'") from None

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: transformers marks assistant text with it; rendered as is."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's own signature trick
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                TemplateNamespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"the artifact's chat template is not valid Jinja: {e}",
                          fix="convert again from a folder with a valid chat_template") from None
