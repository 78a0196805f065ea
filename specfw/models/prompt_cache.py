"""KV caches kept from one generation for the next, as ``mlx_lm.server`` keeps its prompt cache, on both sides.

A key/value cache entry depends only on the ids up to its position, so a
cache that holds ids ``H`` is valid for every prefix of ``H``: a generation
whose prompt starts with a prefix of ``H`` (a chat follow-up starts with the
whole earlier conversation) trims the cache to that prefix and forwards only
the rest. Give one :class:`PromptCache` to successive
``speculative_stream`` calls on the same models.
"""

from __future__ import annotations

from typing import Any, Sequence

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from specfw.models.kv_cache import make_trimmable_cache

from specfw.text import common_prefix_len


class PromptCache:
    """The target's and the drafter's caches left by the last generation, with the ids each holds.

    The scheduler calls :meth:`reuse_target` / :meth:`reuse_draft` when a
    generation starts and :meth:`hold` after every verification (the caches
    are only read when the next generation starts, so holding costs nothing).
    ``target_reused`` / ``draft_reused``: prompt ids the last generation did
    not forward again. The drafter's cache is reused only for a drafter that
    keeps an mlx-lm cache list in its ``cache`` attribute (the built-in ``mlx``).
    Call :meth:`clear` after a generation that raised: its caches may be half-updated.
    """

    def __init__(self) -> None:
        self.target_reused = 0
        self.draft_reused = 0
        self._target: tuple[list, Sequence[int], Sequence[int], int] | None = None
        self._draft: tuple[list, Any] | None = None

    def clear(self) -> None:
        self._target = self._draft = None

    def hold(self, cache: list, target_ids: Sequence[int], fed_after: Sequence[int], cached: int,
             drafter: Any = None, draft_sync: Any = None) -> None:
        """Remember the target ``cache`` holding ``(target_ids + fed_after)[:cached]``, and the drafter's."""
        self._target = (cache, target_ids, fed_after, cached)
        drafter_cache = getattr(drafter, "cache", None)
        self._draft = (drafter_cache, draft_sync) if isinstance(drafter_cache, list) and draft_sync else None

    def shared(self, prompt_ids: Sequence[int]) -> int:
        """How many of ``prompt_ids`` the kept target cache would give without forwarding (0: none kept, or none
        shared); reads only, so a server can pick, of several kept caches, the one a prompt shares most with."""
        if self._target is None:
            return 0
        _, ids, fed_after, cached = self._target
        held = (list(ids) + list(fed_after))[:cached]
        return common_prefix_len(held, prompt_ids[:-1]) if len(held) == cached else 0

    def reuse_target(self, model, prompt_ids: Sequence[int]) -> tuple[list, int]:
        """A cache for ``prompt_ids`` and how many of them it already holds (a fresh cache and 0 if none)."""
        self.target_reused = 0
        kept, self._target = self._target, None
        if kept is not None:
            cache, ids, fed_after, cached = kept
            held = (list(ids) + list(fed_after))[:cached]
            reused = _trimmed(cache, held, prompt_ids) if len(held) == cached else 0
            if reused:
                self.target_reused = reused
                return cache, reused
        return make_trimmable_cache(model), 0

    def reuse_draft(self, drafter: Any, prompt_ids: Sequence[int]) -> int:
        """Give ``drafter`` (just reset) the kept draft cache trimmed to what ``prompt_ids`` shares; return that length."""
        self.draft_reused = 0
        kept, self._draft = self._draft, None
        if kept is None or not isinstance(getattr(drafter, "cache", None), list):
            return 0
        cache, sync = kept
        held = (sync.seq + sync.outstanding)[: sync.cached]
        # A drafter cache holding more than its ids say (proposals kept for later) is not reused.
        reused = _trimmed(cache, held, prompt_ids) if len(held) == sync.cached else 0
        if reused:
            drafter.cache = cache
            self.draft_reused = reused
        return reused


def _trimmed(cache: list, held: Sequence[int], prompt_ids: Sequence[int]) -> int:
    """Trim ``cache`` (holding ``held``) to its longest prefix shared with ``prompt_ids``; return its length, 0 if unusable.

    The last prompt id is always forwarded: its logits give the first token.
    """
    shared = common_prefix_len(held, prompt_ids[:-1])
    if shared == 0 or (len(held) > shared and not can_trim_prompt_cache(cache)):
        return 0
    trim_prompt_cache(cache, len(held) - shared)
    return shared
