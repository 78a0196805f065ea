"""Built-in ``lookup`` drafter: prompt lookup decoding, no second model.

It proposes what followed the most recent earlier occurrence of the longest
n-gram that ends its context (the prompt and every accepted id). It needs no
draft model; run without ``--draft`` and its ids are the target's own, so the
``identity`` translator passes them through untouched.
"""

from __future__ import annotations

from array import array
from typing import Sequence

from specfw.errors import PluginError
from specfw.hookspecs import hookimpl
from specfw.protocols import DrafterSetup


class LookupDrafter:
    """Proposes the continuation of the longest recent n-gram match in its own context.

    Options (``RunConfig.drafter_options``): ``max_ngram`` (longest suffix
    tried, default 3) and ``min_ngram`` (shortest, default 1). Where no suffix
    of length ``min_ngram`` or more occurred before, it proposes nothing and
    the cycle is an ordinary target step (counted in ``zero_new_cycles``).
    Matches are found with ``bytes.rfind`` over the ids packed as 4-byte
    integers, so a lookup costs microseconds even for long contexts.
    """

    name = "lookup"
    needs_model = False
    option_names = ("max_ngram", "min_ngram")

    def __init__(self, setup: DrafterSetup) -> None:
        options = setup.options
        try:
            self.max_ngram = int(options.get("max_ngram", 3))
            self.min_ngram = int(options.get("min_ngram", 1))
        except (TypeError, ValueError):
            raise PluginError("drafter 'lookup': max_ngram and min_ngram must be integers") from None
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise PluginError(f"drafter 'lookup' needs 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}")
        self.context = array("i")
        self.fed = 0  # how many positions the scheduler counts as cached (context may hold one more, unfed)

    def reset(self) -> None:
        self.context = array("i")
        self.fed = 0

    def propose(self, pending: Sequence[int], k: int, allowed=None) -> list[int]:
        del self.context[self.fed :]
        self.context.extend(pending)
        proposals = self._lookup(k)
        if allowed is not None:  # a mask from a restricting translator: stop at the first id it forbids
            allowed_list = allowed.tolist()
            for i, token in enumerate(proposals):
                if not (0 <= token < len(allowed_list) and allowed_list[token]):
                    proposals = proposals[:i]
                    break
        # What the scheduler counts as cached: context + proposals, all but the last id.
        self.fed = len(self.context) + len(proposals) - 1
        self.context.extend(proposals)
        return proposals

    def trim(self, n: int) -> None:
        self.fed -= n

    def _lookup(self, k: int) -> list[int]:
        ctx = self.context
        size = len(ctx)
        if size < 2 or k < 1:
            return []
        packed = ctx.tobytes()
        width = ctx.itemsize
        for n in range(min(self.max_ngram, size - 1), self.min_ngram - 1, -1):
            pattern = packed[(size - n) * width :]
            # an earlier occurrence ends at least one id before the context does (it may overlap the suffix)
            start = packed.rfind(pattern, 0, (size - 1) * width)
            while start != -1 and start % width:
                start = packed.rfind(pattern, 0, start + len(pattern) - 1)
            if start != -1:
                follow = start // width + n
                return ctx[follow : follow + k].tolist()
        return []


@hookimpl
def register_drafters(register):
    register(LookupDrafter)
