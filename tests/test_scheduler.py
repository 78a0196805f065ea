"""Scheduler behaviour beyond the lossless property: mlx-lm parity, stats, stopping."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step, speculative_generate_step

from specfw.config import RunConfig
from specfw.run import Run, prompt_ids

from conftest import tiny_loaded

PROMPT = "Stolicą Polski jest Warszawa, a stolicą Francji"


def _mlx_lm_greedy(target, prompt: str, n: int) -> list[int]:
    ids = mx.array(prompt_ids(target.tokenizer, prompt))
    return [int(t) for t, _ in generate_step(ids, target.model, max_tokens=n)]


@pytest.mark.parametrize("draft_key", ["mistral", "mistral-b"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_same_tokenizer_matches_mlx_lm_speculative(draft_key, k):
    """Same tokenizer: the identity path gives mlx-lm's speculative_generate_step output."""
    target, draft = tiny_loaded("mistral"), tiny_loaded(draft_key)
    n = 24
    ids = mx.array(prompt_ids(target.tokenizer, PROMPT))
    theirs = [int(t) for t, _, _ in speculative_generate_step(ids, target.model, draft.model, num_draft_tokens=k, max_tokens=n)]
    run = Run(RunConfig(prompt=PROMPT, k=k, max_tokens=n, translator="context"), target=target, draft=draft)
    ours = run.result()
    assert run.translator_used == "identity"
    # specfw stops at the target's EOS; mlx-lm's step generator does not.
    assert ours.token_ids == theirs[: len(ours.token_ids)]
    assert len(ours.token_ids) == n or theirs[len(ours.token_ids)] in target.tokenizer.eos_ids
    if draft_key == "mistral":  # drafting with the target itself: everything proposed is accepted
        assert ours.stats.accepted == ours.stats.proposed > 0


def test_baseline_matches_mlx_lm_generate_step():
    target = tiny_loaded("qwen")
    ours = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=20), target=target).result()
    theirs = _mlx_lm_greedy(target, PROMPT, 20)
    assert ours.token_ids == theirs[: len(ours.token_ids)]
    assert ours.stats.cycles == ours.stats.generated - 1
    assert ours.stats.proposed == 0


def _replay_run(reference, k, max_tokens):
    target = tiny_loaded("mistral")
    config = RunConfig(prompt=PROMPT, k=k, max_tokens=max_tokens, drafter="replay",
                       drafter_options={"reference": reference})
    return Run(config, target=target, draft=None).result()


def test_stats_on_a_perfect_drafter():
    """Same tokenizer, the target's own ids proposed: every cycle accepts k and adds one."""
    target = tiny_loaded("mistral")
    base = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=40), target=target).result()
    assert len(base.token_ids) == 40, "the tiny target stopped early; pick another prompt"
    k, cycles = 2, 5
    max_tokens = (k + 1) * cycles  # the prompt pass drafts too: k accepted + 1 from the target, every cycle
    reference = prompt_ids(target.tokenizer, PROMPT) + base.token_ids
    r = _replay_run(reference, k, max_tokens)
    assert r.token_ids == base.token_ids[:max_tokens]
    assert (r.stats.cycles, r.stats.proposed, r.stats.accepted) == (cycles, k * cycles, k * cycles)
    assert r.stats.acceptance_rate == 1.0
    assert r.from_draft == [True, True, False] * cycles


def test_stats_with_one_wrong_proposal():
    """One corrupted id in the reference: that cycle accepts the ids before it, then the target corrects."""
    target = tiny_loaded("mistral")
    base = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=40), target=target).result()
    p = prompt_ids(target.tokenizer, PROMPT)
    reference = p + base.token_ids
    bad = len(p) + 3 + 1 + 1  # second proposal of the second cycle (k = 3; the prompt pass is the first)
    reference[bad] = (reference[bad] + 7) % target.tokenizer.vocab_size
    r = _replay_run(reference, 3, 9)
    assert r.token_ids == base.token_ids[:9]
    # cycle 1 (the prompt pass): 3 proposed, 3 accepted (+1) → 4 tokens; cycle 2: 1 accepted then the
    # correction → 6; the drafter is now off its reference (its context has the target's id, the reference
    # the bad one) and proposes id 0, rejected; k shrinks to what max_tokens leaves:
    # cycle 3 (k=3) → 7, cycle 4 (k=2) → 8, cycle 5 (k=1) → 9.
    assert r.stats.cycles == 5
    assert r.stats.proposed == 3 + 3 + 3 + 2 + 1
    assert r.stats.accepted == 3 + 1
    assert r.stats.acceptance_rate == pytest.approx(4 / 12)


