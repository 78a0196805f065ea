"""Sentencepiece ``*.model`` files (Llama 2, Mistral v0.1): :class:`SentencePieceTokenizer`."""

from __future__ import annotations

import os
from pathlib import Path

from specfw.tokenizers.base import _SENTENCEPIECE, _sentencepiece_piece_bytes, _TableTokenizer


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
