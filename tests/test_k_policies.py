"""k policies: ``fixed`` keeps --k; ``adaptive`` picks the k its measured cost model says is fastest."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from specfw.config import RunConfig
from specfw.protocols import CycleReport, KPolicySetup
from specfw.run import Run
from specfw_plugins.k_policies import AdaptiveK, FixedK

from conftest import tiny_loaded
from test_lossless import PAIRS, PROMPTS


def _adaptive(k=2, k_max=8) -> AdaptiveK:
    return AdaptiveK(KPolicySetup(RunConfig(prompt="x", k=k, k_max=k_max, k_policy="adaptive")))


def _feed(policy: AdaptiveK, *, alpha: float, draft_per_token: float, verify_base: float, verify_per_id: float,
          cycles: int = 200, seed: int = 0) -> None:
    """Simulate cycles of the paper's model: i.i.d. acceptance, linear target pass cost, one id per draft token."""
    rng = random.Random(seed)
    for _ in range(cycles):
        k = policy.choose()
        accepted = 0
        while accepted < k and rng.random() < alpha:
            accepted += 1
        fed = k + 1
        policy.observe(CycleReport(k=k, proposed=k, accepted=accepted, fed=fed, draft_s=k * draft_per_token,
                                   translate_s=0.0, verify_s=verify_base + verify_per_id * fed))


def _true_rate(k, alpha, draft_per_token, verify_base, verify_per_id):
    tokens = (1 - alpha ** (k + 1)) / (1 - alpha)
    return tokens / (k * draft_per_token + verify_base + verify_per_id * (k + 1))


def test_fixed_keeps_k():
    policy = FixedK(KPolicySetup(RunConfig(prompt="x", k=3)))
    assert [policy.choose() for _ in range(3)] == [3, 3, 3]


@pytest.mark.parametrize(
    "alpha, draft_per_token, verify_base, verify_per_id",
    [
        (0.9, 0.002, 0.100, 0.001),  # cheap drafter, memory-bound target (GPU-like): draft far ahead
        (0.6, 0.010, 0.100, 0.010),  # middling
        (0.3, 0.050, 0.100, 0.030),  # costly drafter, poor acceptance, compute-bound target (CPU-like): don't draft
        (0.75, 0.020, 0.050, 0.020),
    ],
)
def test_adaptive_converges_to_the_cost_models_best_k(alpha, draft_per_token, verify_base, verify_per_id):
    """Over the last 100 of 400 simulated cycles, its choices yield >= 95% of the best fixed k's rate."""
    costs = dict(draft_per_token=draft_per_token, verify_base=verify_base, verify_per_id=verify_per_id)
    policy = _adaptive(k=2, k_max=8)
    _feed(policy, alpha=alpha, cycles=300, **costs)
    chosen = []
    for seed in range(100):
        chosen.append(policy.choose())
        _feed(policy, alpha=alpha, cycles=1, seed=1000 + seed, **costs)
    best = max(_true_rate(k, alpha, **costs) for k in range(9))
    mean_rate = sum(_true_rate(k, alpha, **costs) for k in chosen) / len(chosen)
    assert mean_rate >= 0.95 * best, (sorted(set(chosen)), mean_rate / best)
    assert policy.verify_cost(5) == pytest.approx(verify_base + 5 * verify_per_id, rel=0.1)


def test_adaptive_exploration_cost_stays_within_its_budget():
    """While k = 0 wins, explorations (k = 1) keep coming, and what they cost beyond plain steps stays in budget.

    Each exploration after the first is forecast (as the mean cost of those before it) before it is
    allowed; with explorations that all cost the same the budget then holds at every point.
    """
    costs = dict(draft_per_token=0.2, verify_base=0.1, verify_per_id=0.01)
    policy = _adaptive(k=2, k_max=4)
    _feed(policy, alpha=0.05, cycles=20, **costs)
    policy.model.elapsed = 0.0
    for est in policy.model.sources.values():
        est.explore_cost, est.explored = 0.0, 0
    _feed(policy, alpha=0.05, cycles=3000, seed=3, **costs)
    est = policy.source("draft")
    assert est.explored >= 2, "explorations must keep coming"
    assert est.explore_cost <= AdaptiveK.explore_budget * policy.model.elapsed
    assert est.explored < 3000 * 0.05, "explorations must be rare"


