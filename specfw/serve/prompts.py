"""Chat messages to prompt ids, for each model on its own.

A model with a chat template gets its messages rendered by that template (as
``specfw run --chat`` does for one user turn); a model without one (the
default pair's base Gemma target) gets a plain transcript, as
``mlx_lm.server`` does: ``USER: ...`` / ``ASSISTANT: ...`` lines ending in
``ASSISTANT:``, and the reply stops before a new ``USER:`` line. Target
and drafter may render differently; only the generated text has to agree.
"""

from __future__ import annotations

from specfw.chat import _raise, _token_text, chat_template
from specfw.models import LoadedModel
from specfw.run import prompt_ids
from specfw.tokenizers import Tokenizer

TRANSCRIPT_ROLES = {"system": "SYSTEM", "developer": "SYSTEM", "user": "USER", "assistant": "ASSISTANT"}
# A reply in a transcript ends where the model starts writing the user's next turn.
TRANSCRIPT_STOP = "\nUSER:"


def has_template(loaded: LoadedModel | None) -> bool:
    return loaded is not None and chat_template(loaded.path) is not None


def transcript(messages: list[dict]) -> str:
    """The plain-text chat prompt of a model without a chat template."""
    lines = [f"{TRANSCRIPT_ROLES[m['role']]}: {m['content'].strip()}" for m in messages]
    return "\n".join(lines) + "\nASSISTANT:"


def chat_ids(loaded: LoadedModel | None, tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """Ids of ``messages`` ready for the assistant's reply, in ``loaded``'s own chat template."""
    config = chat_template(loaded.path) if loaded is not None else None
    if config is None:
        return prompt_ids(tokenizer, transcript(messages))
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.globals["raise_exception"] = _raise
    text = env.from_string(config["chat_template"]).render(
        messages=messages,
        add_generation_prompt=True,
        bos_token=_token_text(config.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")),
    )
    ids = tokenizer.encode_with_specials(text)
    if tokenizer.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        ids = [tokenizer.bos_id] + ids
    return ids
