"""Emulated larger targets: the real target's output at a larger target's cost (a study tool).

The pair that runs offline (Gemma-3-270M target, SmolLM2-135M drafter) has a
drafter that costs half a target step or more, so drafting cannot pay there
whatever the algorithm does. The reference paper's pairs have r (draft cost ÷
target cost) around 0.07. To measure specfw where it is meant to work, a
*shadow* model of a chosen larger shape (random weights; a Llama-3.2-1B-,
Qwen2.5-1.5B-, Llama-3.2-3B- or Mistral-7B-shaped decoder) is forwarded on
exactly the ids of every target pass, with a KV cache of its own that is
trimmed in step with the target's, and its output is discarded. Every id still
comes from the real target, so output is unchanged (greedy: the target
alone's ids; tested), while each target pass costs what the real target's and
the shadow's passes cost together.

This is emulation: the text, the acceptance and the drafter are real, the
target's *cost* is not a real model's. Every figure made with it says so
(``emulated target`` in run statistics, eval records and reports).

A shape is ``NAME`` or ``NAME:layers=N`` (fewer decoder layers, to fit memory
or to set the cost); :func:`parse_shape` checks it, :func:`shadowed` wraps a
loaded target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache

from specfw.errors import ConfigError

# Decoder shapes of real models (their config.json values); weights are random.
SHAPES: dict[str, dict] = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         rope_theta=500000.0, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, intermediate_size=8960,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         rope_theta=1000000.0, tie_word_embeddings=True),
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, num_hidden_layers=28, intermediate_size=8192,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                         rope_theta=500000.0, tie_word_embeddings=True),
    "mistral-7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32000,
                       rope_theta=10000.0, tie_word_embeddings=False),
    # for tests: a shadow small enough to build in milliseconds
    "tiny": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1000,
                 rope_theta=10000.0, tie_word_embeddings=True),
}
MEMORY_MARGIN = 2 * 1024**3  # left free for the real models, the KV caches and the OS


@dataclass(frozen=True)
class Shape:
    """A shadow model's shape: a name from :data:`SHAPES` and, optionally, fewer layers."""

    name: str
    layers: int

    @property
    def config(self) -> dict:
        return {**SHAPES[self.name], "num_hidden_layers": self.layers, "rms_norm_eps": 1e-5}

    @property
    def label(self) -> str:
        full = SHAPES[self.name]["num_hidden_layers"]
        return self.name if self.layers == full else f"{self.name}:layers={self.layers}"

    def parameters(self) -> int:
        return parameter_count(self.config)


