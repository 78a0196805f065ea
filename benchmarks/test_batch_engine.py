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
request's prefill in both conditions. For the ``mlx`` setting it also times
the batch with each generation drafting alone (its drafter's passes answered
inside its own coroutine, as before the drafter's steps were batched): the
ratio with and without batched draft steps, in the same run.

``test_single_path_draft_steps_as_requests``: the single path
(``Run.result``, what ``specfw run`` does) with the drafter's passes asked of
the driver (today) vs called inside the drafter (the ``propose`` of before
that change), interleaved prompt by prompt: decode tok/s of each.

``test_drafter_batched_vs_per_request``: what a batched drafter would save:
``B`` drafter rows each drafting k = 2 greedy ids on its own cache, one row at
a time vs one :func:`specfw.models.batch_forward.batched_forward` per step over all rows.
"""

from __future__ import annotations

import statistics
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import mlx.core as mx
import pytest

from specfw.api import batch_generate, prompt_run
from specfw.batch import generate_runs
from specfw.models.batch_forward import batched_forward
from specfw.models.forward import PREFILL_CHUNK, forward_logits, prefill
from specfw.models.kv_cache import make_trimmable_cache
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model

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


class _DraftingAlone:
    """A drafter without ``propose_steps``: the scheduler calls its ``propose`` (``old``: the pre-coroutine
    ``MLXDrafter.propose``), so each generation drafts inside its own coroutine with direct calls."""

    def __init__(self, drafter, old: bool = False) -> None:
        object.__setattr__(self, "_drafter", drafter)
        object.__setattr__(self, "_old", old)

    def __getattr__(self, name):
        if name == "propose_steps":
            raise AttributeError(name)
        return getattr(self._drafter, name)

    def __setattr__(self, name, value):
        setattr(self._drafter, name, value)

    def propose(self, pending, k, allowed=None):
        if self._old:
            return _old_propose(self._drafter, pending, k, allowed)
        return self._drafter.propose(pending, k, allowed)


def _old_propose(self, pending, k, allowed=None):
    """``MLXDrafter.propose`` as it was before its passes became requests (greedy, no head: what is timed here)."""
    assert self.head is None and not self.sample and not self._head_from_mask
    ids = list(pending)
    if len(ids) > PREFILL_CHUNK:
        prefill(self.model, self.cache, ids[:-PREFILL_CHUNK])
        ids = ids[-PREFILL_CHUNK:]
    y = mx.array(ids)
    proposals = []
    for _ in range(k):
        logits = self.model(y[None], cache=self.cache)[0, -1]
        if allowed is not None:
            logits = mx.where(self._fit(allowed, logits.shape[-1]), logits, -mx.inf)
        y = mx.argmax(logits, axis=-1, keepdims=True)
        mx.async_eval(y)
        proposals.append(y)
    self.last_probs = None
    self._allowed = allowed
    return mx.concatenate(proposals).tolist()


def _runs(target, draft, prompts, options, drafting_alone: bool = False, old: bool = False, max_tokens=MAX_TOKENS):
    runs = [prompt_run(target.model, target.tokenizer, p, max_tokens=max_tokens, **_kwargs(draft, options))
            for p in prompts]
    if drafting_alone:
        for run in runs:
            run.draft_side.drafter = _DraftingAlone(run.draft_side.drafter, old)
    return runs


def _together_drafting_alone(target, draft, prompts, options) -> tuple[float, list[list[int]]]:
    """The batch engine with every generation drafting alone (one target pass per cycle, k draft passes per row)."""
    start = time.perf_counter()
    results = generate_runs(_runs(target, draft, prompts, options, drafting_alone=True), max_batch=len(prompts))
    return time.perf_counter() - start, [r.token_ids for r in results]


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
            drafting_alone = None
            if not options.get("baseline"):
                solo_s, solo_ids = _together_drafting_alone(target, draft, prompts, options)
                assert solo_ids == alone_ids, (name, count)
                drafting_alone = tokens / solo_s
            rows.append((name, count, tokens / alone_s, tokens / batch_s, drafting_alone))
    benchmark.group = "batch-engine"
    benchmark.extra_info.update({f"{n} x{c} ratio": round(b / a, 3) for n, c, a, b, _ in rows})
    benchmark.extra_info.update({f"{n} x{c} ratio drafting alone": round(d / a, 3) for n, c, a, _, d in rows if d})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for name, count, alone, batched, drafting_alone in rows:
        line = (f"{name:>16} x{count}: one at a time {alone:6.1f} tok/s, batched {batched:6.1f} tok/s, "
                f"ratio {batched / alone:.2f}")
        if drafting_alone:
            line += f" (each drafting alone: {drafting_alone:6.1f} tok/s, ratio {drafting_alone / alone:.2f})"
        print(line)


def test_single_path_draft_steps_as_requests(benchmark, pair):
    target, draft = pair
    options, rounds = SETTINGS["mlx context k=2"], 3
    speeds = {"requests": [], "direct": []}
    _runs(target, draft, PROMPTS[:1], options, max_tokens=8)[0].result()  # warm-up
    for i in range(rounds):
        for prompt in PROMPTS:
            order = ["requests", "direct"] if i % 2 == 0 else ["direct", "requests"]
            ids = {}
            for name in order:
                run = _runs(target, draft, [prompt], options, drafting_alone=name == "direct", old=True,
                            max_tokens=64)[0]
                result = run.result()
                ids[name] = result.token_ids
                speeds[name].append(result.stats.generated / result.stats.decode_s)
            assert ids["requests"] == ids["direct"]
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    benchmark.group = "batch-engine"
    benchmark.extra_info.update({f"single {n} decode tok/s": round(v, 2) for n, v in medians.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    print(f"single path, draft passes as requests {medians['requests']:6.2f} tok/s, called inside propose (before) "
          f"{medians['direct']:6.2f} tok/s, ratio {medians['requests'] / medians['direct']:.3f}")


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
