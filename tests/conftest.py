"""Shared fixtures: real tokenizers and tiny random-weight MLX models sized to them.

Hypothesis runs more examples under CI (CI=true) than locally; see the
profiles below. Slow tests carry ``@pytest.mark.slow``; skip them locally
with ``-m "not slow"``.
"""

from __future__ import annotations

import os
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, settings

import specfw  # noqa: F401  (first: loads an optimized BLAS before any test imports MLX)

settings.register_profile(
    "ci", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.register_profile("dev", max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("stress", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test builds or imports models under one temporary cache, never the user's."""
    monkeypatch.setenv("SPECFW_CACHE", str(tmp_path_factory.getbasetemp() / "specfw-cache"))


# Tiny models: (model_type, tokenizer, hidden, layers, seed). Session-wide caches keep them built once.
TINY = {
    "mistral": ("mistral", "mistral-v0.1", 64, 2, 11),
    "mistral-b": ("mistral", "mistral-v0.1", 64, 2, 12),
    "qwen": ("qwen2", "qwen2.5", 64, 2, 21),
    "llama3": ("llama", "llama3", 48, 2, 31),
}


@lru_cache(maxsize=None)
def tiny_loaded(key: str):
    """A :class:`specfw.models.loading.LoadedModel` for one of the TINY entries (in memory, not on disk)."""
    from pathlib import Path

    from specfw.models.embedded import tiny_model
    from specfw.models.loading import LoadedModel
    from specfw.tokenizers import load_tokenizer

    model_type, tok_name, hidden, layers, seed = TINY[key]
    tokenizer = load_tokenizer(tok_name)
    model, config = tiny_model(model_type, tokenizer.vocab_size, hidden, layers, seed)
    return LoadedModel(model, tokenizer, f"tiny:{key}", Path("."), config["max_position_embeddings"], 0)
