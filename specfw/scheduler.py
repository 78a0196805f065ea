"""The speculative decoding cycle, in one place.

Each cycle: the drafter proposes k draft ids → the translator turns them into
target ids → one target forward pass scores them → the verifier accepts a
prefix and adds the target's own next id → the cache-sync trims the target's
KV cache. Before the drafter next drafts, the translator maps the text
accepted since its last draft back into the draft vocabulary and the
drafter's cache is trimmed to what still agrees.

A drafter with ``propose_target`` (e.g. ``lookup+mlx``) is asked first for
proposals already in the target's vocabulary: those skip the drafter's model,
translation and back-translation. A cycle with nothing to verify (the k
policy chose k = 0, or no source had a proposal) is a *plain step*: the
target alone, pipelined as mlx-lm's ``generate_step`` is (the next step's
forward is queued with ``mx.async_eval`` before the current id is read)
whenever the next cycle is known to be a plain step too. The target alone
(``draft`` None) is a run of plain steps.

Proposals left over from a cycle are proposed again, without calling the
drafter, when the accepted text turns out to agree with them: with
``DraftSide.ahead`` (PEARL-style parallel drafting) the drafter drafts past
its proposal on a second MLX stream while the target verifies it, so when
the whole proposal is accepted the next proposal is often ready.

With a translator whose ``whole_targets`` is set (``context``'s option
``whole``), k counts target ids: the drafter drafts one id past k, and on
(at most 2k + 2 draft ids) until the translation yields k + 1 target ids, and
the first k are proposed; the last translated id, often a fragment (a target
token cut where the draft ids ended), never is. The draft ids past the
proposal are leftovers like any other. Only where leftovers may be reused
(no verification against the drafter's distributions).

Otherwise k counts draft ids, and a translator with ``close_extra`` N > 0
(``context``'s option ``close``, default 1) closes the proposal's last id:
where the translation of the k draft ids ends on an id the text may still go
on into (``translator.last_is_open()``, e.g. ``" k"`` of ``" kot"``), and
the last drafted cycle's proposal was accepted in full (or with
``close_always``), the drafter drafts on, one id at a time and at most N,
until a translation holds more ids than before, and only its closed ids are
proposed (``RunStats.closing_cycles``, ``closing_ids``). Same condition on
reuse as ``whole``.

The cycle is written once, as a coroutine (:func:`speculative_steps`) that
asks its driver for every target forward pass, and for every drafter pass of
a drafter with ``propose_steps`` (the ``mlx`` drafter, and ``lookup+mlx``'s
second part): :func:`speculative_stream` answers them one generation at a
time with direct calls, and :mod:`specfw.batch` answers many generations'
requests with one batched pass per draft step (per draft model) and one
batched target pass. Drafting ahead (``DraftSide.ahead``) calls the drafter
directly, on its own stream, under either driver.
Its loop reads propose → verify → count → emit → sync, each step a method
of ``_Generation`` (one generation's state across cycles; ``_Cycle`` holds
one cycle's).

Losslessness rests on one rule: every emitted id comes out of the verifier
(or the target's own next-id rule in a plain step), from the target's logits
over exactly the accepted target ids. Drafter, translator, k policy and
cache-sync can only change how many ids a cycle yields, never which ones.
"""

from __future__ import annotations

import codecs
import inspect
import time
from dataclasses import dataclass, field
from typing import Generator, Iterator, Sequence

import mlx.core as mx

from specfw.models.forward import ForwardRequest, forward_logits, prefill
from specfw.models.kv_cache import make_trimmable_cache
from specfw.models.prompt_cache import PromptCache
from specfw.protocols import Acceptance, CacheSync, CycleReport, DraftStrings, KPolicy, Drafter, Proposal, Translator, Verifier
from specfw.stats import RunStats
from specfw.text import common_prefix_len, complete_utf8_prefix
from specfw.tokenizers import Tokenizer

TARGET_SOURCE, DRAFT_SOURCE = "target", "draft"


