"""The serving engine: models loaded once, up to ``max_batch`` generations decoding together, a bounded FIFO,
the prompt cache.

Requests are prepared (tokenized, checked) off the event loop, then queued;
a single worker thread takes them in order and runs each through the same
:class:`specfw.run.Run` as ``specfw run``. Events (started, text, finished,
failed) go back to the request's asyncio queue. A request whose client went
away is cancelled: a queued one leaves the queue at once, a running one stops
at the next token (``max_batch`` 1) or cycle, and its place is free.
:meth:`Engine.abort` (a second SIGTERM or Ctrl-C) fails every request in the
queue and in flight with :class:`ShuttingDown` and ends the worker.

``max_batch`` 1: one generation at a time through :meth:`Run.stream` (the
single path, with its plain-step overlap). ``max_batch`` B > 1: the worker
runs :class:`specfw.batch.BatchEngine` cycles; a queued request joins the
batch (after its prefill) as soon as fewer than B are decoding, every active
request's proposal is verified in one batched target pass per cycle, and a
request leaves when it ends, hits a stop string, fails or is cancelled, each
alone. Each request keeps its own Run (drafter, translator, k policy,
verifier, sampling, seed, stop strings): its ids are those it gives alone.

Prompt cache: the KV caches a generation left (target and drafter) are kept
with the ids they hold; a later request reuses the longest prefix its prompt
shares with them (a chat follow-up shares the whole earlier conversation) and
prefills only the rest. ``max_batch`` 1 keeps the last generation's caches;
B > 1 keeps those of the last B generations that ended by themselves (length,
stop id) and gives a request the one its prompt shares most with; a
generation cut short (stop string, client gone, failure) leaves none.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import mlx.core as mx

from specfw.api import PromptRun
from specfw.batch import BatchEngine, Generation
from specfw.config import RunConfig
from specfw.errors import ConfigError, SpecfwError
from specfw.plugins import get_registry
from specfw.models.prompt_cache import PromptCache
from specfw.run import Run, prompt_ids
from specfw.serve.prompts import TRANSCRIPT_STOP, chat_ids, has_template
from specfw.serve.protocol import SpecfwInfo


# After an abort: how long the worker may take to end (it stops at its next token) before nobody waits for it.
ABORT_GRACE_S = 5.0
# Generations decoding together by default: on a CPU a target pass over 4 rows costs little more than over one.
DEFAULT_MAX_BATCH = 4


class QueueFull(SpecfwError):
    """Every queue place is taken; the client should retry later."""


class ShuttingDown(SpecfwError):
    """The server was told to stop at once (a second signal): requests in flight end unfinished."""


class ContextTooLong(ConfigError):
    """The prompt, or the prompt plus max_tokens, does not fit the target's context."""


@dataclass
class Started:
    prompt_tokens: int


@dataclass
class Piece:
    text: str


@dataclass
class Finished:
    finish_reason: str
    completion_tokens: int
    info: SpecfwInfo


@dataclass
class Failed:
    error: Exception


