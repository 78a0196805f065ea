"""Forward passes shared by the target side and MLX drafters, and the requests a coroutine makes for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Sequence

import mlx.core as mx

PREFILL_CHUNK = 512


@dataclass
class ForwardRequest:
    """A forward pass a coroutine needs: ``feed`` on ``cache``; the last ``n_logits`` logits rows are sent back.

    ``feed`` is a list of ids, or a lazy ``mx.array`` of ids (a draft step's
    previous proposal, a plain step queued ahead). ``model``: what to run it
    on (None: the driver's target). ``draft``: a drafter's pass (its catch-up
    and each draft step), which a batching driver answers before the target
    pass of the same cycle, grouped with the other rows on the same ``model``.
    """

    cache: list
    feed: Sequence[int] | mx.array
    n_logits: int
    model: Any = None
    draft: bool = False


def answer(steps: Generator[ForwardRequest, mx.array, Any], model: Any = None) -> Any:
    """Drive ``steps`` alone: answer each request with :func:`forward_logits` (lazily); return what it returns.

    ``model`` answers requests that name none.
    """
    try:
        request = next(steps)
        while True:
            on = request.model if request.model is not None else model
            request = steps.send(forward_logits(on, request.cache, request.feed, request.n_logits))
    except StopIteration as stop:
        return stop.value


def prefill(model, cache: list, ids: Sequence[int]) -> int:
    """Forward ``ids`` into the cache in chunks without computing logits; return how many."""
    for start in range(0, len(ids), PREFILL_CHUNK):
        model(mx.array(ids[start : start + PREFILL_CHUNK])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return len(ids)


def forward_logits(model, cache: list, ids: Sequence[int] | mx.array, n_logits: int) -> mx.array:
    """Forward ``ids`` and return the last ``n_logits`` rows of logits, shape (n, vocab).

    ``ids`` may be a (lazy) mx.array, which is forwarded as it is. A long list
    is prefilled in chunks first, so only its tail is forwarded with logits.
    """
    if isinstance(ids, mx.array):
        return model(ids[None], cache=cache)[0, -n_logits:, :]
    head = max(0, len(ids) - max(n_logits, PREFILL_CHUNK))
    if head:
        prefill(model, cache, ids[:head])
    logits = model(mx.array(ids[head:])[None], cache=cache)
    return logits[0, -n_logits:, :]
