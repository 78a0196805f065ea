"""The mlx-lm-style library API and the prompt cache.

``specfw.stream_generate`` must give mlx-lm's target-alone tokens for every
translator (real default pair, mlx-lm's own tokenizer object); the prompt
cache must never change a generation's ids, only skip prefill (tiny models on
real tokenizers, hypothesis conversations).
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

import specfw
from specfw.api import PromptRun, as_specfw_tokenizer, encode_prompt
from specfw.config import RunConfig
from specfw.errors import ConfigError
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run, RunResult, prompt_ids

from conftest import tiny_loaded

PROMPTS = ["The capital of France is", "Najdłuższą rzeką w Polsce jest"]
MAX_TOKENS = 12


# --------------------------------------------------------------------------- tiny models (fast)


def test_generate_keeps_the_runconfig_form():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    result = specfw.generate(RunConfig(prompt="Ala ma kota", max_tokens=6), target, draft)
    assert isinstance(result, RunResult) and result.stats.generated == 6


def test_generate_mlx_lm_form_gives_the_streamed_text_and_the_target_alone_ids():
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    prompt = "Zażółć gęślą jaźń"
    responses = list(specfw.stream_generate(target.model, target.tokenizer, prompt, draft_model=draft.model,
                                            draft_tokenizer=draft.tokenizer, max_tokens=8))
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=8), target=target).result()
    assert [r.token for r in responses] == baseline.token_ids
    assert [r.generation_tokens for r in responses] == list(range(1, 9))
    assert [r.finish_reason for r in responses] == [None] * 7 + ["length"]
    assert responses[-1].proposed > 0 and responses[-1].cycles > 0  # it drafted
    assert responses[-1].accepted == sum(r.from_draft for r in responses) <= responses[-1].verified_accepted
    text = specfw.generate(target.model, target.tokenizer, prompt, draft_model=draft.model,
                           draft_tokenizer=draft.tokenizer, max_tokens=8)
    assert text == "".join(r.text for r in responses) == baseline.text


def test_a_sampler_decides_every_emitted_id():
    """With an mlx-lm sampler the sampler's draws are the output, whatever the drafter proposes."""
    import mlx.core as mx

    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    fixed = 1234

    def always(logprobs):
        return mx.full(logprobs.shape[:-1], fixed, dtype=mx.int32)

    responses = list(specfw.stream_generate(target.model, target.tokenizer, "Ala ma kota", draft_model=draft.model,
                                            draft_tokenizer=draft.tokenizer, max_tokens=6, sampler=always))
    assert [r.token for r in responses] == [fixed] * 6


def test_prompt_ids_are_taken_as_given_and_text_as_mlx_lm_encodes_it():
    target = tiny_loaded("mistral")
    tok = target.tokenizer
    assert encode_prompt("Ala", tok) == prompt_ids(tok, "Ala")  # BOS added once
    with_bos = encode_prompt("<s>Ala", tok)  # BOS already there (a rendered chat template): not doubled
    assert with_bos[0] == tok.bos_id and with_bos.count(tok.bos_id) == 1
    ids = prompt_ids(tok, "Ala ma kota")
    by_ids = [r.token for r in specfw.stream_generate(target.model, tok, ids, max_tokens=5)]
    by_text = [r.token for r in specfw.stream_generate(target.model, tok, "Ala ma kota", max_tokens=5)]
    assert by_ids == by_text


def test_a_tokenizer_without_files_is_one_clear_error():
    class NoFiles:
        name_or_path = "not/a/folder"

    with pytest.raises(ConfigError, match="cannot find the files"):
        as_specfw_tokenizer(NoFiles())


def test_max_tokens_zero_is_refused_as_mlx_lm_does():
    target = tiny_loaded("mistral")
    with pytest.raises(ValueError, match="non-zero"):
        next(specfw.stream_generate(target.model, target.tokenizer, "Ala", max_tokens=0))


TURNS = st.lists(
    st.text(alphabet="aąbcćdeęfghijklłmnńoóprsśtuwyzźż ?.\n😀", min_size=1, max_size=12).filter(str.strip),
    min_size=2, max_size=4,
)


@given(turns=TURNS, translator=st.sampled_from(["context", "tli", "naive"]), baseline=st.booleans(),
       ahead=st.sampled_from([0, 2]))
