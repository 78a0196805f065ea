"""The ``slrs`` verifier: string-level rejection sampling across vocabularies, lossless.

After the reference paper's SLRS (Timor et al., ICML 2025, arXiv 2502.05202):
the drafter's probability of a string is summed over every draft
tokenization that spells it (ψ, see :func:`specfw_plugins.slrs_strings.prefix_probability`),
so a target token can be accepted with probability ``min(1, p(t) / ψ(t))``
instead of only when the target's own sample equals it (``sample``).

Derivation (why each emitted id is exactly p-distributed)
---------------------------------------------------------
*What was sampled.* The drafter draws ``d_1 .. d_k`` one by one from the
rows of ``last_probs`` (``DrafterSetup.sample``); ``X`` is their byte string.
Nothing else about the draft is random.

*The candidate.* Rejection sampling is exact only with the distribution the
candidate was actually drawn from. ψ itself is not one: target tokens nest
(" k" ⊂ " ko" ⊂ " kot"), so the ψ of all tokens sum to more than 1. The
candidate here is a fixed function of ``X``: the longest target token that
the next one or two draft ids spell (maximal munch, truncated at ``depth``
draft ids). Its probability is ψ(t) minus the ψ of the longer target tokens
that extend t within those ids: the draft mass that spells t and goes no
further, summed over every tokenization. ``StringTables.extension`` gives it
for all draft ids at once from the two vocabularies' byte strings.

*Cells.* The distribution after a draft id that is a proper prefix of a
longer target token (an *open* id, " k") is needed to know where the
candidate ends. At the first position every open id with at least
``min_mass`` of ``q_1`` is expanded in one batched drafter pass (``Drafter.branch_probs``; the
sampled ``d_1`` reuses ``last_probs[1]``, what ``d_2`` was drawn from). The set
is chosen from ``q_1`` alone, before the target is consulted. This splits the
draws into cells fixed in advance: cell A (every closed id and every
expanded one) and one cell per open id left unexpanded. In cell A the
candidate's distribution ``r_A`` is known on every target id; in the cell of
an unexpanded id ``d`` the drafter's next row is known because ``d`` *was*
drawn. Rejection sampling conditional on the cell (accept ``C`` with
``min(1, p(C) / r(C))``, else draw from ``norm(max(0, p - r))``) emits exactly
``p`` in every cell, hence overall. Where nothing is left to draw (the draft
ran out, or the known bytes already close the token), ``r`` is one-hot and the
rule is ``sample``'s.

*Later positions.* Position ``i + 1`` conditions on every draft id that
position ``i`` looked at (its candidate and the coin are functions of them),
so the rest of ``X`` is distributed as the drafter's continuation after them,
and the same construction applies with the known bytes after the accepted
token as the start. An accepted candidate that is not the translator's
proposal is emitted too, but ends the cycle (the target's logits past it
belong to the proposal).

*Cost bound.* If more than ``branches`` open ids reach ``min_mass``, the
cycle verifies with the ``sample`` rule (counted in ``RunStats.fallback_cycles``). The choice reads
only ``q_1``, never the target, so both rules stay exact.

Options (``RunConfig.verifier_options``): ``branches`` (8), ``min_mass``
(0.05), ``depth`` (2: a candidate spans at most two draft ids; 1 needs no
branches).
The byte tables come from :class:`~specfw.protocols.VerifierSetup`
(``draft_vocab``/``target_vocab``): what ids spell is all string-level
verification needs, so the verifier stays free of tokenizers, and any
translator (``naive``, ``context``) can propose.
"""

from __future__ import annotations

import time
from typing import Sequence

import mlx.core as mx
import numpy as np

from specfw.errors import PluginError
from specfw.hookspecs import hookimpl
from specfw.protocols import DraftStrings, VerifierSetup
from specfw_plugins.slrs_strings import NO_TOKEN, StringTables
from specfw_plugins.verifiers import SampleVerifier

DEFAULTS = {"branches": 8, "min_mass": 0.05, "depth": 2}
_TABLES: dict[tuple[int, int], StringTables] = {}


def tables_for(draft_vocab: Sequence[bytes], target_vocab: Sequence[bytes]) -> StringTables:
    """String tables for a vocabulary pair, built once per pair of byte tables (a few seconds)."""
    key = (hash(tuple(draft_vocab)), hash(tuple(target_vocab)))
    if key not in _TABLES:
        _TABLES[key] = StringTables(draft_vocab, target_vocab)
    return _TABLES[key]


