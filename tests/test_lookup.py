"""The ``lookup`` drafter (prompt lookup): what it proposes, and that runs with it stay lossless."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from specfw.config import RunConfig
from specfw.errors import PluginError
from specfw.protocols import DrafterSetup
from specfw.run import Run
from specfw.tokenizers import load_tokenizer
from specfw_plugins.lookup import LookupDrafter

from conftest import tiny_loaded
from test_lossless import PROMPTS


def _drafter(**options) -> LookupDrafter:
    drafter = LookupDrafter(DrafterSetup(RunConfig(prompt="x"), None, 32000, options))
    drafter.reset()
    return drafter


def _naive_lookup(context: list[int], k: int, max_ngram: int, min_ngram: int) -> list[int]:
    """The definition, written the slow obvious way: longest suffix first, most recent earlier occurrence."""
    for n in range(min(max_ngram, len(context) - 1), min_ngram - 1, -1):
        suffix = context[len(context) - n :]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == suffix:
                return context[start + n : start + n + k]
    return []


def test_proposes_what_followed_the_last_match_in_real_text():
    tok = load_tokenizer("mistral-v0.1")
    text = "- Warszawa: 1,8 mln\n- Kraków: 0,8 mln\n- Łódź: 0,7 mln\n- Wrocław:"
    ids = tok.encode(text)
    drafter = _drafter()
    proposal = drafter.propose(ids, 4)
    assert proposal == _naive_lookup(ids, 4, 3, 1)
    assert tok.decode(proposal).startswith(" 0,7 mln") or tok.decode(proposal).startswith(" 0")


@given(
    context=st.lists(st.integers(0, 6), min_size=1, max_size=40),
    k=st.integers(1, 5),
    ngrams=st.tuples(st.integers(1, 4), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1])),
)
def test_matches_the_naive_definition(context, k, ngrams):
    min_ngram, max_ngram = ngrams
    drafter = _drafter(min_ngram=min_ngram, max_ngram=max_ngram)
    assert drafter.propose(context, k) == _naive_lookup(context, k, max_ngram, min_ngram)


def test_follows_the_schedulers_cache_bookkeeping():
    """After trim(n) and new pending ids, the context is what the scheduler believes it is."""
    drafter = _drafter()
    first = drafter.propose([1, 2, 3, 1, 2], 3)  # '1 2' occurred before: proposes 3 1 2
    assert first == [3, 1, 2]
    drafter.trim(2)  # all rejected: the scheduler keeps the 5 context ids and drops the 2 fed proposals
    assert drafter.propose([9], 2) == []  # context is now 1 2 3 1 2 9: nothing followed 9 before
    assert drafter.context.tolist() == [1, 2, 3, 1, 2, 9]


def test_bad_options_are_one_line_errors():
    with pytest.raises(PluginError, match="min_ngram"):
        _drafter(min_ngram=3, max_ngram=2)
    with pytest.raises(PluginError, match="integers"):
        _drafter(max_ngram="many")


@pytest.mark.parametrize("model", ["mistral", "qwen"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_lookup_runs_are_lossless(model, k):
    target = tiny_loaded(model)
    prompt = "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2"
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=24), target=target).result()
    run = Run(RunConfig(prompt=prompt, drafter="lookup", k=k, max_tokens=24), target=target)
    result = run.result()
    assert result.translator_used == "identity"
    assert result.token_ids == baseline.token_ids
    passes = result.stats.cycles + (0 if result.stats.prompt_pass_drafted else 1)
    assert result.stats.host_syncs == passes  # only the verifier waits on the device
    assert result.stats.accepted <= result.stats.proposed


@pytest.mark.slow
@given(prompt=PROMPTS, model=st.sampled_from(["mistral", "qwen", "llama3"]), k=st.integers(1, 6),
       max_tokens=st.integers(4, 20))
def test_lookup_is_lossless_on_random_prompts(prompt, model, k, max_tokens):
    """The prompt doubled, so lookup finds matches and its proposals are really verified."""
    target = tiny_loaded(model)
    config = RunConfig(prompt=prompt + prompt, drafter="lookup", k=k, max_tokens=max_tokens)
    doubled = RunConfig(prompt=prompt + prompt, baseline=True, max_tokens=max_tokens)
    assert Run(config, target=target).result().token_ids == Run(doubled, target=target).result().token_ids
