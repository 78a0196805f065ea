"""Continuous batching on the default real pair: aggregate tokens/s batched vs one at a time, in one run.

Run:  pytest benchmarks/test_batch_engine.py --benchmark-only -s

``test_batch_generate_throughput``: for 1, 2 and 4 concurrent requests
(different prompts, the same settings), the same requests decoded one at a
time (the runs ``batch_generate`` builds, each through ``Run.result()``: today's
single path with its plain-step overlap) and together (``specfw.batch_generate``
with ``max_batch`` = the count); prints
aggregate generated tokens per second and the ratio batched ÷ one at a time,
for the target alone and for speculative decoding (``mlx`` drafter,
``context``, k = 2). Every batched output is checked against its one-at-a-time
output (a benchmark of wrong output is worthless). Wall time includes each
request's prefill in both conditions.

``test_drafter_batched_vs_per_request``: what a batched drafter would save:
``B`` drafter rows each drafting k = 2 greedy ids on its own cache, one row at
a time vs one :func:`specfw.batch_forward.batched_forward` per step over all rows.
"""

from __future__ import annotations

import statistics
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import mlx.core as mx
import pytest

from specfw.api import batch_generate, prompt_run
from specfw.batch_forward import batched_forward
from specfw.forward import forward_logits, prefill
from specfw.kv_cache import make_trimmable_cache
from specfw.model_store import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models import load_model

PROMPTS = ["The capital of France is", "Once upon a time, there was a little", "Water boils at a temperature of",
           "The three primary colours are"]
MAX_TOKENS = 32
COUNTS = [1, 2, 4]
SETTINGS = {"target alone": dict(baseline=True), "mlx context k=2": dict(translator="context", k=2)}


@pytest.fixture(scope="module")
def pair():
    return load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)


def _kwargs(draft, options) -> dict:
    """batch_generate / prompt_run arguments for ``options`` (a target-alone run has no draft model)."""
    if options.get("baseline"):
        return {}
    return dict(draft_model=draft.model, draft_tokenizer=draft.tokenizer, **options)


def _one_at_a_time(target, draft, prompts, options) -> tuple[float, list[list[int]]]:
    """The same runs batch_generate builds, each decoded alone through the single path (``Run.result``)."""
    start = time.perf_counter()
    ids = [prompt_run(target.model, target.tokenizer, p, max_tokens=MAX_TOKENS, **_kwargs(draft, options))
           .result().token_ids for p in prompts]
    return time.perf_counter() - start, ids


def _together(target, draft, prompts, options) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    response = batch_generate(target.model, target.tokenizer, prompts, max_tokens=MAX_TOKENS, max_batch=len(prompts),
                              return_token_ids=True, **_kwargs(draft, options))
    wall = time.perf_counter() - start
    assert response.errors == [None] * len(prompts)
    return wall, response.token_ids


def test_batch_generate_throughput(benchmark, pair):
    target, draft = pair
    _together(target, draft, PROMPTS[:1], SETTINGS["target alone"])  # warm-up
    rows = []
    for name, options in SETTINGS.items():
        for count in COUNTS:
            prompts = PROMPTS[:count]
            alone_s, alone_ids = _one_at_a_time(target, draft, prompts, options)
            batch_s, batch_ids = _together(target, draft, prompts, options)
            assert batch_ids == alone_ids, (name, count)
            tokens = sum(map(len, alone_ids))
            rows.append((name, count, tokens / alone_s, tokens / batch_s))
    benchmark.group = "batch-engine"
    benchmark.extra_info.update({f"{n} x{c} ratio": round(b / a, 3) for n, c, a, b in rows})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for name, count, alone, batched in rows:
        print(f"{name:>16} x{count}: one at a time {alone:6.1f} tok/s, batched {batched:6.1f} tok/s, "
              f"ratio {batched / alone:.2f}")


def test_drafter_batched_vs_per_request(benchmark, pair):
    _, draft = pair
    model, rounds, k = draft.model, 10, 2
    results = {}
    for rows in (2, 4):
        caches = [make_trimmable_cache(model) for _ in range(rows)]
        for i, cache in enumerate(caches):
            prefill(model, cache, list(range(100 + 7 * i, 130 + 9 * i)))
        per_row, batched = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            for cache in caches:
                token = 5
                for _ in range(k):
                    token = mx.argmax(forward_logits(model, cache, [token], 1)[-1]).item()
                for layer in cache:
                    layer.trim(k)
            per_row.append(time.perf_counter() - start)
            start = time.perf_counter()
            tokens = [5] * rows
            for _ in range(k):
                logits = batched_forward(model, caches, [[t] for t in tokens], [1] * rows)
                tokens = mx.argmax(mx.concatenate(logits), axis=-1).tolist()
            for cache in caches:
                for layer in cache:
                    layer.trim(k)
            batched.append(time.perf_counter() - start)
        results[rows] = (statistics.median(per_row) * 1000, statistics.median(batched) * 1000)
    benchmark.group = "batch-engine"
    benchmark.extra_info.update({f"drafter x{r} per-row/batched": round(a / b, 3) for r, (a, b) in results.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for rows, (a, b) in results.items():
        print(f"drafter, {rows} rows x k={k}: per row {a:6.1f} ms, batched {b:6.1f} ms ({a / b:.2f}x)")
