"""Built-in ``tli`` translator: token-level intersection of the two vocabularies."""

from __future__ import annotations

from specfw.errors import PluginError
from specfw.hookspecs import hookimpl
from specfw.protocols import Acceptance, Proposal, TranslatorSetup
from specfw.tokenizers import Tokenizer


class TLITranslator:
    """Token-level intersection: for now it measures the shared vocabulary and refuses to generate.

    The intersection is taken over tokens' raw bytes (so sentencepiece '▁x'
    and byte-level 'Ġx' meet as b' x'); specials are excluded.
    """

    name = "tli"

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target = setup.target_tokenizer
        self.draft_to_target = vocabulary_intersection(self.draft, self.target)
        report = self.coverage()
        raise PluginError(
            f"translator 'tli' only reports coverage in this release: {report['shared']} shared tokens, "
            f"{report['target_coverage']:.1%} of the target vocabulary, {report['draft_coverage']:.1%} of the draft's; "
            "use --translator context to generate"
        )

    def to_target(self, proposal: Proposal) -> list[int]:
        raise PluginError("translator 'tli' cannot generate yet")  # unreachable: __init__ refuses

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        raise PluginError("translator 'tli' cannot generate yet")

    def coverage(self) -> dict:
        shared = len(self.draft_to_target)
        return {
            "shared": shared,
            "target_coverage": shared / self.target.vocab_size,
            "draft_coverage": shared / self.draft.vocab_size,
        }


def vocabulary_intersection(draft: Tokenizer, target: Tokenizer) -> dict[int, int]:
    """Draft id → target id for every non-special token whose raw bytes both vocabularies hold."""
    by_bytes: dict[bytes, int] = {}
    for tid in range(target.vocab_size):
        if not target.is_special(tid):
            by_bytes.setdefault(target.token_bytes(tid), tid)
    by_bytes.pop(b"", None)
    mapping = {}
    for did in range(draft.vocab_size):
        if not draft.is_special(did):
            tid = by_bytes.get(draft.token_bytes(did))
            if tid is not None:
                mapping[did] = tid
    return mapping




@hookimpl
def register_translators(register):
    register(TLITranslator)