@dataclass
class Token:
    """One generated target id, its text piece, and whether a draft proposed it."""

    id: int
    text: str
    from_draft: bool


Steps = Generator["Token | ForwardRequest", "mx.array | None", None]
Requests = Generator[ForwardRequest, "mx.array", None]  # a step that needs target or drafter passes


@dataclass
class DraftSide:
    """The drafter and everything needed to keep it in sync with the target."""

    drafter: Drafter
    translator: Translator
    tokenizer: Tokenizer
    prompt_ids: list[int]
    k: int
    allowed: mx.array | None = None
    # Map the drafter's ``last_probs`` through ``translator.to_target_probs`` and give them to the verifier.
    draft_probs: bool = False
    k_policy: KPolicy | None = None  # None: always ``k``
    # PEARL-style parallel drafting: draft this many ids past each proposal on a second stream while the target
    # verifies; when the accepted text agrees with them, the next cycle proposes them without a drafter call.
    ahead: int = 0


@dataclass
class TargetSide:
    """The target model and how its output is judged and its cache kept."""

    model: object
    tokenizer: Tokenizer
    prompt_ids: list[int]
    verifier: Verifier
    cache_sync: CacheSync
    stop_ids: frozenset[int] = field(default_factory=frozenset)


class _KChooser:
    """Asks the k policy for each source's k (at most once per source and cycle) and caps it."""

    def __init__(self, draft: DraftSide | None) -> None:
        self.draft = draft
        policy = draft.k_policy if draft else None
        parameters = inspect.signature(policy.choose).parameters if policy is not None else {}
        self.per_source = "source" in parameters
        self.tells_catch_up = "catch_up" in parameters
        self.sync: _DraftSync | None = None  # set once the drafter's context exists: the catch-up hint
        self.has_target_source = draft is not None and callable(getattr(draft.drafter, "propose_target", None))
        self.planned: dict[str, int] = {}  # k chosen ahead, while a plain step ran

    def choose(self, source: str, remaining: int) -> int:
        if source in self.planned:
            return self.planned.pop(source)
        draft = self.draft
        if draft is None:
            return 0
        if draft.k_policy is None:
            k = draft.k
        elif self.per_source and self.tells_catch_up and source == DRAFT_SOURCE and self.sync is not None:
            k = draft.k_policy.choose(source=source, catch_up=self.sync.catch_up_estimate())
        elif self.per_source:
            k = draft.k_policy.choose(source=source)
        else:
            k = draft.k_policy.choose()
        return max(0, min(k, remaining))

    def next_is_plain(self, remaining: int) -> bool:
        """Decide now whether the next cycle (``remaining`` tokens left) is a plain step: nothing to draft."""
        if self.draft is None:
            return True
        self.planned.clear()
        if self.has_target_source:
            self.planned[TARGET_SOURCE] = self.choose(TARGET_SOURCE, remaining)
            if self.planned[TARGET_SOURCE]:
                return False  # its proposals depend on the id being read: no step is queued ahead
        self.planned[DRAFT_SOURCE] = self.choose(DRAFT_SOURCE, remaining)
        if self.planned[DRAFT_SOURCE]:
            return False
        self.planned.clear()
        return True


