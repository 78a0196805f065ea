"""Hook specifications: what a specfw plugin can provide.

A plugin is a module (or object) with ``@hookimpl`` functions. Each hook
receives a ``register`` callable; the plugin calls it once per class it
provides. The host owns the registry (see :mod:`specfw.plugins`), and the
scheduler only ever calls methods on the registered classes' instances, so
discovery (pluggy, at start-up) and execution (the hot loop) stay apart.

Every registered class has a class attribute ``name`` (the value users pass
on the command line) and implements the protocol of its kind from
:mod:`specfw.protocols`.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("specfw")
hookimpl = pluggy.HookimplMarker("specfw")

Register = Callable[[type], None]


@hookspec
def register_drafters(register: Register) -> None:
    """Register drafter classes (protocol :class:`specfw.protocols.Drafter`).

    A drafter proposes token ids in its own vocabulary. It knows a model and
    ids, never a tokenizer.
    """


@hookspec
def register_translators(register: Register) -> None:
    """Register translator classes (protocol :class:`specfw.protocols.Translator`).

    A translator maps draft proposals to target ids and accepted target text
    back to draft ids. It knows tokenizers and ids, never a model.
    """


@hookspec
def register_verifiers(register: Register) -> None:
    """Register verifier classes (protocol :class:`specfw.protocols.Verifier`).

    A verifier decides, from the target's logits, how many proposed target
    ids are accepted and which target id follows them.
    """


@hookspec
def register_cache_syncs(register: Register) -> None:
    """Register cache-sync classes (protocol :class:`specfw.protocols.CacheSync`).

    A cache-sync trims the target's KV cache after verification and says how
    much of the accepted history must be forwarded again.
    """


@hookspec
def register_k_policies(register: Register) -> None:
    """Register k-policy classes (protocol :class:`specfw.protocols.KPolicy`).

    A k policy chooses the number of draft tokens before each cycle, from
    what earlier cycles cost and yielded.
    """
