"""Combined drafters: ``--drafter FIRST+SECOND``, any two registered drafters, built on demand.

The first part drafts in the *target's* vocabulary from the accepted target
ids (``propose_target``): its proposals need no translation and no draft
model, so it must be a drafter that needs no model (``lookup``, ``replay``).
The second part drafts in the drafter's own vocabulary as a lone drafter
would, and is asked only in cycles where the first proposed nothing. Each
part is an ordinary registered drafter, so the scheduler sees one drafter with
two proposal sources, and the k policy learns each source's acceptance and
cost apart (``adaptive``).

``drafter_options`` are handed to each part that names them in its
``option_names`` (both, when both do); a key no part takes is refused.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Sequence

from specfw.errors import PluginError
from specfw.protocols import DrafterSetup
from specfw.text import common_prefix_len


def _part_options(cls: type, options: dict) -> dict:
    names = getattr(cls, "option_names", None)
    return dict(options) if names is None else {k: v for k, v in options.items() if k in names}


class CombinedDrafter:
    """Target-vocabulary proposals from ``first``, draft-vocabulary proposals from ``second``."""

    name = "combined"
    needs_model = False
    first_cls: type
    second_cls: type

    def __init__(self, setup: DrafterSetup) -> None:
        options = dict(setup.options)
        first_setup = replace(setup, model=None, vocab_size=setup.target_vocab_size or setup.vocab_size,
                              tokenizer=setup.target_tokenizer,
                              options=_part_options(self.first_cls, options), sample=False)
        self.first = self.first_cls(first_setup)
        self.second = self.second_cls(replace(setup, options=_part_options(self.second_cls, options)))
        self._first_seq: list[int] = []  # what the first part has seen: target ids and its last proposals
        self._first_cached = 0

    @property
    def last_probs(self):
        return getattr(self.second, "last_probs", None)

    def reset(self) -> None:
        self.first.reset()
        self.second.reset()
        self._first_seq, self._first_cached = [], 0

    def propose(self, pending: Sequence[int], k: int, allowed=None) -> list[int]:
        return self.second.propose(pending, k, allowed)

    def propose_steps(self, pending: Sequence[int], k: int, allowed=None):
        """The second part's ``propose_steps`` (its forward passes as requests), or its ``propose`` where it has none."""
        steps = getattr(self.second, "propose_steps", None)
        if steps is None:
            return self.second.propose(pending, k, allowed)
        return (yield from steps(pending, k, allowed))

    def trim(self, n: int) -> None:
        self.second.trim(n)

    def propose_target(self, target_ids: Sequence[int], k: int) -> list[int]:
        # Bring the first part to the accepted ids: drop what disagrees, forward the rest (at least one id).
        valid = min(common_prefix_len(self._first_seq, target_ids), self._first_cached, len(target_ids) - 1)
        if self._first_cached > valid:
            self.first.trim(self._first_cached - valid)
        proposals = list(self.first.propose(target_ids[valid:], k))
        self._first_cached = len(target_ids) + len(proposals) - 1
        self._first_seq = list(target_ids) + proposals
        return proposals


@lru_cache(maxsize=None)
def combined_drafter_class(first_cls: type, second_cls: type) -> type:
    """The drafter class for ``first+second``; refuses a first part that needs a model."""
    name = f"{first_cls.name}+{second_cls.name}"
    if getattr(first_cls, "needs_model", False):
        raise PluginError(
            f"drafter '{first_cls.name}' cannot come first in '{name}': the first part drafts in the target's "
            "vocabulary and must need no draft model (put it second, e.g. 'lookup+mlx')"
        )
    names = [getattr(c, "option_names", None) for c in (first_cls, second_cls)]
    attrs = {
        "name": name,
        "needs_model": bool(getattr(second_cls, "needs_model", False)),
        "first_cls": first_cls,
        "second_cls": second_cls,
        "__doc__": f"{first_cls.name} in the target's vocabulary first, then {second_cls.name}.",
    }
    if all(n is not None for n in names):
        attrs["option_names"] = tuple(sorted(set(names[0]) | set(names[1])))
    return type(f"Combined_{first_cls.__name__}_{second_cls.__name__}", (CombinedDrafter,), attrs)
