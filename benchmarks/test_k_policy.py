"""Adaptive k against every fixed k on the embedded pair, side by side in one run.

Run:  pytest benchmarks/test_k_policy.py --benchmark-only -s

Prints each condition's best time for the same TOKENS greedy tokens and
``adaptive_vs_best_fixed`` = best fixed time ÷ adaptive time (goal ≥ 0.98).
The target alone is measured too: on a CPU where drafting does not pay, the
adaptive policy should approach it by choosing k = 0.
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

PROMPTS = ["The capital of France is", "Stolicą Polski jest"]
TOKENS = 48
FIXED = [1, 2, 4]
GOAL = 0.98


@pytest.fixture(scope="module")
def pair():
    target = load_model(os.environ.get("SPECFW_BENCH_TARGET", DEFAULT_TARGET))
    draft = load_model(os.environ.get("SPECFW_BENCH_DRAFT", DEFAULT_DRAFT))
    return target, draft


def _run(pair, prompt, condition):
    target, draft = pair
    if condition == "baseline":
        return Run(RunConfig(prompt=prompt, baseline=True, max_tokens=TOKENS), target=target).result()
    if condition == "adaptive":
        config = RunConfig(prompt=prompt, k=2, k_policy="adaptive", k_max=8, max_tokens=TOKENS)
    else:
        config = RunConfig(prompt=prompt, k=condition, max_tokens=TOKENS)
    return Run(config, target=target, draft=draft).result()


def test_adaptive_vs_fixed(benchmark, pair):
    conditions = ["baseline", *FIXED, "adaptive"]
    best = {c: 0.0 for c in conditions}
    chosen = {}
    for prompt in PROMPTS:
        reference = _run(pair, prompt, "baseline").token_ids
        prompt_best = {c: float("inf") for c in conditions}
        for _ in range(3):
            for c in conditions:
                start = time.perf_counter()
                result = _run(pair, prompt, c)
                prompt_best[c] = min(prompt_best[c], time.perf_counter() - start)
                assert result.token_ids == reference
                if c == "adaptive":
                    chosen[prompt] = dict(sorted(result.stats.k_counts.items()))
        for c in conditions:
            best[c] += prompt_best[c]  # summed over prompts: total time for the same work
    best_fixed = min(best[k] for k in FIXED)
    ratio = best_fixed / best["adaptive"]
    benchmark.group = "ratio"
    benchmark.extra_info.update(adaptive_vs_best_fixed=ratio, goal=GOAL, **{f"{c}_s": v for c, v in best.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for c in conditions:
        print(f"{str(c):>9}: {best[c]:.3f}s")
    print(f"k chosen by adaptive (last round): {chosen}")
    print(f"adaptive_vs_best_fixed = {ratio:.3f} (goal >= {GOAL}); adaptive vs target alone = "
          f"{best['baseline'] / best['adaptive']:.3f}")
