"""Continuous batching: several generations decode together, sharing each target pass.

A :class:`BatchEngine` holds up to ``max_batch`` active generations on one
target model, each a :func:`specfw.scheduler.speculative_steps` coroutine with
its own KV caches, drafter, translator, k policy, verifier, sampling settings,
seed and stop ids. Each :meth:`BatchEngine.cycle`:

1. drops cancelled generations and admits waiting ones (a generation joins
   once its coroutine has prefilled its prompt and asked for its first pass);
2. answers the drafters' passes in rounds: each round, every generation whose
   drafter asks for a pass (its catch-up and first draft step, or a later
   step on its previous proposal) is forwarded, those on the same draft model
   in **one** :func:`~specfw.models.batch_forward.batched_forward` call, and runs
   on to its next draft step or its target pass (a drafter without
   ``propose_steps``, and drafting ahead, run directly inside the generation);
3. answers every active generation's pending target pass (its ragged proposal,
   or one id for a plain step) with **one** :func:`specfw.models.batch_forward.batched_forward`
   call (a lone generation gets a plain ``forward_logits`` pass);
4. sends each its logits and runs it on (verification, per-row cache rollback,
   emitted tokens) until it asks for its next pass or ends.

Generations leave between cycles when they end. Every emitted id comes out of
the generation's own verifier over its own logits, so its output is what it
gives alone (greedy: the same ids; sampling: the same ids for the same seed,
whose draws are keyed by seed and position; a drafter that samples draws
with its own key, as alone); only the timings and so an adaptive k policy's
choices (never the output) may differ. Drafters are batched by model object:
``quantize`` and ``head`` options give each drafter its own, drafting alone. A generation whose
coroutine raises fails alone (:attr:`Generation.error`); the others go on.

Under batching each generation decodes without the single path's plain-step
overlap (a plain step's forward is not queued before its id is read).
A :class:`~specfw.models.prompt_cache.PromptCache` works per generation: give each
concurrent generation its own.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import mlx.core as mx

from specfw.models.batch_forward import batched_forward
from specfw.models.forward import forward_logits
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run, RunResult
from specfw.scheduler import ForwardRequest, Steps, Token

DEFAULT_MAX_BATCH = 4
LONG_DRAFT_FEED = 16  # a drafter's pass over more ids than this is not batched (see BatchEngine._draft_rounds)


@dataclass
class Generation:
    """One generation in a :class:`BatchEngine`: its coroutine, the tokens it has produced, and how it ended."""

    steps: Steps
    tag: Any = None
    tokens: list[Token] = field(default_factory=list)
    done: bool = False
    cancelled: bool = False
    error: BaseException | None = None
    pending: ForwardRequest | None = None
    _taken: int = 0

    def take(self) -> list[Token]:
        """The tokens produced since the last ``take``."""
        new = self.tokens[self._taken :]
        self._taken = len(self.tokens)
        return new

    def cancel(self) -> None:
        """Leave the batch at the next cycle (its coroutine is closed there)."""
        self.cancelled = True


class BatchEngine:
    """Decodes up to ``max_batch`` generations together on ``model``, one batched target pass per cycle."""

    def __init__(self, model: Any, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.waiting: deque[Generation] = deque()
        self.active: list[Generation] = []
        # Drafters' passes answered so far: model calls, and the rows they forwarded (rows > passes: batched).
        self.draft_passes = 0
        self.draft_rows = 0

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.active)

    def add(self, steps: Steps, tag: Any = None) -> Generation:
        """Queue a :func:`~specfw.scheduler.speculative_steps` coroutine on this engine's target; it joins at a cycle."""
        generation = Generation(steps, tag)
        self.waiting.append(generation)
        return generation

    def add_run(self, run: Run, prompt_cache: PromptCache | None = None, tag: Any = None) -> Generation:
        """Queue ``run`` (its target must be this engine's model); ``run.stats`` fills in as it decodes."""
        if run.target.model is not self.model:
            raise ValueError("the run's target model is not this engine's model")
        return self.add(run.steps(prompt_cache), tag)

    def cycle(self) -> list[Generation]:
        """Admit, run the drafters' batched passes and one batched target pass, advance every generation; return
        those that ended in this cycle."""
        ended: list[Generation] = []
        for generation in list(self.waiting):
            if generation.cancelled:
                self.waiting.remove(generation)
                generation.done = True
                ended.append(generation)
        for generation in self.active:
            if generation.cancelled and not generation.done:
                generation.steps.close()
                generation.done = True
        while self.waiting and len([g for g in self.active if not g.done]) < self.max_batch:
            generation = self.waiting.popleft()
            self.active.append(generation)
            _advance(generation, None)  # prefill; joins with its first draft (or target) pass
        self._draft_rounds()
        rows = [g for g in self.active if not g.done and g.pending is not None]
        for generation, logits in zip(rows, self._forward(self.model, rows)):
            if isinstance(logits, BaseException):
                _fail(generation, logits)
            else:
                _advance(generation, logits)
        ended += [g for g in self.active if g.done]
        self.active = [g for g in self.active if not g.done]
        return ended

    def run(self) -> None:
        """Cycle until every generation has ended."""
        while self.busy:
            self.cycle()

    def _draft_rounds(self) -> None:
        """Answer the drafters' passes, round by round, until every generation waits for the target.

        Each round forwards every generation's pending draft request, those on
        the same draft model in one batched pass (a generation drafting k ids
        takes part in k rounds; its first forwards its catch-up ids too). A
        feed longer than :data:`LONG_DRAFT_FEED` ids (a joining generation's
        draft prompt) is forwarded alone: in a batch every row is padded to the
        longest feed.
        """
        while True:
            drafting = [g for g in self.active if not g.done and g.pending is not None and g.pending.draft]
            if not drafting:
                return
            groups: dict[int, list[Generation]] = {}
            for generation in drafting:
                feed = generation.pending.feed
                # A long feed (a new generation's draft prompt) goes alone: batched, every row would be padded to it.
                key = id(generation) if len(feed) > LONG_DRAFT_FEED else id(generation.pending.model)
                groups.setdefault(key, []).append(generation)
            for rows in groups.values():
                self.draft_passes += 1
                self.draft_rows += len(rows)
                for generation, logits in zip(rows, self._forward(rows[0].pending.model, rows)):
                    if isinstance(logits, BaseException):
                        _fail(generation, logits)
                    else:
                        _advance(generation, logits)

    def _forward(self, model: Any, rows: list[Generation]) -> list[mx.array | BaseException]:
        requests = [g.pending for g in rows]
        if len(requests) > 1:
            try:
                logits = batched_forward(model, [r.cache for r in requests], [r.feed for r in requests],
                                         [r.n_logits for r in requests])
                mx.async_eval(logits)
                return logits
            except Exception:  # e.g. a row's cache is not a plain KVCache: each row alone, failing alone
                pass
        out: list[mx.array | BaseException] = []
        for r in requests:
            try:
                out.append(forward_logits(model if r.model is None else r.model, r.cache, r.feed, r.n_logits))
            except Exception as exc:
                out.append(exc)
        return out


