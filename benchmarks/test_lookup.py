"""The ``lookup`` drafter against the target alone: structured and repetitive prompts, and the bundled sets.

Run:  pytest benchmarks/test_lookup.py --benchmark-only -s

Each prompt runs the target alone and lookup at k = 4, alternated, best of 2;
prints per prompt the speedup (baseline time ÷ lookup time) and acceptance.
"""

from __future__ import annotations

import os
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import pytest

from specfw.config import RunConfig
from specfw.study.datasets import load_dataset
from specfw.models.catalog import DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw.run import Run

TOKENS = 48
STRUCTURED = {
    "list": "Lista zakupów:\n1. mleko - 2 szt.\n2. chleb - 1 szt.\n3. masło - 1 szt.\n4. jajka - 10 szt.\n"
            "Ta sama lista, posortowana alfabetycznie:\n1. chleb - 1 szt.\n2.",
    "code edit": "def area(w, h):\n    return w * h\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n\n"
                 "# The same two functions with type hints:\ndef area(w: float, h: float) -> float:\n",
    "table": "| miasto | ludność |\n|---|---|\n| Warszawa | 1 860 000 |\n| Kraków | 800 000 |\n"
             "| Łódź | 660 000 |\n\nThe same table in English:\n| city | population |\n|---|---|\n| Warsaw |",
}


@pytest.fixture(scope="module")
def target():
    return load_model(os.environ.get("SPECFW_BENCH_TARGET", DEFAULT_TARGET))


def _prompts():
    prompts = dict(STRUCTURED)
    for name in ("pl-questions", "pl-grammar", "en-prompts"):
        for item in load_dataset(name, limit=3):
            prompts[f"{name}/{item.id}"] = item.prompt
    return prompts


def _time(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def test_lookup_speedups(benchmark, target):
    rows = []
    for name, prompt in _prompts().items():
        base_cfg = RunConfig(prompt=prompt, baseline=True, max_tokens=TOKENS)
        look_cfg = RunConfig(prompt=prompt, drafter="lookup", k=4, max_tokens=TOKENS)
        best_base = best_look = float("inf")
        for _ in range(2):
            t_base, base = _time(lambda: Run(base_cfg, target=target).result())
            t_look, look = _time(lambda: Run(look_cfg, target=target).result())
            assert look.token_ids == base.token_ids
            best_base, best_look = min(best_base, t_base), min(best_look, t_look)
        rows.append((name, best_base / best_look, look.stats.acceptance_rate, look.stats.proposed))
    benchmark.group = "ratio"
    benchmark.extra_info.update({name: speedup for name, speedup, _, _ in rows})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for name, speedup, acceptance, proposed in rows:
        print(f"{name:>28}: speedup {speedup:.2f}  acceptance {acceptance:.0%} of {proposed} proposed")
