"""Parallel drafting (``--draft-ahead``) and leftover proposals proposed again: lossless, and really exercised.

The drafter drafts past its proposal on a second MLX stream while the target
verifies; the next cycle proposes those ids without a drafter call when the
accepted text agrees with them. Drafts that are wrong on purpose (``replay``
with ``corrupt_rate``) exercise the paths where they are dropped.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from specfw.config import RunConfig
from specfw.run import Run

from conftest import tiny_loaded
from test_lossless import PAIRS, PROMPTS, _baseline, _replay_reference


@pytest.mark.slow
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), translator=st.sampled_from(["none", "naive", "context", "tli"]),
       drafter=st.sampled_from(["mlx", "replay", "lookup+replay"]), corrupt=st.sampled_from([0.0, 0.3, 0.7]),
       k=st.integers(1, 4), ahead=st.integers(1, 4), max_tokens=st.integers(4, 16),
       cache_sync=st.sampled_from(["trim", "rewind"]))
def test_drafting_ahead_is_lossless_on_random_prompts(prompt, pair, translator, drafter, corrupt, k, ahead, max_tokens,
                                                      cache_sync):
    target, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    baseline = _baseline(target, prompt, max_tokens)
    options = {}
    if drafter != "mlx":
        options = {"reference": _replay_reference(target, draft, prompt, baseline), "corrupt_rate": corrupt, "seed": k}
    config = RunConfig(prompt=prompt, drafter=drafter, drafter_options=options, translator=translator, k=k,
                       draft_ahead=ahead, max_tokens=max_tokens, cache_sync=cache_sync)
    result = Run(config, target=target, draft=draft).result()
    assert result.token_ids == baseline.token_ids
    assert result.stats.reused_proposals <= result.stats.cycles


@pytest.mark.parametrize("corrupt_rate", [0.0, 0.2])
def test_proposals_drafted_ahead_are_used(corrupt_rate):
    """A drafter that is mostly right: many cycles take the ids drafted during the previous verification."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    prompt = "Zażółć gęślą jaźń w Warszawie, a potem"
    baseline = _baseline(target, prompt, 32)
    options = {"reference": _replay_reference(target, draft, prompt, baseline), "corrupt_rate": corrupt_rate, "seed": 1}
    runs = {
        ahead: Run(RunConfig(prompt=prompt, drafter="replay", drafter_options=options, translator="context", k=2,
                             draft_ahead=ahead, max_tokens=32), target=target, draft=draft).result()
        for ahead in (0, 3)
    }
    assert runs[3].token_ids == runs[0].token_ids == baseline.token_ids
    assert runs[3].stats.reused_proposals >= 3
    assert runs[3].stats.reused_proposals > runs[0].stats.reused_proposals


def test_no_reuse_when_verification_uses_the_drafts_distributions():
    """With the speculative verifier at temp > 0 (tli maps q), leftover proposals are never proposed again."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    config = RunConfig(prompt="Ala ma kota, a kot ma", translator="tli", temp=0.8, k=3, draft_ahead=3, max_tokens=24)
    run = Run(config, target=target, draft=draft)
    assert run.draft_side.draft_probs
    assert run.result().stats.reused_proposals == 0