class _DraftSync:
    """The drafter's context in draft ids, and the accepted target text it has not seen yet.

    Back-translation is deferred until the drafter next drafts, so plain steps
    and target-vocabulary proposals cost nothing on the draft side.
    """

    def __init__(self, draft: DraftSide, reuse: bool) -> None:
        self.draft = draft
        self.reuse = reuse  # leftover proposals may be proposed again (not when verification uses their q)
        self.seq = list(draft.prompt_ids)  # the drafter's context, cached or still to forward
        self.cached = 0  # how many of ``seq`` (then of seq + outstanding) the drafter's cache holds
        self.synced_bytes = 0  # how many generated bytes ``seq`` stands for
        self.unsynced_ids: list[int] = []  # target ids accepted since the last back-translation
        self.outstanding: list[int] = []  # the last proposal's draft ids, not yet reconciled with the text
        self.ready: list[int] = []  # outstanding ids the accepted text agrees with so far: the next proposal

    def accepted(self, new_ids: list[int]) -> None:
        self.unsynced_ids.extend(new_ids)

    def catch_up(self, generated_bytes: bytearray) -> list[int]:
        """Back-translate what was accepted since the last draft, trim the drafter; return the ids to forward."""
        if self.unsynced_ids:
            complete = complete_utf8_prefix(generated_bytes[self.synced_bytes :])
            self.synced_bytes += len(complete)
            keep, append = self.draft.translator.to_draft(
                Acceptance(self.unsynced_ids, complete.decode("utf-8", errors="replace"), self.seq)
            )
            old_seq = self.seq + self.outstanding
            self.seq = self.seq[:keep] + append
            self.unsynced_ids, self.outstanding = [], []
            if (self.reuse and len(self.seq) < len(old_seq) == self.cached + 1
                    and old_seq[: len(self.seq)] == self.seq):
                # The accepted text is the drafter's own context followed by some of its proposals, and the
                # drafter has fed every outstanding id but the last: the rest are its proposals from here.
                self.ready = old_seq[len(self.seq) :]
                return []
            # The drafter must always have at least one pending id to forward.
            still_valid = min(common_prefix_len(old_seq, self.seq), self.cached, len(self.seq) - 1)
            if self.cached > still_valid:
                self.draft.drafter.trim(self.cached - still_valid)
            self.cached = still_valid
        return self.seq[self.cached :]

    def catch_up_estimate(self) -> int:
        """About how many ids the drafter would forward if it drafted now (target ids stand in for draft ids)."""
        return max(len(self.seq) - self.cached, 1) + len(self.unsynced_ids)

    def take_ready(self, k: int) -> list[int]:
        """Up to ``k`` ready proposals (the drafter's cache is cut to hold all of them but the last)."""
        ready, self.ready = self.ready, []
        if len(ready) > k:
            self.draft.drafter.trim(len(ready) - k)
        return ready[:k]

    def drafted_ahead(self, ahead_ids: list[int]) -> None:
        """The drafter fed the last outstanding id and proposed ``ahead_ids`` after it."""
        self.outstanding += ahead_ids
        self.cached = len(self.seq) + len(self.outstanding) - 1

    def proposed(self, draft_ids: list[int]) -> None:
        self.cached = len(self.seq) + len(draft_ids) - 1  # every proposal but the last was fed
        self.outstanding = list(draft_ids)

    def new_bytes(self, draft_ids: list[int], generated_bytes: bytearray) -> bytes:
        """The bytes the proposal adds after the accepted text (empty when it contradicts it)."""
        proposal_bytes = b"".join(map(self.draft.tokenizer.token_bytes, draft_ids))
        unsynced = bytes(generated_bytes[self.synced_bytes :])  # a held-back partial character
        return proposal_bytes[len(unsynced) :] if proposal_bytes.startswith(unsynced) else b""


def speculative_stream(
    target: TargetSide, draft: DraftSide | None, max_tokens: int, stats: RunStats,
    prompt_cache: PromptCache | None = None,
) -> Iterator[Token]:
    """Generate up to ``max_tokens`` target ids; with ``draft`` None, the target alone.

    The cycle is :func:`speculative_steps`; this drives it alone, answering
    each of its forward requests with :func:`specfw.models.forward.forward_logits`
    (lazily, so a plain step queued ahead overlaps as in mlx-lm).
    """
    steps = speculative_steps(target, draft, max_tokens, stats, prompt_cache, overlap=True)
    try:
        item = next(steps)
        while True:
            if isinstance(item, ForwardRequest):
                model = target.model if item.model is None else item.model
                item = steps.send(forward_logits(model, item.cache, item.feed, item.n_logits))
            else:
                yield item
                item = next(steps)
    except StopIteration:
        return
    finally:
        steps.close()


