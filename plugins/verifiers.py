"""Built-in verifiers: ``greedy`` (exact argmax match), ``sample`` (target sampling) and ``speculative`` (rejection rule)."""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from specfw.hookspecs import hookimpl
from specfw.protocols import VerifierSetup
from specfw.text import common_prefix_len


def filtered_logits(logits: mx.array, temp: float, top_p: float) -> mx.array:
    """Logits scaled by ``1 / temp`` (float32), with the tokens outside the top-``top_p`` nucleus set to -inf.

    The nucleus is the smallest set of most likely tokens whose mass reaches
    ``top_p`` (the most likely token always stays). Shared by the sampling
    verifiers and by drafters that sample the same way.
    """
    logits = logits.astype(mx.float32) / temp
    if top_p >= 1.0:
        return logits
    probs = mx.softmax(logits, axis=-1)
    order = mx.argsort(-probs, axis=-1)
    sorted_probs = mx.take_along_axis(probs, order, axis=-1)
    keep_sorted = (mx.cumsum(sorted_probs, axis=-1) - sorted_probs) < top_p
    keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
    return mx.where(keep, logits, -mx.inf)


class GreedyVerifier:
    """Accepts proposed ids while they equal the target's argmax; the output is the target's greedy output."""

    name = "greedy"

    def __init__(self, setup: VerifierSetup) -> None:
        pass

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None) -> tuple[int, int]:
        best = mx.argmax(logits, axis=-1).tolist()  # the one sync point of a cycle's verification
        accepted = common_prefix_len(best, proposed)
        return accepted, best[accepted]

    def next_id(self, logits: mx.array) -> mx.array:
        return mx.argmax(logits, axis=-1)


_POSITION_KEY_MIX = 0x3C6EF372FE94F82B  # keeps the position keys apart from the drafter's and the split chains' seeds


def position_key(seed: int, position: int) -> mx.array:
    """The random key of the draw for generated position ``position`` (0: the first generated id) under ``seed``.

    Each seed in 0..2^32-1 (the range the server accepts) has keys of its own: the seed fills the high 32 bits.
    """
    return mx.random.key((((seed % 2**32) << 32) | (position % 2**32)) ^ _POSITION_KEY_MIX)


class SampleVerifier:
    """Samples the target at every position (temperature, top-p, seed); accepts a proposed id iff equal.

    Each emitted id is a draw from the target's own conditional distribution
    given the ids before it, so the output is distributed as the target's
    alone, whatever the drafter proposed. The draw for the n-th generated id
    uses a key of its own, made from the seed and n (:func:`position_key`),
    for the target alone (``next_id``) as for a verified proposal, so with the
    same seed a run yields the same ids as the target alone, whatever was
    drafted (up to float rounding between a batched and a one-id target
    pass, as with greedy decoding), and drafting settings compare on one text.
    """

    name = "sample"

    def __init__(self, setup: VerifierSetup) -> None:
        config = setup.config
        self.temp = config.temp if config.temp > 0 else 1.0
        self.top_p = config.top_p
        self.seed = config.seed
        self.key = mx.random.key(config.seed)  # subclasses' own draws (coins, residuals) split this chain
        self.position = 0  # generated ids emitted so far: the next draw's position

    def _filtered_logits(self, logits: mx.array) -> mx.array:
        return filtered_logits(logits, self.temp, self.top_p)

    def _position_draw(self, row: mx.array, offset: int = 0) -> mx.array:
        return mx.random.categorical(row, axis=-1, key=position_key(self.seed, self.position + offset))

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None) -> tuple[int, int]:
        scaled = self._filtered_logits(logits)
        draws = mx.stack([self._position_draw(scaled[i], i) for i in range(scaled.shape[0])]).tolist()
        accepted = common_prefix_len(draws, proposed)
        self.position += accepted + 1
        return accepted, draws[accepted]

    def next_id(self, logits: mx.array) -> mx.array:
        draw = self._position_draw(self._filtered_logits(logits))
        self.position += 1
        return draw


class SpeculativeVerifier(SampleVerifier):
    """The standard speculative sampling rule (Leviathan et al. 2023; Chen et al. 2023), lossless.

    With ``p_i`` the target's distribution at position ``i`` (temperature and
    top-p as in ``sample``) and ``q_i`` the distribution the proposal ``x_i``
    was drawn from (``draft_logprobs``, in target ids): accept ``x_i`` with
    probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection draw the
    next id from the residual ``norm(max(0, p_i - q_i))``; if every proposal is
    accepted, draw the bonus id from ``p_n``. Each emitted id is then exactly
    distributed as ``p``, while a drafter close to the target is accepted with
    probability ``sum(min(p, q))`` rather than ``sum(p * q)``.

    Without ``draft_logprobs`` the proposals are treated as deterministic
    (``q_i`` one-hot on ``x_i``): ``x_i`` is accepted with probability
    ``p_i(x_i)`` and a rejection draws from ``p_i`` without ``x_i``, the same
    output distribution (and acceptance) as ``sample``. Chosen by default
    for ``--translator tli`` at ``--temp > 0``.
    """

    name = "speculative"
    wants_draft_probs = True

    def verify(self, logits: mx.array, proposed: Sequence[int], draft_logprobs: mx.array | None = None) -> tuple[int, int]:
        n = len(proposed)
        self.key, accept_key, draw_key = mx.random.split(self.key, 3)
        scaled = self._filtered_logits(logits)
        logp = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)  # (n + 1, V); -inf outside top-p
        if n == 0:
            self.position += 1
            return 0, mx.random.categorical(logp, axis=-1, key=draw_key).item()
        width = logits.shape[-1]
        rows = mx.arange(n)
        index = mx.array(list(proposed))
        p = mx.exp(logp[:n])
        if draft_logprobs is None:
            q = (mx.arange(width)[None, :] == index[:, None]).astype(mx.float32)
        else:
            q = mx.exp(draft_logprobs.astype(mx.float32))
            if q.shape[-1] < width:  # ids beyond the target tokenizer's vocabulary: never drawn by the draft
                q = mx.concatenate([q, mx.zeros((n, width - q.shape[-1]), mx.float32)], axis=-1)
            elif q.shape[-1] > width:
                q = q[:, :width]
        # accept x_i iff u_i < p_i(x_i) / q_i(x_i), written without the division
        accept = mx.random.uniform(shape=(n,), key=accept_key) * q[rows, index] < p[rows, index]
        residual = mx.maximum(p - q, 0.0)
        has_residual = residual.sum(axis=-1, keepdims=True) > 0
        # p == q leaves no residual (and then a rejection can only be a rounding artefact): draw from p
        residual_logits = mx.where(has_residual, mx.log(residual), logp[:n])
        draws = mx.random.categorical(mx.concatenate([residual_logits, logp[n:]]), axis=-1, key=draw_key)
        mx.eval(accept, draws)  # one sync for the whole decision
        accepted_flags, drawn = accept.tolist(), draws.tolist()
        accepted = common_prefix_len(accepted_flags, [True] * n)
        self.position += accepted + 1
        return accepted, drawn[accepted]


@hookimpl
def register_verifiers(register):
    register(GreedyVerifier)
    register(SampleVerifier)
    register(SpeculativeVerifier)
