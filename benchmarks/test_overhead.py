"""specfw's target-alone path against mlx-lm's ``generate_step``: same model, prompt and tokens.

Run:  pytest benchmarks/ --benchmark-only --benchmark-autosave
Then: pytest benchmarks/ --benchmark-only --benchmark-compare

Besides the two timed benchmarks, ``test_ar_ratio`` measures both side by
side in one run (alternating rounds) and prints the ratio
specfw tps / mlx-lm tps; the goal is >= 0.98.
"""

from __future__ import annotations

import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step

from specfw.config import RunConfig
import os
from specfw.models.loading import load_model
from specfw.run import Run, prompt_ids

PROMPT = "Stolicą Polski jest Warszawa. Najdłuższą rzeką w Polsce jest"
TOKENS = 64
GOAL = 0.98


@pytest.fixture(scope="module")
def target():
    return load_model(os.environ.get("SPECFW_BENCH_TARGET", "gemma3-270m"))


def _specfw(target) -> list[int]:
    config = RunConfig(prompt=PROMPT, baseline=True, max_tokens=TOKENS)
    return Run(config, target=target).result().token_ids


def _mlx_lm(target) -> list[int]:
    ids = mx.array(prompt_ids(target.tokenizer, PROMPT))
    return [int(t) for t, _ in generate_step(ids, target.model, max_tokens=TOKENS)]


def test_specfw_baseline(benchmark, target):
    benchmark.group = "target alone"
    ids = benchmark.pedantic(_specfw, args=(target,), rounds=5, warmup_rounds=1)
    assert len(ids) == TOKENS


def test_mlx_lm_generate_step(benchmark, target):
    benchmark.group = "target alone"
    ids = benchmark.pedantic(_mlx_lm, args=(target,), rounds=5, warmup_rounds=1)
    assert len(ids) == TOKENS


def test_ar_ratio(benchmark, target):
    """Alternate the two, best of N each, and report specfw / mlx-lm throughput."""
    assert _specfw(target) == _mlx_lm(target)[:TOKENS]
    best = {"specfw": float("inf"), "mlx_lm": float("inf")}
    for _ in range(7):
        for name, fn in (("specfw", _specfw), ("mlx_lm", _mlx_lm)):
            start = time.perf_counter()
            fn(target)
            best[name] = min(best[name], time.perf_counter() - start)
    ratio = best["mlx_lm"] / best["specfw"]  # equal token counts: time ratio = tps ratio
    benchmark.extra_info.update(ratio=ratio, goal=GOAL, **{f"{k}_s": v for k, v in best.items()})
    benchmark.group = "ratio"
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nar_vs_mlx_lm = {ratio:.3f} (goal >= {GOAL}; specfw {best['specfw']:.3f}s, mlx-lm {best['mlx_lm']:.3f}s)")
