"""The protocol each plugin kind implements.

The scheduler (:mod:`specfw.scheduler`) is the only place where the kinds
meet. Every class registered through :mod:`specfw.hookspecs` has a class
attribute ``name`` and is built by the host with one "setup" object of its
kind, holding what that kind may know and nothing more.

Vocabulary words used throughout:

* *target ids*: token ids in the target model's vocabulary. All accepted
  output is target ids; verification happens only there, which is what makes
  every combination lossless.
* *draft ids*: token ids in the drafter's vocabulary.
* *accepted text*: the bytes of the generated target ids (raw token bytes, see
  :meth:`specfw.tokenizers.Tokenizer.token_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # imported for annotations only: keeps plugin discovery light
    import mlx.core as mx
    import mlx.nn as nn

    from specfw.config import RunConfig
    from specfw.tokenizers import Tokenizer


# --------------------------------------------------------------------------- drafter


@dataclass
class DrafterSetup:
    """What a drafter is built from.

    ``model`` is the loaded draft model when the drafter class sets
    ``needs_model = True`` (the host loads it from ``config.draft``), else None.
    ``options`` are free-form settings from ``RunConfig.drafter_options``.
    ``sample``: True when the run verifies with the draft's probabilities
    (the ``speculative`` verifier at ``temp > 0`` with a translator that maps
    them, e.g. ``tli``): the drafter should then *draw* its proposals from its
    temperature / top-p distribution (``config.temp``, ``config.top_p``) and
    expose that distribution as ``last_probs`` (see :class:`Drafter`). When
    False (the default) a drafter proposes as it likes (greedy for ``mlx``).
    ``target_vocab_size``: the target tokenizer's vocabulary size, for a
    drafter that proposes target ids (the first part of a combined drafter).
    ``tokenizer`` / ``target_tokenizer``: the tokenizers of the draft and
    target ids (None where the host has none to give); a combined drafter
    hands its first part the target's as ``tokenizer``.
    """

    config: RunConfig
    model: nn.Module | None
    vocab_size: int
    options: dict[str, Any] = field(default_factory=dict)
    sample: bool = False
    target_vocab_size: int | None = None
    tokenizer: Any = None
    target_tokenizer: Any = None


@runtime_checkable
class Drafter(Protocol):
    """Proposes draft ids; owns its model and KV cache; never sees a tokenizer.

    The scheduler tracks how many positions the drafter has cached and
    guarantees:

    * :meth:`reset` is called once per generation, before any other call.
    * :meth:`propose` gets ``pending``: the draft ids that follow what is
      cached, at least one. The drafter forwards them, then proposes ``k`` ids
      one by one. Afterwards its cache holds the previous positions, the
      pending ids and all proposed ids but the last (which was never fed).
    * :meth:`trim` drops the last ``n`` cached positions (rejected or
      re-tokenized ones); ``n`` never exceeds what is cached.
    * ``allowed`` (optional) is a boolean mask over the draft vocabulary (its
      length is the draft model's logits width where the host knows it); a
      drafter that receives one must only propose allowed ids.

    Optional, for verification with the draft's probabilities: after
    :meth:`propose`, an attribute ``last_probs`` holds an ``mx.array`` of shape
    ``(k, width)`` whose row ``i`` is the distribution over draft ids that
    proposal ``i`` was *drawn from* (restricted to ``allowed``, rows summing
    to 1), or None. A drafter that proposes deterministically (greedy,
    scripted) leaves it None or absent; the verifier then treats its
    proposals as certain (a one-hot distribution), which is exact for them.
    Giving the softmax of a greedy drafter's logits here would break
    losslessness: the rows must be what the ids were sampled from.

    Optional, for string-level verification (``slrs``):
    ``branch_probs(ids) -> mx.array`` of shape ``(len(ids), width)``, called
    right after :meth:`propose`: row ``j`` is the distribution the drafter
    would draw from after the context its first proposal was drawn from
    followed by ``ids[j]`` (the same temperature, top-p and ``allowed`` as
    ``last_probs``), all rows in one batched pass, without changing its cache.

    Optional, for proposals in the target's vocabulary:
    ``propose_target(target_ids, k) -> list[int]`` gets every accepted target
    id so far (prompt included) and returns at most ``k`` target ids, or [] when
    it has nothing. The scheduler asks it first each cycle; its proposals are
    verified as they are, with no translation and without touching the
    drafter's own context (``propose`` is then not called that cycle). The
    combined drafters (``--drafter lookup+mlx``) provide it.

    Optional, for drafting in batches: ``propose_steps(pending, k, allowed)``,
    :meth:`propose` as a generator that yields a
    :class:`~specfw.models.forward.ForwardRequest` (``draft=True``, its ``model``) for
    each of its forward passes, receives their logits and returns the
    proposals. The scheduler then uses it instead of :meth:`propose`: one
    generation's driver answers each request directly, a batching driver
    answers many generations' requests on the same model in one pass. The
    ``mlx`` drafter provides it (its :meth:`propose` drives it directly).

    ``option_names`` (optional class attribute): the ``drafter_options`` keys
    the drafter understands; the host refuses any other key with one clear
    error. A drafter without it receives every option unchecked.
    """

    name: ClassVar[str]
    needs_model: ClassVar[bool]

    def reset(self) -> None: ...

    def propose(self, pending: Sequence[int], k: int, allowed: mx.array | None = None) -> list[int]: ...

    def trim(self, n: int) -> None: ...


# --------------------------------------------------------------------------- translator


@dataclass
class TranslatorSetup:
    """What a translator is built from: the two tokenizers and the run's settings."""

    draft_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    config: RunConfig


@dataclass
class Proposal:
    """One cycle's draft proposal, as the translator receives it.

    ``draft_ids``: the k ids the drafter proposed.
    ``new_bytes``: the bytes those ids add after the accepted text. It is
    empty when the proposal contradicts the accepted text. It may begin with
    UTF-8 continuation bytes (the accepted text ended inside a character) and
    may end inside a character.
    ``target_ids``: every accepted target id so far (prompt included).
    """

    draft_ids: list[int]
    new_bytes: bytes
    target_ids: Sequence[int]


@dataclass
class Acceptance:
    """What the translator receives to keep the drafter in sync.

    ``new_target_ids``: target ids accepted this cycle (plus the verifier's own).
    ``new_text``: the complete UTF-8 text those ids add that the drafter has
    not seen yet (a trailing partial character is held back by the scheduler
    until it completes).
    ``draft_context``: the draft ids that stand for the accepted text so far.
    """

    new_target_ids: list[int]
    new_text: str
    draft_context: Sequence[int]


@runtime_checkable
class Translator(Protocol):
    """Maps proposals to target ids, and accepted text back to draft ids.

    :meth:`to_target` returns the target ids to verify; any list is safe
    (verification keeps the output lossless), a better one is accepted more.
    Ids outside the target vocabulary must not be returned.

    :meth:`to_draft` returns ``(keep, append)``: the drafter's new context is
    ``draft_context[:keep] + append``. The scheduler trims the drafter's cache
    to the common prefix of the old and new context and feeds the rest.

    ``coverage()`` may return a short report (e.g. vocabulary intersection);
    translators that have nothing to report return None.

    Optional methods, used by the host when present (``tli`` has both):

    * ``allowed_mask(width) -> mx.array``: a boolean mask of shape
      ``(width,)`` over draft ids; the host passes it to the drafter as
      ``allowed`` (``width`` is the draft model's logits width, which may
      exceed the draft tokenizer's vocabulary).
    * ``to_target_probs(draft_probs) -> mx.array``: maps the drafter's
      distributions for the first ``n`` proposals, shape ``(n, draft width)``,
      to distributions over target ids, shape ``(n, target vocab)``. Only for
      translators whose :meth:`to_target` maps draft ids one for one (its
      result is the images of the first ``n`` draft ids), so row ``i`` is the
      distribution the ``i``-th proposed target id was drawn from.
    """

    name: ClassVar[str]

    def to_target(self, proposal: Proposal) -> list[int]: ...

    def to_draft(self, acceptance: Acceptance) -> tuple[int, list[int]]: ...


# --------------------------------------------------------------------------- verifier


@dataclass
class VerifierSetup:
    """What a verifier is built from: the run's settings (temperature, top-p, seed).

    ``draft_vocab`` / ``target_vocab``: the bytes every draft / target id
    spells (:meth:`specfw.tokenizers.Tokenizer.token_bytes`, ``b""`` for
    special ids), given only to a verifier class with
    ``wants_draft_strings = True`` in a run with a drafter; else None. They
    are data, not tokenizers: a verifier still never encodes text.
    """

    config: RunConfig
    draft_vocab: Sequence[bytes] | None = None
    target_vocab: Sequence[bytes] | None = None


@dataclass
class DraftStrings:
    """One cycle's draft, as a verifier with ``wants_draft_strings = True`` receives it.

    ``draft_ids``: the k ids the drafter proposed; ``probs``: its
    ``last_probs`` (row ``i`` what ``draft_ids[i]`` was drawn from; None when
    it proposed deterministically); ``offset``: how many leading bytes of the
    proposal's string the target has already accepted (a held-back partial
    character; the proposed target ids spell the string from there);
    ``branch_probs``: the drafter's ``branch_probs`` (see :class:`Drafter`),
    or None. The verifier sets ``fell_back`` when it verified the cycle
    with a simpler rule for cost, and adds its own seconds to ``psi_s``; the
    scheduler counts both in :class:`~specfw.stats.RunStats`.
    """

    draft_ids: list[int]
    probs: mx.array | None
    offset: int
    branch_probs: Callable[[Sequence[int]], mx.array] | None = None
    fell_back: bool = False
    psi_s: float = 0.0


@runtime_checkable
class Verifier(Protocol):
    """Decides acceptance from the target's logits.

    :meth:`verify` gets ``logits`` of shape ``(n + 1, vocab)``: row ``i`` is
    the target's prediction after the last accepted id and the first ``i``
    proposed ids, and ``proposed`` (the ``n`` target ids). It returns
    ``(accepted, next_id)``: how many proposed ids are accepted (a prefix) and
    the target id that follows them. The output must be distributed exactly
    as the target's own (greedy: identical).

    ``draft_logprobs`` (optional): log-probabilities of shape ``(n, V)``, row
    ``i`` the distribution over target ids that ``proposed[i]`` was drawn from
    (``V`` is the target tokenizer's vocabulary, which may be narrower than
    ``logits``: missing columns have probability 0). The scheduler passes them
    only to a verifier class with ``wants_draft_probs = True``, and only when
    the drafter exposed ``last_probs`` and the translator has
    ``to_target_probs``; otherwise None, meaning the proposals are to be
    treated as deterministic. The built-in ``speculative`` verifier uses
    them; ``greedy`` and ``sample`` ignore them.

    ``draft_strings`` (optional): a :class:`DraftStrings`, passed only to a
    verifier class with ``wants_draft_strings = True`` when the drafter
    proposed this cycle (the built-in ``slrs`` verifier); otherwise not passed.

    ``draft_temp`` (optional class attribute): a verifier that works best with a
    sharper drafter names a temperature; a sampling drafter that takes the
    option ``temp`` then draws at ``min(run temp, draft_temp)`` unless the
    run sets that option itself (``slrs``: 0.3). The verifier is handed the
    distributions the draws came from, so this changes speed only.

    :meth:`next_id` is the target-alone step: from one row of logits, the
    next id as a lazy scalar ``mx.array`` (no sync), drawn exactly as
    :meth:`verify` would with nothing proposed. The scheduler queues the next
    forward on it before reading it, as mlx-lm's ``generate_step`` does.
    """

    name: ClassVar[str]

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None) -> tuple[int, int]: ...

    def next_id(self, logits: mx.array) -> mx.array: ...


