"""Built-in string translators: ``identity``, ``none``, ``naive`` and ``context`` (``tli`` lives in :mod:`specfw_plugins.tli`).

Forward (draft → target) they follow the reference paper's conditions, with
``context`` made safe against the boundary absorption of the paper's Section
6.4 (see :class:`ContextTranslator`). Backward (accepted target text → draft
ids) ``none`` and ``naive`` encode the new text on its own and append it (the
paper's back-translation); ``context`` does so too except where the drafter's
context ends in whitespace, where it re-encodes the new text together with a
window of the drafter's recent context (:func:`context_resync`; option
``back_window``), so that runs of whitespace read as the draft tokenizer's own
tokenization.

A ``(keep, append)`` that rewrites the end of the drafter's context costs no
extra drafter pass: the scheduler trims the drafter's KV cache to the common
prefix of the old and new context and hands the rest to the next
:meth:`~specfw.protocols.Drafter.propose` as pending ids, which the ``mlx``
drafter forwards in the same pass that yields its first proposal.
"""

from __future__ import annotations

from typing import Sequence

from specfw.errors import PluginError
from specfw.hookspecs import hookimpl
from specfw.protocols import Acceptance, Proposal, TranslatorSetup
from specfw.text import (
    common_prefix_len,
    complete_text,
    complete_utf8_prefix,
    leading_continuation_bytes,
    spelled_prefix,
)
from specfw.tokenizers import Tokenizer, single_byte_ids

# A window is extended back to a word start by at most this many extra ids.
WORD_START_REACH = 16
_WHITESPACE = b" \t\n\r"
_SPACES = b" \t\n\r\x0b\x0c"

AUTO_BACK_WINDOW = 8
"""Draft ids re-encoded with the accepted text in the ``context`` translator's ``back_window=auto`` cycles that resync."""
CLOSE_EXTRA = 1
"""Draft ids past k that ``context`` may draft (option ``close``) to close a translation's open last id."""


# --------------------------------------------------------------------------- helpers


# Letters appended to a proposal that ends inside a word, to see which target ids
# would change if the word went on, weighted by their frequency in Polish text (per mille).
PROBE_LETTERS: tuple[tuple[str, float], ...] = tuple(
    (letter, float(weight))
    for letter, weight in zip(
        "aioeznrwstcykdpmujlłbęgąóhżśćfń",
        [89, 82, 78, 77, 56, 55, 47, 47, 43, 40, 40, 38, 35, 33, 31, 28,
         25, 23, 21, 18, 15, 11, 10, 10, 9, 11, 8, 7, 4, 3, 2],
    )
)
_PROBE_TOTAL = sum(weight for _, weight in PROBE_LETTERS)

def _is_text_id(tok: Tokenizer, token_id: int) -> bool:
    return 0 <= token_id < tok.vocab_size and not tok.is_special(token_id)


def window_start(tok: Tokenizer, ids: Sequence[int], window: int, reach: int = WORD_START_REACH) -> int:
    """Where a re-encoding window over the last ``window`` ids of ``ids`` should start.

    The window never crosses a special id (text on either side of one is
    encoded separately). It is moved back, by at most ``reach`` more ids, to a
    word start (see :func:`_starts_word`), so that re-encoding its text
    reproduces its ids: a window that starts inside a word may be split
    differently. It never starts on a UTF-8 continuation byte if an earlier
    id can give the lead byte. ``window`` 0 gives an empty window
    (``len(ids)``).
    """
    end = len(ids)
    if window <= 0 or end == 0:
        return end
    floor = end
    while floor > 0 and _is_text_id(tok, ids[floor - 1]):
        floor -= 1  # first id after the last special (or 0)
    start = max(floor, end - window)
    lowest = max(floor, start - reach)
    while start > lowest and not _starts_word(tok, ids, start, floor):
        start -= 1
    while start > floor and tok.token_bytes(ids[start])[:1] and tok.token_bytes(ids[start])[0] & 0xC0 == 0x80:
        start -= 1  # the window must hold whole characters
    return start


def _starts_word(tok: Tokenizer, ids: Sequence[int], i: int, floor: int) -> bool:
    """Whether ``ids[i]`` begins a word: it starts with whitespace, or follows a line break.

    A token after a bare space does not (``" "`` + ``"ła"``: the space belongs
    to the word, both for sentencepiece's ``▁`` and byte-level pre-tokenizers).
    """
    if i == floor:
        return True
    piece = tok.token_bytes(ids[i])
    if piece[:1] and piece[0] in _WHITESPACE:
        return True
    return tok.token_bytes(ids[i - 1])[-1:] in (b"\n", b"\r")