def speculative_steps(
    target: TargetSide, draft: DraftSide | None, max_tokens: int, stats: RunStats,
    prompt_cache: PromptCache | None = None, overlap: bool = False,
) -> Steps:
    """The cycle as a coroutine: yields each generated :class:`Token`, and a :class:`ForwardRequest` wherever
    it needs the target's logits (``model`` None) or a drafter's (``draft`` True, on the request's ``model``),
    which the driver sends back (``steps.send(logits)``).

    A driver may answer several generations' requests with one batched pass
    (:mod:`specfw.batch`). ``overlap``: when a plain step is known to follow
    a plain step, request its forward (on the lazy next id) before the
    current id is read, as mlx-lm's ``generate_step`` does; only a driver that
    answers lazily, one generation at a time, can use that.

    The first cycle verifies a proposal in the prompt pass itself (the
    drafter drafts from the prompt, as the paper's implementation does), so
    the first pass can already yield several ids; each later cycle drafts and
    verifies, or is a plain target step. The prompt pass counts in
    ``proposed``/``accepted``/``cycles`` when it drafted (k > 0), but its
    timings (prompt prefill on both sides) go to ``prompt_s`` only and are not
    reported to the k policy. ``stats`` is filled in as tokens are produced. With
    ``prompt_cache`` the prompt prefix its caches already hold is not
    forwarded again, and the caches this generation leaves are kept there.
    """
    state = _Generation(target, draft, stats, prompt_cache, overlap)
    while stats.generated < max_tokens:
        cycle = _Cycle(remaining=max_tokens - stats.generated)
        yield from state.propose(cycle)  # the target-vocabulary source, else the drafter: draft → translate
        yield from state.verify(cycle)  # one target pass over the proposal, or a plain step
        state.count(cycle)  # stats, the k policy's report, the prompt cache's hold
        if (yield from state.emit(cycle, max_tokens)):  # a stop id, or max_tokens
            break
        state.sync(cycle)  # the accepted ids joined to the context; the target cache trimmed to them
    yield from state.finish()


@dataclass
class _Cycle:
    """One cycle: what was proposed, what the verifier made of it, and what each part cost."""

    remaining: int  # ids still to generate when the cycle starts
    k: int = 0  # draft tokens asked for (0: the cycle did not draft)
    source: str = DRAFT_SOURCE
    draft_ids: list[int] = field(default_factory=list)  # the drafter's proposal, in its own vocabulary
    proposed: list[int] = field(default_factory=list)  # target ids sent to verification
    draft_logprobs: mx.array | None = None
    draft_strings: DraftStrings | None = None
    draft_fed: int = 0  # ids the drafter forwarded before its first proposal (its catch-up)
    fed: int = 0  # ids in the target pass
    accepted: int = 0
    next_id: int = -1
    new_ids: list[int] = field(default_factory=list)  # the accepted proposals and the target's next id
    t_verify: float = 0.0
    draft_s: float = 0.0
    translate_s: float = 0.0
    verify_s: float = 0.0