# --------------------------------------------------------------------------- cache sync


@dataclass
class CacheSyncSetup:
    """What a cache-sync is built from: the run's settings (prefix window)."""

    config: RunConfig


@runtime_checkable
class CacheSync(Protocol):
    """Trims the target's KV cache after verification.

    :meth:`sync` gets the target's per-layer cache list, ``cached`` (positions
    it now holds, rejected ones included) and ``valid`` (how many leading
    positions hold accepted ids). It trims the cache to some length ``L <=
    valid`` and returns ``L``; the scheduler forwards the accepted ids from
    ``L`` on in the next verification pass, so any ``L`` stays lossless and a
    smaller one costs more.
    """

    name: ClassVar[str]

    def sync(self, cache: list[Any], cached: int, valid: int) -> int: ...


# --------------------------------------------------------------------------- k policy


@dataclass
class KPolicySetup:
    """What a k policy is built from: the run's settings (``k``, ``k_max``).

    ``pair``: names the run's target, draft model, drafter, translator,
    verifier and cache-sync; a policy may keep what it learnt under it for
    later runs in the same process ("" when unknown: learn afresh).
    ``priors``: the policy may also read and write what it learnt for ``pair``
    in the priors file (:mod:`specfw.priors`; the run's ``RunConfig.priors``).
    ``draft_cost``: the drafter's cost per draft token in target steps, as
    estimated before anything is measured (the draft model's weight bytes over
    the target's; 0 for a model-free drafter; None: unknown).
    """

    config: RunConfig
    pair: str = ""
    priors: bool = False
    draft_cost: float | None = None