def _options(raw: dict) -> dict:
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise PluginError(f"verifier 'slrs' has no option {', '.join(map(repr, unknown))}; it takes branches, min_mass, depth")
    out = dict(DEFAULTS)
    try:
        out["branches"] = int(raw.get("branches", DEFAULTS["branches"]))
        out["min_mass"] = float(raw.get("min_mass", DEFAULTS["min_mass"]))
        out["depth"] = int(raw.get("depth", DEFAULTS["depth"]))
    except (TypeError, ValueError):
        raise PluginError(f"verifier 'slrs': branches and depth must be integers, min_mass a number; got {raw}") from None
    if out["branches"] < 0 or not 0.0 < out["min_mass"] <= 1.0 or out["depth"] not in (1, 2):
        raise PluginError("verifier 'slrs': branches must be >= 0, min_mass in (0, 1], depth 1 or 2")
    return out


class SLRSVerifier(SampleVerifier):
    """String-level rejection sampling (see the module docstring); ``sample`` where it cannot run."""

    name = "slrs"
    wants_draft_strings = True
    # The drafter samples at min(run temp, this) unless its option ``temp`` says otherwise: a sharper drafter
    # proposes the strings the target is likely to sample and leaves fewer open ids to branch on (docs/lossless.md, slrs).
    draft_temp = 0.3
    cycle_class: type = None  # set below: the walk along the draft string (a test swaps in a wrong one)

    def __init__(self, setup: VerifierSetup) -> None:
        super().__init__(setup)
        self.setup = setup
        self.options = _options(dict(getattr(setup.config, "verifier_options", {}) or {}))
        self.tables: StringTables | None = None
        if setup.draft_vocab is not None and setup.target_vocab is not None:
            self.tables = tables_for(setup.draft_vocab, setup.target_vocab)
        self.rng = np.random.default_rng(setup.config.seed + 0x51A5)  # apart from the drafter's and sample's keys

    # -- the cycle -------------------------------------------------------------

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None,
               draft_strings: DraftStrings | None = None) -> tuple[int, int]:
        if draft_strings is None or draft_strings.probs is None or self.tables is None or not proposed:
            return super().verify(logits, proposed)
        start = time.perf_counter()
        cycle = self.cycle_class(self.tables, draft_strings, self.options)
        if cycle.fell_back:
            draft_strings.fell_back = True
            draft_strings.psi_s += time.perf_counter() - start
            return super().verify(logits, proposed)
        draft_strings.psi_s += time.perf_counter() - start
        accepted, next_id = self._verify_strings(logits, proposed, draft_strings, cycle)
        self.position += accepted + 1
        return accepted, next_id

    def _verify_strings(self, logits: mx.array, proposed: Sequence[int], draft_strings: DraftStrings,
                        cycle: "_Cycle") -> tuple[int, int]:
        scaled = self._filtered_logits(logits)
        p = np.array(mx.softmax(scaled, axis=-1), dtype=np.float64)  # (n + 1, W), the one sync of the decision
        n = len(proposed)
        for i in range(n):
            start = time.perf_counter()
            candidate, r = cycle.next_candidate(p.shape[1])
            draft_strings.psi_s += time.perf_counter() - start
            if candidate is None:  # the draft string ended: the target's own draw
                return i, self._draw(p[i])
            accept = candidate != NO_TOKEN and candidate < p.shape[1] and self.rng.random() * r[candidate] < p[i, candidate]
            if not accept:
                residual = np.maximum(p[i] - r, 0.0)
                return i, self._draw(residual if residual.sum() > 0 else p[i])
            if candidate != proposed[i]:
                return i, candidate  # accepted, but the target's logits past it are the proposal's
            cycle.advance(candidate)
        return n, self._draw(p[n])

    def _draw(self, weights: np.ndarray) -> int:
        cdf = np.cumsum(weights)
        return int(min(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"), len(cdf) - 1))


class _Cycle:
    """One cycle's walk along the draft string: the candidate of each position and its distribution."""

    def __init__(self, tables: StringTables, draft: DraftStrings, options: dict) -> None:
        self.tables = tables
        self.ids = list(draft.draft_ids)
        self.q = np.array(draft.probs, dtype=np.float64)[: len(self.ids)]
        pieces = [tables.draft_bytes[d] for d in self.ids]
        self.text = b"".join(pieces)
        self.ends = np.cumsum([len(piece) for piece in pieces]).tolist()  # byte offset after each draft id
        self.depth = options["depth"]
        self.start = draft.offset  # byte where the current target position begins
        self.seen = 0  # draft ids the walk has conditioned on
        # every draft id that begins before the new text (it spells held-back bytes) is conditioned on
        while self.seen < len(self.ids) and (self.ends[self.seen - 1] if self.seen else 0) < self.start:
            self.seen += 1
        self.branches: dict[int, np.ndarray] = {}
        self.fell_back = False
        if self.start == 0 and self.depth == 2 and len(self.ids) >= 2:
            self._expand_first(options, draft)

    def _known(self) -> bytes:
        end = self.ends[self.seen - 1] if self.seen else 0
        return self.text[self.start:end]

    def _expand_first(self, options: dict, draft: DraftStrings) -> None:
        """Choose the expanded open ids from ``q_1`` alone and get their distributions in one batched pass."""
        root = self.tables.root
        q1 = self.q[0]
        open_ids = root.ids[root.open]
        mass = q1[open_ids]
        heavy = np.flatnonzero(mass >= options["min_mass"])
        if len(heavy) > options["branches"]:
            self.fell_back = True  # psi would need more branches than allowed
            return
        chosen = [int(open_ids[j]) for j in heavy[np.argsort(-mass[heavy], kind="stable")]]
        self.branches = {self.ids[0]: self.q[1]} if self.ids[0] in chosen else {}
        others = [d for d in chosen if d != self.ids[0]]
        if others:
            if draft.branch_probs is None:
                self.fell_back = True  # the drafter cannot evaluate branches
                return
            rows = np.array(draft.branch_probs(others), dtype=np.float64)
            self.branches.update(zip(others, rows))

    def next_candidate(self, width: int) -> tuple[int | None, np.ndarray]:
        """The current position's candidate (None: no draft left) and its distribution over target ids."""
        tables = self.tables
        known = self._known()
        budget = self.depth
        while True:
            if self.seen >= len(self.ids) or (known and not tables.is_open(known)):
                if not known:
                    return None, np.zeros(width)
                candidate = tables.longest(known)  # nothing left to draw: one-hot, the sample rule
                return candidate, _one_hot(candidate, width)
            extension = tables.extension(known)
            q = self.q[self.seen]
            d = self.ids[self.seen]
            candidate, is_open = extension.candidate(d)
            last = budget == 1 or self.seen + 1 == len(self.ids)
            if last:
                self.seen += 1
                return candidate, _widen(extension.pushforward(q, tables.target_width), width)
            expanded = self.branches if self.seen == 0 else {}
            if not is_open or d in expanded:
                # cell A: every closed id, and every expanded id followed by its next id
                r = extension.pushforward(q, tables.target_width, closed_only=True)
                cell_mass = float(q.sum()) - float(q[extension.ids[extension.open]].sum())
                for e, q_next in expanded.items():
                    r += q[e] * tables.extension(known + tables.draft_bytes[e]).pushforward(q_next, tables.target_width)
                    cell_mass += float(q[e])
                if d in expanded:
                    candidate, _ = tables.extension(known + tables.draft_bytes[d]).candidate(self.ids[self.seen + 1])
                    self.seen += 2
                else:
                    self.seen += 1
                return candidate, _widen(r / cell_mass, width)
            # an open id nobody expanded: condition on it (its cell), look one id further
            self.seen += 1
            known = self._known()
            budget -= 1

    def advance(self, accepted: int) -> None:
        """The candidate was accepted: the next position starts after its bytes."""
        self.start += len(self.tables.target_bytes[accepted])


def _one_hot(token: int, width: int) -> np.ndarray:
    out = np.zeros(width)
    if 0 <= token < width:
        out[token] = 1.0
    return out


def _widen(r: np.ndarray, width: int) -> np.ndarray:
    if len(r) >= width:
        return r[:width]
    return np.concatenate([r, np.zeros(width - len(r))])


SLRSVerifier.cycle_class = _Cycle


@hookimpl
def register_verifiers(register):
    register(SLRSVerifier)