def _explore_with_catch_up(tell: bool, cycles: int = 4000) -> tuple[int, float]:
    """A costly drafter whose exploration cost is mostly its catch-up: the ids it has not seen since it last drafted.

    Generations of 64 tokens; each starts the drafter from a 30-id prompt. Returns the explorations
    made and the largest share of the time spent so far that explorations had cost (after the first).
    """
    policy = _adaptive(k=2, k_max=4)
    rng = random.Random(0)
    pending, worst = 30, 0.0
    for cycle in range(cycles):
        if cycle % 64 == 0:
            pending = 30
        k = policy.choose(source="draft", catch_up=pending) if tell else policy.choose(source="draft")
        fed = 0
        if k:
            fed, pending = pending, 0
        else:
            pending += 1
        accepted = sum(1 for _ in range(k) if rng.random() < 0.05)
        policy.observe(CycleReport(k, k, accepted, k + 1, draft_s=0.004 * fed + 0.04 * k, translate_s=0.0,
                                   verify_s=0.1 + 0.01 * (k + 1), draft_fed=fed))
        est = policy.source("draft")
        if est.explored > 1:
            worst = max(worst, est.explore_cost / policy.model.elapsed)
    return policy.source("draft").explored, worst


def test_adaptive_forecasts_an_exploration_from_the_drafters_catch_up():
    """Told the catch-up, it takes the cheap explorations and stays within budget at every point.

    Forecast as the mean of earlier explorations (not told), a long catch-up is taken for a short one
    and the budget is overrun.
    """
    told, worst_told = _explore_with_catch_up(tell=True)
    blind, worst_blind = _explore_with_catch_up(tell=False)
    assert worst_told <= AdaptiveK.explore_budget * 1.05, worst_told
    assert told > blind >= 2, (told, blind)
    assert worst_blind > AdaptiveK.explore_budget * 1.5, worst_blind  # the scenario does tell them apart


def test_adaptive_returns_to_drafting_when_acceptance_rises():
    """Rare explorations still notice a text that became easy to draft."""
    costs = dict(draft_per_token=0.01, verify_base=0.1, verify_per_id=0.005)
    policy = _adaptive(k=2, k_max=4)
    _feed(policy, alpha=0.05, cycles=300, **costs)
    assert policy.choose() == 0
    _feed(policy, alpha=0.95, cycles=1500, seed=1, **costs)
    assert policy.choose() >= 2


def test_adaptive_keeps_what_it_learnt_per_pair():
    """A later policy on the same pair starts from the estimates; another pair starts afresh."""
    config = RunConfig(prompt="x", k=2, k_max=4, k_policy="adaptive")
    first = AdaptiveK(KPolicySetup(config, pair="test-pair-a"))
    _feed(first, alpha=0.05, draft_per_token=0.2, verify_base=0.1, verify_per_id=0.01, cycles=50)
    assert first.choose() == 0
    again = AdaptiveK(KPolicySetup(config, pair="test-pair-a"))
    assert again.choose() == 0 and again.alpha() == first.alpha()
    assert AdaptiveK(KPolicySetup(config, pair="test-pair-b")).choose() == 2  # nothing learnt: the starting k


def test_adaptive_learns_each_source_apart():
    """A target-vocabulary source that is accepted and cheap is drafted far ahead; a costly draft source is not."""
    policy = _adaptive(k=2, k_max=6)
    rng = random.Random(5)
    for _ in range(3000):  # explorations of the costly source are rare (budgeted): give them time
        for source, alpha, per_token in (("target", 0.9, 1e-5), ("draft", 0.1, 0.08)):
            k = policy.choose(source=source)
            accepted = 0
            while accepted < k and rng.random() < alpha:
                accepted += 1
            policy.observe(CycleReport(k=k, proposed=k, accepted=accepted, fed=k + 1, draft_s=k * per_token,
                                       translate_s=0.0, verify_s=0.06 + 0.004 * (k + 1), source=source))
    assert policy.choose(source="target") >= 4
    assert policy.choose(source="draft") == 0
    assert policy.alpha("target") > 0.8 > 0.3 > policy.alpha("draft")


def _cold(draft_cost, k=2, k_max=8) -> AdaptiveK:
    config = RunConfig(prompt="x", k=k, k_max=k_max, k_policy="adaptive")
    return AdaptiveK(KPolicySetup(config, draft_cost=draft_cost))


@pytest.mark.parametrize("draft_cost, drafts", [(0.5, False), (0.3, False), (0.1, True), (0.0, True)])
def test_cold_start_drafts_only_where_the_cost_model_says_it_pays(draft_cost, drafts):
    """Nothing measured: a drafter half the target's size does not draft from the first cycle; a cheap one does."""
    policy = _cold(draft_cost, k=4)
    k = policy.choose()
    assert (k > 0) == drafts, k
    assert k <= 2, "with the neutral acceptance prior (α = 0.5) it does not draft far ahead"


