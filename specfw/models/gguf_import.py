"""Import a GGUF file (llama.cpp's format) into an MLX model folder.

The result is an ordinary mlx-lm folder (``config.json``, ``model.safetensors``
in float32, tokenizer files, ``tokenizer_config.json``) that
:func:`specfw.models.loading.load_model` loads like any other. Supported architectures
are ``llama`` (e.g. SmolLM2) and ``gemma3`` (e.g. Gemma 3 270M).

What llama.cpp's converter changed has to be undone here:

* GGUF lists tensor dimensions innermost first; numpy/MLX order is reversed.
* For ``llama`` the rows of Q and K are permuted (llama.cpp's rope layout).
* For ``gemma3`` every RMSNorm weight is stored with +1 added (Gemma computes
  ``x * (1 + w)``, and mlx-lm's gemma3_text adds that 1 itself).
* The tokenizer lives in metadata: byte-level BPE ("gpt2") becomes a
  ``tokenizer.json``, sentencepiece ("llama") a ``tokenizer.model``.

The header is read by a small parser of our own rather than
``gguf.GGUFReader``: the reader builds a numpy view per vocabulary string and
takes ~10 s to open Gemma 3's 262k-token file, while this parser needs well
under a second. Tensor data is dequantized with ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import shutil
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from specfw.errors import SpecfwError
from specfw.tokenizers.tiktoken_ranks import LLAMA3_PAT_STR

__all__ = ["SUPPORTED_ARCHITECTURES", "GGUFImportError", "import_gguf", "inspect_gguf", "supported_quant_types"]

SUPPORTED_ARCHITECTURES = ("llama", "gemma3")


class GGUFImportError(SpecfwError):
    """A GGUF file could not be imported; str() is one line naming the file and the problem."""


# --------------------------------------------------------------------------- header

_MAGIC = b"GGUF"
# GGUF value types (gguf.GGUFValueType): id -> struct format, or None for string/array.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first), i.e. GGUF's dims reversed
    qtype: int  # gguf.GGMLQuantizationType value
    offset: int  # absolute byte offset in the file

    @property
    def type_name(self) -> str:
        return _type_name(self.qtype)


@dataclass
class _Header:
    version: int
    metadata: dict[str, Any]
    tensors: list[_Tensor]
    file_size: int
    arch: str = field(init=False)

    def __post_init__(self) -> None:
        self.arch = str(self.metadata.get("general.architecture", ""))


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise EOFError
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, fmt: str) -> Any:
        return struct.unpack_from("<" + fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("Q")
        start = self.take(n)
        return self.buf[start : start + n].decode("utf-8")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item, count = self.scalar("I"), self.scalar("Q")
            if item in _NUMPY:  # numeric arrays (token types, scores) in one copy, not item by item
                dtype = np.dtype(_NUMPY[item]).newbyteorder("<")
                start = self.take(count * dtype.itemsize)
                return np.frombuffer(self.buf, dtype, count, start).copy()
            return [self.value(item) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype}")


def _read_header(path: Path) -> _Header:
    """Metadata and tensor table of a GGUF file; raises GGUFImportError for missing or malformed files."""
    if not path.exists():
        raise GGUFImportError(f"{path}: file not found")
    if not path.is_file():
        raise GGUFImportError(f"{path}: not a file")
    try:
        with path.open("rb") as f:
            if f.read(4) != _MAGIC:
                raise GGUFImportError(f"{path.name}: not a GGUF file (bad magic; expected b'GGUF' at the start)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf)
    except OSError as err:
        raise GGUFImportError(f"{path.name}: cannot read ({err.strerror or err})") from None


def _parse(path: Path, buf: mmap.mmap) -> _Header:
    cur = _Cursor(buf)
    cur.take(4)
    try:
        version = cur.scalar("I")
        if version not in (2, 3):  # v1 used 32-bit counts; a huge value means a big-endian file
            raise GGUFImportError(f"{path.name}: unsupported GGUF version {version} (supported: 2, 3, little-endian)")
        n_tensors, n_kv = cur.scalar("Q"), cur.scalar("Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.scalar("I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.scalar("Q") for _ in range(cur.scalar("I"))]
            infos.append((name, tuple(reversed(dims)), cur.scalar("I"), cur.scalar("Q")))
    except EOFError:
        raise GGUFImportError(f"{path.name}: truncated or corrupt GGUF header") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise GGUFImportError(f"{path.name}: corrupt GGUF header ({err})") from None
    align = int(metadata.get("general.alignment", 32))
    data_start = -(-cur.pos // align) * align
    tensors = [_Tensor(n, s, t, data_start + off) for n, s, t, off in infos]
    for t in tensors:
        if t.offset + _nbytes(t) > len(buf):
            raise GGUFImportError(f"{path.name}: truncated file (tensor '{t.name}' ends past the end)")
    return _Header(version, metadata, tensors, len(buf))


def _type_name(qtype: int) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(qtype).name
    except ValueError:
        return f"type#{qtype}"


def _nbytes(t: _Tensor) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.qtype)]
    except (ValueError, KeyError):
        return 0  # unknown type: reported as unsupported later
    return math.prod(t.shape) // block * size


# --------------------------------------------------------------------------- dequantization

_INTEGER_TYPES = frozenset({"I8", "I16", "I32", "I64", "F64"})


@cache
def _dequantizable(qtype: int) -> bool:
    """Whether gguf.quants can turn this type into float32 (probed on one zero block)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        kind = GGMLQuantizationType(qtype)
    except ValueError:
        return False
    if kind.name in _INTEGER_TYPES:  # not weight formats for these architectures
        return False
    block, size = GGML_QUANT_SIZES[kind]
    try:
        out = dequantize(np.zeros((1, size), np.uint8), kind)
    except NotImplementedError:
        return False
    return out.size == block


