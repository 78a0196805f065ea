"""The serving engine: models loaded once, one generation at a time, a bounded FIFO, the prompt cache.

Requests are prepared (tokenized, checked) off the event loop, then queued;
a single worker thread takes them in order and runs each through the same
:class:`specfw.run.Run` as ``specfw run``. Events (started, text, finished,
failed) go back to the request's asyncio queue. A request whose client went
away is cancelled: a queued one leaves the queue at once, a running one stops
at the next token, which is within one cycle, and the worker takes the next.
:meth:`Engine.abort` (a second SIGTERM or Ctrl-C) fails every request in the
queue and in flight with :class:`ShuttingDown` and ends the worker.

Prompt cache: the KV caches the last generation left (target and drafter)
are kept with the ids they hold; the next request reuses the longest prefix
its prompt shares with them (a chat follow-up shares the whole earlier
conversation) and prefills only the rest.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import mlx.core as mx

from specfw.api import PromptRun
from specfw.config import RunConfig
from specfw.errors import ConfigError, SpecfwError
from specfw.plugins import get_registry
from specfw.prompt_cache import PromptCache
from specfw.run import Run, prompt_ids
from specfw.serve.prompts import TRANSCRIPT_STOP, chat_ids, has_template
from specfw.serve.protocol import SpecfwInfo


# After an abort: how long the worker may take to end (it stops at its next token) before nobody waits for it.
ABORT_GRACE_S = 5.0


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


@dataclass
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

    def __init__(self, config: RunConfig, *, max_queue: int = 16, prompt_cache: bool = True, log=None) -> None:
        self.registry = get_registry()
        # A Run on a placeholder prompt resolves the default pair, checks every plugin and loads the models.
        probe = Run(config.model_copy(update={"prompt": "x", "max_tokens": 1, "chat": False}), log=log,
                    registry=self.registry)
        self.config = probe.config
        self.target, self.draft = probe.target, probe.draft
        self.notes = list(probe.notes)
        self.model_id = self.target.source
        self.max_queue = max_queue
        self.prompt_cache = prompt_cache
        self.kv = PromptCache() if prompt_cache else None
        self._waiting: collections.deque[Job] = collections.deque()
        self._lock = threading.Condition()
        self._closing = False
        self._aborted = False
        self._admitted = 0  # requests queued or generating
        self._active: Job | None = None  # the job generating now
        self.busy = False
        self.completed = 0  # generations run to their end (length, stop sequence or stop id)
        self.cancelled = 0  # generations stopped early because their client went away
        self._worker = threading.Thread(target=self._work, name="specfw-generation", daemon=True)

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
            if self._active is not None:
                doomed.append(self._active)
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
            if self._admitted > self.max_queue:  # one generating, max_queue waiting
                places = (f"the queue's {self.max_queue} places are taken" if self.max_queue
                          else "no request may wait")
                raise QueueFull(f"the server is busy: one request is generating and {places} "
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
            self._active = self._waiting.popleft() if self._waiting else None
            return self._active

    def _work(self) -> None:
        try:
            self._serve_jobs()
        finally:
            # MLX's streams of this thread must be destroyed while the interpreter is alive: left to thread and
            # process teardown they could abort the process at exit ("terminate called without an active exception").
            mx.clear_streams()

    def _serve_jobs(self) -> None:
        while (job := self._next()) is not None:
            self.busy = True
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
                self.busy = False
                with self._lock:
                    self._admitted -= 1
                    self._active = None
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
        stop = StopText(job.stop)
        start = time.perf_counter()
        first = last = None
        n = 0
        finish = None
        tokens = self._stream(run)
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    finish = "cancelled"
                    break
                if token.id >= 0:
                    n += 1
                    last = time.perf_counter()
                    first = first or last
                text, hit = stop.feed(token.text)
                if text:
                    job.emit(Piece(text))
                if hit:
                    finish = "stop"
                    break
        finally:
            tokens.close()
        if finish != "stop":
            tail = stop.flush()
            if tail:
                job.emit(Piece(tail))
        stats = run.stats
        c = run.config
        info = SpecfwInfo(
            proposed=stats.proposed,
            accepted=stats.accepted,
            acceptance_rate=stats.acceptance_rate,
            cycles=stats.cycles,
            tokens_per_second=(n - 1) / (last - first) if n > 1 and last > first else 0.0,
            prompt_seconds=(first or time.perf_counter()) - start,
            decode_seconds=(last - first) if first is not None else 0.0,
            prompt_cached_tokens=self.kv.target_reused if self.kv is not None else 0,
            draft_cached_tokens=self.kv.draft_reused if self.kv is not None and not c.baseline else 0,
            plugins={
                "drafter": None if c.baseline else c.drafter,
                "translator": None if c.baseline else run.translator_used,
                "k": None if c.baseline else c.k,
                "k_policy": None if c.baseline else c.k_policy,
                "cache_sync": c.cache_sync,
                "verifier": c.verifier_name,
            },
        )
        if finish == "cancelled":
            self.cancelled += 1
        else:
            self.completed += 1
        return Finished(finish or stats.finish_reason or "length", n, info)

    def _stream(self, run: Run):
        return run.stream(prompt_cache=self.kv)


def retry_after(engine: Engine) -> int:
    """Seconds a refused client should wait: about one generation per waiting request."""
    return max(1, min(60, engine.waiting))

