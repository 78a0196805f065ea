"""Built-in drafters: ``mlx`` (an mlx-lm model) and ``replay`` (a scripted continuation)."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Generator, Sequence

import mlx.core as mx
from mlx_lm.models.cache import trim_prompt_cache

from specfw.errors import PluginError
from specfw.models.forward import ForwardRequest, answer
from specfw.hookspecs import hookimpl
from specfw.models.kv_cache import make_trimmable_cache
from specfw.protocols import DrafterSetup
from specfw_plugins.draft_model_options import RestrictedHead, head_ids, quantized_copy
from specfw_plugins.verifiers import filtered_logits


def _logits_width(model, fallback: int) -> int:
    width = getattr(getattr(model, "args", None), "vocab_size", None)
    return width if isinstance(width, int) and width > 0 else fallback


class _HeadModel:
    """A model whose logits come from a restricted head, called as an mlx-lm model is (``model(inputs, cache=...)``)."""

    def __init__(self, model, head: RestrictedHead) -> None:
        self.model, self.head = model, head

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        return self.head(self.model, inputs, cache)


class MLXDrafter:
    """An mlx-lm model with its KV cache, proposing greedily (argmax), or by sampling when asked.

    Pending ids (the resync after back-translation) are forwarded in the same
    pass that yields the first proposal, so a resync costs no extra pass.

    With ``DrafterSetup.sample`` (the ``speculative`` verifier at ``temp > 0``)
    each proposal is drawn from the model's distribution restricted to
    ``allowed``, scaled by ``config.temp`` and cut to the top-``config.top_p``
    nucleus exactly as the sampling verifiers cut the target's; those
    distributions are kept in ``last_probs``. The draws use their own random
    key (derived from ``config.seed``), independent of the verifier's.

    Option ``temp``: the temperature of those draws (default: the run's
    ``temp``, or min(``temp``, the verifier's ``draft_temp``) for a verifier
    that names one: ``slrs``, 0.3). A lower one sharpens the drafts toward the drafter's mode; it
    stays lossless because the verifier is handed ``last_probs``, the
    distributions the draws were really made from.
    """

    name = "mlx"
    needs_model = True
    option_names = ("quantize", "head", "temp")

    def __init__(self, setup: DrafterSetup) -> None:
        self.model = setup.model
        options = setup.options
        if "quantize" in options:
            try:
                bits = int(options["quantize"])
            except (TypeError, ValueError):
                raise PluginError(f"drafter 'mlx': quantize must be 4 or 8, got '{options['quantize']}'") from None
            self.model = quantized_copy(self.model, bits)
        self.head: RestrictedHead | None = None
        self._head_from_mask = False
        if "head" in options:
            ids = head_ids(str(options["head"]), _logits_width(self.model, setup.vocab_size))
            self._head_from_mask = ids is None
            if ids is not None:
                self.head = RestrictedHead(self.model, ids)
        self.cache: list = []
        config = setup.config
        self.sample = bool(setup.sample) and config.temp > 0
        self.temp, self.top_p, self.seed = config.temp, config.top_p, config.seed
        if "temp" in options:
            try:
                self.temp = float(options["temp"])
            except (TypeError, ValueError):
                self.temp = -1.0
            if not self.temp > 0:
                raise PluginError(f"drafter 'mlx': temp must be a number > 0, got '{options['temp']}'")
        self.last_probs: mx.array | None = None
        self._mask: tuple[mx.array, int, mx.array] | None = None  # (mask given, width, mask fitted to width)
        self.reset_key()

    def reset_key(self) -> None:
        # a fixed odd offset keeps this key's stream apart from the verifier's (mx.random.key(seed))
        self.key = mx.random.key((self.seed * 2654435761 + 0x5D7AF7) % 2**63)

    def reset(self) -> None:
        self.cache = make_trimmable_cache(self.model)
        self.last_probs = None
        self.reset_key()

    def _fit(self, allowed: mx.array, width: int) -> mx.array:
        """``allowed`` cut or padded (with False) to the logits width, cached for the mask object."""
        if self._mask is not None and self._mask[0] is allowed and self._mask[1] == width:
            return self._mask[2]
        fitted = allowed
        if allowed.shape[0] < width:
            fitted = mx.concatenate([allowed, mx.zeros((width - allowed.shape[0],), mx.bool_)])
        elif allowed.shape[0] > width:
            fitted = allowed[:width]
        self._mask = (allowed, width, fitted)
        return fitted

    def propose(self, pending: Sequence[int], k: int, allowed: mx.array | None = None) -> list[int]:
        return answer(self.propose_steps(pending, k, allowed))

    def propose_steps(self, pending: Sequence[int], k: int,
                      allowed: mx.array | None = None) -> Generator[ForwardRequest, mx.array, list[int]]:
        """:meth:`propose` as a coroutine: yields a draft :class:`~specfw.models.forward.ForwardRequest` for each step
        (the first feeds ``pending``, each later one the previous proposal, lazily) and returns the proposals.

        A batching driver answers many drafters' steps on the same model in one pass; :meth:`propose` answers
        them one by one with direct calls. The draws use this drafter's own key either way.
        """
        if k <= 0:
            return []
        head = self.head
        if head is None and self._head_from_mask and allowed is not None:
            mask = self._fit(allowed, _logits_width(self.model, allowed.shape[0]))
            head = self.head = RestrictedHead(self.model, [i for i, ok in enumerate(mask.tolist()) if ok])
        model = self.model if head is None else self._head_model(head)
        feed: Sequence[int] | mx.array = list(pending)
        proposals = []
        probs = []
        for _ in range(k):
            logits = (yield ForwardRequest(self.cache, feed, 1, model, draft=True))[-1]
            if head is None:
                if allowed is not None:
                    logits = mx.where(self._fit(allowed, logits.shape[-1]), logits, -mx.inf)
            elif allowed is not None:
                logits = mx.where(head.mask(self._fit(allowed, head.width)), logits, -mx.inf)
            if self.sample:
                logits = filtered_logits(logits, self.temp, self.top_p)
                self.key, draw_key = mx.random.split(self.key)
                y = mx.random.categorical(logits, key=draw_key).reshape(1)
                p = mx.softmax(logits, axis=-1)
                if head is not None:  # back to a row over every draft id (0 outside the head)
                    p = mx.zeros((head.width,), p.dtype).at[head.ids].add(p)
                probs.append(p)
            else:
                y = mx.argmax(logits, axis=-1, keepdims=True)
            if head is not None:
                y = head.to_full(y)  # restricted index -> draft id (the distribution stays over the subset)
            mx.async_eval(y)  # overlap this step's compute with building the next
            proposals.append(y)
            feed = y
        self.last_probs = mx.stack(probs) if probs else None
        self._allowed = allowed  # for branch_probs
        return mx.concatenate(proposals).tolist()

    def _head_model(self, head: RestrictedHead) -> "_HeadModel":
        """The model with ``head`` as one callable (the same object each call, so a batching driver groups it)."""
        cached = getattr(self, "_head_forward", None)
        if cached is None or cached.head is not head:
            cached = self._head_forward = _HeadModel(self.model, head)
        return cached

    def branch_probs(self, ids: Sequence[int]) -> mx.array:
        """Distributions after the first proposal's context followed by each of ``ids``, in one batched pass.

        For string-level verification (``slrs``, see
        :class:`~specfw.protocols.Drafter`): the cache up to that context is
        copied once per id (the drafter's own cache is untouched), and each row
        is cut exactly as ``propose`` cuts its draws (``allowed``, temperature,
        top-p). Call it right after :meth:`propose`, with ``last_probs`` set.
        """
        k = self.last_probs.shape[0]
        root = self.cache[0].offset - (k - 1)  # the cache holds the context and every proposal but the last
        batch = len(ids)
        branch_cache = make_trimmable_cache(self.model)
        for own, copy in zip(self.cache, branch_cache):
            copy.keys = mx.repeat(own.keys[..., :root, :], batch, axis=0)
            copy.values = mx.repeat(own.values[..., :root, :], batch, axis=0)
            copy.offset = root
        tokens = mx.array(list(ids))[:, None]
        allowed = getattr(self, "_allowed", None)
        if self.head is None:
            logits = self.model(tokens, cache=branch_cache)[:, -1]
            if allowed is not None:
                logits = mx.where(self._fit(allowed, logits.shape[-1]), logits, -mx.inf)
        else:
            logits = self.head(self.model, tokens, branch_cache)[:, -1]
            if allowed is not None:
                logits = mx.where(self.head.mask(self._fit(allowed, self.head.width)), logits, -mx.inf)
        probs = mx.softmax(filtered_logits(logits, self.temp, self.top_p), axis=-1)
        if self.head is not None:
            probs = mx.zeros((batch, self.head.width), probs.dtype).at[:, self.head.ids].add(probs)
        return probs

    def trim(self, n: int) -> None:
        trim_prompt_cache(self.cache, n)


class ReplayDrafter:
    """Proposes a given continuation: for tests and timing studies with controlled acceptance.

    Options (``RunConfig.drafter_options``): ``reference`` (list of draft ids:
    the whole expected sequence, prompt included), ``corrupt_rate`` (0..1,
    chance that a proposed id is replaced by a different one) and ``seed``.
    With its tokenizer (``DrafterSetup.tokenizer``) it follows the reference
    by text: its context may spell the reference's text in other ids (the
    back-translation appends the accepted text's own encoding), and a context
    that ends inside a reference id continues with the rest of that id's
    text, encoded. Where its context has left the reference it proposes id 0.
    """

    name = "replay"
    needs_model = False
    option_names = ("reference", "corrupt_rate", "seed")

    def __init__(self, setup: DrafterSetup) -> None:
        options = setup.options
        if "reference" not in options:
            raise PluginError("drafter 'replay' needs drafter_options['reference'] (a list of draft ids)")
        self.reference = [int(i) for i in options["reference"]]
        self.corrupt_rate = float(options.get("corrupt_rate", 0.0))
        self.vocab_size = setup.vocab_size
        self.rng = random.Random(int(options.get("seed", 0)))
        self.context: list[int] = []
        self.tokenizer = setup.tokenizer
        if self.tokenizer is not None:
            self._ends = list(itertools.accumulate(len(self.tokenizer.token_bytes(i)) for i in self.reference))
            self._text = b"".join(self.tokenizer.token_bytes(i) for i in self.reference)

    def reset(self) -> None:
        self.context = []

    def _continuation(self) -> list[int]:
        """The reference's ids after the context (empty where the context has left it)."""
        n = len(self.context)
        if self.reference[:n] == self.context:
            return self.reference[n:]
        if self.tokenizer is None:
            return []
        spelled = b"".join(self.tokenizer.token_bytes(i) for i in self.context)
        if not self._text.startswith(spelled):
            return []
        j = bisect.bisect_left(self._ends, len(spelled))  # the reference id the context ends in (or after)
        if j == len(self._ends):
            return []
        if self._ends[j] == len(spelled):
            return self.reference[j + 1 :]
        rest = self._text[len(spelled) : self._ends[j]]
        try:
            head = self.tokenizer.encode_continuation(rest.decode("utf-8"))
        except UnicodeDecodeError:
            return []  # the context ends inside a character
        return head + self.reference[j + 1 :]

    def propose(self, pending: Sequence[int], k: int, allowed: mx.array | None = None) -> list[int]:
        self.context.extend(pending)
        ahead = self._continuation()
        proposals = []
        for i in range(k):
            token = ahead[i] if i < len(ahead) else 0
            if self.rng.random() < self.corrupt_rate:
                token = (token + 1 + self.rng.randrange(self.vocab_size - 1)) % self.vocab_size
            proposals.append(token)
        self.context.extend(proposals[:-1])
        return proposals

    def trim(self, n: int) -> None:
        if n:
            del self.context[-n:]


@hookimpl
def register_drafters(register):
    register(MLXDrafter)
    register(ReplayDrafter)
