"""Built-in string translators: ``identity``, ``none``, ``naive`` and ``context`` (``tli`` lives in :mod:`specfw_plugins.tli`).

Forward (draft → target) they follow the reference paper's conditions;
backward (accepted target text → draft ids) they all re-encode the new text in
the draft vocabulary as a continuation, which keeps the drafter in sync.
"""

from __future__ import annotations

from specfw.hookspecs import hookimpl
from specfw.protocols import Acceptance, Proposal, TranslatorSetup
from specfw.text import complete_text
from specfw.tokenizers import Tokenizer


class _TextBackTranslation:
    """Back-translation shared by the string translators: encode the new text as a continuation."""

    draft: Tokenizer

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        return len(acceptance.draft_context), self.draft.encode_continuation(acceptance.new_text)


class IdentityTranslator:
    """Same tokenizer on both sides: ids pass through unchanged in both directions.

    Chosen automatically when the two tokenizers are the same, whatever
    translator was asked for.
    """

    name = "identity"

    def __init__(self, setup: TranslatorSetup) -> None:
        self.target_vocab = setup.target_tokenizer.vocab_size

    def to_target(self, proposal: Proposal) -> list[int]:
        return _until_out_of_vocab(proposal.draft_ids, self.target_vocab)

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        return len(acceptance.draft_context), list(acceptance.new_target_ids)


class NoTranslation(_TextBackTranslation):
    """The paper's "no translation" condition: draft ids are sent to the target as they are.

    Proposals are cut at the first id outside the target vocabulary. The
    drafter is still kept in sync through text, so its context stays readable.
    """

    name = "none"

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target_vocab = setup.target_tokenizer.vocab_size

    def to_target(self, proposal: Proposal) -> list[int]:
        return _until_out_of_vocab(proposal.draft_ids, self.target_vocab)


class NaiveTranslator(_TextBackTranslation):
    """String round trip without context (the paper's naive / SLEM condition).

    The proposal's text is encoded by the target tokenizer as if it started a
    sequence, so a sentencepiece target adds its dummy prefix space, exactly
    the boundary artifact the paper measured.
    """

    name = "naive"

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target = setup.target_tokenizer

    def to_target(self, proposal: Proposal) -> list[int]:
        if not proposal.new_bytes or proposal.new_bytes[0] & 0xC0 == 0x80:
            return []  # starts inside a character: no text to encode on its own
        return self.target.encode(complete_text(proposal.new_bytes))


class ContextTranslator(_TextBackTranslation):
    """Re-encodes the proposal after a window of the last W accepted target ids (the paper's context-aware condition).

    The window's text and the proposal's text are encoded together as a
    continuation; the first W ids are stripped and the rest proposed.
    """

    name = "context"

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target = setup.target_tokenizer
        self.window = setup.config.prefix_window

    def to_target(self, proposal: Proposal) -> list[int]:
        if not proposal.new_bytes:
            return []
        recent = proposal.target_ids[-self.window :] if self.window else []
        window = [i for i in recent if not self.target.is_special(i)]
        window_bytes = b"".join(map(self.target.token_bytes, window))
        ids = self.target.encode_continuation(complete_text(window_bytes + proposal.new_bytes))
        return ids[len(window) :]


def _until_out_of_vocab(ids: list[int], vocab_size: int) -> list[int]:
    for i, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            return ids[:i]
    return list(ids)


@hookimpl
def register_translators(register):
    register(IdentityTranslator)
    register(NoTranslation)
    register(NaiveTranslator)
    register(ContextTranslator)
