"""Combined drafters (``FIRST+SECOND``), plain steps, and the mlx drafter's cheaper-model options.

A combined drafter proposes target-vocabulary ids from its first part and
draft-vocabulary ids (translated) from its second; the adaptive k policy may
make any cycle a plain, pipelined target step. Every combination must give
the target-alone ids (greedy) on real tokenizers and random prompts, and the
target's distribution when sampling.
"""

from __future__ import annotations

import json
import random

import mlx.core as mx
import pytest
from hypothesis import given, strategies as st

from specfw.cli import main
from specfw.config import RunConfig
from specfw.protocols import DrafterSetup, VerifierSetup
from specfw.run import Run
from specfw_plugins.combined import combined_drafter_class
from specfw_plugins.drafters import MLXDrafter
from specfw_plugins.lookup import LookupDrafter

from conftest import tiny_loaded
from test_lookup import _naive_lookup
from test_lossless import PAIRS, PROMPTS, _baseline, _replay_reference
from test_sampling import PROMPT, RUNS, TEMP, LenientVerifier, _chi2_p, _second_choice_reference

REPEATING = "Ala ma kota, a kot ma Alę. Ala ma kota, a kot ma Alę. Ala ma kota, a kot"


def _run(target, draft, prompt, max_tokens, **fields):
    return Run(RunConfig(prompt=prompt, max_tokens=max_tokens, **fields), target=target, draft=draft).result()


@pytest.mark.slow
@pytest.mark.parametrize("k_policy", ["fixed", "adaptive"])
@pytest.mark.parametrize("second", ["mlx", "replay"])
@given(prompt=PROMPTS, pair=st.sampled_from(PAIRS), translator=st.sampled_from(["naive", "context", "tli"]),
       k=st.integers(1, 4), max_tokens=st.integers(4, 16), repeat=st.booleans())
def test_combined_drafter_is_lossless_on_random_prompts(second, k_policy, prompt, pair, translator, k, max_tokens,
                                                        repeat):
    """lookup+SECOND: lookup in the target's vocabulary, SECOND (a random model, or the target's own
    continuation with a fifth of its ids corrupted) in the drafter's, translated."""
    target, draft = tiny_loaded(pair[0]), tiny_loaded(pair[1])
    prompt = prompt * 3 if repeat else prompt  # a repeated prompt gives lookup something to find
    baseline = _baseline(target, prompt, max_tokens)
    options = {}
    if second == "replay":
        options = {"reference": _replay_reference(target, draft, prompt, baseline), "corrupt_rate": 0.2, "seed": k}
    result = _run(target, draft, prompt, max_tokens, drafter=f"lookup+{second}", drafter_options=options,
                  translator=translator, k=k, k_max=5, k_policy=k_policy)
    assert result.token_ids == baseline.token_ids
    assert result.stats.accepted <= result.stats.proposed
    assert sum(s["proposed"] for s in result.stats.sources.values()) == result.stats.proposed


def test_both_sources_propose_and_are_counted_apart():
    """On a repeating text lookup finds matches (target source); where it has none the drafter's model drafts."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    baseline = _baseline(target, REPEATING, 24)
    reference = _replay_reference(target, draft, REPEATING, baseline)
    result = _run(target, draft, REPEATING, 24, drafter="lookup+replay", drafter_options={"reference": reference},
                  translator="context", k=3)
    assert result.token_ids == baseline.token_ids
    sources = result.stats.sources
    assert set(sources) == {"target", "draft"}, sources
    assert sources["draft"]["accepted"] > 0  # the perfect replay drafter is accepted through translation
    assert sum(s["cycles"] for s in sources.values()) <= result.stats.cycles


@given(steps=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 5), st.integers(0, 40)), min_size=1, max_size=30),
       seed=st.integers(0, 1000))
def test_first_part_always_proposes_from_the_accepted_target_ids(steps, seed):
    """After any mix of accepted and rejected proposals, lookup (as the first part) sees exactly the accepted ids."""
    rng = random.Random(seed)
    cls = combined_drafter_class(LookupDrafter, LookupDrafter)
    drafter = cls(DrafterSetup(RunConfig(prompt="x"), None, 50, {}, target_vocab_size=50))
    drafter.reset()
    accepted = [rng.randrange(6) for _ in range(8)]
    for k, keep, noise in steps:
        proposal = drafter.propose_target(accepted, k)
        assert proposal == _naive_lookup(accepted, k, 3, 1)
        kept = proposal[: min(keep, len(proposal))]
        accepted = accepted + kept + [noise % 7]  # the verifier's own id follows the accepted prefix


@pytest.mark.slow
@pytest.mark.parametrize("verifier", ["sample", "speculative"])
def test_combined_drafter_sampling_matches_target_alone(verifier):
    """lookup+replay at temperature > 0: tokens 2 and 3 are distributed as the target's alone; the lenient control is caught."""
    target = tiny_loaded("mistral")
    reference = _second_choice_reference(target)

    def draw(seed, verifier=None, lenient=False, baseline=False):
        config = RunConfig(prompt=PROMPT, temp=TEMP, seed=seed, max_tokens=3, k=2, baseline=baseline,
                           drafter="lookup+replay", drafter_options={"reference": reference}, verifier=verifier)
        run = Run(config, target=target)
        if lenient:
            run.target_side.verifier = LenientVerifier(VerifierSetup(config))
        result = run.result()
        return tuple(result.token_ids), result.stats.sources

    base = [draw(seed, baseline=True)[0] for seed in range(RUNS)]
    spec_runs = [draw(10_000 + seed, verifier=verifier) for seed in range(RUNS)]
    spec = [t for t, _ in spec_runs]
    lenient = [draw(20_000 + seed, lenient=True)[0] for seed in range(RUNS)]
    assert any("target" in s for _, s in spec_runs), "lookup must propose in some runs"
    for position in (1, 2):
        assert _chi2_p([t[position] for t in base], [t[position] for t in spec]) > 0.001
    assert _chi2_p([t[1:] for t in base], [t[1:] for t in spec]) > 0.001
    assert _chi2_p([t[1:] for t in base], [t[1:] for t in lenient]) < 1e-6


