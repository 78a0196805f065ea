"""Continuous batching: every generation in a batch gives what it gives alone.

Hypothesis draws batch compositions (prompts, lengths, drafters ``mlx``,
``lookup``, ``lookup+mlx``, ``replay`` and none, translators, k, fixed and
adaptive k policies, batch sizes); each generation decoded through
:class:`specfw.batch.BatchEngine` must give the ids of the same run alone
(greedy), and sampling must give the same ids for the same seed. Tiny
random-weight models on real tokenizers; the real default pair is marked slow.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

import specfw
from specfw.batch import BatchEngine, generate_runs
from specfw.config import RunConfig
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run
from specfw_plugins.lookup import LookupDrafter

from conftest import tiny_loaded
from test_lossless import PROMPTS, _replay_reference

TARGET, DRAFTS = "mistral", ["qwen", "llama3"]
DRAFTERS = ["mlx", "lookup", "lookup+mlx", "replay", None]  # None: the target alone

REQUESTS = st.fixed_dictionaries({
    "prompt": st.one_of(PROMPTS, st.sampled_from(["the the the the the", "Ala ma kota, a kot ma Alę. Ala ma"])),
    "max_tokens": st.integers(1, 14),
    "drafter": st.sampled_from(DRAFTERS),
    "draft": st.sampled_from(DRAFTS),
    "translator": st.sampled_from(["none", "naive", "context"]),
    "k": st.integers(1, 4),
    "k_policy": st.sampled_from(["fixed", "adaptive"]),
    "whole": st.booleans(),  # context's whole-targets mode: k counts target ids, the drafter drafts on
})


def _run(request: dict, reference: list[int] | None = None, **extra) -> Run:
    """The request as ``specfw run`` composes it, on the tiny target (and its draft model where it needs one)."""
    target, draft = tiny_loaded(TARGET), tiny_loaded(request["draft"])
    drafter = request["drafter"]
    common = dict(prompt=request["prompt"], max_tokens=request["max_tokens"], **extra)
    if drafter is None:
        return Run(RunConfig(**common, baseline=True), target=target)
    options = {"reference": reference} if drafter == "replay" else dict(request.get("options", {}))
    translator_options = {"whole": "on"} if request.get("whole") and request["translator"] == "context" else {}
    config = RunConfig(**common, drafter=drafter, drafter_options=options, translator=request["translator"],
                       k=request["k"], k_policy=request["k_policy"], draft_ahead=request.get("ahead", 0),
                       translator_options=translator_options)
    return Run(config, target=target, draft=None if drafter == "lookup" else draft)


def _references(requests: list[dict]) -> list[list[int] | None]:
    """For ``replay`` requests, the target's own continuation in draft ids (mostly accepted: ragged acceptance)."""
    refs = []
    for request in requests:
        if request["drafter"] != "replay":
            refs.append(None)
            continue
        target, draft = tiny_loaded(TARGET), tiny_loaded(request["draft"])
        alone = Run(RunConfig(prompt=request["prompt"], max_tokens=request["max_tokens"], baseline=True),
                    target=target).result()
        refs.append(_replay_reference(target, draft, request["prompt"], alone))
    return refs


@given(requests=st.lists(REQUESTS, min_size=1, max_size=5), max_batch=st.integers(1, 4))
def test_every_greedy_generation_equals_the_same_run_alone(requests, max_batch):
    refs = _references(requests)
    alone = [_run(r, ref).result() for r, ref in zip(requests, refs)]
    batched = generate_runs([_run(r, ref) for r, ref in zip(requests, refs)], max_batch=max_batch)
    for request, a, b in zip(requests, alone, batched):
        assert not isinstance(b, BaseException), b
        assert b.token_ids == a.token_ids, request
        assert b.text == a.text
        assert b.stats.generated == a.stats.generated and b.stats.finish_reason == a.stats.finish_reason


def test_ragged_acceptance_in_one_batch_equals_each_alone():
    """Perfect (replay), random (mlx) and model-free (lookup) drafters, each its own k, decode side by side."""
    requests = [
        dict(prompt="Ala ma kota, a kot ma", max_tokens=14, drafter="replay", draft="qwen", translator="context",
             k=4, k_policy="fixed"),
        dict(prompt="Zażółć gęślą jaźń", max_tokens=10, drafter="mlx", draft="llama3", translator="naive", k=2,
             k_policy="adaptive"),
        dict(prompt="the the the the the", max_tokens=12, drafter="lookup", draft="qwen", translator="none", k=3,
             k_policy="fixed"),
        dict(prompt="x", max_tokens=9, drafter=None, draft="qwen", translator="none", k=1, k_policy="fixed"),
    ]
    refs = _references(requests)
    alone = [_run(r, ref).result() for r, ref in zip(requests, refs)]
    batched = generate_runs([_run(r, ref) for r, ref in zip(requests, refs)], max_batch=4)
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert batched[0].stats.accepted > 0  # the accept path (and so ragged rollback) was exercised


