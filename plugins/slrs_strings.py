"""String tables for string-level rejection sampling: which target tokens a draft string spells.

Built from two byte tables (the bytes every draft id and every target id
spells, :meth:`specfw.tokenizers.Tokenizer.token_bytes`), never from a
tokenizer: the ``slrs`` verifier may know ids and what they spell, not how text
is encoded. Everything here is about byte strings and the two vocabularies:

* :meth:`StringTables.longest` - the longest target token that a byte string
  starts with (maximal munch, the candidate rule of ``slrs``);
* :meth:`StringTables.is_open` - whether a longer target token could still
  follow (the string is a proper prefix of some target token);
* :meth:`StringTables.extension` - for a known start ``beta`` and every draft
  id ``d``: the candidate ``longest(beta + bytes(d))`` and whether
  ``beta + bytes(d)`` is open, as a compact :class:`Extension` (a default plus
  the draft ids that differ), cached per ``beta``;
* :func:`prefix_probability` - ψ(s): the drafter's probability that its
  string starts with ``s``, summed over every draft tokenization, from a trie
  (sorted byte strings) of the draft vocabulary. The verifier itself needs the
  distribution of the candidate (see :mod:`specfw_plugins.slrs`); ψ is what
  that distribution is built from, and the tests check both against brute
  force.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

NO_TOKEN = -1  # the candidate of a string that spells no target token (empty: a draft special token)


@dataclass(frozen=True)
class Extension:
    """``longest(beta + bytes(d))`` and ``is_open(beta + bytes(d))`` for every draft id ``d``, compactly.

    Every draft id not in ``ids`` has candidate ``default`` (``longest(beta)``)
    and is closed. ``ids`` (sorted) are the draft ids whose bytes run into a
    target token longer than ``beta``; ``candidates`` and ``open`` hold their
    values.
    """

    default: int
    ids: np.ndarray  # int64, sorted
    candidates: np.ndarray  # int64
    open: np.ndarray  # bool

    def candidate(self, draft_id: int) -> tuple[int, bool]:
        """(candidate, open) of one draft id."""
        i = int(np.searchsorted(self.ids, draft_id))
        if i < len(self.ids) and self.ids[i] == draft_id:
            return int(self.candidates[i]), bool(self.open[i])
        return self.default, False

    def pushforward(self, q: np.ndarray, target_width: int, closed_only: bool = False) -> np.ndarray:
        """The distribution of the candidate when the next draft id is drawn from ``q``.

        ``closed_only``: leave out the open draft ids (their mass is not
        counted anywhere). Mass on :data:`NO_TOKEN` is dropped too, so the
        result may sum to less than ``q``.
        """
        out = np.zeros(target_width, np.float64)
        weights = q[self.ids].astype(np.float64)
        if closed_only:
            weights = np.where(self.open, 0.0, weights)
        rest = float(q.sum(dtype=np.float64)) - float(q[self.ids].sum(dtype=np.float64))
        if self.default != NO_TOKEN:
            out[self.default] += rest
        valid = self.candidates != NO_TOKEN
        out += np.bincount(self.candidates[valid], weights=weights[valid], minlength=target_width)[:target_width]
        return out


class StringTables:
    """Both vocabularies as byte strings, with the look-ups string-level verification needs.

    ``draft_bytes[i]`` / ``target_bytes[i]``: what id ``i`` spells (``b""`` for
    special ids, which spell nothing: a draft special id ends the draft
    string, a target special id is never a candidate). Where several target
    ids spell the same bytes the last one is used, as
    :func:`specfw.tokenizers.single_byte_ids` does (ordinary pieces follow the
    byte-fallback ones).
    """

    def __init__(self, draft_bytes: Sequence[bytes], target_bytes: Sequence[bytes], cache_size: int = 4096) -> None:
        self.draft_bytes = list(draft_bytes)
        self.target_bytes = list(target_bytes)
        self.target_width = len(target_bytes)
        self.token_of: dict[bytes, int] = {}
        for i, piece in enumerate(target_bytes):
            if piece:
                self.token_of[piece] = i
        self._sorted_targets = sorted(self.token_of)
        # The draft vocabulary as a trie: byte strings in sorted order, a prefix's tokens are one run.
        order = sorted((piece, i) for i, piece in enumerate(self.draft_bytes) if piece)
        self._draft_sorted = [piece for piece, _ in order]
        self._draft_sorted_ids = np.array([i for _, i in order], np.int64)
        self._draft_ids_of: dict[bytes, list[int]] = {}
        for piece, i in order:
            self._draft_ids_of.setdefault(piece, []).append(i)
        self._cache: OrderedDict[bytes, Extension] = OrderedDict()
        self._cache_size = cache_size
        self.root = self._build_extension(b"")

    # -- target side ---------------------------------------------------------

    def is_open(self, s: bytes) -> bool:
        """Whether some target token is strictly longer than ``s`` and starts with it."""
        i = bisect.bisect_right(self._sorted_targets, s)
        return i < len(self._sorted_targets) and self._sorted_targets[i].startswith(s)

    def longest(self, s: bytes, start: int = 0) -> int:
        """The longest target token that ``s`` starts with and that is longer than ``start`` bytes, or NO_TOKEN."""
        best = NO_TOKEN
        for end in range(start + 1, len(s) + 1):
            head = s[:end]
            token = self.token_of.get(head)
            if token is not None:
                best = token
            if not self.is_open(head):
                break
        return best

    # -- draft side ----------------------------------------------------------

    def draft_range(self, s: bytes) -> np.ndarray:
        """Draft ids whose bytes start with ``s`` (``s`` non-empty), from the sorted trie."""
        lo = bisect.bisect_left(self._draft_sorted, s)
        after = _successor(s)
        hi = len(self._draft_sorted) if after is None else bisect.bisect_left(self._draft_sorted, after, lo)
        return self._draft_sorted_ids[lo:hi]

    def draft_ids_spelling(self, s: bytes) -> list[int]:
        """Draft ids whose bytes are exactly ``s``."""
        return self._draft_ids_of.get(s, [])

    def extension(self, beta: bytes) -> Extension:
        """Candidates and openness of ``beta + bytes(d)`` for every draft id ``d`` (cached per ``beta``)."""
        if not beta:
            return self.root
        found = self._cache.get(beta)
        if found is not None:
            self._cache.move_to_end(beta)
            return found
        found = self._build_extension(beta)
        self._cache[beta] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found

    def _build_extension(self, beta: bytes) -> Extension:
        """Every target token ``beta + gamma`` marks the draft ids whose bytes start with ``gamma`` (a sorted run).

        Runs are assigned shortest ``gamma`` first, so each draft id ends with
        its longest match; a draft id whose bytes are a proper prefix of some
        ``gamma`` is open.
        """
        default = self.longest(beta) if beta else NO_TOKEN
        size = len(self._draft_sorted)
        candidate = np.full(size, default, np.int64)
        is_open = np.zeros(size, bool)
        lo = bisect.bisect_right(self._sorted_targets, beta)  # strictly longer tokens that start with beta
        after = _successor(beta)
        hi = len(self._sorted_targets) if after is None else bisect.bisect_left(self._sorted_targets, after, lo)
        cut = len(beta)
        open_ids: set[int] = set()
        previous = b""
        for piece in self._sorted_targets[lo:hi]:  # sorted: each trie node below beta is visited once
            gamma = piece[cut:]
            shared = 0
            limit = min(len(gamma), len(previous))
            while shared < limit and gamma[shared] == previous[shared]:
                shared += 1
            for end in range(max(shared, 1), len(gamma)):
                open_ids.update(self._draft_ids_of.get(gamma[:end], ()))
            previous = gamma
        for piece in sorted(self._sorted_targets[lo:hi], key=len):  # longer matches overwrite shorter ones
            gamma = piece[cut:]
            start = bisect.bisect_left(self._draft_sorted, gamma)
            stop_at = _successor(gamma)
            stop = size if stop_at is None else bisect.bisect_left(self._draft_sorted, stop_at, start)
            if stop > start:
                candidate[start:stop] = self.token_of[piece]
        if open_ids:
            position = np.empty(len(self.draft_bytes), np.int64)
            position[self._draft_sorted_ids] = np.arange(size)
            is_open[position[np.fromiter(open_ids, np.int64)]] = True
        differs = (candidate != default) | is_open
        ids = self._draft_sorted_ids[differs]
        order = np.argsort(ids, kind="stable")
        return Extension(default, ids[order], candidate[differs][order], is_open[differs][order])


def _successor(s: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``s`` (None: there is none)."""
    trimmed = s.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def prefix_probability(tables: StringTables, s: bytes, distribution: Callable[[tuple[int, ...]], np.ndarray],
                       path: tuple[int, ...] = ()) -> float:
    """ψ(s): the probability that the drafter's string (after ``path``) starts with ``s``, over every tokenization.

    ``distribution(path)`` is the drafter's distribution over draft ids after
    the draft ids ``path``. A draft id whose bytes start with ``s`` finishes
    ``s`` at once (the trie range of ``s``); one whose bytes are a proper
    prefix of ``s`` is a branch: the rest of ``s`` must follow it, from the
    drafter's distribution after it.
    """
    if not s:
        return 1.0
    q = distribution(path)
    total = float(q[tables.draft_range(s)].sum(dtype=np.float64))
    for end in range(1, len(s)):
        for d in tables.draft_ids_spelling(s[:end]):
            if q[d] > 0:
                total += float(q[d]) * prefix_probability(tables, s[end:], distribution, path + (d,))
    return total
