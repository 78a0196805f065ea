"""``batched_forward``: one model call over ragged rows gives each row what it gets alone.

Rows have their own cached lengths (0 included) and feeds (length 1
included); each row's logits must equal ``forward_logits`` on that row alone
within float rounding, with the same argmax ids, and each row's cache must
afterwards hold what the single-row pass leaves (checked by trimming it, as a
rejected proposal is rolled back, and forwarding again). Tiny random-weight
float32 models on real tokenizers, a tiny Gemma 3 with an 8-position sliding
window and contexts past it, and (slow) the real default target, Gemma-3-270M,
with a context past its 512-position window.
"""

from __future__ import annotations

import random

import mlx.core as mx
import pytest
from hypothesis import given, strategies as st

from specfw.models.batch_forward import batched_forward
from specfw.models.forward import forward_logits, prefill
from specfw.models.kv_cache import make_trimmable_cache

from conftest import tiny_loaded
from test_sliding_window import WINDOW, sliding_loaded

ROWS = st.lists(
    st.tuples(st.integers(0, 3 * WINDOW), st.integers(1, 6), st.integers(1, 6), st.integers(0, 3)),
    min_size=1, max_size=4,
)  # per row: cached length, feed length, n_logits (capped at the feed), positions trimmed afterwards


def _models(key: str):
    return sliding_loaded("mistral-v0.1", 41).model if key == "sliding" else tiny_loaded(key).model


def _check(model, rows, seed: int, vocab: int, atol: float) -> None:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(cached)] for cached, *_ in rows]
    feeds = [[rng.randrange(3, vocab) for _ in range(feed)] for _, feed, _, _ in rows]
    ns = [min(n, len(feed)) for feed, (_, _, n, _) in zip(feeds, rows)]
    alone_caches, batch_caches = _twin_caches(model, prompts), _twin_caches(model, prompts)
    alone = [forward_logits(model, c, f, n) for c, f, n in zip(alone_caches, feeds, ns)]
    batched = batched_forward(model, batch_caches, feeds, ns)
    _same(alone, batched, atol)

    # Roll each row back by its own amount (ragged acceptance), then forward once more: the caches agree.
    for (_, feed, _, trim), a, b in zip(rows, alone_caches, batch_caches):
        n = min(trim, feed)
        for layer_a, layer_b in zip(a, b):
            layer_a.trim(n)
            layer_b.trim(n)
        assert [c.offset for c in a] == [c.offset for c in b]
    more = [[rng.randrange(3, vocab)] for _ in rows]
    alone = [forward_logits(model, c, f, 1) for c, f in zip(alone_caches, more)]
    batched = batched_forward(model, batch_caches, more, [1] * len(rows))
    _same(alone, batched, atol)


def _same(alone: list[mx.array], batched: list[mx.array], atol: float) -> None:
    assert len(alone) == len(batched)
    for a, b in zip(alone, batched):
        assert a.shape == b.shape
        assert mx.abs(a - b).max().item() <= atol * max(1.0, mx.abs(a).max().item())
        assert a.argmax(axis=-1).tolist() == b.argmax(axis=-1).tolist()


def _twin_caches(model, prompts: list[list[int]]) -> list:
    """One trimmable cache per prompt, prefilled with it (one set for the per-row passes, one for the batch)."""
    caches = []
    for prompt in prompts:
        cache = make_trimmable_cache(model)
        prefill(model, cache, prompt)
        caches.append(cache)
    return caches


@given(rows=ROWS, key=st.sampled_from(["mistral", "qwen", "llama3", "sliding"]), seed=st.integers(0, 2**16))
def test_batched_rows_equal_each_row_alone(rows, key, seed):
    model = _models(key)
    vocab = min(tiny_loaded("mistral").tokenizer.vocab_size, 30000)
    _check(model, rows, seed, vocab, atol=1e-5)


def test_a_row_past_the_sliding_window_beside_short_ones():
    """Sliding-window masks are per row: one row far past the window, one within it, one empty."""
    _check(_models("sliding"), [(5 * WINDOW, 3, 3, 2), (WINDOW - 1, 1, 1, 0), (0, 5, 2, 1)], 7, 30000, atol=1e-5)


def test_lazy_array_feeds_beside_lists_equal_each_row_alone():
    """Draft steps feed the previous proposal unread (a lazy ``mx.array``), beside rows that feed catch-up lists."""
    model = tiny_loaded("qwen").model
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 30000) for _ in range(n)] for n in (7, 0, 12, 3)]
    alone_caches, batch_caches = _twin_caches(model, prompts), _twin_caches(model, prompts)
    for step in range(3):
        lists = [[rng.randrange(3, 30000) for _ in range(n)] for n in (1, 3, 1, 2)]
        # rows 0 and 2 feed a lazy argmax (as a drafter's next step does), in the dtype argmax gives
        lazy = [mx.argmax(mx.array([[0.0] * f[0] + [1.0]]), axis=-1) if i in (0, 2) else None
                for i, f in enumerate(lists)]
        feeds = [lz if lz is not None else f for lz, f in zip(lazy, lists)]
        alone = [forward_logits(model, c, f, 1) for c, f in zip(alone_caches, feeds)]
        batched = batched_forward(model, batch_caches, feeds, [1, 2, 1, 1])
        _same(alone, [b[-1:] for b in batched], atol=1e-5)
        assert batched[1].shape[0] == 2


def test_refuses_rows_it_cannot_forward():
    model = tiny_loaded("mistral").model
    with pytest.raises(ValueError):
        batched_forward(model, [make_trimmable_cache(model)], [[]], [1])
    with pytest.raises(ValueError):
        batched_forward(model, [make_trimmable_cache(model)], [[5]], [2])


@pytest.mark.slow
def test_real_target_rows_equal_each_row_alone():
    """Gemma-3-270M (the default target): ragged rows, one with 530 cached positions (past its 512 window)."""
    from specfw.models.loading import load_model

    target = load_model("gemma3-270m")
    assert target.model.args.sliding_window < 530
    _check(target.model, [(3, 4, 4, 2), (530, 1, 1, 0), (40, 3, 2, 1), (0, 2, 1, 1)], 3, 20000, atol=1e-5)