@pytest.mark.parametrize("translator, k_policy", [("context", "adaptive"), ("naive", "fixed"), ("tli", "fixed")])
def test_sampling_gives_the_same_ids_for_the_same_seed(translator, k_policy):
    """``sample`` draws are keyed by seed and position; ``speculative`` (tli) by its own key chain, with a fixed k."""
    requests = [dict(prompt=p, max_tokens=10, drafter="mlx", draft=d, translator=translator, k=k, k_policy=k_policy)
                for p, d, k in [("Ala ma kota", "qwen", 2), ("Hello there", "llama3", 3), ("Zażółć", "qwen", 1)]]
    seeds = [3, 3, 11]
    alone = [_run(r, temp=0.9, seed=s).result() for r, s in zip(requests, seeds)]
    batched = generate_runs([_run(r, temp=0.9, seed=s) for r, s in zip(requests, seeds)], max_batch=3)
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]


SHARED_DRAFT = st.fixed_dictionaries({
    "prompt": st.one_of(PROMPTS, st.sampled_from(["the the the the the", "Ala ma kota, a kot ma Alę. Ala ma"])),
    "max_tokens": st.integers(1, 14),
    "drafter": st.sampled_from(["mlx", "lookup+mlx"]),
    "draft": st.just("qwen"),
    "translator": st.sampled_from(["none", "naive", "context"]),
    "k": st.integers(1, 4),
    "k_policy": st.sampled_from(["fixed", "adaptive"]),
    "whole": st.booleans(),  # context's whole-targets mode: k counts target ids, the drafter drafts on
})


def _engine_results(runs: list[Run], max_batch: int) -> tuple[BatchEngine, list]:
    engine = BatchEngine(runs[0].target.model, max_batch)
    generations = [engine.add_run(run) for run in runs]
    engine.run()
    return engine, [g.error if g.error is not None else run.result_of(g.tokens) for run, g in zip(runs, generations)]


@given(requests=st.lists(SHARED_DRAFT, min_size=2, max_size=4), max_batch=st.integers(2, 4))
def test_drafters_sharing_a_draft_model_batch_their_passes_and_each_equals_it_alone(requests, max_batch):
    """``mlx`` and ``lookup+mlx`` on one draft model: their draft steps share passes; every output is its own alone."""
    alone = [_run(r).result() for r in requests]
    _, batched = _engine_results([_run(r) for r in requests], max_batch)
    for request, a, b in zip(requests, alone, batched):
        assert not isinstance(b, BaseException), b
        assert b.token_ids == a.token_ids, request
        assert b.stats.generated == a.stats.generated and b.stats.finish_reason == a.stats.finish_reason


def test_draft_steps_are_batched_across_generations():
    """Several mlx drafters (each its own k; one restricted head, one drafting ahead, one long prompt), one draft
    model: fewer draft passes than draft rows, and every output is the run alone's."""
    base = dict(draft="qwen", translator="context", k_policy="fixed")
    requests = [
        dict(base, prompt="Ala ma kota, a kot ma", max_tokens=14, drafter="mlx", k=2),
        dict(base, prompt="Hello there, my friend", max_tokens=12, drafter="mlx", k=3, translator="naive"),
        dict(base, prompt="the the the the the", max_tokens=13, drafter="lookup+mlx", k=2),
        dict(base, prompt="Zażółć gęślą jaźń", max_tokens=11, drafter="mlx", k=4, k_policy="adaptive"),
        dict(base, prompt="Once upon a time", max_tokens=10, drafter="mlx", k=2, options={"head": "300"}),
        dict(base, prompt="Once upon a time, in a land far away, there lived a girl who read books about dragons.",
             max_tokens=10, drafter="mlx", k=2),  # a draft prompt past LONG_DRAFT_FEED: its first pass goes alone
        dict(base, prompt="Water boils at", max_tokens=10, drafter="mlx", k=2, ahead=2),
        dict(base, prompt="x", max_tokens=9, drafter=None, k=1),
    ]
    alone = [_run(r).result() for r in requests]
    engine, batched = _engine_results([_run(r) for r in requests], max_batch=len(requests))
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert engine.draft_rows > engine.draft_passes > 0