def supported_quant_types() -> list[str]:
    """Names of the tensor types this importer can read (what gguf.quants dequantizes)."""
    from gguf import GGMLQuantizationType

    return [t.name for t in GGMLQuantizationType if _dequantizable(t.value)]


def _dequantize_rows(mm: np.memmap, t: _Tensor, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``t`` (flattened to 2-D) as float32."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    cols = t.shape[-1] if t.shape else 1
    row_bytes = _nbytes(t) // max(1, math.prod(t.shape[:-1]))
    raw = mm[t.offset + start * row_bytes : t.offset + stop * row_bytes].reshape(stop - start, row_bytes)
    out = dequantize(raw, GGMLQuantizationType(t.qtype)).reshape(stop - start, cols)
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- architectures

# GGUF tensor name (per layer: without "blk.N.") -> mlx-lm name (per layer: without "model.layers.N.").
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_COMMON_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
}
_LAYER_NAMES = {
    "llama": {**_COMMON_LAYER, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {
        **_COMMON_LAYER,
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",  # Gemma has 4 norms per block; llama.cpp's names differ
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
    },
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


@dataclass(frozen=True)
class _Planned:
    """One output tensor: its mlx-lm name and shape, the GGUF source, and how to undo llama.cpp's edits."""

    name: str
    shape: tuple[int, ...]
    source: _Tensor
    unpermute_heads: int = 0  # >0: undo llama.cpp's Q/K row permutation for this many heads
    norm_shift: float = 0.0  # added to every value (Gemma norms: -1)


class _Meta:
    """Typed access to metadata, with one-line errors naming the file and key."""

    def __init__(self, path: Path, header: _Header) -> None:
        self.path, self.file, self.data, self.arch = path, path.name, header.metadata, header.arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key.replace("{arch}", self.arch), default)

    def need(self, key: str) -> Any:
        key = key.replace("{arch}", self.arch)
        if key not in self.data:
            raise GGUFImportError(f"{self.file}: metadata key '{key}' is missing")
        return self.data[key]

    def fail(self, problem: str) -> GGUFImportError:
        return GGUFImportError(f"{self.file}: {problem}")


def _model_config(meta: _Meta, header: _Header, vocab_rows: int) -> dict[str, Any]:
    """config.json in mlx-lm's format, from the GGUF hyperparameters."""
    hidden = int(meta.need("{arch}.embedding_length"))
    n_head = int(meta.need("{arch}.attention.head_count"))
    n_kv = int(meta.get("{arch}.attention.head_count_kv", n_head))
    head_dim = int(meta.get("{arch}.attention.key_length", hidden // n_head))
    if int(meta.get("{arch}.attention.value_length", head_dim)) != head_dim:
        raise meta.fail("attention.value_length differs from key_length; mlx-lm needs them equal")
    names = {t.name for t in header.tensors}
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": int(meta.need("{arch}.block_count")),
        "intermediate_size": int(meta.need("{arch}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        # float32 in the file: round away the binary noise (9.99999997e-07 -> 1e-06)
        "rms_norm_eps": float(f"{float(meta.need('{arch}.attention.layer_norm_rms_epsilon')):.6g}"),
        "vocab_size": vocab_rows,
        "max_position_embeddings": int(meta.need("{arch}.context_length")),
        "rope_theta": float(meta.get("{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
    }
    rope_scaling = _rope_scaling(meta, header, head_dim, config["rope_theta"])
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    for key in ("bos_token_id", "eos_token_id"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is not None:
            config[key] = int(value)
    eot = meta.get("tokenizer.ggml.eot_token_id")
    if eot is not None and "eos_token_id" in config and int(eot) != config["eos_token_id"]:
        config["eos_token_id"] = [config["eos_token_id"], int(eot)]  # chat models end turns with EOT

    if meta.arch == "llama":
        rope_dims = int(meta.get("llama.rope.dimension_count", head_dim))
        if rope_dims != head_dim:
            raise meta.fail(f"partial rotary embedding ({rope_dims} of {head_dim} dims) is not supported")
        return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **config}

    # gemma3: older GGUFs lack what llama.cpp hard-codes (llama-model.cpp, LLM_ARCH_GEMMA3):
    # every 6th layer is global, local (sliding-window) layers use rope base 10000.
    n_layers = config["num_hidden_layers"]
    pattern = _sliding_window_pattern(meta, n_layers)
    # gemma_pytorch config: 27B (62 layers) scales queries by hidden/heads, the others by head_dim.
    query_scalar = hidden // n_head if n_layers == 62 else head_dim
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        **config,
        "rope_local_base_freq": float(meta.get("gemma3.rope.freq_base_swa", 10000.0)),
        "query_pre_attn_scalar": query_scalar,
        "sliding_window": int(meta.need("gemma3.attention.sliding_window")),
        "sliding_window_pattern": pattern,
        "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)],
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
    }


def _sliding_window_pattern(meta: _Meta, n_layers: int) -> int:
    value = meta.get("gemma3.attention.sliding_window_pattern")
    if value is None:
        return 6
    if isinstance(value, (int, np.integer)):
        return int(value)
    flags = [bool(v) for v in value]  # per layer: True = sliding window
    period = flags.index(False) + 1 if False in flags else n_layers + 1
    if flags != [(i + 1) % period != 0 for i in range(n_layers)]:
        raise meta.fail("irregular sliding-window layer pattern is not supported by mlx-lm's gemma3_text")
    return period


def _rope_scaling(meta: _Meta, header: _Header, head_dim: int, theta: float) -> dict[str, Any] | None:
    kind = meta.get("{arch}.rope.scaling.type")
    if kind in (None, "none"):
        freqs = next((t for t in header.tensors if t.name == "rope_freqs.weight"), None)
        return None if freqs is None else _llama3_rope_scaling(meta, header, freqs, head_dim, theta)
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(meta.need("{arch}.rope.scaling.factor"))}
    raise meta.fail(f"rope scaling type '{kind}' is not supported (supported: linear, llama3)")


def _llama3_rope_scaling(meta: _Meta, header: _Header, t: _Tensor, head_dim: int, theta: float) -> dict[str, Any]:
    """Llama 3.1+ stores its rope scaling as a per-frequency factor tensor; recover the parameters.

    Factors are those of llama.cpp's converter (LlamaModel.generate_extra_tensors)
    with Meta's published low/high frequency factors 1 and 4.
    """
    got = _dequantize_rows(np.memmap(meta.path, np.uint8, "r"), t, 0, 1).ravel()
    factor = float(got.max())
    original = int(meta.get("{arch}.rope.scaling.original_context_length", 8192))
    config = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": original,
    }
    if got.shape != (head_dim // 2,) or not np.allclose(got, llama3_rope_factors(config, head_dim, theta), rtol=1e-4):
        raise meta.fail("rope_freqs tensor does not match Llama 3 rope scaling; not supported")
    return config


def llama3_rope_factors(config: dict[str, Any], head_dim: int, theta: float) -> np.ndarray:
    """Per-frequency divisors of Llama 3 rope scaling, as llama.cpp stores them in ``rope_freqs``."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    low, high = config["low_freq_factor"], config["high_freq_factor"]
    original, factor = config["original_max_position_embeddings"], config["factor"]
    smooth = (original / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, mid))
    return out.astype(np.float32)


def _plan_tensors(meta: _Meta, header: _Header, config: dict[str, Any]) -> list[_Planned]:
    """Map every GGUF tensor to its mlx-lm name and expected shape; fail on anything unexpected."""
    hidden, hd = config["hidden_size"], config["head_dim"]
    n_head, n_kv, ff = config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]
    shapes = {
        "model.embed_tokens": (config["vocab_size"], hidden),
        "lm_head": (config["vocab_size"], hidden),
        "model.norm": (hidden,),
        "self_attn.q_proj": (n_head * hd, hidden),
        "self_attn.k_proj": (n_kv * hd, hidden),
        "self_attn.v_proj": (n_kv * hd, hidden),
        "self_attn.o_proj": (hidden, n_head * hd),
        "mlp.gate_proj": (ff, hidden),
        "mlp.up_proj": (ff, hidden),
        "mlp.down_proj": (hidden, ff),
        "self_attn.q_norm": (hd,),
        "self_attn.k_norm": (hd,),
    }
    layer_names = _LAYER_NAMES[meta.arch]
    planned: list[_Planned] = []
    for t in header.tensors:
        if t.name == "rope_freqs.weight":  # folded into config["rope_scaling"]
            continue
        m = _LAYER_RE.fullmatch(t.name)
        if m and int(m.group(1)) < config["num_hidden_layers"] and m.group(2) in layer_names:
            short = layer_names[m.group(2)]
            name = f"model.layers.{m.group(1)}.{short}"
        elif t.name.endswith(".weight") and t.name[: -len(".weight")] in _GLOBAL_NAMES:
            short = name = _GLOBAL_NAMES[t.name[: -len(".weight")]]
        else:
            raise meta.fail(f"unexpected tensor '{t.name}' for architecture {meta.arch}")
        if not _dequantizable(t.qtype):
            supported = ", ".join(supported_quant_types())
            raise meta.fail(f"tensor '{t.name}' has unsupported type {t.type_name} (supported: {supported})")
        want = shapes.get(short, (hidden,))  # layer norms are (hidden,)
        if t.shape != want:
            raise meta.fail(f"tensor '{t.name}' has shape {list(t.shape)}, expected {list(want)} from the metadata")
        heads = n_head if short == "self_attn.q_proj" else n_kv if short == "self_attn.k_proj" else 0
        planned.append(
            _Planned(
                name=name + ".weight",
                shape=t.shape,
                source=t,
                unpermute_heads=heads if meta.arch == "llama" else 0,
                norm_shift=-1.0 if meta.arch == "gemma3" and short.endswith("norm") else 0.0,
            )
        )
    have = {p.name for p in planned}
    needed = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{short}.weight" for i in range(config["num_hidden_layers"]) for short in layer_names.values()
    ]
    missing = [n for n in needed if n not in have]
    if missing:
        raise meta.fail(f"{len(missing)} weight tensor(s) missing, e.g. '{missing[0]}'")
    return planned


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute``: w.reshape(n_head, 2, r//n_head//2, c).swapaxes(1, 2).reshape(r, c)."""
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


# --------------------------------------------------------------------------- tokenizers

# llama.cpp token types (same numbers as sentencepiece's piece types).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# GPT-2 style byte-level pre-tokenization; ByteLevel(use_regex=True) applies GPT-2's regex itself.
_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")  # llama.cpp's names for Llama 3's pre-tokenizer
# tokenizer.ggml.pre -> the HF pre-tokenizer it stands for (llama.cpp's llama-vocab.cpp regexes).
_PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    # SmolLM: "\p{N}" (each digit alone), then GPT-2's regex = HF Digits(individual) + ByteLevel.
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTELEVEL],
    },
    "gpt-2": _BYTELEVEL,
    **{
        name: {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_PAT_STR}, "behavior": "Isolated", "invert": False},
                {**_BYTELEVEL, "use_regex": False},
            ],
        }
        for name in _LLAMA3_PRE
    },
}


