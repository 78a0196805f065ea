"""Tiny random-weight models with real tokenizers, for tests and quick checks.

The known models ``tiny-random-mistral`` and ``tiny-random-qwen2.5`` (see
:mod:`specfw.models.catalog`) are built from a seed on first use: the same seed
gives the same weights. Their text is gibberish; they exercise the whole
pipeline on real vocabularies in a fraction of a second.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path


def tiny_model(model_type: str, vocab_size: int, hidden: int = 64, layers: int = 2, seed: int = 0, **overrides):
    """A small random-weight float32 mlx-lm model with a real vocabulary size.

    ``overrides`` are extra config entries (e.g. ``sliding_window`` for
    ``gemma3_text``). Returns ``(model, config_dict)``; the same arguments
    give the same weights.
    """
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    config = {
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": model_type == "qwen2",
        **overrides,
    }
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    mx.eval(model.parameters())
    return model, config


def build_random_model(dest: Path, model_type: str, tokenizer_name: str, vocab: int, hidden: int, layers: int, seed: int) -> Path:
    """Build a tiny random model folder at ``dest`` (loadable by :func:`specfw.models.loading.load_model`).

    Built in a temporary sibling folder and moved into place whole, so an
    interrupted build leaves nothing half-made.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model, config = tiny_model(model_type, vocab, hidden, layers, seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        staging = Path(tmp) / dest.name
        staging.mkdir()
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "specfw_tokenizer.json").write_text(json.dumps({"registry": tokenizer_name}))
        mx.save_safetensors(str(staging / "model.safetensors"), dict(tree_flatten(model.parameters())))
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest
