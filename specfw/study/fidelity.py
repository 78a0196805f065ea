"""Model-free translation fidelity: the scheduler's cycle with a perfect drafter and a perfect target.

``specfw fidelity`` isolates translation from model quality. A real text is
tokenized twice: ``D`` by the draft tokenizer and ``T`` by the target
tokenizer (both with ``encode_continuation``, so their bytes are exactly the
text's bytes). :func:`replay_text` then runs the cycle of
:func:`specfw.scheduler.speculative_stream` step for step, with the two models
replaced:

* the *perfect target* generates ``T``: its first token comes from the prompt
  pass, and each cycle it accepts the longest prefix of the translated
  proposal equal to ``T``'s next ids, then adds ``T``'s next id (the greedy
  verifier's rule). Generation stops at the end of ``T`` (``max_tokens =
  len(T)``), as a run with that ``--max-tokens`` would.
* the *perfect drafter* (:class:`PerfectDrafter`) proposes the true
  continuation of the text in the draft vocabulary, given its context, and
  only ids the translator allows where it restricts the drafter
  (``allowed_mask``, as ``tli`` does).

Everything between them is the scheduler's own logic, mirrored rather than
shared (the scheduler owns the models' caches): the same proposal bytes with a
held-back partial UTF-8 character, the same :class:`~specfw.protocols.Proposal`
and :class:`~specfw.protocols.Acceptance`, the same ``complete_utf8_prefix``
bookkeeping of synced bytes, the same ``draft_context[:keep] + append``
rebuild of the drafter's context. Prompts are what ``specfw run`` builds for
an empty prompt: BOS where the tokenizer adds one.

Counted per text and summed over texts (:class:`FidelityStats`): ``cycles``,
``proposed`` / ``accepted`` (target ids, as the scheduler counts them),
``zero_new_cycles`` (the drafter proposed ids but the translator returned
none: the paper's Section 6.4 absorption), ``back_mismatches`` (cycles that
began with a drafter context that is not the draft tokenization of the
accepted text, see :meth:`PerfectDrafter.in_sync`) and the time spent in
``to_target`` + ``to_draft``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from specfw.errors import ConfigError, SpecfwError
from specfw.protocols import Acceptance, Proposal, Translator, TranslatorSetup
from specfw.text import common_prefix_len, complete_utf8_prefix
from specfw.tokenizers import Tokenizer, decode_bytes, same_vocabulary, single_byte_ids

__all__ = [
    "DEFAULT_TRANSLATORS",
    "AllowedVocabulary",
    "FidelityReport",
    "FidelityResult",
    "FidelityStats",
    "PerfectDrafter",
    "PreparedText",
    "TextReplay",
    "UnreproducibleText",
    "build_translator",
    "empty_prompt_ids",
    "load_texts",
    "prepare_text",
    "replay_text",
    "run_fidelity",
]

DEFAULT_TRANSLATORS: tuple[str, ...] = ("none", "naive", "context", "tli")
"""Measured when no list is given; one that refuses to start (a third-party one, say) is reported as skipped."""

_PLACEHOLDER_PROMPT = "(specfw fidelity)"  # RunConfig needs a prompt; no translator reads it


# --------------------------------------------------------------------------- counters


@dataclass
class FidelityStats:
    """Counters of one replay, or their sums over texts.

    ``cycles``: verification cycles (the scheduler's count: the prompt pass
    counts when the drafter drafted for it). ``proposed``: target ids the translator returned; ``accepted``:
    how many of them the perfect target accepted. ``zero_new_cycles``: cycles
    where the drafter proposed at least one id and the translator returned
    none. ``back_mismatches``: cycles that began with a drafter context other
    than the draft tokenization of the accepted text (at most ``cycles``).
    ``translate_ns``: time inside ``to_target`` and ``to_draft``, the
    back-translation of the prompt pass's token included. ``closing_cycles``:
    cycles whose translation ended on an open id and that drafted past k to
    close it (``context``'s option ``close``, as the scheduler does);
    ``closing_ids``: the draft ids drafted for that.
    """

    texts: int = 0
    cycles: int = 0
    proposed: int = 0
    accepted: int = 0
    zero_new_cycles: int = 0
    back_mismatches: int = 0
    translate_ns: int = 0
    closing_cycles: int = 0
    closing_ids: int = 0

    def add(self, other: FidelityStats) -> None:
        for name in ("texts", "cycles", "proposed", "accepted", "zero_new_cycles", "back_mismatches", "translate_ns",
                     "closing_cycles", "closing_ids"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def fidelity(self) -> float:
        """accepted / proposed (0 when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def us_per_cycle(self) -> float:
        """Translation time (both directions) per cycle, in microseconds."""
        return self.translate_ns / self.cycles / 1000 if self.cycles else 0.0


# --------------------------------------------------------------------------- the perfect drafter


def empty_prompt_ids(tokenizer: Tokenizer) -> list[int]:
    """What ``specfw run`` feeds a model before an empty prompt: BOS where the tokenizer adds one.

    Built with :func:`specfw.run.prompt_ids` on ``""``; should that ever hold
    text bytes, BOS alone is used, so the prompt stands for no text.
    """
    from specfw.run import prompt_ids  # imports MLX: only when a replay is set up

    ids = prompt_ids(tokenizer, "")
    if decode_bytes(tokenizer, ids):
        ids = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    return ids


class PerfectDrafter:
    """A drafter that always proposes the true continuation of one text.

    ``ids`` is ``D``, the text's draft tokenization (``encode_continuation``).
    Given the drafter's context (``prompt`` + generated part):

    * while the generated part is a prefix of ``D``, the next ``k`` ids of ``D``;
    * otherwise (after a back-translation mismatch), the first ``k`` ids of
      ``encode_continuation`` of the text that follows the bytes the context
      stands for, i.e. a drafter that continues the text correctly from the
      context it has. A context ending inside a character is continued with
      single-byte ids up to the next character. (Should a translator leave
      the context's bytes off the text altogether, the continuation starts
      after their longest common prefix, cut back to a character start.)
    * where the translator restricts the drafter (``allowed``), see :meth:`propose`.
    """

    def __init__(self, draft: Tokenizer, text: str, prompt: Sequence[int]) -> None:
        self.tokenizer = draft
        self.text_bytes = text.encode("utf-8")
        self.prompt = list(prompt)
        self.ids = draft.encode_continuation(text)
        self._boundary: dict[int, int] = {0: 0}  # byte offset -> number of D ids ending exactly there
        offset = 0
        for n, token_id in enumerate(self.ids, 1):
            offset += len(draft.token_bytes(token_id))
            self._boundary[offset] = n

    def _generated(self, context: Sequence[int]) -> list[int] | None:
        """The context after the prompt, or None when the prompt itself was changed."""
        n = len(self.prompt)
        return list(context[n:]) if list(context[:n]) == self.prompt else None

    def propose(self, context: Sequence[int], k: int, allowed: AllowedVocabulary | None = None) -> list[int]:
        """``k`` ids continuing the text after ``context`` (fewer at the text's end).

        With ``allowed`` (a translator's ``allowed_mask``, which the scheduler
        hands the drafter), the ids above are kept while they are allowed; from
        the first one that is not, the text goes on in the longest allowed
        tokens that spell it (see :meth:`AllowedVocabulary.longest`).
        """
        generated = self._generated(context)
        if generated is not None and self.ids[: len(generated)] == generated:
            ids = self.ids[len(generated) : len(generated) + k]
            start = len(decode_bytes(self.tokenizer, generated))
        else:
            covered = decode_bytes(self.tokenizer, context)  # the prompt's ids are specials: no bytes
            if self.text_bytes.startswith(covered):
                start = len(covered)
            else:  # a translator put other bytes there: go on after the common part, from a character start
                start = common_prefix_len(covered, self.text_bytes)
                while 0 < start < len(self.text_bytes) and self.text_bytes[start] & 0xC0 == 0x80:
                    start -= 1
            ids = self._continuation(start)[:k]
        if allowed is None:
            return ids
        kept = ids[: next((n for n, i in enumerate(ids) if i not in allowed.ids), len(ids))]
        pos = start + len(decode_bytes(self.tokenizer, kept))
        while len(kept) < k and pos < len(self.text_bytes):
            token_id = allowed.longest(self.text_bytes, pos)
            if token_id is None:
                break  # no allowed token spells the next byte: propose what there is
            kept.append(token_id)
            pos += len(self.tokenizer.token_bytes(token_id))
        return kept

    def _continuation(self, start: int) -> list[int]:
        """Draft ids for the text from byte ``start`` on, as the tokenizer encodes a continuation.

        A context that ends inside a character (its ids split it, as byte-level
        and byte-fallback vocabularies may) is continued by single-byte ids for
        the character's remaining bytes, then the text from the next character on.
        """
        rest = self.text_bytes[start:]
        lead = 0
        while lead < min(3, len(rest)) and rest[lead] & 0xC0 == 0x80:
            lead += 1
        ids: list[int] = []
        if lead:
            single = single_byte_ids(self.tokenizer)
            for byte in rest[:lead]:
                if byte not in single:
                    return ids  # no token spells this byte alone: propose what there is
                ids.append(single[byte])
        return ids + self.tokenizer.encode_continuation(rest[lead:].decode("utf-8", errors="replace"))

    def canonical(self, nbytes: int) -> list[int]:
        """The draft tokenization of the text's first ``nbytes`` bytes.

        ``D``'s prefix when it ends exactly there (a drafter that read the
        whole text has exactly that context), else ``encode_continuation`` of
        those bytes on their own.
        """
        if nbytes in self._boundary:
            return self.ids[: self._boundary[nbytes]]
        return self.tokenizer.encode_continuation(self.text_bytes[:nbytes].decode("utf-8", errors="replace"))

    def in_sync(self, context: Sequence[int], generated_bytes: bytes, synced: int) -> bool:
        """Whether ``context`` is the prompt + the draft tokenization of the accepted text.

        The accepted text is the ``synced`` bytes the scheduler has handed to
        ``to_draft``. A context that also covers the held-back partial
        character (the ``identity`` translator passes target ids through) is
        judged on the accepted bytes it covers. Anything else (the prompt
        changed, bytes missing, bytes that were not generated, or the right
        bytes in another segmentation than :meth:`canonical`) is a mismatch.
        """
        generated = self._generated(context)
        if generated is None:
            return False
        covered = decode_bytes(self.tokenizer, generated)
        if len(covered) < synced or not generated_bytes.startswith(covered):
            return False
        return generated == self.canonical(len(covered))


class AllowedVocabulary:
    """The draft ids a translator lets the drafter propose (its optional ``allowed_mask``), by their bytes.

    Where several allowed ids spell the same bytes (sentencepiece's ``"a"``
    and ``<0x61>``), the one the draft tokenizer itself produces for that
    text stands for them, else the highest id.
    """

    def __init__(self, draft: Tokenizer, ids: Iterable[int]) -> None:
        self.ids = frozenset(int(i) for i in ids if 0 <= int(i) < draft.vocab_size and not draft.is_special(int(i)))
        self.by_bytes: dict[bytes, int] = {}
        duplicates: dict[bytes, list[int]] = {}
        for token_id in sorted(self.ids):
            raw = draft.token_bytes(token_id)
            if raw and self.by_bytes.setdefault(raw, token_id) != token_id:
                duplicates.setdefault(raw, [self.by_bytes[raw]]).append(token_id)
        for raw, ids in duplicates.items():
            try:
                own = draft.encode_continuation(raw.decode("utf-8"))
            except UnicodeDecodeError:
                own = []
            self.by_bytes[raw] = own[0] if len(own) == 1 and own[0] in ids else max(ids)
        self.max_len = max(map(len, self.by_bytes), default=0)

    @classmethod
    def of(cls, translator: Translator, draft: Tokenizer) -> AllowedVocabulary | None:
        """The translator's restriction over the draft vocabulary, or None when it has none."""
        mask_of = getattr(translator, "allowed_mask", None)
        if not callable(mask_of):
            return None
        import numpy as np

        return cls(draft, np.flatnonzero(np.asarray(mask_of(draft.vocab_size), dtype=bool)).tolist())

    def longest(self, data: bytes, pos: int) -> int | None:
        """The allowed id spelling the longest prefix of ``data[pos:]``, or None if none spells even one byte."""
        for n in range(min(self.max_len, len(data) - pos), 0, -1):
            token_id = self.by_bytes.get(data[pos : pos + n])
            if token_id is not None:
                return token_id
        return None


# --------------------------------------------------------------------------- one text


@dataclass
class PreparedText:
    """One text, tokenized once for all translators and draft lengths.

    ``target_ids`` is ``T`` (the perfect target's output); the drafter holds ``D``.
    """

    text: str
    target_ids: list[int]
    drafter: PerfectDrafter


class UnreproducibleText(SpecfwError):
    """A tokenizer does not give back the text's exact bytes (it normalizes them), so no replay can match."""


def prepare_text(text: str, draft: Tokenizer, target: Tokenizer, draft_prompt: Sequence[int]) -> PreparedText:
    """Tokenize ``text`` for a replay; raises :class:`UnreproducibleText` if either side changes its bytes."""
    raw = text.encode("utf-8")
    target_ids = target.encode_continuation(text)
    drafter = PerfectDrafter(draft, text, draft_prompt)
    for tokenizer, ids in ((target, target_ids), (draft, drafter.ids)):
        if decode_bytes(tokenizer, ids) != raw:
            raise UnreproducibleText(f"{tokenizer.name} does not reproduce the bytes of {text[:40]!r}")
    return PreparedText(text, target_ids, drafter)


@dataclass
class TextReplay:
    """The outcome of one replay: its counters and every target id the perfect target emitted.

    ``prompt_pass_drafted``: the drafter drafted for the prompt pass (so it is one of ``stats.cycles``).
    """

    stats: FidelityStats
    prompt_pass_drafted: bool = False
    emitted: list[int] = field(default_factory=list)
    from_draft: list[bool] = field(default_factory=list)
    proposals: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    """Per drafting cycle: (how many target ids had been generated, the draft ids, the proposed target ids)."""
    reused: int = 0
    """Cycles that proposed leftover draft ids instead of drafting (whole and close modes: the scheduler's
    ``take_ready``)."""


def replay_text(
    prepared: PreparedText,
    draft: Tokenizer,
    target: Tokenizer,
    translator: Translator,
    k: int,
    target_prompt: Sequence[int],
    allowed: AllowedVocabulary | None = None,
) -> TextReplay:
    """Run the scheduler's cycle over one text with a perfect drafter and a perfect target.

    Mirrors :func:`specfw.scheduler.speculative_stream` (keep the two in step):
    the first cycle drafts from the prompt and is verified in the prompt
    pass; each cycle the drafter proposes ``min(k, max_tokens - generated)`` ids from its context, the
    translator maps them, the target accepts and adds its own id, the bytes
    are emitted, and (unless generation ended) the accepted text is
    back-translated and the drafter's context rebuilt from ``(keep, append)``.
    ``allowed`` is :meth:`AllowedVocabulary.of` the translator (the drafter
    only proposes those ids, as with ``DraftSide.allowed``).

    A translator with ``whole_targets`` set (``context`` with ``whole=on``)
    gets the scheduler's whole-target cycle: k counts target ids; the drafter
    drafts k + 1 ids, and more (at most 2k + 2 in all) until the translation
    yields k + 1 target ids; the first k are proposed, never the last (it may
    be a fragment). The drafted ids stay outstanding: where the
    back-translated context is the old context followed by some of them, the
    rest are the next cycle's draft ids (``take_ready``, up to 2k + 2),
    without drafting. Otherwise, with ``close_extra`` N > 0 (``context``'s
    ``close``, default 1), the scheduler's closing: where the translation of
    the k draft ids ends on an open id (``last_is_open``) and the last cycle's
    proposal was accepted in full (or ``close_always``), the drafter drafts
    on, one id at a time and at most N, until a translation holds more ids,
    and its closed ids are proposed; leftovers are modelled as in whole mode
    (up to k). With neither, the k draft ids' translation is proposed as it
    is and leftovers are not modelled.
    """
    stats = FidelityStats(texts=1)
    replay = TextReplay(stats)
    truth = prepared.target_ids
    drafter = prepared.drafter
    max_tokens = len(truth)
    target_ids = list(target_prompt)
    generated_bytes = bytearray()  # bytes of every generated target id
    synced_bytes = 0  # how many of them the drafter's context stands for
    draft_seq = list(drafter.prompt)  # the drafter's context
    first = True
    clock = time.perf_counter_ns
    whole = bool(getattr(translator, "whole_targets", False))
    close = 0 if whole else int(getattr(translator, "close_extra", 0))
    last_full = True  # the last cycle's proposal was accepted in full (the scheduler's last_draft_full)
    outstanding: list[int] = []  # whole mode: the last cycle's draft ids (the scheduler's sync.outstanding)
    ready: list[int] = []  # whole mode: outstanding ids the accepted text agrees with (sync.ready)

    def unsynced_new_bytes(ids: list[int]) -> bytes:
        proposal_bytes = decode_bytes(draft, ids)
        unsynced = bytes(generated_bytes[synced_bytes:])  # a held-back partial character
        return proposal_bytes[len(unsynced) :] if proposal_bytes.startswith(unsynced) else b""

    def translate(ids: list[int], new: bytes) -> list[int]:
        start = clock()
        out = list(translator.to_target(Proposal(ids, new, target_ids)))
        stats.translate_ns += clock() - start
        return out

    while len(replay.emitted) < max_tokens:
        generated = len(replay.emitted)
        # -- draft and translate (the first cycle too: it is verified in the prompt pass)
        k_now = min(k, max_tokens - generated)
        if (whole or close) and ready:
            draft_ids, ready = ready[: 2 * k_now + 2 if whole else k_now], []
            replay.reused += 1
        else:
            draft_ids = drafter.propose(draft_seq, k_now + 1 if whole else k_now, allowed)
        new_bytes = unsynced_new_bytes(draft_ids)
        proposed: list[int] = translate(draft_ids, new_bytes)
        if whole:
            # the scheduler's loop: draft on until k + 1 target ids, at most 2k + 2 draft ids; propose the first k
            while new_bytes and len(proposed) <= k_now and 0 < len(draft_ids) < 2 * k_now + 2:
                more = drafter.propose(draft_seq + draft_ids, min(k_now + 1 - len(proposed),
                                                                   2 * k_now + 2 - len(draft_ids)), allowed)
                if not more:
                    break
                draft_ids = draft_ids + list(more)
                new_bytes = unsynced_new_bytes(draft_ids)
                proposed = translate(draft_ids, new_bytes)
            outstanding = list(draft_ids)
            proposed = proposed[:k_now]
        elif close and proposed and (last_full or getattr(translator, "close_always", False)) and translator.last_is_open():
            # the scheduler's closing: draft on, one id at a time, until the last id is closed
            before = len(proposed)
            stats.closing_cycles += 1
            for _ in range(close):
                more = drafter.propose(draft_seq + draft_ids, 1, allowed)
                if not more:
                    break
                stats.closing_ids += 1
                draft_ids = draft_ids + list(more)
                new_bytes = unsynced_new_bytes(draft_ids)
                extended = translate(draft_ids, new_bytes)
                if len(extended) > before:
                    proposed = extended if not translator.last_is_open() else extended[:-1]
                    break
                proposed = extended or proposed
        if close:
            outstanding = list(draft_ids)
        replay.proposals.append((generated, list(draft_ids), list(proposed)))
        if draft_ids and not proposed:
            stats.zero_new_cycles += 1

        # -- verify against the perfect target: accept a prefix of T's next ids, then add T's own next id
        accepted = common_prefix_len(proposed, truth[generated:])
        if proposed:
            last_full = accepted == len(proposed)
        following = generated + accepted
        new_ids = proposed[:accepted] + truth[following : following + 1]  # nothing after the text's end
        if not first or draft_ids:  # the prompt pass counts as a cycle when the drafter drafted for it
            replay.prompt_pass_drafted = replay.prompt_pass_drafted or first
            stats.cycles += 1
            stats.proposed += len(proposed)
            stats.accepted += accepted

        # -- emit, stopping at max_tokens
        finished = False
        for i, token_id in enumerate(new_ids):
            generated_bytes += target.token_bytes(token_id)
            replay.emitted.append(token_id)
            replay.from_draft.append(i < accepted)
            if len(replay.emitted) >= max_tokens:
                finished = True
                break
        first = False
        if finished:
            break
        target_ids.extend(new_ids)

        # -- back-translate the accepted text and rebuild the drafter's context
        complete = complete_utf8_prefix(generated_bytes[synced_bytes:])
        synced_bytes += len(complete)
        start = clock()
        keep, append = translator.to_draft(Acceptance(new_ids, complete.decode("utf-8", errors="replace"), draft_seq))
        stats.translate_ns += clock() - start
        old_seq = draft_seq + outstanding
        draft_seq = draft_seq[:keep] + list(append)
        if (whole or close) and len(draft_seq) < len(old_seq) and old_seq[: len(draft_seq)] == draft_seq:
            ready = old_seq[len(draft_seq) :]  # the accepted text ends inside the drafted ids: the rest go next
        outstanding = []
        if not drafter.in_sync(draft_seq, bytes(generated_bytes), synced_bytes):
            stats.back_mismatches += 1  # the next cycle drafts from this context
    return replay


# --------------------------------------------------------------------------- translators and texts


def build_translator(name: str, draft: Tokenizer, target: Tokenizer, k: int, prefix_window: int, registry=None,
                     options: dict | None = None):
    """A translator from the plugin registry, built as ``specfw run`` builds it (same setup and config)."""
    from specfw.config import RunConfig
    from specfw.plugins import get_registry
    from specfw.run import _build

    registry = registry or get_registry()
    config = RunConfig(prompt=_PLACEHOLDER_PROMPT, translator=name, k=k, prefix_window=prefix_window,
                       translator_options=dict(options or {}))
    return _build(registry.get("translator", name).cls, TranslatorSetup(draft, target, config))


_PLAIN_TEXT_SUFFIXES = {".txt", ".text", ".md"}


def load_texts(specs: Iterable[str], limit: int | None = None) -> list[str]:
    """Texts from bundled dataset names, files, or anything :func:`specfw.study.datasets.load_dataset` reads.

    A ``.txt`` (or ``.text``, ``.md``) file holds one text per non-empty line;
    other files (JSONL, JSON, CSV, ...), folders and dataset names go through
    ``load_dataset``. ``limit`` keeps the first N texts of each source.
    """
    from specfw.study.datasets import load_dataset

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    texts: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.suffix.lower() in _PLAIN_TEXT_SUFFIXES:
            if not path.is_file():
                raise ConfigError(f"text file '{spec}' does not exist")
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError as err:
                raise ConfigError(f"{spec}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            except OSError as err:
                raise ConfigError(f"cannot read text file '{spec}': {err.strerror or err}") from None
            found = [line for line in lines if line.strip()]
            if not found:
                raise ConfigError(f"text file '{spec}' has no non-empty line")
            texts += found[:limit] if limit is not None else found
        else:
            texts += [item.prompt for item in load_dataset(spec, limit)]
    return texts


# --------------------------------------------------------------------------- the benchmark


@dataclass
class FidelityResult:
    """The summed counters of one translator at one draft length."""

    translator: str
    k: int
    stats: FidelityStats
    modes: dict[str, int] = field(default_factory=dict)
    """Cycles per mode the translator chose (its ``mode_counts``, e.g. ``context``'s back-translation
    ``append`` / ``resync``); empty for translators that have one behaviour."""

    def as_dict(self) -> dict:
        s = self.stats
        return {
            "translator": self.translator,
            "k": self.k,
            "modes": dict(self.modes),
            "fidelity": s.fidelity,
            "proposed": s.proposed,
            "accepted": s.accepted,
            "cycles": s.cycles,
            "zero_new_cycles": s.zero_new_cycles,
            "back_mismatches": s.back_mismatches,
            "closing_cycles": s.closing_cycles,
            "closing_ids": s.closing_ids,
            "us_per_cycle": round(s.us_per_cycle, 3),
        }


@dataclass
class FidelityReport:
    """Every result of one benchmark, and what could not be measured.

    ``skipped``: translator name -> the one-line reason (it refused to start,
    or raised while translating). ``texts_skipped``: texts that a tokenizer
    does not reproduce byte for byte (normalization), left out of all counts.
    """

    draft_tokenizer: str
    target_tokenizer: str
    texts: int
    prefix_window: int
    results: list[FidelityResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    texts_skipped: int = 0
    notes: list[str] = field(default_factory=list)
    translator_options: dict = field(default_factory=dict)
    """The ``--translator-option`` settings every translator was built with (``whole=on``, ...)."""

    def as_dict(self) -> dict:
        return {
            "draft_tokenizer": self.draft_tokenizer,
            "target_tokenizer": self.target_tokenizer,
            "texts": self.texts,
            "texts_skipped": self.texts_skipped,
            "prefix_window": self.prefix_window,
            "results": [r.as_dict() for r in self.results],
            "skipped": dict(self.skipped),
            "notes": list(self.notes),
            "translator_options": dict(self.translator_options),
        }


def run_fidelity(
    draft: Tokenizer,
    target: Tokenizer,
    texts: Sequence[str],
    ks: Sequence[int] = (2,),
    translators: Sequence[str] | None = None,
    prefix_window: int = 4,
    registry=None,
    progress: bool = False,
    translator_options: dict | None = None,
) -> FidelityReport:
    """Replay every text for every translator and draft length and sum the counters.

    ``translators`` None means :data:`DEFAULT_TRANSLATORS`. An unknown name
    raises :class:`~specfw.errors.PluginError`; a translator that refuses to
    start, or raises on some text, is reported in ``skipped`` and left out.
    As in ``specfw run``, the same tokenizer on both sides replaces every
    translator by ``identity``. One translator object serves all texts of a
    (translator, k) pair.
    """
    from specfw.plugins import get_registry

    if not texts:
        raise ConfigError("no texts to replay")
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"--k values must be at least 1, got {','.join(map(str, ks))}")
    registry = registry or get_registry()
    explicit = translators is not None
    names = list(dict.fromkeys(translators if explicit else DEFAULT_TRANSLATORS))
    if not names:
        raise ConfigError("no translators to measure")
    known = set(registry.names("translator"))
    for name in names:
        if explicit or name in known:
            registry.get("translator", name)  # unknown names fail here, before any work
    names = [n for n in names if n in known]
    options = dict(translator_options or {})
    _check_options(registry, names, options)
    report = FidelityReport(draft.name, target.name, 0, prefix_window, translator_options=options)
    if same_vocabulary(draft, target):
        replaced = ", ".join(names)
        report.notes.append(f"same tokenizer on both sides: {replaced} replaced by 'identity', as in specfw run")
        names = ["identity"]

    if "naive" in names and target.encode("a") != target.encode_continuation("a"):
        report.notes.append(f"naive encodes each proposal as a sequence start: {target.name} adds its dummy-prefix "
                            "space to it, so its first id almost never continues the text (the paper's naive condition)")
    draft_prompt, target_prompt = empty_prompt_ids(draft), empty_prompt_ids(target)
    prepared: list[PreparedText] = []
    for text in texts:
        try:
            prepared.append(prepare_text(text, draft, target, draft_prompt))
        except UnreproducibleText:
            report.texts_skipped += 1
    report.texts = len(prepared)
    if not prepared:
        raise ConfigError(f"none of the {len(texts)} texts is reproduced byte for byte by both tokenizers")

    bar = _progress(len(prepared) * len(names) * len(ks), progress)
    try:
        for name in names:
            results: list[FidelityResult] = []
            for k in ks:
                try:
                    translator = build_translator(name, draft, target, k, prefix_window, registry, translator_options)
                except SpecfwError as err:
                    report.skipped[name] = str(err)
                    break
                total = FidelityStats()
                for i, item in enumerate(prepared):
                    try:
                        if i == 0:
                            allowed = AllowedVocabulary.of(translator, draft)
                        total.add(replay_text(item, draft, target, translator, k, target_prompt, allowed).stats)
                    except Exception as err:  # a plugin's bug: report it, measure the others
                        report.skipped[name] = f"failed at k={k} on text {i + 1}: {type(err).__name__}: {err}"
                        break
                    bar.update(1)
                if name in report.skipped:
                    break
                modes = dict(getattr(translator, "mode_counts", None) or {})
                results.append(FidelityResult(name, k, total, modes))
                if modes:
                    shown = ", ".join(f"{mode} {count}" for mode, count in sorted(modes.items()))
                    report.notes.append(f"{name} k={k}: cycles per mode: {shown}")
            if name not in report.skipped:
                report.results += results
    finally:
        bar.close()
    report.results.sort(key=lambda r: (r.k, names.index(r.translator)))
    return report


def _check_options(registry, names: Sequence[str], options: dict) -> None:
    """Refuse a translator option that none of the measured translators takes (as ``specfw run`` refuses one).

    Every translator gets every option, as ``specfw run`` hands its one
    translator all of them; one that declares no ``option_names`` (a
    third-party one, say) may take anything.
    """
    declared = {name: getattr(registry.get("translator", name).cls, "option_names", None) for name in names}
    if any(taken is None for taken in declared.values()):
        return
    for key in options:
        if not any(key in taken for taken in declared.values()):
            takes = "; ".join(f"{name} takes {', '.join(taken)}" for name, taken in declared.items() if taken)
            raise ConfigError(f"no translator measured ({', '.join(names)}) has option '{key}'"
                              + (f"; {takes}" if takes else "; they take none"))


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr (``SPECFW_PROGRESS=0`` turns it off)."""
    from tqdm import tqdm

    disabled = not enabled or os.environ.get("SPECFW_PROGRESS") == "0"
    return tqdm(total=total, desc="replaying", unit="text", file=sys.stderr, leave=False, disable=disabled)
