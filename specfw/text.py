"""Byte-level text helpers shared by the scheduler and translators."""

from __future__ import annotations


def complete_utf8_prefix(data: bytes | bytearray) -> bytes:
    """``data`` without a trailing UTF-8 sequence that is still incomplete.

    Invalid bytes elsewhere are kept (they decode to U+FFFD); only an
    unfinished multi-byte character at the very end is held back, because the
    next token may complete it.
    """
    data = bytes(data)
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return data[: len(data) - back] if need > back else data
    return data


def complete_text(data: bytes | bytearray) -> str:
    """The text of ``data`` up to its last complete character."""
    return complete_utf8_prefix(data).decode("utf-8", errors="replace")


def common_prefix_len(a, b) -> int:
    """Length of the longest common prefix of two sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def leading_continuation_bytes(data: bytes | bytearray) -> int:
    """How many UTF-8 continuation bytes (``10xxxxxx``) ``data`` starts with, at most 3.

    They finish a character whose lead byte came earlier (e.g. the second
    byte of a letter that a byte-fallback tokenizer spelled in two tokens).
    """
    n = 0
    while n < min(3, len(data)) and data[n] & 0xC0 == 0x80:
        n += 1
    return n


def spelled_prefix(pieces, data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """How many of ``pieces`` (byte strings), in order, spell ``data`` from ``start`` on.

    Returns ``(count, end)``: the first ``count`` pieces equal ``data[start:end]``
    piece by piece; counting stops at the first empty piece or the first one
    that does not match.
    """
    pos = start
    count = 0
    for piece in pieces:
        if not piece or data[pos : pos + len(piece)] != piece:
            break
        pos += len(piece)
        count += 1
    return count, pos