@dataclass
class CycleReport:
    """What one speculative cycle cost and yielded, as the k policy is told after it.

    ``k``: draft tokens asked for (0: the cycle did not draft); ``proposed``:
    target ids sent to verification; ``accepted``: how many were accepted;
    ``fed``: ids in the target pass (unforwarded accepted ids + proposed);
    ``draft_s``, ``translate_s``, ``verify_s``: wall-clock seconds of the
    drafter's propose call (forwarding its catch-up ids included), of the
    translations (the deferred back-translation included), and of the target
    pass with verification (a plain step: the step). ``source``: ``"draft"``
    (the drafter's own vocabulary, translated) or ``"target"`` (proposals a
    drafter made directly in the target's vocabulary, see
    :meth:`Drafter.propose_target`). ``draft_fed``: ids the drafter forwarded
    before its first proposal (its catch-up after the text it had not seen).
    """

    k: int
    proposed: int
    accepted: int
    fed: int
    draft_s: float
    translate_s: float
    verify_s: float
    source: str = "draft"
    draft_fed: int = 0


@runtime_checkable
class KPolicy(Protocol):
    """Chooses how many draft tokens to propose, cycle by cycle.

    :meth:`choose` is called before every cycle and returns k >= 0 (0: skip
    drafting, the target steps alone; the scheduler also caps k at the
    tokens still to generate). :meth:`observe` receives the cycle's
    :class:`CycleReport` afterwards. Any choice stays lossless: k only
    changes how much is proposed.

    A policy whose ``choose`` takes a ``source`` keyword is asked once per
    source and cycle: ``"target"`` (for a drafter with ``propose_target``,
    asked first) and ``"draft"`` (asked when the target source proposed
    nothing); one without it gets the same k for both. While the target steps
    alone, the scheduler asks for the next cycle's k before the current id is
    read, so that a plain step can be queued ahead of it; ``observe`` for the
    current cycle then comes after that ``choose``. A ``choose`` that also
    takes a ``catch_up`` keyword is told, for the ``"draft"`` source, about
    how many ids the drafter would forward before proposing (the text it has
    not seen yet): what drafting now would cost beyond the k steps.
    """

    name: ClassVar[str]

    def choose(self, source: str = "draft") -> int: ...

    def observe(self, report: CycleReport) -> None: ...


PLUGIN_KINDS: dict[str, type] = {
    "drafter": Drafter,
    "translator": Translator,
    "verifier": Verifier,
    "cache_sync": CacheSync,
    "k_policy": KPolicy,
}