def test_prompt_cache_changes_no_id(turns, translator, baseline, ahead):
    """A conversation where each prompt extends the last one plus its reply: same ids with the cache, prefill skipped."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    cache = PromptCache()
    conversation = ""
    for turn in turns:
        conversation += turn
        config = RunConfig(prompt=conversation, translator=translator, baseline=baseline, max_tokens=6, k=3,
                           draft_ahead=ahead)
        target_ids, draft_ids = prompt_ids(target.tokenizer, conversation), prompt_ids(draft.tokenizer, conversation)
        cached_run = PromptRun(config, target_ids, draft_ids, target=target, draft=None if baseline else draft)
        with_cache = [t.id for t in cached_run.stream(prompt_cache=cache)]
        fresh = PromptRun(config, target_ids, draft_ids, target=target, draft=None if baseline else draft)
        assert with_cache == [t.id for t in fresh.stream()]
        conversation += target.tokenizer.decode([i for i in with_cache if i >= 0])
    assert cache.target_reused > 0  # the last prompt extends the one before


def test_prompt_cache_survives_a_generation_closed_early():
    """A client that goes away mid-generation leaves a cache the next request can still use."""
    target, draft = tiny_loaded("mistral"), tiny_loaded("qwen")
    cache = PromptCache()
    first = "Ala ma kota, a kot ma Alę."
    config = RunConfig(prompt=first, max_tokens=12, k=2)
    run = PromptRun(config, prompt_ids(target.tokenizer, first), None, target=target, draft=draft)
    stream = run.stream(prompt_cache=cache)
    partial = [next(stream).id for _ in range(3)]
    stream.close()
    follow = first + target.tokenizer.decode(partial) + " Dalej"
    ids = prompt_ids(target.tokenizer, follow)
    config = RunConfig(prompt=follow, max_tokens=8, k=2)
    again = [t.id for t in PromptRun(config, ids, None, target=target, draft=draft).stream(prompt_cache=cache)]
    assert cache.target_reused > 0
    assert again == [t.id for t in PromptRun(config, ids, None, target=target, draft=draft).stream()]


# --------------------------------------------------------------------------- the real pair against mlx-lm


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    """The session's model cache (conftest's), set for module-scoped fixtures, which start before it is."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECFW_CACHE", str(tmp_path_factory.getbasetemp() / "specfw-cache"))
        yield


@pytest.fixture(scope="module")
def real_pair(session_cache):
    target_model, target_tok = specfw.load("gemma3-270m")
    draft_model, draft_tok = specfw.load("smollm2-135m-instruct")
    return target_model, target_tok, draft_model, draft_tok


@pytest.fixture(scope="module")
def mlx_lm_tokenizers(real_pair, session_cache):
    """mlx-lm's own TokenizerWrapper objects for the same folders (what mlx_lm.load returns)."""
    from mlx_lm.utils import load_tokenizer

    from specfw.models.store import model_path

    return load_tokenizer(model_path("gemma3-270m")), load_tokenizer(model_path("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def mlx_lm_tokens(real_pair, mlx_lm_tokenizers):
    """mlx-lm's target-alone tokens for each prompt (its own stream_generate and tokenizer object)."""
    from mlx_lm import stream_generate as mlx_lm_stream_generate

    target_model, wrapper = real_pair[0], mlx_lm_tokenizers[0]
    return {prompt: [r.token for r in mlx_lm_stream_generate(target_model, wrapper, prompt, max_tokens=MAX_TOKENS)]
            for prompt in PROMPTS}


@pytest.mark.slow
@pytest.mark.parametrize("translator", ["none", "naive", "context", "tli"])
def test_stream_generate_equals_mlx_lm_target_alone(real_pair, mlx_lm_tokenizers, mlx_lm_tokens, translator):
    target_model, _, draft_model, _ = real_pair
    target_wrapper, draft_wrapper = mlx_lm_tokenizers
    for prompt in PROMPTS:
        expected = mlx_lm_tokens[prompt]
        responses = list(specfw.stream_generate(target_model, target_wrapper, prompt, draft_model=draft_model,
                                                draft_tokenizer=draft_wrapper, translator=translator,
                                                max_tokens=MAX_TOKENS))
        assert [r.token for r in responses] == expected, (translator, prompt)
        assert responses[-1].finish_reason in ("length", "stop")
        assert responses[-1].proposed > 0 and responses[-1].cycles > 0


@pytest.mark.slow
def test_specfw_tokenizers_and_mlx_lm_wrappers_give_the_same_ids(real_pair, mlx_lm_tokenizers):
    _, target_tok, _, draft_tok = real_pair
    for wrapper, tok in zip(mlx_lm_tokenizers, (target_tok, draft_tok)):
        assert as_specfw_tokenizer(wrapper).fingerprint == tok.fingerprint
        for prompt in PROMPTS:
            assert encode_prompt(prompt, tok) == wrapper.encode(prompt)
