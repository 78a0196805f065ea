"""The one :class:`Tokenizer` protocol, its error, and what every tokenizer format shares.

Shared here: :func:`decode_bytes`, :func:`single_byte_ids`, :func:`same_vocabulary`,
the id -> bytes table base class with its vocabulary fingerprint, and how a
vocabulary spells bytes (sentencepiece's "▁" and ``<0xNN>`` pieces, byte-level
BPE's GPT-2 alphabet).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from specfw.errors import SpecfwError


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