def test_cold_start_keeps_choosing_from_the_cost_model_after_plain_steps():
    """After plain steps (the target's cost measured, the drafter's not) it keeps to the hint, not to --k."""
    policy = _cold(0.5, k=4)
    for _ in range(5):
        assert policy.choose() == 0
        policy.observe(CycleReport(k=0, proposed=0, accepted=0, fed=1, draft_s=0.0, translate_s=0.0, verify_s=0.1))
    cheap = _cold(0.02, k=4)
    for _ in range(5):
        k = cheap.choose()
        cheap.observe(CycleReport(k=0, proposed=0, accepted=0, fed=1, draft_s=0.0, translate_s=0.0, verify_s=0.1))
    assert cheap.choose() > 0


def test_cold_first_exploration_waits_for_its_catch_up_to_fit_the_budget():
    """The first exploration is forecast from the drafter's catch-up (the whole prompt, cold): a short run skips it."""
    policy = _cold(0.5, k=2, k_max=4)
    explored = 0
    for _ in range(48):  # one short generation from a 30-id prompt
        k = policy.choose(source="draft", catch_up=30 + explored)
        explored += k
        policy.observe(CycleReport(k=k, proposed=k, accepted=0, fed=k + 1, draft_s=0.05 * k, translate_s=0.0,
                                   verify_s=0.1))
    assert explored == 0
    policy.model.elapsed = 1e4  # after much time spent (priors carry it across runs) the budget allows one
    assert policy.choose(source="draft", catch_up=30) == 1


def test_a_cold_run_with_a_costly_drafter_does_not_draft_and_stays_lossless(monkeypatch):
    monkeypatch.setattr(AdaptiveK, "_learnt", {})  # cold: nothing learnt in this process (other tests use the pair)
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")  # the drafter is larger than the target
    prompt = "Zażółć gęślą jaźń, a potem"
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=12), target=target).result()
    config = RunConfig(prompt=prompt, k=4, k_policy="adaptive", max_tokens=12, priors=False)
    result = Run(config, target=target, draft=draft).result()
    assert result.token_ids == baseline.token_ids
    assert not result.stats.prompt_pass_drafted and set(result.stats.k_counts) == {0}
    assert any(note.startswith("adaptive k: cold start") for note in result.notes)


def test_a_cold_run_with_lookup_drafts_from_the_prompt_pass(monkeypatch):
    monkeypatch.setattr(AdaptiveK, "_learnt", {})
    target = tiny_loaded("mistral")
    prompt = "one two three, one two three, one two three, one two"
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=12), target=target).result()
    config = RunConfig(prompt=prompt, drafter="lookup", k=2, k_policy="adaptive", max_tokens=12, priors=False)
    result = Run(config, target=target).result()
    assert result.token_ids == baseline.token_ids
    assert result.stats.prompt_pass_drafted


@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
def test_runs_with_each_policy_are_lossless(policy):
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    prompt = "Zażółć gęślą jaźń, a potem"
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=20), target=target).result()
    config = RunConfig(prompt=prompt, k=2, k_max=4, k_policy=policy, max_tokens=20, translator="context")
    result = Run(config, target=target, draft=draft).result()
    assert result.token_ids == baseline.token_ids
    assert sum(result.stats.k_counts.values()) == result.stats.cycles, "every cycle's k is recorded"
    drafting = sum(n for k, n in result.stats.k_counts.items() if k)
    passes = result.stats.cycles + (0 if result.stats.prompt_pass_drafted else 1)
    assert result.stats.host_syncs == passes + drafting  # verifier each pass, drafter when it drafts
    assert all(0 <= k <= (4 if policy == "adaptive" else 2) for k in result.stats.k_counts)


@pytest.mark.slow
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), translator=st.sampled_from(["none", "naive", "context", "tli"]),
       max_tokens=st.integers(4, 16))
def test_adaptive_k_is_lossless_on_random_prompts(prompt, pair, translator, max_tokens):
    target, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=target).result()
    config = RunConfig(prompt=prompt, translator=translator, k_policy="adaptive", k=1, k_max=5, max_tokens=max_tokens)
    assert Run(config, target=target, draft=draft).result().token_ids == baseline.token_ids


def _bursty_tokens(k: int, first: float, then: float) -> float:
    """Expected tokens of a k-id proposal when the first id is accepted with ``first``, each later one with ``then``."""
    return 1 + sum(first * then ** (j - 1) for j in range(1, k + 1))