def parameter_count(config: dict) -> int:
    """Parameters of a Llama/Qwen2-style decoder with ``config``'s shape."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2
    if config["model_type"] == "qwen2":
        attention += heads * head_dim + 2 * kv * head_dim  # q, k, v biases
    layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if config["tie_word_embeddings"] else 2)
    return config["num_hidden_layers"] * layer + embeddings + h


def parse_shape(spec: str) -> Shape:
    """``NAME`` or ``NAME:layers=N`` as a :class:`Shape`; an unknown name or a bad option is a ConfigError."""
    name, _, option = spec.strip().partition(":")
    if name not in SHAPES:
        offered = ", ".join(s for s in SHAPES if s != "tiny")
        raise ConfigError(f"unknown emulated target shape '{name}'; choose one of {offered}")
    full = SHAPES[name]["num_hidden_layers"]
    if not option:
        return Shape(name, full)
    key, _, value = option.partition("=")
    if key != "layers" or not value.isdigit() or not 1 <= int(value) <= full:
        raise ConfigError(f"emulated target '{spec}': the only option is layers=N with N in 1..{full}")
    return Shape(name, int(value))


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (Linux: MemAvailable; elsewhere: physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(shape: Shape, bytes_per_parameter: int, available: int | None = None) -> None:
    """Refuse a shape whose weights would not fit in memory, naming the most layers that would."""
    available = available_memory() if available is None else available
    if available is None:
        return
    need = shape.parameters() * bytes_per_parameter
    room = available - MEMORY_MARGIN
    if need <= room:
        return
    config = shape.config
    fit = max((n for n in range(1, shape.layers) if parameter_count({**config, "num_hidden_layers": n})
               * bytes_per_parameter <= room), default=0)
    hint = f"; {shape.name}:layers={fit} fits" if fit else ""
    raise ConfigError(f"emulated target '{shape.label}' needs {need / 1e9:.1f} GB of weights, "
                      f"{max(room, 0) / 1e9:.1f} GB is free{hint}")


def build_shadow(shape: Shape, dtype=None, seed: int = 0):
    """A random-weight mlx-lm model of ``shape`` (float32 on the CPU, bfloat16 on a GPU unless ``dtype``)."""
    from mlx.utils import tree_map
    from mlx_lm.utils import _get_classes

    if dtype is None:
        dtype = mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    check_fits(shape, mx.zeros((), dtype=dtype).itemsize)
    model_class, args_class = _get_classes(shape.config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(shape.config))
    model.update(tree_map(lambda x: x.astype(dtype) if x.dtype != dtype else x, model.parameters()))
    mx.eval(model.parameters())
    return model


class ShadowedModel:
    """The real target, with a shadow model forwarded on the same ids; the target's logits are returned.

    Its cache is the target's layers followed by the shadow's, so every trim
    of the cache list (cache-syncs, the prompt cache) trims both alike. The
    returned logits depend on the shadow's output (``mx.depends``), so the
    shadow's pass is computed whenever the target's is, in the same graph.
    """

    def __init__(self, target, shadow, shape: Shape) -> None:
        self.target = target
        self.shadow = shadow
        self.shape = shape
        self.vocab = shape.config["vocab_size"]
        self.n_target = len(make_prompt_cache(target))

    @property
    def layers(self) -> list:
        return list(self.target.layers) + list(self.shadow.layers)

    def make_cache(self) -> list:
        return make_prompt_cache(self.target) + make_prompt_cache(self.shadow)

    def parameters(self) -> dict:
        """Both models' parameters: what a pass reads (the adaptive k policy's cold-start cost guess counts them)."""
        return {"target": self.target.parameters(), "shadow": self.shadow.parameters()}

    def __call__(self, inputs: mx.array, cache: list | None = None):
        if cache is None:
            cache = self.make_cache()
        logits = self.target(inputs, cache=cache[: self.n_target])
        shadow = self.shadow(inputs % self.vocab, cache=cache[self.n_target :])  # target ids may pass its vocab
        return mx.depends(logits, shadow)

    def __getattr__(self, name: str):  # anything else (args, model_type, ...) is the real target's
        return getattr(self.target, name)


def shadowed(loaded, spec: str):
    """``loaded`` (a :class:`specfw.models.loading.LoadedModel`) with a shadow of shape ``spec`` behind its target.

    Its ``source`` names both (``gemma3-270m+shadow:llama-3.2-1b``), so records and prompt caches tell an
    emulated target from the real one; its ``weight_bytes`` count both (the cost model's r).
    """
    if isinstance(loaded.model, ShadowedModel):
        raise ConfigError("the target is already emulated")
    shape = parse_shape(spec)
    shadow = build_shadow(shape)
    shadow_bytes = sum(v.nbytes for _, v in tree_flatten(shadow.parameters()))
    return replace(loaded, model=ShadowedModel(loaded.model, shadow, shape),
                   source=f"{loaded.source}{SOURCE_MARK}{shape.label}", weight_bytes=loaded.weight_bytes + shadow_bytes)


SOURCE_MARK = "+shadow:"


def emulated_shape(source: str) -> str | None:
    """The shadow shape named in a target's source (``gemma3-270m+shadow:llama-3.2-1b``), or None."""
    return source.partition(SOURCE_MARK)[2] or None


def emulation_of(model) -> str | None:
    """The shadow shape's label when ``model`` is an emulated target, else None."""
    return model.shape.label if isinstance(model, ShadowedModel) else None
