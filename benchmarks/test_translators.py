"""The target alone and each translator on the embedded pair: one benchmark group, comparable across runs.

Run:  pytest benchmarks/test_translators.py --benchmark-only --benchmark-autosave
Then: pytest benchmarks/test_translators.py --benchmark-only --benchmark-compare

Each benchmark generates the same TOKENS greedy tokens from the same prompt
(target gemma3-270m, drafter smollm2-135m-instruct unless SPECFW_BENCH_TARGET /
SPECFW_BENCH_DRAFT say otherwise). Every round's output is checked against the
target alone, so a benchmark that got faster by being wrong fails. The
``extra_info`` of each entry holds its acceptance rate and tokens per second;
``test_translator_speedups`` runs all of them side by side in one run and
prints each one's speedup over the target alone.
"""

from __future__ import annotations

import os
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import pytest

from specfw.config import RunConfig
from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run

PROMPT = "The capital of France is"
TOKENS = 48
K = 2
TRANSLATORS = ["none", "naive", "context"]


@pytest.fixture(scope="module")
def pair():
    target = load_model(os.environ.get("SPECFW_BENCH_TARGET", DEFAULT_TARGET))
    draft = load_model(os.environ.get("SPECFW_BENCH_DRAFT", DEFAULT_DRAFT))
    return target, draft


@pytest.fixture(scope="module")
def reference(pair):
    target, _ = pair
    return Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=TOKENS), target=target).result().token_ids


def _generate(pair, translator: str | None):
    target, draft = pair
    if translator is None:
        return Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=TOKENS), target=target).result()
    config = RunConfig(prompt=PROMPT, translator=translator, k=K, max_tokens=TOKENS)
    return Run(config, target=target, draft=draft).result()


def test_target_alone(benchmark, pair, reference):
    benchmark.group = "embedded pair"
    result = benchmark.pedantic(_generate, args=(pair, None), rounds=3, warmup_rounds=1)
    assert result.token_ids == reference
    benchmark.extra_info.update(tps=result.stats.tps)


@pytest.mark.parametrize("translator", TRANSLATORS)
def test_translator(benchmark, pair, reference, translator):
    benchmark.group = "embedded pair"
    result = benchmark.pedantic(_generate, args=(pair, translator), rounds=3, warmup_rounds=1)
    assert result.token_ids == reference
    benchmark.extra_info.update(tps=result.stats.tps, acceptance=result.stats.acceptance_rate, k=K)


def test_translator_speedups(benchmark, pair, reference):
    """All conditions alternated in one run, best of 3 each; prints speedup = baseline time / condition time."""
    conditions = [None, *TRANSLATORS]
    best = {c: float("inf") for c in conditions}
    acceptance = {}
    for _ in range(3):
        for c in conditions:
            start = time.perf_counter()
            result = _generate(pair, c)
            best[c] = min(best[c], time.perf_counter() - start)
            assert result.token_ids == reference
            acceptance[c] = result.stats.acceptance_rate
    speedups = {c: best[None] / best[c] for c in TRANSLATORS}
    benchmark.group = "ratio"
    benchmark.extra_info.update({f"speedup_{c}": s for c, s in speedups.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\ntarget alone: {best[None]:.3f}s for {TOKENS} tokens")
    for c in TRANSLATORS:
        print(f"{c:>8}: speedup {speedups[c]:.3f}  acceptance {acceptance[c]:.1%}  ({best[c]:.3f}s, k={K})")