@dataclass(eq=False)  # compared and hashed by identity (the engine keeps a set of the generating jobs)
class Job:
    """One request on its way through the queue: what to run and where its events go."""

    config: RunConfig
    target_ids: list[int]
    draft_ids: list[int] | None
    stop: list[str]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    on_cancel: Callable[["Job"], None] | None = None  # set by Engine.submit: takes the job out of the queue

    def emit(self, event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        """Nobody wants the answer any more: a queued job leaves the queue now, a running one at the next token."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel(self)


class StopText:
    """Cuts the text at the first stop sequence, holding back a tail that may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Text safe to send now, and whether a stop sequence was reached."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = max((n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])), default=0)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Engine:
    """Holds the models and the queue; ``submit`` a prepared :class:`Job`, read its events."""

    def __init__(self, config: RunConfig, *, max_queue: int = 16, prompt_cache: bool = True,
                 max_batch: int = DEFAULT_MAX_BATCH, log=None) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, not {max_batch}")
        self.registry = get_registry()
        # A Run on a placeholder prompt resolves the default pair, checks every plugin and loads the models.
        probe = Run(config.model_copy(update={"prompt": "x", "max_tokens": 1, "chat": False}), log=log,
                    registry=self.registry)
        self.config = probe.config
        self.target, self.draft = probe.target, probe.draft
        self.notes = list(probe.notes)
        self.model_id = self.target.source
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.prompt_cache = prompt_cache
        self.kv = PromptCache() if prompt_cache else None  # max_batch 1: the last generation's caches
        self._kv_pool: list[PromptCache] = []  # max_batch > 1: caches of generations that ended, oldest first
        self._waiting: collections.deque[Job] = collections.deque()
        self._lock = threading.Condition()
        self._closing = False
        self._aborted = False
        self._admitted = 0  # requests queued or generating
        self._active: set[Job] = set()  # the jobs generating now (up to max_batch)
        self.completed = 0  # generations run to their end (length, stop sequence or stop id)
        self.cancelled = 0  # generations stopped early because their client went away
        self.peak_active = 0  # most requests that decoded together in one cycle
        self._worker = threading.Thread(target=self._work, name="specfw-generation", daemon=True)

    @property
    def busy(self) -> bool:
        """Whether any request is generating."""
        return bool(self._active)

    @property
    def active(self) -> int:
        """Requests generating now (rows of the batch)."""
        return len(self._active)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Finish the generation in progress and the queued ones, then end the worker (after ``abort``: wait for
        it a few seconds at most)."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._worker.join(ABORT_GRACE_S if self._aborted else None)

    def join(self, timeout: float | None = None) -> None:
        if self._worker.is_alive():
            self._worker.join(timeout)

    @property
    def running(self) -> bool:
        return self._worker.is_alive()

    def abort(self) -> None:
        """Stop at once: every queued and running job fails with ShuttingDown; the worker ends within a cycle.

        Thread-safe; call it from the event loop (not from inside a signal handler).
        """
        error = ShuttingDown("the server is shutting down; the request was stopped before it finished")
        with self._lock:
            self._closing = self._aborted = True
            doomed = list(self._waiting)
            self._waiting.clear()
            self._admitted -= len(doomed)
            doomed += list(self._active)
            self._lock.notify_all()
        for job in doomed:
            job.cancelled.set()
            job.emit(Failed(error))

    # -- requests ----------------------------------------------------------

    def request_config(self, overrides: dict) -> RunConfig:
        """The server's config with one request's settings; plugin names were checked by the protocol."""
        fields = {**self.config.model_dump(), **overrides, "chat": False}
        if self.config.baseline:
            fields = {**fields, **{name: getattr(self.config, name) for name in ("drafter", "translator", "k",
                                                                                 "k_policy")}}
        needs_model = self.registry.get("drafter", fields["drafter"]).cls.needs_model
        if not needs_model:
            fields["draft"] = None  # a model-free drafter (lookup) drafts in the target's own vocabulary
        config = RunConfig(**fields)
        if not config.baseline and self.draft is None and needs_model:
            raise ConfigError(f"drafter '{config.drafter}' needs a draft model; this server was started without one")
        return config

    def prepare(self, config: RunConfig, loop, *, text: str | None = None, ids: list[int] | None = None,
                messages: list[dict] | None = None, stop: list[str] | None = None) -> Job:
        """A job for one prompt (text, target ids, or chat messages), checked against the target's context.

        Runs in a worker thread of the event loop: tokenizing and rendering are CPU work.
        """
        tok = self.target.tokenizer
        draft_ids = None
        stop = list(stop or [])
        if messages is not None:
            target_ids = chat_ids(self.target, tok, messages)
            if not has_template(self.target):
                stop.append(TRANSCRIPT_STOP)
            if self.draft is not None:
                # The drafter only proposes: where its template cannot render the messages, the transcript does.
                draft_ids = chat_ids(self.draft, self.draft.tokenizer, messages, fallback=True)
        elif ids is not None:
            if max(ids) >= tok.vocab_size:
                raise ConfigError(f"token id {max(ids)} is outside the target's vocabulary of {tok.vocab_size}")
            target_ids = list(ids)
        else:
            target_ids = prompt_ids(tok, text)
        limit = self.target.context_length
        if limit is not None and len(target_ids) >= limit:
            raise ContextTooLong(f"the prompt is {len(target_ids)} tokens, longer than the target's context of {limit}")
        if limit is not None and len(target_ids) + config.max_tokens > limit:
            raise ContextTooLong(
                f"the prompt ({len(target_ids)} tokens) plus max_tokens ({config.max_tokens}) exceeds the target's "
                f"context of {limit}"
            )
        return Job(config, target_ids, draft_ids, stop, loop)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._admitted >= self.max_batch + self.max_queue:  # max_batch generating, max_queue waiting
                places = (f"the queue's {self.max_queue} places are taken" if self.max_queue
                          else "no request may wait")
                running = ("one request is generating" if self.max_batch == 1
                           else f"{self.max_batch} requests are generating (--max-batch {self.max_batch})")
                raise QueueFull(f"the server is busy: {running} and {places} "
                                f"(--max-queue {self.max_queue}); retry later")
            self._admitted += 1
            self._waiting.append(job)
            job.on_cancel = self._withdraw
            self._lock.notify()

    def _withdraw(self, job: Job) -> None:
        """A cancelled job that is still queued gives its place up now (a running one stops at its next token)."""
        with self._lock:
            try:
                self._waiting.remove(job)
            except ValueError:
                return  # already taken by the worker, or gone
            self._admitted -= 1
            self.cancelled += 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the worker --------------------------------------------------------

    def _next(self) -> Job | None:
        with self._lock:
            while not self._waiting and not self._closing:
                self._lock.wait()
            job = self._waiting.popleft() if self._waiting else None
            if job is not None:
                self._active.add(job)
            return job

    def _release(self, job: Job) -> None:
        with self._lock:
            self._admitted -= 1
            self._active.discard(job)

    def _work(self) -> None:
        try:
            if self.max_batch == 1:
                self._serve_jobs()
            else:
                self._serve_batched()
        except Exception as exc:  # a bug of the engine itself: no request may wait on a worker that is gone
            with self._lock:
                self._closing = True
                doomed = list(self._waiting) + list(self._active)
                self._waiting.clear()
                self._active.clear()
                self._admitted = 0
            for job in doomed:
                job.cancelled.set()
                job.emit(Failed(RuntimeError(f"the generation worker stopped: {type(exc).__name__}: {exc}")))
            raise
        finally:
            # MLX's streams of this thread must be destroyed while the interpreter is alive: left to thread and
            # process teardown they could abort the process at exit ("terminate called without an active exception").
            mx.clear_streams()

    def _serve_jobs(self) -> None:
        while (job := self._next()) is not None:
            self.peak_active = 1
            last = None  # the job's last event, sent once the slot is free: a client that got its answer
            try:         # and asks again at once finds the server idle (/health busy false, no 503)
                if job.cancelled.is_set():  # its client left while it waited
                    self.cancelled += 1
                else:
                    last = self._generate(job)
            except Exception as exc:  # reported to that request; the worker goes on
                if self.kv is not None:
                    self.kv.clear()  # the failed generation may have left its caches half-updated
                last = Failed(exc)
            finally:
                self._release(job)
            if last is not None:
                job.emit(last)  # after an abort nobody reads it: the job's Failed event came first

    def _build(self, job: Job) -> Run:
        c = job.config
        draft = self.draft if not c.baseline and self.registry.get("drafter", c.drafter).cls.needs_model else None
        return PromptRun(c, job.target_ids, job.draft_ids, target=self.target, draft=draft, registry=self.registry)

    def _generate(self, job: Job) -> Finished:
        """Stream the job's pieces as they come; return its ``Finished`` event (the caller sends it)."""
        run = self._build(job)
        job.emit(Started(len(run.target_side.prompt_ids)))
        progress = _Progress(job, run, self.kv)
        tokens = self._stream(run)
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    progress.finish = "cancelled"
                    break
                if progress.feed([token]):
                    break
        finally:
            tokens.close()
        return self._finished(progress)

    def _finished(self, progress: "_Progress") -> Finished:
        if progress.finish == "cancelled":
            self.cancelled += 1
        else:
            self.completed += 1
        return progress.finished()

    def _stream(self, run: Run):
        return run.stream(prompt_cache=self.kv)

    # -- the batched worker (max_batch > 1) ---------------------------------

    def _serve_batched(self) -> None:
        """BatchEngine cycles: jobs join when a row is free and leave when they end, each alone."""
        batch = BatchEngine(self.target.model, self.max_batch)
        live: dict[int, tuple[Generation, _Progress]] = {}  # id(job) -> its generation and progress
        while True:
            with self._lock:
                while not self._waiting and not live and not self._closing:
                    self._lock.wait()
                if self._aborted or (self._closing and not self._waiting and not live):
                    break
                joining = []
                while self._waiting and len(live) + len(joining) < self.max_batch:
                    job = self._waiting.popleft()
                    self._active.add(job)
                    joining.append(job)
            for job in joining:
                self._join(batch, live, job)
            for generation, progress in live.values():
                if progress.job.cancelled.is_set():
                    progress.finish = progress.finish or "cancelled"
                    generation.cancel()  # it leaves at this cycle, the others go on
            self.peak_active = max(self.peak_active, len(live))
            if len(live) > 1:
                _concrete_feeds(generation for generation, _ in live.values())
            try:
                ended = batch.cycle()
            except Exception as exc:  # not one generation's failure (those stay in generation.error): fail them all
                for generation, _ in live.values():
                    generation.error = generation.error or exc
                ended = [generation for generation, _ in live.values()]
                batch = BatchEngine(self.target.model, self.max_batch)
            for key, (generation, progress) in list(live.items()):
                if progress.finish is None and progress.feed(generation.take()):
                    generation.cancel()  # a stop string: answered now, its row is closed at the next cycle
                    del live[key]
                    self._end(progress, None)
            for generation in ended:
                entry = live.pop(id(generation.tag), None)
                if entry is not None:
                    self._end(entry[1], generation)
        # Aborted (every job already got its ShuttingDown) or drained: close what is left.
        for generation, progress in live.values():
            generation.cancel()
            self._release(progress.job)
        if live:
            batch.cycle()

    def _join(self, batch: BatchEngine, live: dict, job: Job) -> None:
        """Build the job's Run and queue it on ``batch`` (it prefills and joins at the next cycle)."""
        if job.cancelled.is_set():  # its client left while it waited
            self.cancelled += 1
            self._release(job)
            return
        try:
            run = self._build(job)
            kv = self._checkout_cache(run.target_side.prompt_ids)
            # overlap: alone, a plain step's forward is queued on its lazy id as in Run.stream (the batch engine
            # answers a lone generation with a plain forward); with others, _concrete_feeds reads that id first.
            generation = batch.add(run.steps(kv, overlap=True), tag=job)
        except Exception as exc:
            self._release(job)
            job.emit(Failed(exc))
            return
        job.emit(Started(len(run.target_side.prompt_ids)))
        live[id(job)] = (generation, _Progress(job, run, kv))

    def _end(self, progress: "_Progress", generation: Generation | None) -> None:
        """A generation left the batch (``generation`` None: it hit a stop string): free its place, then answer."""
        job = progress.job
        if generation is not None and generation.error is not None:
            last = Failed(generation.error)
        else:
            if generation is not None and progress.finish is None:  # ended by itself: its caches stay usable
                self._checkin_cache(progress.kv)
            last = self._finished(progress)
        self._release(job)
        job.emit(last)

    def _checkout_cache(self, prompt_ids: list[int]) -> PromptCache | None:
        """A prompt cache for a new generation: the kept one its prompt shares most with, else a fresh one."""
        if not self.prompt_cache:
            return None
        with self._lock:
            shared = [(kv.shared(prompt_ids), i) for i, kv in enumerate(self._kv_pool)]
            best = max(shared, default=(0, -1))
            if best[0] > 0:
                return self._kv_pool.pop(best[1])
        return PromptCache()

    def _checkin_cache(self, kv: PromptCache | None) -> None:
        if kv is None:
            return
        with self._lock:
            self._kv_pool.append(kv)
            del self._kv_pool[: -self.max_batch]  # the newest max_batch are kept


def _concrete_feeds(generations) -> None:
    """Read the lazy id of a plain step queued ahead (overlap) into a list, so the pass can be batched."""
    for generation in generations:
        pending = generation.pending
        if isinstance(getattr(pending, "feed", None), mx.array):
            generation.pending = dataclasses.replace(pending, feed=pending.feed.reshape(-1).tolist())


class _Progress:
    """One request's generated text on its way out: stop strings, counts and times, its ``Finished`` event."""

    def __init__(self, job: Job, run: Run, kv: PromptCache | None) -> None:
        self.job, self.run, self.kv = job, run, kv
        self.stop = StopText(job.stop)
        self.start = time.perf_counter()
        self.first = self.last = None
        self.n = 0
        self.drafted = 0  # of the n, the accepted draft ids: what the specfw object's accepted counts
        self.finish: str | None = None  # "stop" (a stop string) or "cancelled" once decided here

    def feed(self, tokens) -> bool:
        """Send the tokens' text (held back where it may start a stop string); True once a stop string is hit."""
        for token in tokens:
            if token.id >= 0:
                self.n += 1
                self.drafted += token.from_draft
                self.last = time.perf_counter()
                self.first = self.first or self.last
            text, hit = self.stop.feed(token.text)
            if text:
                self.job.emit(Piece(text))
            if hit:
                self.finish = "stop"
                return True
        return False

    def finished(self) -> Finished:
        if self.finish != "stop":
            tail = self.stop.flush()
            if tail:
                self.job.emit(Piece(tail))
        run, kv, n, first, last = self.run, self.kv, self.n, self.first, self.last
        stats, c = run.stats, run.config
        info = SpecfwInfo(
            proposed=stats.proposed,
            # the ids sent, as completion_tokens counts them: a stop string ends the count where it ends the
            # text (stats.accepted may count a few more, emitted by the scheduler after it in the same cycle)
            accepted=self.drafted,
            verified_accepted=stats.verified_accepted,
            acceptance_rate=self.drafted / stats.proposed if stats.proposed else 0.0,
            cycles=stats.cycles,
            tokens_per_second=(n - 1) / (last - first) if n > 1 and last > first else 0.0,
            prompt_seconds=(first or time.perf_counter()) - self.start,
            decode_seconds=(last - first) if first is not None else 0.0,
            prompt_cached_tokens=kv.target_reused if kv is not None else 0,
            draft_cached_tokens=kv.draft_reused if kv is not None and not c.baseline else 0,
            plugins={
                "drafter": None if c.baseline else c.drafter,
                "translator": None if c.baseline else run.translator_used,
                "k": None if c.baseline else c.k,
                "k_policy": None if c.baseline else c.k_policy,
                "cache_sync": c.cache_sync,
                "verifier": c.verifier_name,
            },
        )
        return Finished(self.finish or stats.finish_reason or "length", n, info)


def retry_after(engine: Engine) -> int:
    """Seconds a refused client should wait: about one generation per waiting request."""
    return max(1, min(60, engine.waiting))

