"""What a cheaper draft model buys on this machine: per-step costs, side by side in one run.

Run:  pytest benchmarks/test_draft_costs.py --benchmark-only -s

``test_draft_step_costs`` times one greedy step (forward + argmax + read) of the
default drafter in float32, 8- and 4-bit (``--drafter-option quantize=8|4``),
with its LM head restricted to the 8192 / 16384 lowest ids (``head=N``), and
one target step, interleaved over ROUNDS rounds; it prints medians and each
variant's cost relative to float32 and to the target step.

``test_parallel_drafting_headroom`` bounds what PEARL-style parallel drafting
(the drafter drafts the next block while the target verifies the current one)
can gain here: it times a target verification pass (3 ids) and k = 2 drafter
steps one after the other, then overlapped: the target pass queued
(``mx.async_eval``) on the default stream while the drafter steps on a second
MLX stream, as a parallel drafter would. ``overlap_gain`` = sequential ÷ concurrent time: 1.0 means the
device is already saturated and running both at once saves nothing; the ideal
is sequential ÷ max(target, drafter).
"""

from __future__ import annotations

import statistics
import time

import specfw  # noqa: F401  (first: loads an optimized BLAS before MLX)
import mlx.core as mx
import pytest
from mlx_lm.models.cache import make_prompt_cache

from specfw.models.catalog import DEFAULT_DRAFT, DEFAULT_TARGET
from specfw.models.loading import load_model
from specfw_plugins.draft_model_options import RestrictedHead, quantized_copy

ROUNDS = 30


@pytest.fixture(scope="module")
def pair():
    return load_model(DEFAULT_TARGET), load_model(DEFAULT_DRAFT)


def _stepper(model, head=None, width=1):
    """A function running one forward of ``width`` ids on a warm cache, then argmax and a read (a host sync)."""
    cache = make_prompt_cache(model)
    model(mx.array([list(range(10, 42))]), cache=cache)
    mx.eval([c.state for c in cache])
    state = {"ids": list(range(50, 50 + width))}

    def step():  # noqa: E306
        y = mx.array([state["ids"]])  # on the calling thread's own default stream
        logits = model(y, cache=cache) if head is None else head(model, y, cache)
        token = mx.argmax(logits[0, -1]).item()
        for c in cache:  # keep the cache length fixed: every round measures the same work
            c.trim(width) if hasattr(c, "trim") else None
        state["ids"] = [(token + i) % 1000 + 10 for i in range(width)]

    step.model, step.cache = model, cache
    return step


def test_draft_step_costs(benchmark, pair):
    target, draft = pair
    variants = {
        "drafter float32": _stepper(draft.model),
        "drafter 8-bit": _stepper(quantized_copy(draft.model, 8)),
        "drafter 4-bit": _stepper(quantized_copy(draft.model, 4)),
        "drafter head=8192": _stepper(draft.model, RestrictedHead(draft.model, list(range(8192)))),
        "drafter head=16384": _stepper(draft.model, RestrictedHead(draft.model, list(range(16384)))),
        "target step": _stepper(target.model),
    }
    times = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    benchmark.group = "draft-costs"
    benchmark.extra_info.update({f"{n}_ms": round(v, 2) for n, v in med.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    print()
    for name, ms in med.items():
        print(f"{name:>20}: {ms:7.1f} ms  ({ms / med['drafter float32']:.2f}x float32, "
              f"{ms / med['target step']:.2f} of a target step)")


def test_parallel_drafting_headroom(benchmark, pair):
    target, draft = pair
    verify = _stepper(target.model, width=3)
    draft_step = _stepper(draft.model)
    draft_stream = mx.new_stream(mx.default_device())

    def together():
        """The target pass queued on the default stream, the drafter's steps on their own stream meanwhile."""
        ids = mx.array([list(range(60, 63))])
        logits = verify.model(ids, cache=verify.cache)
        mx.async_eval(logits)
        with mx.stream(draft_stream):
            draft_step()
            draft_step()
        mx.argmax(logits[0, -1]).item()
        for c in verify.cache:
            c.trim(3)

    sequential, concurrent, alone = [], [], {"target": [], "drafter": []}
    for _ in range(ROUNDS // 2):
        start = time.perf_counter()
        verify()
        mid = time.perf_counter()
        draft_step()
        draft_step()
        end = time.perf_counter()
        alone["target"].append(mid - start)
        alone["drafter"].append(end - mid)
        sequential.append(end - start)
        start = time.perf_counter()
        together()
        concurrent.append(time.perf_counter() - start)
    seq, conc = statistics.median(sequential), statistics.median(concurrent)
    ideal = seq / max(statistics.median(alone["target"]), statistics.median(alone["drafter"]))
    benchmark.group = "draft-costs"
    benchmark.extra_info.update(sequential_ms=seq * 1000, concurrent_ms=conc * 1000, overlap_gain=seq / conc,
                                ideal_gain=ideal)
    benchmark.pedantic(lambda: None, rounds=1)
    print(f"\nverify (3 ids) + 2 drafter steps: sequential {seq * 1000:.1f} ms, overlapped on two streams "
          f"{conc * 1000:.1f} ms; overlap_gain = {seq / conc:.2f} (ideal {ideal:.2f})")
