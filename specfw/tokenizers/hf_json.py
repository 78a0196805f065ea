"""``tokenizer.json`` files run by the ``tokenizers`` package: :class:`HFTokenizersTokenizer` and its helpers."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from specfw.tokenizers.base import (
    _BYTELEVEL,
    _SENTENCEPIECE,
    TokenizerNotFound,
    _bytelevel_token_bytes,
    _sentencepiece_piece_bytes,
    _TableTokenizer,
)


def _walk(node: Any, kind: str) -> list[dict[str, Any]]:
    """All components of type ``kind`` in a tokenizer.json normalizer/pre-tokenizer/decoder tree."""
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") == kind else []
    for key in ("normalizers", "pretokenizers", "decoders", "processors"):
        for child in node.get(key) or []:
            found += _walk(child, kind)
    return found


def _token_content(value: Any) -> str | None:
    """bos_token/eos_token in tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


_BOS_NAMES = ("<|begin_of_text|>", "<s>")
_EOS_NAMES = ("<|end_of_text|>", "<|eot_id|>", "</s>", "<|endoftext|>", "<|im_end|>")


class HFTokenizersTokenizer(_TableTokenizer):
    """A ``tokenizer.json`` run by the ``tokenizers`` package.

    Supports byte-level BPE (GPT-2 alphabet: 'Ġ' is a space) and
    sentencepiece-style files ('▁' spaces, '<0xNN>' byte fallback). A
    ``tokenizer_config.json`` next to the file, if any, may set
    ``bos_token``, ``eos_token`` and ``add_bos_token``.
    """

    def __init__(self, tokenizer_json: str | os.PathLike[str], *, name: str | None = None) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(tokenizer_json)
        spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        family = _hf_family(spec)
        if family is None:
            raise TokenizerNotFound(f"{path}: only byte-level BPE or sentencepiece-style tokenizer.json is supported")

        self._tok = HFTokenizer.from_file(str(path))
        self._tok.encode_special_tokens = True  # special strings in text are text
        cont_spec, dummy_prefix = _without_dummy_prefix(spec)
        if dummy_prefix:
            self._tok_cont = HFTokenizer.from_str(json.dumps(cont_spec))
            self._tok_cont.encode_special_tokens = True
        else:
            self._tok_cont = self._tok

        model = spec.get("model") or {}
        vocab: dict[str, int] = model.get("vocab") or {}
        if not isinstance(vocab, dict):  # Unigram stores [piece, score] pairs
            vocab = {piece: i for i, (piece, _score) in enumerate(vocab)}
        byte_fallback = bool(model.get("byte_fallback"))
        pieces: dict[int, bytes] = {}
        for token, i in vocab.items():
            if family == _BYTELEVEL:
                raw = _bytelevel_token_bytes(token)
                pieces[i] = raw if raw is not None else token.encode("utf-8")
            else:
                pieces[i] = _sentencepiece_piece_bytes(token, byte_fallback)
        specials: dict[int, str] = {}
        by_name: dict[str, int] = {token: i for token, i in vocab.items()}
        for added in spec.get("added_tokens") or []:
            i, content = int(added["id"]), str(added["content"])
            by_name[content] = i
            if added.get("special", False):
                specials[i] = content
            else:
                # Non-special added tokens are matched in text as-is (raw content).
                pieces[i] = content.encode("utf-8")

        config = _read_json(path.with_name("tokenizer_config.json"))
        bos_name = _token_content(config.get("bos_token")) or _template_bos(spec)
        if bos_name is None:
            bos_name = next((n for n in _BOS_NAMES if n in specials.values()), None)
        bos_id = by_name.get(bos_name) if bos_name is not None else None
        # Stop on every conventional end token the vocabulary has, plus the
        # configured one: a chat model may end a turn with either.
        eos_names = [n for n in _EOS_NAMES if n in specials.values()]
        configured_eos = _token_content(config.get("eos_token"))
        if configured_eos is not None:
            eos_names.append(configured_eos)
        add_bos = config.get("add_bos_token")
        if not isinstance(add_bos, bool):
            # Conventions: a template that inserts BOS; Llama 3 always starts with
            # <|begin_of_text|>; sentencepiece-style Llama/Mistral with <s>.
            add_bos = (
                _template_bos(spec) is not None
                or bos_name == "<|begin_of_text|>"
                or (family == _SENTENCEPIECE and bos_name == "<s>")
            )
        self._init_table(
            name=name or str(path),
            family=family,
            pieces=pieces,
            specials=specials,
            bos_id=bos_id,
            eos_ids=[by_name[n] for n in eos_names if n in by_name],
            add_bos=bool(add_bos) and bos_id is not None,
            dummy_prefix=dummy_prefix,
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_continuation(self, text: str) -> list[int]:
        return self._tok_cont.encode(text, add_special_tokens=False).ids


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _hf_family(spec: dict[str, Any]) -> str | None:
    """Byte-level or sentencepiece-style, from the pipeline components of a tokenizer.json."""
    parts = [spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("decoder")]
    if any(_walk(p, "ByteLevel") for p in parts):
        return _BYTELEVEL
    if any(_walk(p, "Metaspace") or _walk(p, "ByteFallback") for p in parts):
        return _SENTENCEPIECE
    if any(r.get("content") == "\u2581" for r in _walk(spec.get("normalizer"), "Replace")):
        return _SENTENCEPIECE
    return None


def _without_dummy_prefix(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy of ``spec`` that adds no prefix space at the start, and whether the original did.

    The prefix comes from a ``Prepend("▁")`` normalizer (legacy Llama), a
    Metaspace pre-tokenizer with a prepend scheme, or ByteLevel's add_prefix_space.
    """
    # Copy only the parts edited below: the vocabulary is large.
    spec = dict(spec)
    for key in ("normalizer", "pre_tokenizer"):
        spec[key] = copy.deepcopy(spec.get(key))
    changed = False
    normalizer = spec.get("normalizer")
    if isinstance(normalizer, dict):
        if normalizer.get("type") == "Prepend":
            spec["normalizer"] = None
            changed = True
        elif normalizer.get("type") == "Sequence":
            kept = [n for n in normalizer.get("normalizers", []) if n.get("type") != "Prepend"]
            changed = len(kept) != len(normalizer.get("normalizers", []))
            normalizer["normalizers"] = kept
    for meta in _walk(spec.get("pre_tokenizer"), "Metaspace"):
        if meta.get("prepend_scheme", "never") != "never" or meta.get("add_prefix_space"):
            meta["prepend_scheme"] = "never"
            if "add_prefix_space" in meta:
                meta["add_prefix_space"] = False
            changed = True
    for level in _walk(spec.get("pre_tokenizer"), "ByteLevel"):
        if level.get("add_prefix_space"):
            level["add_prefix_space"] = False
            changed = True
    return spec, changed


def _template_bos(spec: dict[str, Any]) -> str | None:
    """The special token a TemplateProcessing post-processor puts before the text, if any."""
    for template in _walk(spec.get("post_processor"), "TemplateProcessing"):
        for item in template.get("single") or []:
            if "Sequence" in item:
                break
            if "SpecialToken" in item:
                return str(item["SpecialToken"]["id"])
    return None