@pytest.mark.parametrize("options", [{"quantize": "8"}, {"quantize": "4"}, {"head": "2000"}, {"head": "allowed"}])
@pytest.mark.parametrize("translator", ["context", "tli"])
def test_cheaper_draft_models_stay_lossless(options, translator):
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    prompt = "Zażółć gęślą jaźń w Warszawie, a potem"
    baseline = _baseline(target, prompt, 16)
    result = _run(target, draft, prompt, 16, drafter_options=options, translator=translator, k=3)
    assert result.token_ids == baseline.token_ids
    assert result.stats.proposed > 0


def test_restricted_head_proposes_only_its_ids_and_samples_a_full_width_distribution(tmp_path):
    draft = tiny_loaded("qwen")
    ids = list(range(100, 400)) + [7, 9000]
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(ids))
    config = RunConfig(prompt="x", temp=0.8)
    drafter = MLXDrafter(DrafterSetup(config, draft.model, draft.tokenizer.vocab_size, {"head": str(path)}, sample=True))
    drafter.reset()
    proposal = drafter.propose([1, 2, 3], 4)
    assert set(proposal) <= set(ids)
    probs = drafter.last_probs
    width = draft.model.args.vocab_size
    assert probs.shape == (4, width)
    assert mx.allclose(probs.sum(axis=-1), mx.ones(4), atol=1e-4).item()
    outside = mx.array([i not in set(ids) for i in range(width)])
    assert mx.all(mx.where(outside, probs, 0.0) == 0).item()


def test_quantized_drafter_leaves_the_loaded_model_as_it_is():
    draft = tiny_loaded("qwen")
    before = draft.model.model.layers[0].self_attn.q_proj
    drafter = MLXDrafter(DrafterSetup(RunConfig(prompt="x"), draft.model, draft.tokenizer.vocab_size, {"quantize": "4"}))
    assert draft.model.model.layers[0].self_attn.q_proj is before and not hasattr(before, "scales")
    assert hasattr(drafter.model.model.layers[0].self_attn.q_proj, "scales")


TINY_PAIR = ["--target", "tiny-random-mistral", "--draft", "tiny-random-qwen2.5"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--drafter", "lookup+bogus"], "unknown drafter 'bogus' in 'lookup+bogus'; known: "),
        (["--drafter", "mlx+lookup"], "drafter 'mlx' cannot come first in 'mlx+lookup'"),
        (["--drafter", "lookup+mlx+replay"], "a combination names two drafters"),
        (["--drafter", "lookup", "--drafter-option", "quantize=4", *TINY_PAIR], "drafter 'lookup' has no option 'quantize'"),
        (["--drafter", "lookup+mlx", "--drafter-option", "bits=4", *TINY_PAIR], "drafter 'lookup+mlx' has no option 'bits'"),
        (["--drafter-option", "quantize=3", *TINY_PAIR], "quantize must be one of 4, 8"),
        (["--drafter-option", "head=nowhere.json", *TINY_PAIR], "head must be a number of ids, 'allowed' or a JSON file"),
        (["--drafter-option", "quantize", *TINY_PAIR], "--drafter-option expects KEY=VALUE"),
    ],
)
def test_bad_drafter_input_is_one_line(capsys, args, needle):
    assert main(["run", "--prompt", "hello", "--max-tokens", "2", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("specfw: error: ") and needle in err[0], err