def _advance(generation: Generation, logits: mx.array | None) -> None:
    """Send ``logits`` (None: start) and collect tokens until the coroutine asks for a pass or ends."""
    generation.pending = None
    try:
        item = generation.steps.send(logits)
        while isinstance(item, Token):
            generation.tokens.append(item)
            item = next(generation.steps)
        generation.pending = item
    except StopIteration:
        generation.done = True
    except Exception as exc:
        _fail(generation, exc)


def _fail(generation: Generation, exc: BaseException) -> None:
    generation.error, generation.done, generation.pending = exc, True, None
    generation.steps.close()


def generate_runs(runs: Iterable[Run], max_batch: int = DEFAULT_MAX_BATCH,
                  prompt_caches: Sequence[PromptCache | None] | None = None) -> list[RunResult | BaseException]:
    """Run every run to the end, ``max_batch`` at a time; each entry is its result, or the exception it failed with.

    All runs must share one target model.
    """
    runs = list(runs)
    if not runs:
        return []
    engine = BatchEngine(runs[0].target.model, max_batch)
    caches = list(prompt_caches) if prompt_caches is not None else [None] * len(runs)
    generations = [engine.add_run(run, cache) for run, cache in zip(runs, caches)]
    engine.run()
    return [g.error if g.error is not None else run.result_of(g.tokens) for run, g in zip(runs, generations)]