def test_whole_targets_drafts_more_steps_in_batched_passes_and_each_equals_it_alone():
    """context's ``whole`` mode: the mlx drafters draft past k (extra draft steps, batched like the others) until
    the translation yields k + 1 target ids; ids and counts are each run alone's."""
    base = dict(draft="qwen", translator="context", k_policy="fixed", whole=True)
    requests = [
        dict(base, prompt="Ala ma kota, a kot ma", max_tokens=14, drafter="mlx", k=2),
        dict(base, prompt="Zażółć gęślą jaźń 漢字", max_tokens=12, drafter="mlx", k=1),
        dict(base, prompt="the the the the the", max_tokens=13, drafter="lookup+mlx", k=3),
        dict(base, prompt="def f(x):\n    return", max_tokens=11, drafter="mlx", k=4, ahead=2),
        dict(base, prompt="Once upon a time", max_tokens=10, drafter="mlx", k=2, draft="llama3"),
    ]
    alone = [_run(r).result() for r in requests]
    engine, batched = _engine_results([_run(r) for r in requests], max_batch=len(requests))
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert [(b.stats.proposed, b.stats.accepted) for b in batched] == [(a.stats.proposed, a.stats.accepted) for a in alone]
    target = tiny_loaded(TARGET)
    for request, a in zip(requests, alone):
        baseline = Run(RunConfig(prompt=request["prompt"], max_tokens=request["max_tokens"], baseline=True),
                       target=target).result()
        assert a.token_ids == baseline.token_ids
    assert engine.draft_rows > engine.draft_passes > 0


@pytest.mark.parametrize("translator", ["tli", "context"])
def test_sampled_drafts_on_one_draft_model_give_the_same_ids_for_the_same_seed(translator):
    """With ``tli`` every mlx drafter *draws* its proposals (its own key) from batched draft passes; the ids are
    those of each run alone for its seed. ``context``: the target's draws, keyed by seed and position."""
    requests = [dict(prompt=p, max_tokens=12, drafter=dr, draft="qwen", translator=translator, k=k,
                     k_policy="fixed", options=o)
                for p, dr, k, o in [("Ala ma kota", "mlx", 2, {}), ("Hello there", "mlx", 3, {}),
                                    ("Zażółć", "lookup+mlx", 2, {}), ("Ala ma kota", "mlx", 2, {"head": "300"})]]
    seeds = [3, 3, 11, 5]
    alone = [_run(r, temp=0.9, seed=s).result() for r, s in zip(requests, seeds)]
    engine, batched = _engine_results([_run(r, temp=0.9, seed=s) for r, s in zip(requests, seeds)], max_batch=4)
    assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
    assert engine.draft_rows > engine.draft_passes


class FailingLookup(LookupDrafter):
    """The real lookup drafter, failing on its third proposal (a request whose state goes bad mid-generation)."""

    calls = 0

    def propose(self, pending, k, allowed=None):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("drafter state lost")
        return super().propose(pending, k, allowed)


def test_a_failing_generation_fails_alone():
    requests = [dict(prompt=p, max_tokens=12, drafter=dr, draft="qwen", translator="context", k=2, k_policy="fixed")
                for p, dr in [("Ala ma kota", "mlx"), ("the the the the", "lookup"), ("Zażółć", None)]]
    alone = [_run(r).result() for r in requests]
    runs = [_run(r) for r in requests]
    runs[1].draft_side.drafter = _failing_like(runs[1])
    outcomes = generate_runs(runs, max_batch=3)
    assert isinstance(outcomes[1], RuntimeError) and "drafter state lost" in str(outcomes[1])
    assert outcomes[0].token_ids == alone[0].token_ids
    assert outcomes[2].token_ids == alone[2].token_ids


def _failing_like(run: Run) -> FailingLookup:
    """The run's own lookup drafter, as a FailingLookup."""
    drafter = run.draft_side.drafter
    failing = FailingLookup.__new__(FailingLookup)
    failing.__dict__.update(drafter.__dict__)
    return failing


