"""KV caches that can always be trimmed, which speculative decoding needs.

mlx-lm gives sliding-window layers (Gemma 3, and any model built with
``max_kv_size``) a ``RotatingKVCache``. Once more positions have gone
through it than its window holds, it overwrites old entries in place and
can no longer be cut back: ``trim_prompt_cache`` then silently trims
nothing, so rejected draft positions would stay in the target's cache and
change every later token. specfw instead gives every layer a plain
``KVCache``. The model still builds each layer's sliding-window mask from
the cache's offset, so attention sees the same window; the cache keeps
every position (memory grows with the sequence, as for global layers).
"""

from __future__ import annotations

from typing import Any

from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache


def make_trimmable_cache(model: Any) -> list[Any]:
    """``model``'s prompt cache with every ``RotatingKVCache`` replaced by a trimmable ``KVCache``."""
    return [KVCache() if isinstance(layer, RotatingKVCache) else layer for layer in make_prompt_cache(model)]
