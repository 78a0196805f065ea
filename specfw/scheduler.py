"""The speculative decoding cycle, in one place.

Each cycle: the drafter proposes k draft ids → the translator turns them into
target ids → one target forward pass scores them → the verifier accepts a
prefix and adds the target's own next id → the cache-sync trims the target's
KV cache → the translator maps the accepted text back into the draft
vocabulary and the drafter's cache is trimmed to what still agrees.

Losslessness rests on one rule: every emitted id comes out of the verifier,
from the target's logits over exactly the accepted target ids. Drafter,
translator and cache-sync can only change how many ids a cycle yields, never
which ones.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from specfw.forward import forward_logits, prefill
from specfw.protocols import Acceptance, CacheSync, CycleReport, KPolicy, Drafter, Proposal, Translator, Verifier
from specfw.stats import RunStats
from specfw.text import common_prefix_len, complete_utf8_prefix
from specfw.tokenizers import Tokenizer

@dataclass
class Token:
    """One generated target id, its text piece, and whether a draft proposed it."""

    id: int
    text: str
    from_draft: bool


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


@dataclass
class TargetSide:
    """The target model and how its output is judged and its cache kept."""

    model: object
    tokenizer: Tokenizer
    prompt_ids: list[int]
    verifier: Verifier
    cache_sync: CacheSync
    stop_ids: frozenset[int] = field(default_factory=frozenset)


def speculative_stream(
    target: TargetSide, draft: DraftSide | None, max_tokens: int, stats: RunStats
) -> Iterator[Token]:
    """Generate up to ``max_tokens`` target ids; with ``draft`` None, the target alone.

    The first token always comes from the prompt pass (so both modes time the
    prompt the same way); each later cycle drafts, verifies and syncs.
    ``stats`` is filled in as tokens are produced.
    """
    start = time.perf_counter()
    cache = make_prompt_cache(target.model)
    target_ids = list(target.prompt_ids)
    cached = prefill(target.model, cache, target_ids[:-1])
    stats.prompt_tokens = len(target_ids)

    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    generated_bytes = bytearray()  # bytes of every generated target id
    synced_bytes = 0  # how many of them the drafter's context stands for
    if draft is not None:
        draft.drafter.reset()
        draft_seq = list(draft.prompt_ids)  # the drafter's context, cached or pending
        draft_cached = 0
    first_time = last_time = None
    # The target alone needs no verification pass: each step's forward is overlapped with reading the previous id.
    target_alone = _target_alone_ids(target, cache, target_ids[cached:]) if draft is None else None

    while stats.generated < max_tokens:
        # -- draft and translate (not before the first token: it comes from the prompt pass)
        draft_ids: list[int] = []
        proposed: list[int] = []
        draft_logprobs = None
        k = draft_s = translate_s = 0
        if draft is not None and first_time is not None:
            k = draft.k if draft.k_policy is None else draft.k_policy.choose()
            k = max(0, min(k, max_tokens - stats.generated))
            stats.k_counts[k] = stats.k_counts.get(k, 0) + 1
        if k:
            t0 = time.perf_counter()
            draft_ids = draft.drafter.propose(draft_seq[draft_cached:], k, draft.allowed)
            t1 = time.perf_counter()
            draft_cached = len(draft_seq) + len(draft_ids) - 1
            proposal_bytes = b"".join(map(draft.tokenizer.token_bytes, draft_ids))
            unsynced = bytes(generated_bytes[synced_bytes:])  # a held-back partial character
            new_bytes = proposal_bytes[len(unsynced):] if proposal_bytes.startswith(unsynced) else b""
            proposed = draft.translator.to_target(Proposal(draft_ids, new_bytes, target_ids))
            draft_s, translate_s = t1 - t0, time.perf_counter() - t1
            if draft_ids and draft.drafter.needs_model:
                stats.host_syncs += 1  # the model drafter hands its ids back from the device
            if not proposed:
                stats.zero_new_cycles += 1
            elif draft.draft_probs:
                draft_logprobs = _draft_logprobs(draft, len(proposed))

        # -- verify: one target pass over the unforwarded accepted ids and the proposal
        t2 = time.perf_counter()
        if target_alone is not None:
            accepted, next_id = 0, next(target_alone)
            fed = 1
        else:
            feed = target_ids[cached:] + proposed
            fed = len(feed)
            logits = forward_logits(target.model, cache, feed, len(proposed) + 1)
            if draft_logprobs is None:
                accepted, next_id = target.verifier.verify(logits, proposed)
            else:
                accepted, next_id = target.verifier.verify(logits, proposed, draft_logprobs=draft_logprobs)
            cached += len(feed)
        stats.host_syncs += 1  # the verifier (or the target-alone step) reads the next id
        new_ids = proposed[:accepted] + [next_id]
        if first_time is not None:
            stats.cycles += 1
            stats.proposed += len(proposed)
            stats.accepted += accepted
            verify_s = time.perf_counter() - t2
            stats.draft_s += draft_s
            stats.translate_s += translate_s
            stats.verify_s += verify_s
            if draft is not None and draft.k_policy is not None:
                draft.k_policy.observe(CycleReport(k, len(proposed), accepted, fed, draft_s, translate_s, verify_s))

        # -- emit, stopping at a stop id or at max_tokens
        now = time.perf_counter()
        finished = False
        for i, token_id in enumerate(new_ids):
            if token_id in target.stop_ids:
                stats.finish_reason, finished = "stop", True
                break
            piece = target.tokenizer.token_bytes(token_id)
            generated_bytes += piece
            stats.generated += 1
            yield Token(token_id, text_decoder.decode(piece), from_draft=i < accepted)
            if stats.generated >= max_tokens:
                stats.finish_reason, finished = "length", True
                break
        first_time = first_time if first_time is not None else now
        last_time = now
        if finished:
            break
        target_ids.extend(new_ids)

        if draft is None:
            continue  # the target alone keeps its cache inside _target_alone_ids

        # -- sync the target cache: keep only accepted positions (the cache-sync may keep fewer)
        cached = target.cache_sync.sync(cache, cached, len(target_ids) - 1)

        # -- back-translate the accepted text and trim the drafter to what still agrees
        t3 = time.perf_counter()
        complete = complete_utf8_prefix(generated_bytes[synced_bytes:])
        synced_bytes += len(complete)
        keep, append = draft.translator.to_draft(
            Acceptance(new_ids, complete.decode("utf-8", errors="replace"), draft_seq)
        )
        stats.translate_s += time.perf_counter() - t3
        old_seq = draft_seq + draft_ids
        draft_seq = draft_seq[:keep] + append
        # The drafter must always have at least one pending id to forward.
        still_valid = min(common_prefix_len(old_seq, draft_seq), draft_cached, len(draft_seq) - 1)
        if draft_cached > still_valid:
            draft.drafter.trim(draft_cached - still_valid)
        draft_cached = still_valid

    stats.finish_reason = stats.finish_reason or "length"
    if first_time is not None:
        stats.prompt_s = first_time - start
        stats.decode_s = last_time - first_time
    tail = text_decoder.decode(b"", final=True)
    if tail:
        yield Token(-1, tail, from_draft=False)  # flush of an unfinished UTF-8 sequence, no id


def _draft_logprobs(draft: DraftSide, n: int) -> mx.array | None:
    """Log-probabilities, over target ids, of the distributions the first ``n`` proposals were drawn from.

    None when the drafter exposed none (it proposed deterministically).
    """
    probs = getattr(draft.drafter, "last_probs", None)
    if probs is None:
        return None
    return mx.log(draft.translator.to_target_probs(probs[:n]))


def _target_alone_ids(target: TargetSide, cache: list, feed: Sequence[int]) -> Iterator[int]:
    """The target's own next ids, one per step, as mlx-lm's ``generate_step`` makes them.

    The next step's forward is queued (``mx.async_eval``) before the current
    id is read, so building and running the graph overlap. One extra step is
    computed past the last id read; the cache is discarded after the run.
    """
    verifier = target.verifier
    token = verifier.next_id(forward_logits(target.model, cache, feed, 1)[-1])
    mx.async_eval(token)
    while True:
        following = verifier.next_id(forward_logits(target.model, cache, token.reshape(1), 1)[-1])
        mx.async_eval(following)
        yield token.item()
        token = following
