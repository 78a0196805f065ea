"""Sliding-window targets and drafters (Gemma 3's layout) stay lossless past the window.

mlx-lm gives sliding-window layers a ``RotatingKVCache`` that cannot be
trimmed once it has wrapped: rejected draft positions would stay in the
cache. specfw gives those layers a plain ``KVCache`` (the model still masks
to the window); these tests use tiny random-weight ``gemma3_text`` models
with an 8-position window on real tokenizers, and prompts plus outputs far
longer than the window.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import pytest
from hypothesis import given, strategies as st
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import RotatingKVCache, make_prompt_cache

from specfw.config import RunConfig
from specfw.models.embedded import tiny_model
from specfw.models.kv_cache import make_trimmable_cache
from specfw.models.loading import LoadedModel
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run, prompt_ids
from specfw.tokenizers import load_tokenizer

WINDOW = 8
SLIDING = dict(sliding_window=WINDOW, sliding_window_pattern=2, head_dim=16, query_pre_attn_scalar=16)


@lru_cache(maxsize=None)
def sliding_loaded(tokenizer_name: str, seed: int) -> LoadedModel:
    tokenizer = load_tokenizer(tokenizer_name)
    model, config = tiny_model("gemma3_text", tokenizer.vocab_size, 64, 2, seed, **SLIDING)
    return LoadedModel(model, tokenizer, f"tiny-sliding:{tokenizer_name}", Path("."), config["max_position_embeddings"], 0)


WORDS = st.sampled_from(["Ala", " ma", " kota", " Zażółć", " gęślą", " jaźń", " w", " Warszawie", " i", " the",
                         " capital", " of", " France", "\n", " 😀", " 漢字", ",", "."])
LONG_PROMPTS = st.lists(WORDS, min_size=12, max_size=40).map("".join)


def _mlx_lm_greedy(loaded: LoadedModel, prompt: str, max_tokens: int) -> list[int]:
    """The target alone through mlx-lm's own generation loop (its RotatingKVCache, its masks)."""
    ids = mx.array(prompt_ids(loaded.tokenizer, prompt))
    out = []
    for token, _ in generate_step(ids, loaded.model, max_tokens=max_tokens, sampler=lambda lp: mx.argmax(lp, axis=-1)):
        token = int(token)
        out.append(token)
        if token in loaded.tokenizer.eos_ids:
            break
    return out


def test_the_model_cache_rotates_and_ours_does_not():
    target = sliding_loaded("mistral-v0.1", 41)
    assert any(isinstance(c, RotatingKVCache) for c in make_prompt_cache(target.model))
    cache = make_trimmable_cache(target.model)
    assert not any(isinstance(c, RotatingKVCache) for c in cache)
    ids = mx.array([prompt_ids(target.tokenizer, "Zażółć gęślą jaźń w Warszawie, Ala ma kota i psa.")])
    target.model(ids, cache=cache)
    length = ids.shape[1]
    assert length > 2 * WINDOW
    for layer in cache:  # every layer can go back past the window
        assert layer.is_trimmable() and layer.trim(WINDOW + 3) == WINDOW + 3 and layer.offset == length - WINDOW - 3


@pytest.mark.parametrize("translator", ["none", "naive", "context"])
@given(prompt=LONG_PROMPTS, k=st.integers(1, 4), max_tokens=st.integers(12, 28))
def test_greedy_past_the_window_equals_the_target_alone(translator, prompt, k, max_tokens):
    # `none` passes ids through unchanged, so its drafter shares the target's tokenizer (another seed):
    # a Qwen drafter's ids would mostly fall outside Mistral's vocabulary and nothing would be proposed.
    target = sliding_loaded("mistral-v0.1", 41)
    draft = sliding_loaded("mistral-v0.1", 43) if translator == "none" else sliding_loaded("qwen2.5", 42)
    baseline = Run(RunConfig(prompt=prompt, baseline=True, max_tokens=max_tokens), target=target).result()
    assert baseline.token_ids == _mlx_lm_greedy(target, prompt, max_tokens)  # same masks as mlx-lm's own cache
    spec = Run(RunConfig(prompt=prompt, translator=translator, k=k, max_tokens=max_tokens), target=target,
               draft=draft).result()
    assert spec.token_ids == baseline.token_ids
    assert spec.stats.proposed > 0


@given(prompt=LONG_PROMPTS, follow_up=LONG_PROMPTS)
def test_the_prompt_cache_past_the_window_changes_no_id(prompt, follow_up):
    target, draft = sliding_loaded("mistral-v0.1", 41), sliding_loaded("qwen2.5", 42)
    cache = PromptCache()
    first = Run(RunConfig(prompt=prompt, max_tokens=10), target=target, draft=draft)
    list(first.stream(prompt_cache=cache))
    second_prompt = prompt + first.result().text + follow_up
    again = Run(RunConfig(prompt=second_prompt, max_tokens=10), target=target, draft=draft)
    list(again.stream(prompt_cache=cache))
    fresh = Run(RunConfig(prompt=second_prompt, baseline=True, max_tokens=10), target=target).result()
    assert again.result().token_ids == fresh.token_ids
    assert cache.target_reused > WINDOW  # it did reuse a cache that had gone past the window