def _token_table(meta: _Meta) -> tuple[list[str], np.ndarray]:
    tokens = meta.need("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type")
    types = np.full(len(tokens), _NORMAL, np.int32) if types is None else np.asarray(types, np.int32)
    if len(types) != len(tokens):
        raise meta.fail("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    return tokens, types


def _bpe_tokenizer_json(meta: _Meta) -> dict[str, Any]:
    """A HF ``tokenizer.json`` for a byte-level BPE ("gpt2") vocabulary."""
    tokens, types = _token_table(meta)
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in _PRE_TOKENIZERS:
        raise meta.fail(f"unsupported pre-tokenizer '{pre}' (supported: {', '.join(_PRE_TOKENIZERS)})")
    merges = [m.split(" ", 1) for m in meta.get("tokenizer.ggml.merges", [])]
    added = []
    for i, (tok, kind) in enumerate(zip(tokens, types.tolist())):
        if kind in (_CONTROL, _USER_DEFINED):
            # CONTROL ids are special. USER_DEFINED ones are plain-text added tokens:
            # llama.cpp stores them as raw text, not in the byte-level alphabet.
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": kind == _CONTROL})  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": pre in _LLAMA3_PRE,  # Llama 3's tokenizer.json takes whole-vocabulary words first
            "vocab": {tok: i for i, (tok, kind) in enumerate(zip(tokens, types.tolist())) if kind != _USER_DEFINED},
            "merges": merges,
        },
    }


