"""Built-in ``tli`` translator: token-level intersection of the two vocabularies.

TLI (token-level intersection, from Universal Assisted Generation) replaces the
string round trip of the other translators: the drafter may only propose
tokens that both vocabularies hold, and its ids are mapped to target ids one
for one, through a table.

* **The intersection** is taken over tokens' raw bytes
  (:meth:`specfw.tokenizers.Tokenizer.token_bytes`), so sentencepiece's
  ``"▁kot"`` and byte-level BPE's ``"Ġkot"`` meet as ``b" kot"``, and a
  sentencepiece byte-fallback token ``<0xC5>`` meets a byte-level token for
  the single byte 0xC5. Special/control tokens are excluded. Where one
  vocabulary spells the same bytes twice (sentencepiece: the piece ``"a"`` and
  the byte token ``<0x61>``) the id its own tokenizer produces for that text is
  the canonical one that the other side maps to.
* **Forward** (:meth:`TLITranslator.to_target`): draft ids are mapped directly,
  cut at the first id outside the intersection (a drafter that obeys
  :meth:`~TLITranslator.allowed_mask` never proposes one).
* **Backward** (:meth:`TLITranslator.to_draft`): accepted target ids in the
  intersection are mapped directly, so the drafter's own accepted proposals
  come back unchanged and its KV cache is kept. A run of target ids outside
  the intersection (typically the verifier's own token) is re-encoded as text,
  as a continuation, in the draft vocabulary. When the scheduler holds back a
  partial UTF-8 character (before or after this cycle's ids), the whole new
  text is re-encoded, exactly as the string translators do.
* **Probabilities** (:meth:`TLITranslator.to_target_probs`): the drafter's
  distribution over draft ids is scattered through the intersection into the
  target vocabulary, so the ``speculative`` verifier can apply the standard
  rejection rule (see :mod:`specfw_plugins.verifiers`).

:func:`corpus_coverage` measures how much of a corpus' target tokenization lies
in the intersection; ``python -m specfw_plugins.tli`` prints it for model pairs
and datasets.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from specfw.errors import PluginError, SpecfwError
from specfw.hookspecs import hookimpl
from specfw.protocols import Acceptance, Proposal, TranslatorSetup
from specfw.text import complete_utf8_prefix
from specfw.tokenizers import Tokenizer

__all__ = ["Intersection", "TLITranslator", "corpus_coverage", "vocabulary_intersection", "intersection"]


# --------------------------------------------------------------------------- the intersection


@dataclass(frozen=True)
class Intersection:
    """The shared vocabulary of a (draft, target) tokenizer pair.

    ``draft_to_target``: every non-special draft id whose bytes the target
    vocabulary holds → the target's canonical id for those bytes.
    ``target_to_draft``: every non-special target id whose bytes the draft
    vocabulary holds → the draft's canonical id for those bytes.
    ``shared``: how many distinct byte strings both vocabularies hold.
    """

    draft_to_target: dict[int, int]
    target_to_draft: dict[int, int]
    shared: int
    draft_vocab: int
    target_vocab: int
    # Arrays derived from the tables (masks, scatter indices), built on first use, shared by every run of the pair.
    arrays: dict = field(default_factory=dict, compare=False, repr=False)

    def counts(self) -> dict:
        """Vocabulary-level figures: shared strings and the share of each vocabulary they cover."""
        return {
            "shared": self.shared,
            "draft_vocab": self.draft_vocab,
            "target_vocab": self.target_vocab,
            "draft_ids_shared": len(self.draft_to_target),
            "target_ids_shared": len(self.target_to_draft),
            "target_coverage": len(self.target_to_draft) / self.target_vocab,
            "draft_coverage": len(self.draft_to_target) / self.draft_vocab,
        }


def _canonical_ids(tok: Tokenizer) -> dict[bytes, int]:
    """Bytes → the id ``tok`` itself uses for them, over every non-special token with bytes.

    Bytes held by several ids (sentencepiece byte-fallback duplicates such as
    ``<0x61>`` and ``"a"``) resolve to the id that ``encode_continuation`` gives
    for that text; failing that, to the highest id (byte-fallback tokens come
    first in sentencepiece vocabularies).
    """
    by_bytes: dict[bytes, int] = {}
    duplicates: dict[bytes, list[int]] = {}
    for tid in range(tok.vocab_size):
        if tok.is_special(tid):
            continue
        raw = tok.token_bytes(tid)
        if not raw:
            continue
        first = by_bytes.setdefault(raw, tid)
        if first != tid:
            duplicates.setdefault(raw, [first]).append(tid)
    for raw, ids in duplicates.items():
        chosen = max(ids)
        try:
            encoded = tok.encode_continuation(raw.decode("utf-8"))
        except UnicodeDecodeError:
            encoded = []
        if len(encoded) == 1 and encoded[0] in ids:
            chosen = encoded[0]
        by_bytes[raw] = chosen
    return by_bytes


_CACHE: dict[tuple[str, str], Intersection] = {}


def intersection(draft: Tokenizer, target: Tokenizer) -> Intersection:
    """The :class:`Intersection` of ``draft`` and ``target``, built once per pair of vocabularies.

    Cached on the tokenizers' fingerprints, so reloading a tokenizer (a new run,
    a new test) reuses the tables. Building it is one pass over each
    vocabulary with dict lookups (well under a second for Qwen2.5's 151k ids).
    """
    key = (draft.fingerprint, target.fingerprint)
    found = _CACHE.get(key)
    if found is None:
        draft_canon, target_canon = _canonical_ids(draft), _canonical_ids(target)
        d2t = {}
        for raw, did in _items_by_id(draft, draft_canon):
            tid = target_canon.get(raw)
            if tid is not None:
                d2t[did] = tid
        t2d = {}
        for raw, tid in _items_by_id(target, target_canon):
            did = draft_canon.get(raw)
            if did is not None:
                t2d[tid] = did
        shared = len(draft_canon.keys() & target_canon.keys())
        found = _CACHE[key] = Intersection(d2t, t2d, shared, draft.vocab_size, target.vocab_size)
    return found


def _items_by_id(tok: Tokenizer, canon: dict[bytes, int]) -> Iterable[tuple[bytes, int]]:
    """(bytes, id) for every non-special id with bytes, duplicates included, in id order."""
    for tid in range(tok.vocab_size):
        if not tok.is_special(tid):
            raw = tok.token_bytes(tid)
            if raw:
                yield raw, tid


def vocabulary_intersection(draft: Tokenizer, target: Tokenizer) -> dict[int, int]:
    """Draft id → target id for every non-special token whose raw bytes both vocabularies hold."""
    return intersection(draft, target).draft_to_target


# --------------------------------------------------------------------------- corpus coverage


def corpus_coverage(draft_tok: Tokenizer, target_tok: Tokenizer, texts: Iterable[str]) -> dict:
    """How much of ``texts``, tokenized by each side, lies in the pair's intersection.

    Returns the vocabulary-level counts of :meth:`Intersection.counts` plus:

    * ``texts``: how many texts were read;
    * ``target_tokens`` / ``target_tokens_shared`` / ``target_token_coverage``:
      tokens of the target's own tokenization of the texts (``encode``, no
      BOS), how many of them lie in the intersection, and the fraction;
    * ``draft_tokens`` / ``draft_tokens_shared`` / ``draft_token_coverage``:
      the same for the draft tokenizer.

    The target fraction bounds TLI's acceptance on such text: a target token
    outside the intersection can never be proposed. A fraction is None when
    there are no tokens.
    """
    inter = intersection(draft_tok, target_tok)
    n_texts = 0
    target_total = target_shared = draft_total = draft_shared = 0
    for text in texts:
        n_texts += 1
        target_ids = target_tok.encode(text)
        target_total += len(target_ids)
        target_shared += sum(1 for i in target_ids if i in inter.target_to_draft)
        draft_ids = draft_tok.encode(text)
        draft_total += len(draft_ids)
        draft_shared += sum(1 for i in draft_ids if i in inter.draft_to_target)
    return {
        **inter.counts(),
        "texts": n_texts,
        "target_tokens": target_total,
        "target_tokens_shared": target_shared,
        "target_token_coverage": target_shared / target_total if target_total else None,
        "draft_tokens": draft_total,
        "draft_tokens_shared": draft_shared,
        "draft_token_coverage": draft_shared / draft_total if draft_total else None,
    }


# --------------------------------------------------------------------------- the translator


class TLITranslator:
    """Token-level intersection: the drafter is restricted to shared tokens, ids are mapped by table.

    The run gives the drafter :meth:`allowed_mask` (``DraftSide.allowed``);
    with sampling, :meth:`to_target_probs` hands the drafter's distribution to
    the ``speculative`` verifier. See the module docstring for the details.
    """

    name = "tli"
    option_names = ()

    def __init__(self, setup: TranslatorSetup) -> None:
        self.draft = setup.draft_tokenizer
        self.target = setup.target_tokenizer
        self.inter = intersection(self.draft, self.target)
        if not self.inter.draft_to_target:
            raise PluginError(
                f"translator 'tli': the vocabularies of {self.draft.name} and {self.target.name} share no token"
            )
        self.draft_to_target = self.inter.draft_to_target
        self.target_to_draft = self.inter.target_to_draft

    # -- restriction ---------------------------------------------------------

    def allowed_mask(self, width: int | None = None):
        """Boolean ``mx.array`` of shape ``(width,)``: True for draft ids in the intersection.

        ``width`` defaults to the draft tokenizer's vocabulary size; pass the
        draft model's logits width (its embedding may have more rows than the
        tokenizer has ids: the extra rows are never allowed).
        """
        import mlx.core as mx
        import numpy as np

        width = self.draft.vocab_size if width is None else int(width)
        mask = self.inter.arrays.get(("mask", width))
        if mask is None:
            flags = np.zeros(width, dtype=bool)
            ids = np.fromiter((d for d in self.draft_to_target if d < width), dtype=np.int64)
            flags[ids] = True
            mask = self.inter.arrays[("mask", width)] = mx.array(flags)
        return mask

    # -- translation ---------------------------------------------------------

    def to_target(self, proposal: Proposal) -> list[int]:
        out = []
        for did in proposal.draft_ids:
            tid = self.draft_to_target.get(did)
            if tid is None:
                break  # a drafter that ignored the mask: the rest cannot be proposed
            out.append(tid)
        return out

    def to_target_probs(self, draft_probs):
        """The drafter's distributions over draft ids, shape ``(n, draft width)``, in the target vocabulary.

        Returns ``(n, target vocab)`` float32: each target id gets the mass of
        the draft ids mapped to it. Rows are renormalized over the
        intersection: a drafter that obeys the mask puts all its mass there;
        one that does not has its proposals cut at the first id outside, and
        given that a row's proposal was kept, the renormalized row is exactly
        the distribution it was drawn from, so the rejection rule stays exact.
        """
        import mlx.core as mx

        width = int(draft_probs.shape[-1])
        index = self.inter.arrays.get(("scatter", width))
        if index is None:
            # a model head narrower than the tokenizer: the ids past it never occur
            items = sorted((d, t) for d, t in self.draft_to_target.items() if d < width)
            index = (mx.array([d for d, _ in items]), mx.array([t for _, t in items]))
            self.inter.arrays[("scatter", width)] = index
        src, dst = index
        gathered = draft_probs.astype(mx.float32)[:, src]
        mass = gathered.sum(axis=-1, keepdims=True)
        gathered = gathered / mx.maximum(mass, mx.array(1e-30, mx.float32))
        return mx.zeros((draft_probs.shape[0], self.target.vocab_size), mx.float32).at[:, dst].add(gathered)

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]:
        keep = len(acceptance.draft_context)
        ids = acceptance.new_target_ids
        new_bytes = b"".join(map(self.target.token_bytes, ids))
        if acceptance.new_text.encode("utf-8") == new_bytes:
            direct = self.target_ids_to_draft(ids)
            if direct is not None:
                return keep, direct
        # A partial character held back by the scheduler (or bytes that are not UTF-8): what the
        # drafter has not seen is exactly new_text, re-encoded as a continuation.
        return keep, self.draft.encode_continuation(acceptance.new_text)

    def target_ids_to_draft(self, ids: Sequence[int]) -> list[int] | None:
        """Draft ids for ``ids``: mapped one for one where shared, runs of the others re-encoded as text.

        A run outside the intersection is extended until its bytes end on a
        character boundary; None if a run cannot be decoded on its own (it
        would begin inside a character).
        """
        out: list[int] = []
        run = bytearray()
        for tid in ids:
            did = self.target_to_draft.get(tid)
            if did is not None and not run:
                out.append(did)
                continue
            run += self.target.token_bytes(tid)
            if complete_utf8_prefix(run) == bytes(run):
                try:
                    text = run.decode("utf-8")
                except UnicodeDecodeError:
                    return None
                out.extend(self.draft.encode_continuation(text))
                run.clear()
        return None if run else out

    def coverage(self) -> dict:
        """The vocabulary-level counts (:meth:`Intersection.counts`)."""
        return self.inter.counts()


@hookimpl
def register_translators(register):
    register(TLITranslator)


# --------------------------------------------------------------------------- command line


def load_pair_tokenizer(spec: str) -> Tokenizer:
    """A tokenizer from a registry name, a tokenizer file or folder, or a known model name (imported on first use)."""
    from specfw.models.catalog import KNOWN_MODELS, ensure_model, load_tokenizer

    if spec in KNOWN_MODELS:
        return load_tokenizer(ensure_model(spec))
    return load_tokenizer(spec)


def coverage_table(pairs: Sequence[tuple[str, str]], datasets: Sequence[str], limit: int | None = None) -> list[dict]:
    """:func:`corpus_coverage` of every (draft, target) pair on every dataset (``specfw.study.datasets`` specs).

    Each row is the coverage dict plus ``draft``, ``target`` and ``dataset``;
    besides each single dataset, a row with ``dataset`` = ``"+".join(datasets)``
    covers all of them together when there are several.
    """
    from specfw.study.datasets import load_dataset

    texts = {name: [item.prompt for item in load_dataset(name, limit)] for name in datasets}
    groups = dict(texts)
    if len(datasets) > 1:
        groups["+".join(datasets)] = [t for name in datasets for t in texts[name]]
    rows = []
    for draft_spec, target_spec in pairs:
        draft, target = load_pair_tokenizer(draft_spec), load_pair_tokenizer(target_spec)
        for name, group in groups.items():
            rows.append({"draft": draft_spec, "target": target_spec, "dataset": name,
                         **corpus_coverage(draft, target, group)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m specfw_plugins.tli --pair DRAFT:TARGET --dataset NAME ...``: print TLI coverage."""
    parser = argparse.ArgumentParser(
        prog="python -m specfw_plugins.tli",
        description="TLI vocabulary intersection and corpus coverage of draft/target tokenizer pairs.",
    )
    parser.add_argument("--pair", action="append", required=True,
                        help="DRAFT:TARGET, each a tokenizer name (qwen2.5, mistral-v0.1, llama3, ...), "
                        "a tokenizer file or folder, or a known model name (repeatable)")
    parser.add_argument("--dataset", action="append", default=[],
                        help="pl-questions, pl-grammar, en-prompts, a JSONL file, ... (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="first N prompts of each dataset")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    try:
        pairs = []
        for pair in args.pair:
            draft, sep, target = pair.partition(":")
            if not sep or not draft or not target:
                raise SpecfwError(f"--pair needs DRAFT:TARGET, got {pair!r}")
            pairs.append((draft, target))
        if args.dataset:
            rows = coverage_table(pairs, args.dataset, args.limit)
        else:
            rows = [{"draft": d, "target": t, **intersection(load_pair_tokenizer(d), load_pair_tokenizer(t)).counts()}
                    for d, t in pairs]
    except SpecfwError as err:
        print(f"specfw: error: {err}", file=sys.stderr)
        return 2
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        line = (f"{row['draft']} -> {row['target']}: {row['shared']} shared tokens, "
                f"{row['target_coverage']:.1%} of the target vocabulary, {row['draft_coverage']:.1%} of the draft's")
        if "dataset" in row:
            cov = row["target_token_coverage"]
            line += (f" | {row['dataset']}: {row['target_tokens_shared']}/{row['target_tokens']} target tokens shared"
                     f" ({'-' if cov is None else f'{cov:.1%}'})")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