class _Generation:
    """One generation's state across its cycles, and the cycle's steps in the order they run.

    ``cached``: how many ids the target's ``cache`` holds (of ``target_ids``,
    then of what was fed after them); ``queued``: a plain step's next id whose
    forward is already queued, not yet read.
    """

    def __init__(self, target: TargetSide, draft: DraftSide | None, stats: RunStats,
                 prompt_cache: PromptCache | None, overlap: bool) -> None:
        self.start = time.perf_counter()
        self.target, self.draft, self.stats = target, draft, stats
        self.prompt_cache, self.overlap = prompt_cache, overlap
        self.target_ids = list(target.prompt_ids)
        if prompt_cache is None:
            self.cache, self.cached = make_trimmable_cache(target.model), 0
        else:
            self.cache, self.cached = prompt_cache.reuse_target(target.model, self.target_ids)
        self.cached += prefill(target.model, self.cache, self.target_ids[self.cached : -1])
        stats.prompt_tokens = len(self.target_ids)
        self.verifier = target.verifier
        self.chooser = _KChooser(draft)
        self.draft_sync: _DraftSync | None = None
        if draft is not None:
            draft.drafter.reset()
            # Leftover proposals are proposed again only where verification does not use the distributions they
            # were drawn from (those rows belong to the drafter's latest call).
            self.draft_sync = _DraftSync(
                draft, reuse=not draft.draft_probs and not getattr(self.verifier, "wants_draft_strings", False))
            if prompt_cache is not None:
                self.draft_sync.cached = prompt_cache.reuse_draft(draft.drafter, self.draft_sync.seq)
            self.chooser.sync = self.draft_sync
        self.last_draft_full = True  # the last drafted cycle's proposal was accepted in full (closing pays then)
        self.ahead_stream = None
        if draft is not None and self.draft_sync.reuse and draft.ahead:
            self.ahead_stream = mx.new_stream(mx.default_device())
        self.text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.generated_bytes = bytearray()  # bytes of every generated target id
        self.queued: mx.array | None = None
        self.first_time: float | None = None  # None until the prompt pass has emitted
        self.last_time: float | None = None

    # -- propose: the target-vocabulary source first (no model, no translation), then the drafter

    def propose(self, cycle: _Cycle) -> Requests:
        draft, chooser = self.draft, self.chooser
        may_draft = draft is not None and self.queued is None
        if may_draft and chooser.has_target_source:
            self._propose_target(cycle)
        if may_draft and not cycle.proposed:
            cycle.k = chooser.choose(DRAFT_SOURCE, cycle.remaining)
        chooser.planned.clear()
        if cycle.k and cycle.source == DRAFT_SOURCE:
            yield from self._propose_draft(cycle)
        if draft is not None and (self.first_time is not None or cycle.k):
            self.stats.k_counts[cycle.k] = self.stats.k_counts.get(cycle.k, 0) + 1

    def _propose_target(self, cycle: _Cycle) -> None:
        """Proposals the drafter makes directly in the target's vocabulary (e.g. ``lookup+mlx``'s lookup)."""
        k_target = self.chooser.choose(TARGET_SOURCE, cycle.remaining)
        if k_target:
            t0 = time.perf_counter()
            proposed = list(self.draft.drafter.propose_target(self.target_ids, k_target))[:k_target]
            if proposed:
                cycle.proposed = proposed
                cycle.k, cycle.source, cycle.draft_s = k_target, TARGET_SOURCE, time.perf_counter() - t0

    def _propose_draft(self, cycle: _Cycle) -> Requests:
        """Catch the drafter up, draft, translate; ``draft_s`` covers drafting and translating the proposal,
        ``translate_s`` the back-translation and the bookkeeping after it."""
        draft, sync, k = self.draft, self.draft_sync, cycle.k
        t0 = time.perf_counter()
        to_forward = sync.catch_up(self.generated_bytes)
        t1 = time.perf_counter()
        # Whole targets: k counts target ids; draft one id past k (more where target tokens are spelled by
        # several draft ids, at most 2k + 2) and propose the first k translated ids, never the last one, which
        # may be a fragment (a target token cut where the draft ids ended). The draft ids past what was
        # proposed stay outstanding: leftovers the next cycle reuses where the accepted text agrees.
        whole = sync.reuse and getattr(draft.translator, "whole_targets", False)
        yield from self._draft(cycle, to_forward, whole)
        new_bytes, translated = yield from self._translate(cycle, whole)
        t2 = time.perf_counter()
        sync.proposed(cycle.draft_ids)
        cycle.proposed = translated[:k] if whole else translated
        cycle.draft_s, cycle.translate_s = t2 - t1, (t1 - t0) + (time.perf_counter() - t2)
        if not cycle.proposed:
            self.stats.zero_new_cycles += 1
        elif draft.draft_probs:
            cycle.draft_logprobs = _draft_logprobs(draft, len(cycle.proposed))
        if cycle.proposed and new_bytes and getattr(self.verifier, "wants_draft_strings", False):
            cycle.draft_strings = _draft_strings(draft, cycle.draft_ids, new_bytes)

    def _draft(self, cycle: _Cycle, to_forward: list[int], whole: bool) -> Requests:
        """The drafter's proposal: left over from last cycle and still valid, or drafted after ``to_forward``."""
        draft, sync, k = self.draft, self.draft_sync, cycle.k
        if sync.ready:  # proposed last cycle (drafted ahead, or past what was accepted) and still valid
            cycle.draft_ids = sync.take_ready(2 * k + 2 if whole else k)
            self.stats.reused_proposals += 1
        else:
            cycle.draft_fed = len(to_forward)
            cycle.draft_ids = yield from _draft_steps(draft, to_forward, k + 1 if whole else k)
            if cycle.draft_ids and draft.drafter.needs_model:
                self.stats.host_syncs += 1  # the model drafter hands its ids back from the device

    def _translate(self, cycle: _Cycle, whole: bool) -> Generator[ForwardRequest, mx.array, tuple[bytes, list[int]]]:
        """The proposal's new bytes and its target ids; whole targets: drafting on until k + 1 target ids."""
        draft, sync, k = self.draft, self.draft_sync, cycle.k
        new_bytes = sync.new_bytes(cycle.draft_ids, self.generated_bytes)
        translated = draft.translator.to_target(Proposal(cycle.draft_ids, new_bytes, self.target_ids))
        while whole and new_bytes and len(translated) <= k and 0 < len(cycle.draft_ids) < 2 * k + 2:
            more = yield from self._draft_more(cycle, min(k + 1 - len(translated), 2 * k + 2 - len(cycle.draft_ids)))
            if not more:
                break
            new_bytes = sync.new_bytes(cycle.draft_ids, self.generated_bytes)
            translated = draft.translator.to_target(Proposal(cycle.draft_ids, new_bytes, self.target_ids))
        close = 0 if whole or not sync.reuse else getattr(draft.translator, "close_extra", 0)
        if (close and translated and (self.last_draft_full or getattr(draft.translator, "close_always", False))
                and draft.translator.last_is_open()):
            # Close the last id: draft on until the text goes past it (it is proposed only once closed).
            # Still open after ``close`` more ids: the translation of them all, its last id open.
            before = len(translated)
            self.stats.closing_cycles += 1
            for _ in range(close):
                if not (yield from self._draft_more(cycle, 1)):
                    break
                self.stats.closing_ids += 1
                new_bytes = sync.new_bytes(cycle.draft_ids, self.generated_bytes)
                extended = draft.translator.to_target(Proposal(cycle.draft_ids, new_bytes, self.target_ids))
                if len(extended) > before:
                    closed = not draft.translator.last_is_open()
                    translated = extended if closed else extended[:-1]  # at least as many ids, all closed
                    break
                translated = extended or translated
        return new_bytes, translated

    def _draft_more(self, cycle: _Cycle, n: int) -> Generator[ForwardRequest, mx.array, list[int]]:
        """``n`` more draft ids after the cycle's own (appended to ``cycle.draft_ids``)."""
        more = yield from _draft_steps(self.draft, cycle.draft_ids[-1:], n)
        if more:
            if self.draft.drafter.needs_model:
                self.stats.host_syncs += 1
            cycle.draft_ids = cycle.draft_ids + list(more)
        return list(more)

    # -- verify: one target pass over the unforwarded accepted ids and the proposal, or a plain step

    def verify(self, cycle: _Cycle) -> Requests:
        cycle.t_verify = time.perf_counter()
        if cycle.proposed:
            yield from self._verify_proposal(cycle)
        else:
            yield from self._plain_step(cycle)
        self.stats.host_syncs += 1  # the verifier (or the plain step) reads the next id
        cycle.new_ids = cycle.proposed[: cycle.accepted] + [cycle.next_id]

    def _verify_proposal(self, cycle: _Cycle) -> Requests:
        feed = self.target_ids[self.cached :] + cycle.proposed
        cycle.fed = len(feed)
        logits = yield ForwardRequest(self.cache, feed, len(cycle.proposed) + 1)
        if cycle.draft_ids and self.ahead_stream is not None:
            self._draft_ahead(cycle, logits)
        verifier, draft_strings = self.verifier, cycle.draft_strings
        if draft_strings is not None:
            cycle.accepted, cycle.next_id = verifier.verify(logits, cycle.proposed, draft_strings=draft_strings)
            self.stats.fallback_cycles += draft_strings.fell_back
            self.stats.psi_s += draft_strings.psi_s
        elif cycle.draft_logprobs is None:
            cycle.accepted, cycle.next_id = verifier.verify(logits, cycle.proposed)
        else:
            cycle.accepted, cycle.next_id = verifier.verify(logits, cycle.proposed,
                                                            draft_logprobs=cycle.draft_logprobs)
        self.cached += cycle.fed

    def _draft_ahead(self, cycle: _Cycle, logits: mx.array) -> None:
        """Parallel drafting: the target pass runs on the default stream while the drafter drafts past its
        proposal on its own; the verifier's decision waits for the target only."""
        draft = self.draft
        mx.async_eval(logits)
        with mx.stream(self.ahead_stream):
            ahead_ids = draft.drafter.propose(cycle.draft_ids[-1:], draft.ahead, draft.allowed)
        self.draft_sync.drafted_ahead(ahead_ids)
        if ahead_ids and draft.drafter.needs_model:
            self.stats.host_syncs += 1

    def _plain_step(self, cycle: _Cycle) -> Requests:
        """The target alone: its next id (already queued by the previous step, or forwarded now)."""
        cycle.fed = 1 if self.queued is not None else len(self.target_ids) - self.cached
        step = self.queued
        if step is None:
            step = self.verifier.next_id((yield ForwardRequest(self.cache, self.target_ids[self.cached :], 1))[-1])
            self.cached = len(self.target_ids)
        # When the next cycle is a plain step too, queue its forward before reading this id (mlx-lm's overlap).
        self.queued = None
        if self.overlap and cycle.remaining > 1 and self.chooser.next_is_plain(cycle.remaining - 1):
            self.queued = self.verifier.next_id((yield ForwardRequest(self.cache, step.reshape(1), 1))[-1])
            mx.async_eval(self.queued)
        cycle.next_id = step.item()
        if self.queued is not None:
            self.cached += 1  # the queued step has fed next_id

    # -- count: the prompt cache's hold, the stats, the k policy's report

    def count(self, cycle: _Cycle) -> None:
        stats, draft = self.stats, self.draft
        if self.prompt_cache is not None:  # the target cache holds (target_ids + proposed, or + next_id)[:cached]
            self.prompt_cache.hold(self.cache, self.target_ids, cycle.proposed or cycle.new_ids, self.cached,
                                   draft and draft.drafter, self.draft_sync if draft is not None else None)
        if self.first_time is not None or cycle.k:  # the prompt pass counts as a cycle when it drafted (k > 0)
            cycle.verify_s = time.perf_counter() - cycle.t_verify
            stats.cycles += 1
            stats.prompt_pass_drafted = stats.prompt_pass_drafted or self.first_time is None
            stats.proposed += len(cycle.proposed)
            stats.verified_accepted += cycle.accepted  # stats.accepted counts the accepted ids emitted (emit)
            if cycle.proposed:
                stats.count_source(cycle.source, len(cycle.proposed), cycle.accepted)
                if cycle.source == DRAFT_SOURCE:
                    self.last_draft_full = cycle.accepted == len(cycle.proposed)
        if self.first_time is not None:  # the prompt pass's timings include both prefills: prompt_s holds them
            stats.draft_s += cycle.draft_s
            stats.translate_s += cycle.translate_s
            stats.verify_s += cycle.verify_s
            if draft is not None and draft.k_policy is not None:
                draft.k_policy.observe(
                    CycleReport(cycle.k, len(cycle.proposed), cycle.accepted, cycle.fed, cycle.draft_s,
                                cycle.translate_s, cycle.verify_s, source=cycle.source, draft_fed=cycle.draft_fed)
                )

    # -- emit, stopping at a stop id or at max_tokens

    def emit(self, cycle: _Cycle, max_tokens: int) -> Generator[Token, None, bool]:
        """Yield the cycle's new ids as tokens; True when the generation is finished."""
        stats = self.stats
        now = time.perf_counter()
        finished = False
        for i, token_id in enumerate(cycle.new_ids):
            if token_id in self.target.stop_ids:
                stats.finish_reason, finished = "stop", True
                break
            piece = self.target.tokenizer.token_bytes(token_id)
            self.generated_bytes += piece
            stats.generated += 1
            if i < cycle.accepted:
                stats.count_emitted(cycle.source)
            yield Token(token_id, self.text_decoder.decode(piece), from_draft=i < cycle.accepted)
            if stats.generated >= max_tokens:
                stats.finish_reason, finished = "length", True
                break
        self.first_time = self.first_time if self.first_time is not None else now
        self.last_time = now
        return finished

    # -- sync: the accepted ids join the target's context and wait for the drafter's next catch-up

    def sync(self, cycle: _Cycle) -> None:
        self.target_ids.extend(cycle.new_ids)
        if self.draft is not None:
            self.draft_sync.accepted(cycle.new_ids)
        if cycle.proposed:
            # Keep only accepted positions in the target cache (the cache-sync may keep fewer).
            self.cached = self.target.cache_sync.sync(self.cache, self.cached, len(self.target_ids) - 1)

    def finish(self) -> Generator[Token, None, None]:
        stats, draft = self.stats, self.draft
        stats.finish_reason = stats.finish_reason or "length"
        if draft is not None and callable(getattr(draft.k_policy, "finish", None)):
            draft.k_policy.finish()  # e.g. the adaptive policy keeps what it learnt (specfw.priors)
        if self.first_time is not None:
            stats.prompt_s = self.first_time - self.start
            stats.decode_s = self.last_time - self.first_time
        tail = self.text_decoder.decode(b"", final=True)
        if tail:
            yield Token(-1, tail, from_draft=False)  # flush of an unfinished UTF-8 sequence, no id