def test_generations_join_and_leave_between_cycles_within_max_batch():
    requests = [dict(prompt=f"Ala ma kota {i}", max_tokens=2 + 3 * i, drafter="mlx", draft="qwen",
                     translator="context", k=2, k_policy="fixed") for i in range(5)]
    alone = [_run(r).result().token_ids for r in requests]
    runs = [_run(r) for r in requests]
    engine = BatchEngine(runs[0].target.model, max_batch=2)
    generations = [engine.add_run(run) for run in runs]
    ended_order, widths = [], []
    while engine.busy:
        ended_order += [generations.index(g) for g in engine.cycle()]
        widths.append(len(engine.active))
    assert max(widths) <= 2 and ended_order == [0, 1, 2, 3, 4]
    assert [run.result_of(g.tokens).token_ids for run, g in zip(runs, generations)] == alone


def test_a_cancelled_generation_leaves_and_the_others_finish():
    requests = [dict(prompt=p, max_tokens=12, drafter="mlx", draft="qwen", translator="context", k=2,
                     k_policy="fixed") for p in ["Ala ma kota", "Hello there", "Zażółć"]]
    alone = [_run(r).result().token_ids for r in requests]
    runs = [_run(r) for r in requests]
    engine = BatchEngine(runs[0].target.model, max_batch=3)
    generations = [engine.add_run(run) for run in runs]
    engine.cycle()
    generations[1].cancel()
    engine.run()
    assert generations[1].done and generations[1].error is None
    assert len(generations[1].tokens) < 12
    assert [runs[i].result_of(generations[i].tokens).token_ids for i in (0, 2)] == [alone[0], alone[2]]


def test_refuses_a_run_on_another_target_and_max_batch_below_one():
    run = _run(dict(prompt="Ala", max_tokens=2, drafter=None, draft="qwen"))
    with pytest.raises(ValueError):
        BatchEngine(run.target.model, max_batch=0)
    with pytest.raises(ValueError):
        BatchEngine(tiny_loaded("qwen").model).add_run(run)


def test_a_prompt_cache_per_generation_keeps_ids_unchanged():
    """Each generation its own PromptCache: a follow-up batch reuses each one's prefix and gives the same ids."""
    base = [dict(prompt=p, max_tokens=8, drafter="mlx", draft="qwen", translator="context", k=2, k_policy="fixed")
            for p in ["Ala ma kota", "Hello there, my"]]
    follow = [dict(r, prompt=r["prompt"] + " and more") for r in base]
    alone = [_run(r).result().token_ids for r in follow]
    caches = [PromptCache(), PromptCache()]
    generate_runs([_run(r) for r in base], prompt_caches=caches)
    again = generate_runs([_run(r) for r in follow], prompt_caches=caches)
    assert [r.token_ids for r in again] == alone


def test_batch_generate_in_mlx_lm_shape_with_per_prompt_requests():
    target, draft = tiny_loaded(TARGET), tiny_loaded("qwen")
    prompts = ["Ala ma kota", "Zażółć gęślą jaźń", "the the the the"]
    requests = [{}, {"translator": "naive", "k": 3, "k_policy": "adaptive"}, {"drafter": "lookup"}]
    response = specfw.batch_generate(target.model, target.tokenizer, prompts, draft_model=draft.model,
                                     draft_tokenizer=draft.tokenizer, max_tokens=[6, 9, 7], requests=requests,
                                     max_batch=2, return_token_ids=True)
    expected = [specfw.generate(target.model, target.tokenizer, p, draft_model=draft.model,
                                draft_tokenizer=draft.tokenizer, max_tokens=n, **r)
                for p, n, r in zip(prompts, [6, 9, 7], requests)]
    assert response.texts == expected
    assert response.errors == [None, None, None]
    assert response.generation_tokens == sum(map(len, response.token_ids))


@pytest.mark.slow
def test_real_pair_batch_equals_each_alone():
    """The default pair: mixed drafters and translators in one batch, each the target alone's ids."""
    from specfw.models.loading import load_model

    target, draft = load_model("gemma3-270m"), load_model("smollm2-135m-instruct")
    prompts = ["The capital of France is", "Stolicą Polski jest", "Once upon a time, there was a little",
               "Water boils at a temperature of"]
    configs = [dict(translator="context", k=2), dict(drafter="lookup+mlx", translator="naive", k=3),
               dict(drafter="lookup", k=2), dict(k_policy="adaptive", translator="context")]
    baseline = [Run(RunConfig(prompt=p, baseline=True, max_tokens=16), target=target).result().token_ids
                for p in prompts]
    runs = [Run(RunConfig(prompt=p, max_tokens=16, **c), target=target,
                draft=None if c.get("drafter") == "lookup" else draft) for p, c in zip(prompts, configs)]
    results = generate_runs(runs, max_batch=4)
    assert [r.token_ids for r in results] == baseline