def _emitted_counts(r):
    """accepted counts the emitted draft ids, verified_accepted what the verifier accepted (never fewer)."""
    s = r.stats
    assert s.accepted == sum(r.from_draft), s
    assert s.verified_accepted >= s.accepted and s.acceptance_rate == (s.accepted / s.proposed if s.proposed else 0.0)
    assert sum(c["accepted"] for c in s.sources.values()) == s.accepted
    assert sum(c["verified_accepted"] for c in s.sources.values()) == s.verified_accepted
    return s.accepted, s.verified_accepted


@pytest.mark.parametrize("stop_at", [1, 2, 3])
def test_accepted_counts_what_a_stop_id_lets_out(stop_at):
    """A perfect drafter's k = 3 ids all accepted in the prompt pass, one of them a stop id: the ids from it on
    are verified but not emitted, so accepted counts the emitted ones and verified_accepted all three."""
    target = tiny_loaded("mistral")
    base = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=12), target=target).result()
    stop_id = base.token_ids[stop_at]
    assert stop_id not in base.token_ids[:stop_at], "pick another prompt: the stop id occurs earlier"
    config = RunConfig(prompt=PROMPT, k=3, max_tokens=12, drafter="replay",
                       drafter_options={"reference": prompt_ids(target.tokenizer, PROMPT) + base.token_ids})
    run = Run(config, target=target, draft=None)
    run.target_side.stop_ids = frozenset({stop_id})
    r = run.result()
    assert r.token_ids == base.token_ids[:stop_at] and r.stats.finish_reason == "stop"
    # stop_at 3: the stop id is the target's own id after the three, so all three are emitted
    assert _emitted_counts(r) == (stop_at, 3)
    assert r.stats.as_dict()["verified_accepted"] == 3


@pytest.mark.parametrize("k", [2, 3])
def test_accepted_counts_what_max_tokens_lets_out(k):
    """Runs cut by max_tokens at every length, through real translation (a perfect drafter in the draft
    vocabulary): accepted is always the emitted draft ids, verified_accepted never fewer."""
    from test_lossless import _baseline, _replay_reference

    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    prompt = "Zażółć gęślą jaźń w Warszawie, a potem"
    base = _baseline(target, prompt, 12)
    reference = _replay_reference(target, draft, prompt, base)
    for n in range(1, 13):
        config = RunConfig(prompt=prompt, translator="context", k=k, max_tokens=n, drafter="replay",
                           drafter_options={"reference": reference})
        r = Run(config, target=target, draft=draft).result()
        assert r.token_ids == base.token_ids[:n] and r.stats.finish_reason == "length"
        accepted, verified = _emitted_counts(r)
        assert accepted > 0


@pytest.mark.parametrize("max_tokens", [1, 2])
def test_accepted_counts_what_max_tokens_cuts_mid_acceptance(max_tokens):
    """k = 1 draft id that translates to several target ids, all accepted, and max_tokens cuts them.

    The tiny qwen2.5 target continues this prompt with "2" "2" "2" ... (qwen2.5 spells digits one by one), and
    the perfect drafter's first llama3 id is "222": the prompt pass verifies three accepted target ids, of
    which max_tokens lets out only the first one or two.
    """
    from test_lossless import _baseline, _replay_reference

    target, draft = tiny_loaded("qwen"), tiny_loaded("llama3")
    prompt = "6 77228 139742"
    base = _baseline(target, prompt, 12)
    assert [target.tokenizer.token_bytes(i) for i in base.token_ids[:3]] == [b"2"] * 3, "the tiny target changed"
    config = RunConfig(prompt=prompt, translator="context", k=1, max_tokens=max_tokens, drafter="replay",
                       drafter_options={"reference": _replay_reference(target, draft, prompt, base)})
    r = Run(config, target=target, draft=draft).result()
    assert r.token_ids == base.token_ids[:max_tokens] and r.stats.finish_reason == "length"
    assert r.from_draft == [True] * max_tokens
    assert _emitted_counts(r) == (max_tokens, 3)
    assert r.stats.sources["draft"] == {"cycles": 1, "proposed": 3, "accepted": max_tokens, "verified_accepted": 3}


def test_max_tokens_and_stop_at_eos():
    target = tiny_loaded("mistral")
    for n in (1, 2, 7):
        r = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=n), target=target).result()
        assert len(r.token_ids) == n and r.stats.finish_reason == "length"
    # Make the target's own next id a stop id: the run ends before emitting it.
    first = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=3), target=target).result().token_ids
    run = Run(RunConfig(prompt=PROMPT, baseline=True, max_tokens=10), target=target)
    run.target_side.stop_ids = frozenset({first[2]})
    r = run.result()
    assert r.token_ids == first[:2] and r.stats.finish_reason == "stop"


def test_stream_yields_text_pieces_that_add_up():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    run = Run(RunConfig(prompt="Zażółć gęślą jaźń", max_tokens=16), target=target, draft=draft)
    tokens = list(run.stream())
    ids = [t.id for t in tokens if t.id >= 0]
    assert len(ids) == run.stats.generated
    assert "".join(t.text for t in tokens) == target.tokenizer.decode(ids)