def _draft_steps(draft: DraftSide, pending: list[int], n: int) -> Generator[ForwardRequest, mx.array, list[int]]:
    """``n`` draft ids after ``pending``; a drafter with ``propose_steps`` hands its forward passes to the driver."""
    propose_steps = getattr(draft.drafter, "propose_steps", None)
    if propose_steps is None:
        return list(draft.drafter.propose(pending, n, draft.allowed))
    return list((yield from propose_steps(pending, n, draft.allowed)))


def _draft_strings(draft: DraftSide, draft_ids: list[int], new_bytes: bytes) -> DraftStrings:
    """The cycle's draft for a string-level verifier: ids, what they were drawn from, where the new text starts."""
    drafter = draft.drafter
    offset = sum(len(draft.tokenizer.token_bytes(i)) for i in draft_ids) - len(new_bytes)
    branch_probs = getattr(drafter, "branch_probs", None)
    return DraftStrings(list(draft_ids), getattr(drafter, "last_probs", None), offset,
                        branch_probs if callable(branch_probs) else None)


def _draft_logprobs(draft: DraftSide, n: int) -> mx.array | None:
    """Log-probabilities, over target ids, of the distributions the first ``n`` proposals were drawn from.

    None when the drafter exposed none (it proposed deterministically).
    """
    probs = getattr(draft.drafter, "last_probs", None)
    if probs is None:
        return None
    return mx.log(draft.translator.to_target_probs(probs[:n]))
