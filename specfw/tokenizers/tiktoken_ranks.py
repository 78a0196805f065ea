"""tiktoken BPE rank files: :class:`TiktokenTokenizer` (Qwen2.5, Llama 3) and :class:`GPT2Tokenizer`.

Also the pre-tokenizer patterns and special-token lists of those families, and
the reading and checking of rank files (``*.tiktoken``, GPT-2's ``encoder.json`` + ``vocab.bpe``).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from specfw.tokenizers.base import _BYTELEVEL, TokenizerNotFound, _bytelevel_token_bytes, _TableTokenizer

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