def _bursty_share_of_best(first: float, then: float, seed: int = 5) -> tuple[float, list[int]]:
    """Adaptive's rate over cycles 300-400 of bursty acceptance, as a share of the best fixed k's rate."""
    draft_per_token, verify_base, verify_per_id = 0.004, 0.1, 0.004

    def true_rate(k):
        return _bursty_tokens(k, first, then) / (k * draft_per_token + verify_base + verify_per_id * (k + 1))

    policy, rng, chosen = _adaptive(k=2, k_max=8), random.Random(seed), []
    for cycle in range(400):
        k = policy.choose()
        accepted = 0
        while accepted < k and rng.random() < (first if accepted == 0 else then):
            accepted += 1
        policy.observe(CycleReport(k=k, proposed=k, accepted=accepted, fed=k + 1, draft_s=k * draft_per_token,
                                   translate_s=0.0, verify_s=verify_base + verify_per_id * (k + 1)))
        if cycle >= 300:
            chosen.append(k)
    best = max(true_rate(k) for k in range(9))
    return sum(true_rate(k) for k in chosen) / len(chosen) / best, chosen


def test_adaptive_learns_that_later_positions_are_accepted_more_often(monkeypatch):
    """Bursty acceptance (first id 40%, each later one 95% once the first is in): adaptive picks the k that pays.

    With the per-position counts pooled into one α (the paper's i.i.d. model, ``POSITION_PRIOR`` made
    huge), the same policy under-predicts long proposals and falls short on the same cycles.
    """
    share, chosen = _bursty_share_of_best(0.4, 0.95)
    assert share >= 0.97, sorted(set(chosen))
    import specfw_plugins.k_policies as k_policies

    monkeypatch.setattr(k_policies, "POSITION_PRIOR", 1e9)
    pooled, pooled_chosen = _bursty_share_of_best(0.4, 0.95)
    assert pooled < 0.93, sorted(set(pooled_chosen))  # the scenario does tell the two apart


@given(alpha=st.floats(0.01, 0.98), m=st.floats(0, 8))
def test_expected_tokens_with_one_alpha_is_the_papers_formula(alpha, m):
    """With no per-position counts, E(m) is (1 - α^(m+1)) / (1 - α) at whole m and between its neighbours otherwise."""
    from specfw_plugins.k_policies import _SourceEstimate

    est = _SourceEstimate(accepted=alpha, rejected=1 - alpha)
    lo, hi = int(m), int(m) + 1
    formula = [(1 - alpha ** (n + 1)) / (1 - alpha) for n in (lo, hi)]
    assert est.expected_tokens(m) == pytest.approx(formula[0] + (m - lo) * (formula[1] - formula[0]), rel=1e-9)


def test_a_new_generation_does_not_draft_far_ahead_on_what_an_easier_text_accepted(monkeypatch):
    """Generations in a row on one pair, each text its own acceptance: per-position counts mostly restart per text.

    Kept whole (``POSITION_CARRY`` 1), the counts an easy text left make the next, harder one propose long
    drafts that are rejected; carried at 0.1 each text gets >= 93% of its best k's rate on average.
    """
    import specfw_plugins.k_policies as k_policies

    texts = [lambda a: 0.8 if a == 0 else 0.95, lambda a: 0.4 if a == 0 else 0.6,
             lambda a: [0.6, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5][a], lambda a: 0.8 if a == 0 else 0.95,
             lambda a: 0.55]
    draft_per_token, verify_base, verify_per_id = 0.1, 1.0, 0.1

    def mean_share(seed: int) -> float:
        AdaptiveK._learnt.pop("carry-test", None)
        rng, shares = random.Random(seed), []
        for accept in texts:
            def rate(k):
                tokens, reach = 1.0, 1.0
                for j in range(k):
                    reach *= accept(j)
                    tokens += reach
                return tokens / (k * draft_per_token + verify_base + verify_per_id * (k + 1))

            policy = AdaptiveK(KPolicySetup(RunConfig(prompt="x", k=2, k_max=8, k_policy="adaptive"), pair="carry-test"))
            got = []
            for _ in range(25):
                k = policy.choose()
                accepted = 0
                while accepted < k and rng.random() < accept(accepted):
                    accepted += 1
                policy.observe(CycleReport(k=k, proposed=k, accepted=accepted, fed=k + 1, translate_s=0.0,
                                           draft_s=k * draft_per_token, verify_s=verify_base + verify_per_id * (k + 1)))
                got.append(rate(k))
            shares.append(sum(got) / len(got) / max(rate(k) for k in range(9)))
        return sum(shares) / len(shares)

    carried = sum(mean_share(seed) for seed in range(8)) / 8
    monkeypatch.setattr(k_policies, "POSITION_CARRY", 1.0)
    kept = sum(mean_share(seed) for seed in range(8)) / 8
    AdaptiveK._learnt.pop("carry-test", None)
    assert carried >= 0.93, carried
    assert kept < carried - 0.02, (kept, carried)  # the scenario does tell them apart
