"""ψ and the candidate distributions of ``slrs`` against brute force, on real tokenizers.

* ψ(s) by the draft trie (:func:`prefix_probability`) equals the sum over
  every draft tokenization of every string that starts with ``s``,
  enumerated id by id over the whole draft vocabulary;
* the candidate of ``beta + bytes(d)`` (:meth:`StringTables.extension`) equals
  a direct maximal munch over the target vocabulary for every draft id;
* the first position's distribution in cell A (closed ids plus the ids
  expanded by the branch pass) equals the enumeration of every two-id draft
  path in that cell.

Strings mix Polish diacritics, spaces and characters that sentencepiece
spells with byte-fallback pieces (``<0xC5>``...). The synthetic drafter puts
its mass on the draft ids that spell pieces of the string, so every
tokenization has weight.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, strategies as st

from specfw.protocols import DraftStrings
from specfw.models.catalog import load_tokenizer
from specfw_plugins.slrs import _Cycle, DEFAULTS
from specfw_plugins.slrs_strings import NO_TOKEN, StringTables, prefix_probability

PAIRS = [("qwen2.5", "mistral-v0.1"), ("mistral-v0.1", "qwen2.5"), ("llama3", "mistral-v0.1"), ("mistral-v0.1", "llama3"),
         pytest.param(("smollm2", "gemma3"), marks=pytest.mark.slow, id="default-pair")]  # imports the GGUF tokenizers
ALPHABET = "aąbcćeęłnńoóśzźż kr.\n€"  # "€" is three bytes; mistral spells rare characters by byte pieces


@lru_cache(maxsize=None)
def tables(draft_name: str, target_name: str) -> StringTables:
    draft, target = load_tokenizer(draft_name), load_tokenizer(target_name)
    return StringTables([draft.token_bytes(i) for i in range(draft.vocab_size)],
                        [target.token_bytes(i) for i in range(target.vocab_size)])


class SyntheticDrafter:
    """A fixed random distribution over draft ids for every context, with mass on the ids that spell the string."""

    def __init__(self, tab: StringTables, text: bytes, seed: int) -> None:
        self.tab, self.text, self.seed = tab, text, seed
        self.relevant = sorted({d for i in range(len(text)) for j in range(i + 1, len(text) + 1)
                                for d in tab.draft_ids_spelling(text[i:j])} | set(tab.draft_range(text[:1]).tolist()[:50]))
        self.width = len(tab.draft_bytes)
        # plus some unrelated ids (special ones too: they end the string)
        background = np.random.default_rng(seed).choice(self.width, 200, replace=False).tolist()
        self.support = np.array(sorted(set(self.relevant) | set(background)))

    def __call__(self, path: tuple[int, ...]) -> np.ndarray:
        digest = hashlib.sha256(repr((self.seed, path)).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        q = np.zeros(self.width)
        q[self.support] = rng.dirichlet(np.full(len(self.support), 0.3))
        return q


def brute_psi(tab: StringTables, s: bytes, dist, path: tuple[int, ...] = ()) -> float:
    """Every draft id, one by one: finish ``s`` (its bytes start with the rest) or continue it (a proper prefix)."""
    q = dist(path)
    total = 0.0
    for d, piece in enumerate(tab.draft_bytes):
        if not piece or q[d] == 0:
            continue
        if piece.startswith(s):
            total += q[d]
        elif s.startswith(piece):
            total += q[d] * brute_psi(tab, s[len(piece):], dist, path + (d,))
    return total


@lru_cache(maxsize=None)
def proper_prefixes(draft_name: str, target_name: str) -> frozenset[bytes]:
    """Every string that some target token strictly extends, listed directly."""
    return frozenset(t[:end] for t in tables(draft_name, target_name).token_of for end in range(len(t)))


def munch(tab: StringTables, s: bytes) -> int:
    """Maximal munch over the target vocabulary, directly: the longest target token that ``s`` starts with."""
    best = NO_TOKEN
    for end in range(1, len(s) + 1):
        best = tab.token_of.get(s[:end], best)
    return best


@pytest.mark.parametrize("pair", PAIRS)
@given(text=st.text(ALPHABET, min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_psi_by_trie_equals_every_tokenization(pair, text, seed):
    tab = tables(*pair)
    s = text.encode("utf-8")[:6]
    dist = SyntheticDrafter(tab, s, seed)
    assert prefix_probability(tab, s, dist) == pytest.approx(brute_psi(tab, s, dist), rel=1e-9, abs=1e-15)


def test_psi_of_the_empty_string_and_of_a_byte_is_a_probability():
    tab = tables("qwen2.5", "mistral-v0.1")
    dist = SyntheticDrafter(tab, "żółw".encode(), 1)
    assert prefix_probability(tab, b"", dist) == 1.0
    # the first bytes of all strings partition the draft mass
    firsts = sum(prefix_probability(tab, bytes([b]), dist) for b in range(256))
    assert firsts == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("pair", PAIRS)
@given(beta=st.text(ALPHABET, max_size=3), data=st.data())
def test_extension_candidates_are_maximal_munch(pair, beta, data):
    tab = tables(*pair)
    raw = beta.encode("utf-8")
    extension = tab.extension(raw)
    sample = data.draw(st.lists(st.integers(0, len(tab.draft_bytes) - 1), min_size=20, max_size=20))
    relevant = tab.draft_range(raw[:1]).tolist()[:20] if raw else []
    for d in sample + relevant + extension.ids[:20].tolist():
        s = raw + tab.draft_bytes[d]
        candidate, is_open = extension.candidate(d)
        assert candidate == munch(tab, s), (raw, tab.draft_bytes[d])
        assert is_open == (bool(tab.draft_bytes[d]) and s in proper_prefixes(*pair))


@pytest.mark.parametrize("pair", PAIRS[:2])
@given(text=st.text(ALPHABET, min_size=2, max_size=4), seed=st.integers(0, 2**16),
       branches=st.integers(0, 6), min_mass=st.sampled_from([0.001, 0.02, 0.2]))
def test_first_position_distribution_equals_path_enumeration(pair, text, seed, branches, min_mass):
    """r in the cell of the drawn path, from the trie and the batched branches, equals enumerating two-id paths."""
    tab = tables(*pair)
    dist = SyntheticDrafter(tab, text.encode("utf-8"), seed)
    q1 = dist(())
    support = np.flatnonzero(q1 > 1e-6)
    rng = np.random.default_rng(seed)
    d1 = int(rng.choice(support, p=q1[support] / q1[support].sum()))
    q2 = dist((d1,))
    d2 = int(rng.choice(len(q2), p=q2))
    draft = DraftStrings([d1, d2], np.stack([q1, q2]), 0, lambda ids: np.stack([dist((d,)) for d in ids]))
    options = dict(DEFAULTS, branches=branches, min_mass=min_mass)
    cycle = _Cycle(tab, draft, options)
    if cycle.fell_back:
        return  # decided from q1 alone: nothing else to check
    candidate, r = cycle.next_candidate(len(tab.target_bytes))

    def is_open(d):
        return bool(tab.draft_bytes[d]) and tab.is_open(tab.draft_bytes[d])

    expanded = set(cycle.branches)
    in_cell_a = not is_open(d1) or d1 in expanded
    want = np.zeros(len(tab.target_bytes))
    mass = 0.0
    firsts = range(len(q1)) if in_cell_a else [d1]
    for a in firsts:
        if in_cell_a and q1[a] == 0:
            continue
        if in_cell_a and is_open(a) and a not in expanded:
            continue
        weight = q1[a] if in_cell_a else 1.0
        mass += weight
        if in_cell_a and not is_open(a):
            t = munch(tab, tab.draft_bytes[a])
            if t != NO_TOKEN:
                want[t] += weight
            continue
        qa = dist((a,))
        for b in np.flatnonzero(qa > 0):
            t = munch(tab, tab.draft_bytes[a] + tab.draft_bytes[b])
            if t != NO_TOKEN:
                want[t] += weight * qa[b]
    want /= mass
    assert candidate == munch(tab, tab.draft_bytes[d1] + (tab.draft_bytes[d2] if is_open(d1) else b""))
    np.testing.assert_allclose(r, want, atol=1e-9)
    assert r[candidate] > 0


@pytest.mark.parametrize("pair", PAIRS[:2])
@given(text=st.text("żółęą€", min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_a_position_starting_inside_a_draft_id_reads_only_the_new_bytes(pair, text, seed):
    """The target accepted the first byte of a character the draft id spells: candidates start after it."""
    tab = tables(*pair)
    raw = text.encode("utf-8")
    ids = []
    rest = raw
    while rest:  # the longest draft ids that spell the text
        end = max(e for e in range(1, len(rest) + 1) if tab.draft_ids_spelling(rest[:e]))
        ids.append(tab.draft_ids_spelling(rest[:end])[0])
        rest = rest[end:]
    dist = SyntheticDrafter(tab, raw, seed)
    probs = np.stack([dist(tuple(ids[:i])) for i in range(len(ids))])
    cycle = _Cycle(tab, DraftStrings(ids, probs, 1, None), dict(DEFAULTS))
    known = raw[1:]
    while cycle.seen < len(ids) or known:
        candidate, r = cycle.next_candidate(len(tab.target_bytes))
        if candidate is None:
            break
        piece = tab.target_bytes[candidate]
        assert piece and known.startswith(piece), (piece, known)
        assert r[candidate] > 0
        cycle.advance(candidate)
        known = known[len(piece):]