def context_resync(tok: Tokenizer, context: Sequence[int], new_text: str, window: int) -> tuple[int, list[int]]:
    """Back-translation with context: ``(keep, append)`` so that ``context[:keep] + append`` is canonical.

    The text of the last ``window`` ids of ``context`` (see
    :func:`window_start`) and ``new_text`` are encoded together as a
    continuation; the new ids replace the context from the first one that
    differs (the longest agreeing run is kept). So where the new text merges
    with the end of the context (``"W" "arsz"`` + ``"awa"`` → ``"Wars" "zawa"``),
    the drafter's context becomes the tokenizer's own tokenization, not a
    concatenation it never saw in training. Falls back to appending the new
    text's own encoding when the window's text does not survive re-encoding
    byte for byte (invalid UTF-8, normalization).
    """
    end = len(context)
    if not new_text:
        return end, []
    start = window_start(tok, context, window)
    recent = list(context[start:])
    recent_bytes = b"".join(map(tok.token_bytes, recent))
    try:
        text = recent_bytes.decode("utf-8") + new_text
    except UnicodeDecodeError:
        return end, tok.encode_continuation(new_text)
    ids = tok.encode_continuation(text)
    if start < end:
        if b"".join(map(tok.token_bytes, ids)) != text.encode("utf-8"):
            return end, tok.encode_continuation(new_text)
    agree = common_prefix_len(ids, recent)
    return start + agree, ids[agree:]


def ends_in_whitespace(tok: Tokenizer, context: Sequence[int]) -> bool:
    """Whether the text of ``context`` ends with whitespace (a space, tab or line break).

    Then the next accepted text continues a run of whitespace or starts the
    word after it, and encoded on its own it is split where the draft
    tokenizer never splits (``"\\n"`` + ``"    elif"`` instead of
    ``"\\n   "`` + ``" elif"``). A special id at the end is not whitespace.
    """
    if not context or not _is_text_id(tok, context[-1]):
        return False
    piece = tok.token_bytes(context[-1])
    return bool(piece) and piece[-1] in _SPACES


def merges_across(tok: Tokenizer, replaced: Sequence[int], ids: Sequence[int]) -> bool:
    """Whether one of ``ids`` (which spell ``replaced``'s bytes, then more) runs across the end of ``replaced``.

    That is where re-encoding with context merges the end of the old context
    with the new text (``"\\n"`` + ``"    elif"`` → ``"\\n   "`` ``" elif"``); a
    re-encoding that only splits the old tail differently (a drafter's own
    ``"\\n\\n"`` → ``"\\n"`` ``"\\n"``) keeps a boundary there.
    """
    end = sum(len(tok.token_bytes(i)) for i in replaced)
    offset = 0
    for token_id in ids:
        if offset == end:
            return False
        offset += len(tok.token_bytes(token_id))
        if offset > end:
            return True
    return False


class _TextBackTranslation:
    """Back-translation shared by the string translators: :func:`context_resync` over ``draft_window`` draft ids.

    ``draft_window`` 0 encodes the new text on its own and appends it.
    """

    draft: Tokenizer
    draft_window: int

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        return context_resync(self.draft, acceptance.draft_context, acceptance.new_text, self.draft_window)


class IdentityTranslator:
    """Same tokenizer on both sides: ids pass through unchanged in both directions.

    Chosen automatically when the two tokenizers are the same, whatever
    translator was asked for.
    """

    name = "identity"
    option_names = ()

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
    option_names = ()

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.draft_window = 0  # the paper's back-translation: the new text alone
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
    option_names = ()

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.draft_window = 0  # the paper's back-translation: the new text alone
        self.target = setup.target_tokenizer

    def to_target(self, proposal: Proposal) -> list[int]:
        if not proposal.new_bytes or proposal.new_bytes[0] & 0xC0 == 0x80:
            return []  # starts inside a character: no text to encode on its own
        return self.target.encode(complete_text(proposal.new_bytes))


