"""Cheaper draft models for the ``mlx`` drafter: quantized weights and a restricted LM head.

Both only change which ids the drafter proposes, never which ids are
emitted (the verifier decides), so both stay lossless. Whether they pay
depends on the device: see docs/benchmarks.md for the CPU figures.

* ``quantize=4|8``: a copy of the draft model with its linear and embedding
  layers quantized by ``mlx.nn.quantize`` (group size 64). The loaded model
  is left as it is (an eval may reuse it for other conditions).
* ``head=...``: logits for a subset of ids only, as one smaller matrix
  product over the rows of the output embedding for those ids. ``head=N``
  keeps the N lowest ids, which in a BPE vocabulary are its earliest merges,
  the most frequent pieces of the tokenizer's own training corpus;
  ``head=FILE`` keeps the ids listed in a JSON file, e.g. the N most frequent
  in a corpus of your own (``python -m specfw_plugins.draft_model_options
  CORPUS --tokenizer NAME --top N > FILE``); ``head=allowed`` keeps the ids of
  the translator's mask (``tli``: the ids it can map into the target's
  vocabulary).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from specfw.errors import PluginError

QUANT_BITS = (4, 8)
QUANT_GROUP = 64


_quantized: dict[tuple[int, int], tuple[object, object]] = {}  # (id(model), bits) -> (model, its quantized copy)


def quantized_copy(model, bits: int):
    """A new model of the same class and arguments with ``bits``-bit quantized weights (made once per model)."""
    if bits not in QUANT_BITS:
        raise PluginError(f"drafter 'mlx': quantize must be one of {', '.join(map(str, QUANT_BITS))}, got {bits}")
    args = getattr(model, "args", None)
    if args is None:
        raise PluginError("drafter 'mlx': quantize needs an mlx-lm model (one with .args)")
    key = (id(model), bits)
    if key in _quantized:  # the entry keeps ``model`` alive, so its id cannot be reused by another
        return _quantized[key][1]
    copy = type(model)(args)
    copy.load_weights(tree_flatten(model.parameters()))
    nn.quantize(copy, group_size=QUANT_GROUP, bits=bits)
    mx.eval(copy.parameters())
    _quantized[key] = (model, copy)
    return copy


def output_weight(model) -> mx.array:
    """The (vocab, hidden) output projection of an mlx-lm causal LM, dequantized if needed."""
    tied = getattr(getattr(model, "args", None), "tie_word_embeddings", getattr(model, "tie_word_embeddings", True))
    layer = model.model.embed_tokens if tied or not hasattr(model, "lm_head") else model.lm_head
    if hasattr(layer, "scales"):  # quantized embedding or linear
        return mx.dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
    return layer.weight


class RestrictedHead:
    """Logits over a fixed subset of ids: ``hidden @ W[ids].T``; proposals mapped back to full ids."""

    def __init__(self, model, ids: list[int]) -> None:
        if not hasattr(model, "model") or not hasattr(model.model, "embed_tokens"):
            raise PluginError("drafter 'mlx': head needs an mlx-lm model with .model.embed_tokens")
        full = output_weight(model)
        self.width = full.shape[0]
        self.ids = mx.array(sorted(set(ids)), dtype=mx.int32)
        self.weight = full[self.ids]
        mx.eval(self.ids, self.weight)

    def __call__(self, model, inputs: mx.array, cache) -> mx.array:
        hidden = model.model(inputs, cache)
        return hidden @ self.weight.T

    def to_full(self, index: mx.array) -> mx.array:
        return self.ids[index]

    def mask(self, allowed: mx.array) -> mx.array:
        return allowed[self.ids]


def head_ids(spec: str, vocab_width: int) -> list[int] | None:
    """The draft ids a ``head=`` option keeps; None for ``allowed`` (decided at the first proposal).

    ``N``: the N lowest ids; ``allowed``: the ids of the translator's mask (``tli``);
    a path to a JSON list of ids (see :func:`main`): those ids.
    """
    if spec == "allowed":
        return None
    if spec.isdigit():
        n = int(spec)
        if not 1 <= n <= vocab_width:
            raise PluginError(f"drafter 'mlx': head must be between 1 and {vocab_width}, got {n}")
        return list(range(n))
    path = Path(spec)
    if not path.is_file():
        raise PluginError(f"drafter 'mlx': head must be a number of ids, 'allowed' or a JSON file of ids; '{spec}' is none")
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
        ids = [int(i) for i in ids]
    except (OSError, ValueError, TypeError) as exc:
        raise PluginError(f"drafter 'mlx': cannot read head ids from '{spec}': {exc}") from None
    if not ids or not all(0 <= i < vocab_width for i in ids):
        raise PluginError(f"drafter 'mlx': '{spec}' must list ids between 0 and {vocab_width - 1}")
    return ids


def main(argv: list[str] | None = None) -> int:
    """``python -m specfw_plugins.draft_model_options CORPUS --tokenizer NAME --top N``: the N most frequent ids.

    Prints a JSON list of the draft tokenizer's N most frequent ids in CORPUS
    (a UTF-8 text file, one text per line), for ``--drafter-option head=FILE``.
    """
    import argparse
    import sys

    from specfw.models.catalog import load_tokenizer

    parser = argparse.ArgumentParser(prog="python -m specfw_plugins.draft_model_options", description=main.__doc__)
    parser.add_argument("corpus")
    parser.add_argument("--tokenizer", required=True, help="draft tokenizer: registry name or local path")
    parser.add_argument("--top", type=int, default=8192)
    args = parser.parse_args(argv)
    try:
        lines = Path(args.corpus).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"specfw: error: cannot read corpus '{args.corpus}': {exc}", file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(args.tokenizer)
    counts = Counter(i for line in lines if line.strip() for i in tokenizer.encode(line))
    print(json.dumps([i for i, _ in counts.most_common(args.top)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
