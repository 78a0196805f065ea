"""One target forward pass over several rows, each with its own KV cache.

Each row is one generation: its per-layer cache is an ordinary mlx-lm
``KVCache`` (what :func:`specfw.models.kv_cache.make_trimmable_cache` gives every
layer), and each row forwards its own feed (the ids it has not forwarded yet,
plus its proposal). :func:`batched_forward` runs the model once over all rows:

- for every layer a temporary :class:`_RowsCache` holds the rows' cached keys
  and values left-padded to the longest (as mlx-lm's ``BatchKVCache`` does),
  gives the model each row's own RoPE offset (its cached length) as an
  ``mx.array``, and builds the attention mask (causal, the sliding window
  where the model asks for one, and the left padding masked out);
- feeds are right-padded to the longest; a padded position only ever attends
  to its own row and its logits are dropped, and no real position attends to
  it (it comes after every real one);
- afterwards each row's new keys and values, for its real feed positions
  only, are appended to that row's own ``KVCache``, so per-row trims
  (rollback of rejected proposals) work exactly as after a single-row pass.

In exact arithmetic row i's logits are those of
:func:`specfw.models.forward.forward_logits` on that row alone; in floating point
they agree within rounding (the tests check the ids agree too).
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache

from specfw.models.forward import PREFILL_CHUNK, prefill

PAD_ID = 0  # what right-padded feed positions hold; their outputs are dropped


class _RowsCache:
    """One layer's view of every row's cache for a single batched call (mlx-lm's cache interface)."""

    def __init__(self, rows: Sequence[KVCache], feed_len: int) -> None:
        self.lengths = [row.offset for row in rows]
        self.width = max(self.lengths)
        self.feed_len = feed_len
        padding = [self.width - n for n in self.lengths]
        self.left_padding = mx.array(padding) if any(padding) else None
        self.offset = mx.array(self.lengths)  # each row's RoPE offset: the position of its first fed id
        self.rows = rows
        self.keys = self.values = None  # the padded prefix, built on first use (its head dims come from the model)
        self.new_keys = self.new_values = None

    def _prefix(self, like: mx.array, rows_of) -> mx.array | None:
        if self.width == 0:
            return None
        parts = []
        for row, n in zip(self.rows, self.lengths):
            part = rows_of(row)[..., :n, :] if n else mx.zeros((1, like.shape[1], 0, like.shape[3]), like.dtype)
            pad = self.width - n
            if pad:
                part = mx.pad(part, [(0, 0), (0, 0), (pad, 0), (0, 0)])
            parts.append(part)
        return mx.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.new_keys, self.new_values = keys, values
        prefix_k = self._prefix(keys, lambda row: row.keys)
        prefix_v = self._prefix(values, lambda row: row.values)
        if prefix_k is None:
            return keys, values
        self.keys = mx.concatenate([prefix_k, keys], axis=2)
        self.values = mx.concatenate([prefix_v, values], axis=2)
        return self.keys, self.values

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None, **_: object) -> mx.array:
        return create_causal_mask(N, offset=self.width, window_size=window_size, left_padding=self.left_padding)


def batched_forward(model, caches: Sequence[Sequence[KVCache]], feeds: Sequence[Sequence[int] | mx.array],
                    n_logits: Sequence[int]) -> list[mx.array]:
    """Forward row i's ``feeds[i]`` on ``caches[i]`` in one model call; return its last ``n_logits[i]`` logits rows.

    Every feed must be non-empty and every cache a list of plain ``KVCache``
    (one per layer). A feed is a list of ids or a (lazy) 1-D ``mx.array`` of
    ids, e.g. a drafter's previous proposal: it is forwarded without being
    read. After the call each row's cache holds its feed, as after
    ``forward_logits(model, caches[i], feeds[i], n_logits[i])``. A feed longer
    than :data:`specfw.models.forward.PREFILL_CHUNK` has its head prefilled on its own
    row first, as ``forward_logits`` does. The returned arrays are lazy.
    """
    if not caches:
        return []
    if not (len(caches) == len(feeds) == len(n_logits)):
        raise ValueError("caches, feeds and n_logits must have one entry per row")
    feeds = [feed if isinstance(feed, mx.array) else list(feed) for feed in feeds]
    for cache, feed, n in zip(caches, feeds, n_logits):
        if isinstance(feed, mx.array) and feed.ndim != 1:
            raise ValueError(f"an mx.array feed must be 1-D, not of shape {feed.shape}")
        if not len(feed) or not 1 <= n <= len(feed):
            raise ValueError(f"each feed needs at least one id and 1 <= n_logits <= its length (got {len(feed)}, {n})")
        for layer in cache:
            if type(layer) is not KVCache:
                raise TypeError(f"batched_forward needs plain KVCache layers, not {type(layer).__name__}")
    for i, (cache, feed, n) in enumerate(zip(caches, feeds, n_logits)):
        head = max(0, len(feed) - max(n, PREFILL_CHUNK))
        if head:
            if isinstance(feed, mx.array):
                feed = feed.tolist()
            prefill(model, cache, feed[:head])
            feeds[i] = feed[head:]
    lengths = [len(feed) for feed in feeds]
    width = max(lengths)
    if all(isinstance(feed, list) for feed in feeds):
        inputs = mx.array([feed + [PAD_ID] * (width - len(feed)) for feed in feeds])
    else:
        inputs = mx.stack([_padded(feed, width) for feed in feeds])
    layers = [_RowsCache([cache[layer] for cache in caches], width) for layer in range(len(caches[0]))]
    logits = model(inputs, cache=layers)
    for layer, batch in enumerate(layers):
        for row, (cache, real) in enumerate(zip(caches, lengths)):
            cache[layer].update_and_fetch(batch.new_keys[row : row + 1, :, :real, :],
                                          batch.new_values[row : row + 1, :, :real, :])
    return [logits[row, real - n : real, :] for row, (real, n) in enumerate(zip(lengths, n_logits))]


def _padded(feed: Sequence[int] | mx.array, width: int) -> mx.array:
    """One row of the inputs: ``feed`` as int32 ids, right-padded with :data:`PAD_ID` to ``width``."""
    if not isinstance(feed, mx.array):
        return mx.array(list(feed) + [PAD_ID] * (width - len(feed)), dtype=mx.int32)
    feed = feed.astype(mx.int32)
    return mx.pad(feed, [(0, width - feed.shape[0])], constant_values=PAD_ID) if feed.shape[0] < width else feed