def _sentencepiece_model(meta: _Meta) -> bytes:
    """A sentencepiece ``tokenizer.model`` (BPE by score) for a "llama" vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens, types = _token_table(meta)
    scores = meta.get("tokenizer.ggml.scores")
    scores = np.zeros(len(tokens), np.float32) if scores is None else np.asarray(scores, np.float32)
    unk = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    types = types.copy()
    types[unk] = _UNKNOWN  # llama.cpp may mark <unk> CONTROL; sentencepiece needs exactly one UNKNOWN
    proto = pb.ModelProto()  # type: ignore[attr-defined]  # generated protobuf class
    for tok, score, kind in zip(tokens, scores.tolist(), types.tolist()):
        piece = proto.pieces.add()
        # HF added tokens (Gemma's whitespace runs) come back with real spaces; sentencepiece sees "▁".
        piece.piece = tok.replace(" ", "\u2581")
        piece.score = score
        piece.type = kind if kind in (_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE) else _NORMAL
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE  # type: ignore[attr-defined]
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = bool((types == _BYTE).any())
    # sentencepiece finds bos/eos/pad by piece name (default "<s>", "</s>"), so name them explicitly.
    for role, default in (("unk", unk), ("bos", -1), ("eos", -1), ("pad", -1)):
        token_id = meta.get(f"tokenizer.ggml.{'unknown' if role == 'unk' else role}_token_id", default)
        token_id = -1 if token_id is None or not 0 <= int(token_id) < len(tokens) else int(token_id)
        setattr(trainer, f"{role}_id", token_id)
        if token_id >= 0:
            setattr(trainer, f"{role}_piece", proto.pieces[token_id].piece)
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    norm.remove_extra_whitespaces = bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))
    norm.escape_whitespaces = True
    charsmap = meta.get("tokenizer.ggml.precompiled_charsmap")
    if charsmap is not None and len(charsmap):
        norm.name = "nmt_nfkc"
        norm.precompiled_charsmap = np.asarray(charsmap, np.uint8).tobytes()
    return proto.SerializeToString()


def _tokenizer_files(meta: _Meta) -> dict[str, bytes]:
    """Tokenizer file name -> contents, plus tokenizer_config.json."""
    kind = meta.get("tokenizer.ggml.model")
    tokens, _ = _token_table(meta)
    files: dict[str, bytes] = {}
    if kind == "gpt2":
        files["tokenizer.json"] = json.dumps(_bpe_tokenizer_json(meta), ensure_ascii=False).encode("utf-8")
        tokenizer_class = "PreTrainedTokenizerFast"
    elif kind == "llama":
        files["tokenizer.model"] = _sentencepiece_model(meta)
        tokenizer_class = "GemmaTokenizer" if meta.arch == "gemma3" else "LlamaTokenizer"
    else:
        raise meta.fail(f"unsupported tokenizer model '{kind}' (supported: gpt2, llama)")

    def name(key: str) -> str | None:
        token_id = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(token_id)] if token_id is not None and 0 <= int(token_id) < len(tokens) else None

    config: dict[str, Any] = {
        "tokenizer_class": tokenizer_class,
        "bos_token": name("bos_token_id"),
        "eos_token": name("eos_token_id"),
        "unk_token": name("unknown_token_id"),
        "pad_token": name("padding_token_id"),
        # llama.cpp's default when the key is absent: sentencepiece vocabularies start with BOS
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "model_max_length": int(meta.get("{arch}.context_length", 0)) or None,
    }
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    files["tokenizer_config.json"] = json.dumps(config, indent=2, ensure_ascii=False).encode("utf-8")
    return files


# --------------------------------------------------------------------------- public API


def inspect_gguf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a GGUF file holds, from its header only (no tensor data is read).

    Keys: path, file_size, gguf_version, name, architecture, supported,
    quant_types (sorted names), tensor_count, parameter_count, vocab_size,
    context_length, tokenizer (``tokenizer.ggml.model``), has_chat_template.
    """
    src = Path(path).expanduser()
    header = _read_header(src)
    md = header.metadata
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = md.get(f"{header.arch}.vocab_size", len(tokens) if tokens is not None else None)
    context = md.get(f"{header.arch}.context_length")
    return {
        "path": str(src),
        "file_size": header.file_size,
        "gguf_version": header.version,
        "name": md.get("general.name"),
        "architecture": header.arch,
        "supported": header.arch in SUPPORTED_ARCHITECTURES,
        "quant_types": sorted({t.type_name for t in header.tensors}),
        "tensor_count": len(header.tensors),
        "parameter_count": sum(math.prod(t.shape) for t in header.tensors),
        "vocab_size": None if vocab is None else int(vocab),
        "context_length": None if context is None else int(context),
        "tokenizer": md.get("tokenizer.ggml.model"),
        "has_chat_template": bool(md.get("tokenizer.chat_template")),
    }


