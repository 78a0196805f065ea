"""Chat messages to prompt ids, for each model on its own.

A model with a chat template gets its messages rendered by that template (as
``specfw run --chat`` does for one user turn); a model without one (the
default pair's base Gemma target) gets a plain transcript, as
``mlx_lm.server`` does: ``USER: ...`` / ``ASSISTANT: ...`` lines ending in
``ASSISTANT:``, and the reply stops before a new ``USER:`` line; a tool
result is a ``TOOL:`` line, an earlier assistant turn's tool calls are
written out as JSON. A template that cannot render the messages (one that
refuses a ``tool`` role, say) gets the request refused with its reason
(:class:`TemplateRefused`); the drafter's side then falls back to the plain
transcript, since it only proposes. Target and drafter may render
differently; only the generated text has to agree.
"""

from __future__ import annotations

import json

from specfw.chat import _raise, _token_text, chat_template
from specfw.errors import ConfigError
from specfw.models.loading import LoadedModel
from specfw.run import prompt_ids
from specfw.tokenizers import Tokenizer

TRANSCRIPT_ROLES = {"system": "SYSTEM", "developer": "SYSTEM", "user": "USER", "assistant": "ASSISTANT",
                    "tool": "TOOL"}
# A reply in a transcript ends where the model starts writing the user's next turn.
TRANSCRIPT_STOP = "\nUSER:"


def has_template(loaded: LoadedModel | None) -> bool:
    return loaded is not None and chat_template(loaded.path) is not None


class TemplateRefused(ConfigError):
    """A chat template cannot render the request's messages."""


def _transcript_text(message: dict) -> str:
    text = (message.get("content") or "").strip()
    calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
             for c in message.get("tool_calls") or ()]
    if calls:
        text = " ".join(part for part in (text, json.dumps({"tool_calls": calls}, ensure_ascii=False)) if part)
    return text


def transcript(messages: list[dict]) -> str:
    """The plain-text chat prompt of a model without a chat template."""
    lines = [f"{TRANSCRIPT_ROLES[m['role']]}: {_transcript_text(m)}" for m in messages]
    return "\n".join(lines) + "\nASSISTANT:"


def chat_ids(loaded: LoadedModel | None, tokenizer: Tokenizer, messages: list[dict], *,
             side: str = "target", fallback: bool = False) -> list[int]:
    """Ids of ``messages`` ready for the assistant's reply, in ``loaded``'s own chat template.

    A template that cannot render them raises :class:`TemplateRefused` naming ``side`` and its reason, or,
    with ``fallback``, gives way to the plain transcript.
    """
    config = chat_template(loaded.path) if loaded is not None else None
    if config is None:
        return prompt_ids(tokenizer, transcript(messages))
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.globals["raise_exception"] = _raise
    try:
        text = env.from_string(config["chat_template"]).render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=_token_text(config.get("bos_token")),
            eos_token=_token_text(config.get("eos_token")),
        )
    except (ConfigError, jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
        if fallback:
            return prompt_ids(tokenizer, transcript(messages))
        reason = str(exc).removeprefix("chat template error: ") or type(exc).__name__
        roles = sorted({m["role"] for m in messages} - {"system", "user", "assistant"})
        extra = f" (they include {', '.join(repr(r) for r in roles)} messages)" if roles else ""
        raise TemplateRefused(f"messages: the {side} model's chat template cannot render these messages{extra}: "
                              f"{reason}") from None
    ids = tokenizer.encode_with_specials(text)
    if tokenizer.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        ids = [tokenizer.bos_id] + ids
    return ids