class ContextTranslator(_TextBackTranslation):
    """Context-aware translation (the paper's condition), safe against boundary absorption.

    Forward (:meth:`to_target`): the text of the last W accepted target ids
    (W = ``prefix_window``, moved back to a word start, see
    :func:`window_start`) and the proposal's complete characters are encoded
    together as a continuation.

    * If the first ids re-tokenize to exactly the window's ids, the rest is
      the translation.
    * Otherwise the window's text was split differently. If some token
      boundary still falls exactly where the accepted text ends, the ids after
      it are the translation. If none does, the last accepted token merged
      with the proposal's first characters (the paper's absorption, whose
      worst case is "zero new tokens"); the target cannot un-merge what it
      emitted, so the proposal is encoded from the boundary on its own, with
      leading UTF-8 continuation bytes (the accepted ids ended inside a
      character, e.g. after the ``<0xC5>`` of a byte-fallback ``Ń``) spelled
      by single-byte (byte-fallback) ids.

    The translation always spells a prefix of the proposal's bytes, and a
    proposal with at least one complete character yields at least one id. A
    trailing incomplete character is held back until a later proposal
    completes it. When the proposal ends inside a word, its last id may be
    re-segmented once the word goes on (``" k"`` becomes ``" kol"``): it is
    *open* (:meth:`last_is_open`). Option ``close`` N (default 1): after a
    drafted cycle whose proposal was accepted in full (``close_when`` full,
    the default; ``always``: every cycle), the scheduler drafts up to N draft
    ids past k while the last id is open, and proposes only closed ids (ids
    the text goes on past): model-free fidelity on the bundled Polish sets
    goes from 97-99.2% to 99.45-100%, with more ids accepted per cycle,
    while a weak drafter (whose proposals are rarely accepted in full)
    seldom pays the extra draft step. An open id left after N more is proposed anyway: under
    verification a wrong last id costs one rejected position, while holding
    it back loses it every time it was right (14-21% of the accepted ids per
    cycle in the model-free replay of ``specfw fidelity``, k = 2). With the
    option ``unstable_share`` S the last ids are held back when more than S
    of the probe letters (:data:`PROBE_LETTERS`, weighted) would change them
    (see :meth:`_stable`): fewer rejected ids, fewer accepted ones.

    Backward (:meth:`to_draft`), chosen per cycle (``back_window`` auto, the
    default): where the drafter's context ends in whitespace and the draft
    tokenizer would merge it with the new text, :func:`context_resync`
    re-encodes the new text after the last :data:`AUTO_BACK_WINDOW` draft ids,
    so runs of spaces and line breaks read as the draft tokenizer splits them;
    elsewhere the accepted text is encoded
    on its own and appended (the paper's back-translation), so the drafter's
    token boundaries fall where the target's cycles ended: where the text
    repeats, the drafter copies its own context and then proposes words split
    as the target split them. On the default pair appending accepted 3% more
    ids per target pass than always re-encoding with context (13 prompts:
    0.864, against 0.837 with ``back_window`` 8), and up to 20% more on
    repetitive output. ``back_window`` 0 always appends, N > 0 always
    re-encodes after the last N draft ids.
    """

    name = "context"
    option_names = ("unstable_share", "back_window", "whole", "close", "close_when")
    whole_targets: bool = False
    """Option ``whole``: k counts target ids. The scheduler drafts until the translation yields k + 1 target ids
    (at most 2k + 2 draft ids) and proposes the first k, never the last one, which may be a fragment (a target
    token cut where the draft ids ended). Greedy verification only (where leftover proposals may be reused)."""
    close_extra: int = CLOSE_EXTRA
    """Option ``close``: at most this many draft ids past k to close an open last target id (see
    :meth:`last_is_open`); 0 proposes the translation of the k draft ids as it is. Only where leftover proposals may
    be reused (not with a verifier that reads the drafter's distributions or strings)."""
    close_always: bool = False
    """Option ``close_when``: ``full`` (default, False here) closes only in cycles after a drafted cycle whose
    proposal was accepted in full (where a closed last id can be reached); ``always`` (True) in every cycle."""
    back_window: int | None = None
    """Draft ids re-encoded with the accepted text for the drafter: None (``auto``, the default) chooses per
    cycle (:meth:`to_draft`), 0 always encodes the new text on its own, N > 0 always re-encodes after N ids."""
    unstable_share: float | None = None
    """Largest weighted share of probe letters that may change a proposed id; None (default) proposes every id."""

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target = setup.target_tokenizer
        self.window = setup.config.prefix_window
        option = setup.config.translator_options.get("unstable_share", self.unstable_share)
        if option in (None, "off", "none", "None"):
            self.unstable_share = None
        else:
            try:
                self.unstable_share = float(option)
            except (TypeError, ValueError):
                raise PluginError(f"translator 'context': unstable_share must be a number in [0, 1] or 'off', got {option!r}") from None
            if not 0.0 <= self.unstable_share <= 1.0:
                raise PluginError(f"translator 'context': unstable_share must be in [0, 1], got {self.unstable_share}")
        self.draft_window = self.back_window
        back = setup.config.translator_options.get("back_window")
        if back is not None and str(back).strip().lower() != "auto":
            try:
                self.draft_window = int(back)
            except (TypeError, ValueError):
                raise PluginError(f"translator 'context': back_window must be 'auto' or a whole number >= 0, "
                                  f"got {back!r}") from None
            if self.draft_window < 0:
                raise PluginError(f"translator 'context': back_window must be >= 0, got {self.draft_window}")
        whole = str(setup.config.translator_options.get("whole", self.whole_targets)).strip().lower()
        if whole not in ("true", "false", "1", "0", "on", "off", "yes", "no"):
            raise PluginError(f"translator 'context': whole must be on or off, got {whole!r}")
        self.whole_targets = whole in ("true", "1", "on", "yes")
        close = setup.config.translator_options.get("close", self.close_extra)
        try:
            self.close_extra = int(str(close).strip())
        except ValueError:
            raise PluginError(f"translator 'context': close must be a whole number >= 0, got {close!r}") from None
        if self.close_extra < 0:
            raise PluginError(f"translator 'context': close must be >= 0, got {self.close_extra}")
        given = setup.config.translator_options.get("close_when", "always" if self.close_always else "full")
        when = str(given).strip().lower()
        if when not in ("full", "always"):
            raise PluginError(f"translator 'context': close_when must be full or always, got {given!r}")
        self.close_always = when == "always"
        self._tail: tuple[str, list[int]] | None = None  # the last translation's text and its ids up to the last
        self.mode_counts: dict[str, int] = {}
        """Cycles per back-translation mode: ``append`` (the new text encoded on its own) and ``resync``
        (re-encoded after the drafter's last ids, :func:`context_resync`)."""

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        """Back-translation: append the new text's own encoding, or re-encode it after the drafter's last ids.

        With ``back_window`` auto (the default) the choice is made per cycle,
        by the text: where the drafter's context ends in whitespace (a space,
        tab or line break: a target cycle ended inside or right after a run of
        whitespace) and re-encoding it with the new text after the last
        :data:`AUTO_BACK_WINDOW` draft ids merges across the junction
        (:func:`merges_across`), the re-encoding is used, so the drafter reads
        the run as its own tokenizer splits it (as HF's UAG re-encodes the last
        target tokens); elsewhere (prose: cycles end on or inside words; a
        drafter's own ``"\\n\\n"`` before a word) the new text is appended,
        which accepted more there. :attr:`mode_counts` counts the cycles of each.
        """
        context, window = acceptance.draft_context, self.draft_window
        if window is None:
            window = 0
            if ends_in_whitespace(self.draft, context):
                keep, append = context_resync(self.draft, context, acceptance.new_text, AUTO_BACK_WINDOW)
                if keep < len(context) and merges_across(self.draft, context[keep:], append):
                    self._count("resync")
                    return keep, append
        self._count("resync" if window else "append")
        return context_resync(self.draft, context, acceptance.new_text, window)

    def _count(self, mode: str) -> None:
        self.mode_counts[mode] = self.mode_counts.get(mode, 0) + 1

    def to_target(self, proposal: Proposal) -> list[int]:
        self._tail = None
        new = proposal.new_bytes
        if not new:
            return []  # the proposal contradicts the accepted text
        return self._translate(new, proposal.target_ids) or self._first_character(new)

    def last_is_open(self) -> bool:
        """Whether the last :meth:`to_target` call's ids may be re-split once the text goes on: an open end.

        Each probe letter (:data:`PROBE_LETTERS`) is appended to the text the
        ids spell (the window included) and the text re-encoded; the end is
        open when any probe changes an id (``" k"`` + ``"o"`` → ``" ko"``).
        Usually that is the last id; sentencepiece BPE can re-merge an earlier
        one too (Mistral's ``" A" "Ab"`` + ``"a"`` → ``" AA" "ba"``). A text
        that ends in whitespace is open too where the target joins a space to
        the word after it (sentencepiece's ``▁``). False when the call returned
        nothing, or held ids back (``unstable_share``), or fell back to one
        character.
        """
        if self._tail is None:
            return False
        text, head = self._tail
        encode = self.target.encode_continuation
        n = len(head)
        return any(encode(text + letter)[:n] != head for letter, _ in PROBE_LETTERS)

    def _translate(self, new: bytes, accepted: Sequence[int]) -> list[int]:
        target = self.target
        start = window_start(target, accepted, self.window)
        window = list(accepted[start:])
        window_bytes = b"".join(map(target.token_bytes, window))
        if not window_bytes or leading_continuation_bytes(window_bytes):
            return self._from_boundary(new)  # no window (W = 0), or no whole character to start it with
        data = complete_utf8_prefix(window_bytes + new)
        if len(data) <= len(window_bytes):
            return []  # not one complete character yet: wait for the rest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._from_boundary(new)  # invalid bytes in the window or the proposal
        ids = target.encode_continuation(text)
        pieces = [target.token_bytes(i) for i in ids]
        first = common_prefix_len(ids, window)
        if first < len(window):
            # Split differently: is there a token boundary exactly at the end of the accepted text?
            first, pos = spelled_prefix(pieces, data)
            while pos > len(window_bytes):
                first -= 1
                pos -= len(pieces[first])
            if pos != len(window_bytes):
                return self._from_boundary(new)  # absorbed: the last accepted token runs into the proposal
        count, _ = spelled_prefix(pieces[first:], data, len(window_bytes))
        if not count:
            return self._from_boundary(new)
        kept = self._stable(text, ids, first, count)
        self._tail = (text, ids[: first + kept]) if kept == count else None
        return ids[first : first + kept]

    def _stable(self, text: str, ids: list[int], first: int, count: int) -> int:
        """How many of the ``count`` proposed ids ``ids[first:]`` to keep: at least one.

        ``ids`` is the encoding of ``text``. When ``text`` ends with a letter,
        the word may go on and the tokenizer may then split its end
        differently. Each probe letter is appended and the text re-encoded; ids
        are kept while the weighted share of probes that change them (or an
        earlier one) stays at most :attr:`unstable_share`.
        """
        if count < 2 or self.unstable_share is None or not text[-1:].isalpha():
            return count
        changed_at = [0.0] * (count + 1)  # weight of probes that keep exactly j proposed ids
        head = ids[: first + count]
        encode = self.target.encode_continuation
        limit = self.unstable_share * _PROBE_TOTAL
        for letter, weight in PROBE_LETTERS:  # heaviest first, so the answer is usually known early
            same = common_prefix_len(encode(text + letter), head) - first
            changed_at[min(max(same, 0), count)] += weight
            if changed_at[count] >= _PROBE_TOTAL - limit:
                return count  # even if every other probe changed the first id, all are kept
            if changed_at[0] + changed_at[1] > limit:
                return 1  # the first or second id changes too often: one id, the least kept
        lost = 0.0
        for j in range(count):
            lost += changed_at[j]
            if lost > limit:
                return max(1, j)
        return count

    def _from_boundary(self, new: bytes) -> list[int]:
        """Target ids that spell ``new`` from the accepted boundary on, without merging across it."""
        target = self.target
        lead = leading_continuation_bytes(new)
        out: list[int] = []
        if lead:
            out = self._bytes(new[:lead])
            if not out:
                return out
        rest = complete_utf8_prefix(new[lead:])
        if rest:
            text = rest.decode("utf-8", errors="replace")
            ids = target.encode_continuation(text)
            count, _ = spelled_prefix(map(target.token_bytes, ids), rest)
            if count:
                kept = self._stable(text, ids, 0, count)
                out += ids[:kept]
                self._tail = (text, ids[:kept]) if kept == count else None
        return out

    def _bytes(self, data: bytes) -> list[int]:
        """One single-byte id per byte of ``data``, or [] if the vocabulary lacks one."""
        table = single_byte_ids(self.target)
        return [table[b] for b in data] if all(b in table for b in data) else []

    def _first_character(self, new: bytes) -> list[int]:
        """Last resort: ids for the first complete character of ``new``.

        Used when nothing else spelled the proposal's bytes (a tokenizer that
        normalizes text, e.g. NFC, or invalid UTF-8): the character's own
        encoding if it spells it, else one single-byte id per byte. Leading
        continuation bytes (the rest of a character the accepted ids left
        unfinished) can only be single-byte ids, even before the character is
        complete.
        """
        lead = leading_continuation_bytes(new)
        if lead:
            return self._bytes(new[:lead])
        char = complete_utf8_prefix(new[: _utf8_length(new[0])])
        if not char:
            return []
        ids = self.target.encode_continuation(char.decode("utf-8", errors="replace"))
        if b"".join(map(self.target.token_bytes, ids)) == char:
            return ids
        return self._bytes(char)


def _utf8_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence that ``lead`` starts (1 for ASCII and for invalid lead bytes)."""
    return 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1


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