def import_gguf(
    gguf_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert ``gguf_path`` into a new MLX model folder ``dest`` (which must not exist) and return it.

    Weights are dequantized to float32. Everything is built in a hidden sibling
    folder that is renamed to ``dest`` only when complete, so a failure or
    Ctrl-C leaves no partial ``dest``. ``progress(done, total)`` is called after
    each tensor. Raises :class:`GGUFImportError` with a one-line message.
    """
    started = time.perf_counter()
    src = Path(gguf_path).expanduser()
    out = Path(dest).expanduser()
    header = _read_header(src)
    if out.exists():
        raise GGUFImportError(f"{src.name}: destination '{out}' already exists; choose a new folder")
    if header.arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFImportError(
            f"{src.name}: unsupported architecture '{header.arch or '?'}' "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    meta = _Meta(src, header)
    embed = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embed is None or len(embed.shape) != 2:
        raise meta.fail("tensor 'token_embd.weight' is missing")
    config = _model_config(meta, header, vocab_rows=embed.shape[0])
    planned = _plan_tensors(meta, header, config)
    files = _tokenizer_files(meta)  # all checks done before the slow part

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp) so the folder gets the usual umask permissions, not 0700
        tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.importing"
        tmp.mkdir()
    except OSError as err:
        raise GGUFImportError(f"{src.name}: cannot create '{out.parent}' ({err.strerror or err})") from None
    try:
        _write_safetensors(src, planned, tmp / "model.safetensors", progress)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        record = {
            "source_file": src.name,
            "source_size": header.file_size,
            "source_sha256": _sha256(src),
            "gguf_name": header.metadata.get("general.name"),
            "architecture": header.arch,
            "model_type": config["model_type"],
            "quant_types": sorted({t.type_name for t in header.tensors}),
            "weights_dtype": "float32",
            "import_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "specfw_import.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():  # rename() would silently replace an empty folder created meanwhile
            raise GGUFImportError(f"{src.name}: destination '{out}' appeared during the import")
        os.rename(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GGUFImportError(f"{src.name}: writing '{out}' failed ({err.strerror or err})") from None
    except BaseException:  # includes KeyboardInterrupt: never leave a partial folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


_CHUNK_ELEMENTS = 1 << 22  # rows are dequantized ~16 MB at a time, so peak memory stays small


def _write_safetensors(
    src: Path, planned: list[_Planned], target: Path, progress: Callable[[int, int], None] | None
) -> None:
    """Stream float32 tensors into a safetensors file, one tensor (or row chunk) at a time.

    The header only needs shapes, so it is written first and the data follows
    in the same order; no tensor is held in memory longer than it takes to write.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for p in planned:
        size = 4 * math.prod(p.shape)
        header[p.name] = {"dtype": "F32", "shape": list(p.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data must start 8-byte aligned
    mm = np.memmap(src, np.uint8, "r")
    try:
        with target.open("wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for done, p in enumerate(planned, 1):
                rows = math.prod(p.shape[:-1])
                cols = p.shape[-1]
                if p.unpermute_heads:  # the permutation mixes rows within a head: whole tensor at once
                    w = _unpermute(_dequantize_rows(mm, p.source, 0, rows), p.unpermute_heads)
                    f.write(memoryview(np.ascontiguousarray(w, "<f4")))
                else:
                    step = max(1, _CHUNK_ELEMENTS // cols)
                    for start in range(0, rows, step):
                        chunk = _dequantize_rows(mm, p.source, start, min(rows, start + step))
                        if p.norm_shift:
                            chunk = chunk + np.float32(p.norm_shift)
                        f.write(memoryview(np.ascontiguousarray(chunk, "<f4")))
                if progress is not None:
                    progress(done, len(planned))
    finally:
        del mm


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
