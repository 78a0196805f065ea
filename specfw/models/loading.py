"""Loading target and draft models: known models, local folders, Hugging Face ids.

A known model name resolves through :mod:`specfw.models.catalog` (the name) and
:mod:`specfw.models.store` (its cache folder); a folder is used as it is.

Models go through mlx-lm's own loader (``mlx_lm.utils.load_model``), so any
architecture mlx-lm supports works. Tokenizers are loaded by
:func:`specfw.tokenizers.load_tokenizer` from the same folder, which gives the
real tokenizer's ids (transformers' AutoTokenizer may rebuild some of them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from specfw.errors import ModelLoadError
from specfw.models.catalog import KNOWN_MODELS, ensure_model
from specfw.tokenizers import Tokenizer, load_tokenizer

HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class LoadedModel:
    """A model ready for generation, with its tokenizer and where it came from."""

    model: object  # mlx.nn.Module
    tokenizer: Tokenizer
    source: str
    path: Path
    context_length: int | None
    weight_bytes: int


def resolve_model_path(spec: str) -> Path:
    """A local model folder for ``spec`` (a path, or a Hugging Face id fetched through the hub cache)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path '{spec}' is a file; pass the model's folder (with config.json)")
        return path
    if not HF_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder '{spec}' does not exist")
    try:
        from mlx_lm.utils import _download

        return Path(_download(spec))
    except Exception as exc:  # the hub client raises many types; all mean "not fetched"
        reason = type(exc).__name__
        raise ModelLoadError(
            f"could not fetch '{spec}' from the Hugging Face hub ({reason}; no network?); "
            "download it elsewhere and pass its local folder instead"
        ) from None


def model_path(spec: str, log=None) -> Path:
    """The local folder of a known model (imported on first use), a folder path or a hub id."""
    return ensure_model(spec, log=log) if spec in KNOWN_MODELS else resolve_model_path(spec)


def load_model(spec: str, dtype: str | None = "auto", log=None) -> LoadedModel:
    """Load an mlx-lm model and its tokenizer from a known model name, a folder or a hub id.

    A known model (``specfw models list``) is imported into the cache on first use.

    ``dtype`` casts floating-point weights; "auto" means float32 on the CPU
    (bf16 matrix products are slow there) and the folder's own dtype on a GPU;
    None keeps what the folder holds. Quantized weights are left as they are.
    """
    path = model_path(spec, log=log)
    if not (path / "config.json").exists():
        raise ModelLoadError(f"'{path}' has no config.json; is it an MLX model folder?")
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.utils import load_model as mlx_load_model

    try:
        model, config = mlx_load_model(path)
    except Exception as exc:
        raise ModelLoadError(f"could not load the model in '{path}': {type(exc).__name__}: {exc}") from None
    if dtype == "auto":
        dtype = "float32" if mx.default_device() == mx.cpu else None
    if dtype is not None:
        target = getattr(mx, dtype)

        def cast(x):
            return x.astype(target) if mx.issubdtype(x.dtype, mx.floating) and x.dtype != target else x

        model.update(tree_map(cast, model.parameters()))
        mx.eval(model.parameters())
    tokenizer = load_tokenizer(path)
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    text_config = config.get("text_config", config)
    context = text_config.get("max_position_embeddings")
    return LoadedModel(model, tokenizer, spec, path, context, weight_bytes)


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())
