"""How much of a generated text repeats what came before it: the share of ids that continue a seen n-gram.

Copying drafters (``lookup``) win exactly where this share is high, so the speed tables print it beside
every speedup.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["repetition_share"]


def repetition_share(prompt_ids: Sequence[int], generated_ids: Sequence[int], n: int = 4) -> float:
    """The share of ``generated_ids`` that continue an ``n``-gram seen earlier in the prompt or the output.

    Let ``s = prompt_ids + generated_ids`` and ``P = len(prompt_ids)``. The generated id at position
    ``p`` of ``s`` (``P <= p < len(s)``) *repeats* when ``p >= n - 1`` and the n-gram ending at it,
    ``s[p - n + 1 : p + 1]`` (the ``n - 1`` ids before it, then itself), also occurs at some earlier
    position, wholly inside ``s[:p]``: ``s[q - n + 1 : q + 1] == s[p - n + 1 : p + 1]`` for some
    ``n - 1 <= q < p``. The ``n - 1`` ids before it may lie in the prompt, so the first generated ids can
    repeat the prompt. The result is (repeating generated ids) / ``len(generated_ids)``, in [0, 1]; 0.0 when
    nothing was generated. Ids are compared as they are (the target's token ids); ``n`` must be >= 1
    (the default 4 asks for a run of four ids, which chance alone rarely gives).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not generated_ids:
        return 0.0
    s = list(prompt_ids) + list(generated_ids)
    start = len(s) - len(generated_ids)
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for p in range(n - 1, len(s)):
        gram = tuple(s[p - n + 1 : p + 1])
        if p >= start and gram in seen:
            repeats += 1
        seen.add(gram)
    return repeats / len(generated_ids)
