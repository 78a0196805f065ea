"""The HTTP routes of `specfw serve` (FastAPI): OpenAI's completions, chat completions and models, and /health.

Routes only: the wire format lives in :mod:`specfw.serve.protocol`, generation
in :mod:`specfw.serve.engine`. Every error is OpenAI-shaped,
``{"error": {"message", "type", "code", "param"}}``, with the status that fits.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from typing import AsyncIterator, Union

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from specfw.errors import SpecfwError
from specfw.serve.engine import (
    ContextTooLong,
    Engine,
    Failed,
    Finished,
    Job,
    Piece,
    QueueFull,
    ShuttingDown,
    Started,
    retry_after,
)
from specfw.serve.prompts import TemplateRefused
from specfw.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    Usage,
    new_id,
    now,
)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Routes whose body is JSON; a body sent as anything else gets 415 naming the Content-Type it needs.
JSON_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})
# Answered without the API key: probes and load balancers do not carry it.
OPEN_PATHS = frozenset({"/health"})


class APIError(Exception):
    """An error that becomes one OpenAI error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers


def error_response(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(message=message, type=type_, code=code, param=param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
                 503: "server_overloaded"}


class JsonOnly:
    """ASGI middleware: a POST to a JSON route whose Content-Type is not JSON gets 415 that says so."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in JSON_ROUTES:
            given = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            media = given.partition(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                got = f"it was sent as '{given}'" if given else "it was sent without a Content-Type"
                response = error_response(415, f"the body must be JSON sent with 'Content-Type: application/json'; "
                                          f"{got}", "invalid_request_error", "unsupported_media_type")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 (declared, or counted as it arrives)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _response(self):
        return error_response(413, f"the request body is over {self.limit} bytes", "invalid_request_error",
                              "request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._response()(scope, receive, send)
        seen = 0
        refused = False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:  # a chunked body grew too long: answer now, let the app see a disconnect
                    refused = True
                    await self._response()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:  # once the 413 went out, nothing the app sends may follow it
                await send(message)

        await self.app(scope, counted, guarded_send)


class ApiKeyGate:
    """ASGI middleware: with a key set, every HTTP request but /health needs ``Authorization: Bearer KEY``
    (401 first)."""

    def __init__(self, app, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            # Constant time: the comparison must not reveal how much of the key matched.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                response = error_response(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                          "authentication_error", "invalid_api_key")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(engine: Engine, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app serving ``engine``; its lifespan starts the generation worker and, at shutdown, drains it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(engine.stop)

    app = FastAPI(title="specfw", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(JsonOnly)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if api_key is not None:
        app.add_middleware(ApiKeyGate, key=api_key)  # added last: runs first, before the body is read

    # -- errors: always OpenAI's shape -----------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {first.get('msg')}", "invalid_request_error",
                                  "invalid_json")
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        param = ".".join(loc) or None
        code = "unknown_field" if first.get("type") == "extra_forbidden" else "invalid_value"
        if code == "unknown_field":
            message = f"unknown field '{param}'"
        elif param:
            message = f"{param}: {message}"
        return error_response(400, message, "invalid_request_error", code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), _STATUS_TYPES.get(exc.status_code, "server_error"),
                              {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(500, f"unexpected {type(exc).__name__}: {exc}", "server_error", "internal_error")

    # -- routes --------------------------------------------------------------

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        """Liveness and queue state only: it needs no API key, so it tells nothing about the models."""
        return {"status": "ok", "busy": engine.busy, "active": engine.active, "waiting": engine.waiting}

    @app.get("/stats")
    async def stats():
        """/health's fields, the model and the request counters (behind the API key, as every route but /health)."""
        return {"status": "ok", "model": engine.model_id, "busy": engine.busy, "active": engine.active,
                "waiting": engine.waiting, "max_batch": engine.max_batch, "max_queue": engine.max_queue,
                "completed": engine.completed, "cancelled": engine.cancelled,
                "peak_active": engine.peak_active}

    @app.get("/v1/models")
    async def models() -> ModelList:
        draft = engine.draft.source if engine.draft is not None else None
        return ModelList(data=[ModelCard(id=engine.model_id, created=now(), draft=draft)])

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request):
        kwargs = {"ids": body.prompt} if isinstance(body.prompt, list) else {"text": body.prompt}
        job = await _queued(body, body.max_tokens, request, label=body.prompt if isinstance(body.prompt, str) else None,
                            **kwargs)
        reply = Reply(job, request)
        prompt_tokens = await reply.started()
        ident, created = new_id("cmpl"), now()

        def chunk(text: str, finish: str | None, finished: Finished | None = None) -> str:
            return Completion(
                id=ident, created=created, model=engine.model_id,
                choices=[CompletionChoice(text=text, finish_reason=finish)],
                specfw=finished.info if finished else None,
            ).model_dump_json()

        if body.stream:
            async def events() -> AsyncIterator[str]:
                async for item in reply.pieces():
                    yield chunk(item.text, None) if isinstance(item, Piece) else chunk("", item.finish_reason, item)
                    if isinstance(item, Finished) and body.include_usage:  # OpenAI's usage chunk: no choices
                        yield Completion(id=ident, created=created, model=engine.model_id, choices=[],
                                         usage=_usage(prompt_tokens, item)).model_dump_json()
                yield "[DONE]"

            reply.stop_watching()  # from here EventSourceResponse listens for the disconnect
            return EventSourceResponse(reply.guarded(events()))
        text, finished = await reply.collect()
        return Completion(id=ident, created=created, model=engine.model_id,
                          choices=[CompletionChoice(text=text, finish_reason=finished.finish_reason)],
                          usage=_usage(prompt_tokens, finished), specfw=finished.info)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        messages = [m.rendered() for m in body.messages]
        job = await _queued(body, body.token_limit, request, label=body.messages[-1].text, messages=messages)
        reply = Reply(job, request)
        prompt_tokens = await reply.started()
        ident, created = new_id("chatcmpl"), now()

        def chunk(delta: Delta, finish: str | None, finished: Finished | None = None) -> str:
            return ChatCompletionChunk(
                id=ident, created=created, model=engine.model_id,
                choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
                specfw=finished.info if finished else None,
            ).model_dump_json()

        if body.stream:
            async def events() -> AsyncIterator[str]:
                yield chunk(Delta(role="assistant", content=""), None)
                async for item in reply.pieces():
                    if isinstance(item, Piece):
                        yield chunk(Delta(content=item.text), None)
                    else:
                        yield chunk(Delta(), item.finish_reason, item)
                        if body.include_usage:  # OpenAI's usage chunk: no choices
                            yield ChatCompletionChunk(id=ident, created=created, model=engine.model_id, choices=[],
                                                      usage=_usage(prompt_tokens, item)).model_dump_json()
                yield "[DONE]"

            reply.stop_watching()  # from here EventSourceResponse listens for the disconnect
            return EventSourceResponse(reply.guarded(events()))
        text, finished = await reply.collect()
        return ChatCompletion(id=ident, created=created, model=engine.model_id,
                              choices=[ChatChoice(message=AssistantMessage(content=text),
                                                  finish_reason=finished.finish_reason)],
                              usage=_usage(prompt_tokens, finished), specfw=finished.info)

    # -- helpers -------------------------------------------------------------

    async def _queued(body: Union[CompletionRequest, ChatCompletionRequest], max_tokens: int | None,
                      request: Request, label: str | None, **prompt) -> Job:
        """Check the model and settings, tokenize off the event loop, and take a queue place (or 503)."""
        if body.model is not None and body.model != engine.model_id:
            raise APIError(404, f"the model '{body.model}' does not exist; this server serves '{engine.model_id}'",
                           code="model_not_found", param="model")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name}: only 0 is supported (speculative decoding here is lossless against "
                               "the target's unpenalised distribution)", code="unsupported_value", param=name)
        overrides = body.overrides()
        for name, value in (("max_tokens", max_tokens), ("temp", body.temperature), ("top_p", body.top_p),
                            ("seed", body.seed)):
            if value is not None:
                overrides[name] = value
        overrides["prompt"] = label if label and label.strip() else "(token ids)"  # a label: the ids are given
        loop = asyncio.get_running_loop()
        try:
            config = engine.request_config(overrides)
            job = await anyio.to_thread.run_sync(lambda: engine.prepare(config, loop, stop=body.stop, **prompt))
            engine.submit(job)
        except QueueFull as exc:
            raise APIError(503, str(exc), "server_overloaded", "queue_full",
                           headers={"Retry-After": str(retry_after(engine))}) from None
        except ContextTooLong as exc:
            raise APIError(400, str(exc), code="context_length_exceeded") from None
        except TemplateRefused as exc:
            raise APIError(400, str(exc), code="invalid_value", param="messages") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            message = first.get("msg", "invalid value").removeprefix("Value error, ")
            raise APIError(400, f"{field}: {message}" if field else message, code="invalid_value",
                           param=field) from None
        except SpecfwError as exc:
            raise APIError(400, str(exc), code="invalid_value") from None
        return job

    def _usage(prompt_tokens: int, finished: Finished | None) -> Usage | None:
        if finished is None:
            return None
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=finished.completion_tokens,
                     total_tokens=prompt_tokens + finished.completion_tokens)

    return app


class _Gone:
    """Put in a job's events when its client disconnected."""


class Reply:
    """Reads one job's events for a route; cancels the job as soon as the client goes away.

    A task waits on the connection's next ASGI message (the body has been read, so only ``http.disconnect``
    can come) while the request is queued, and for a non-streaming one until its answer is complete: a queued
    request leaves the queue at once, a running one stops at its next token. Once a stream starts,
    EventSourceResponse listens for the disconnect instead (``stop_watching``).
    """

    def __init__(self, job: Job, request: Request) -> None:
        self.job, self.request = job, request
        self._watcher: asyncio.Task | None = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self.job.cancel()
        self.job.events.put_nowait(_Gone())

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _next(self):
        """The job's next event; a 499 nobody reads once the client has disconnected."""
        event = await self.job.events.get()
        if isinstance(event, _Gone):
            raise APIError(499, "the client closed the request", code="client_closed")
        return event

    async def started(self) -> int:
        """Wait for the generation to start (it may be queued); its prompt length, or the error it failed with."""
        try:
            event = await self._next()
            if isinstance(event, Failed):
                raise _as_api_error(event.error)
        except BaseException:
            self.job.cancel()
            self.stop_watching()
            raise
        assert isinstance(event, Started), event
        return event.prompt_tokens

    async def pieces(self) -> AsyncIterator[Union[Piece, Finished]]:
        """Text pieces, then the Finished event."""
        while True:
            event = await self._next()
            if isinstance(event, Failed):
                raise _as_api_error(event.error)
            yield event
            if isinstance(event, Finished):
                return

    async def guarded(self, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        """SSE data lines; the job is cancelled however the stream ends (a disconnect cancels this generator)."""
        try:
            async for data in chunks:
                yield data
        except APIError as exc:  # failed after the stream began: an error event, then the end
            yield json.dumps(ErrorBody(error=ErrorDetail(message=exc.message, type=exc.type, code=exc.code)).model_dump())
        finally:
            self.job.cancel()

    async def collect(self) -> tuple[str, Finished]:
        text = []
        try:
            while True:
                event = await self._next()
                if isinstance(event, Failed):
                    raise _as_api_error(event.error)
                if isinstance(event, Finished):
                    return "".join(text), event
                text.append(event.text)
        finally:
            self.stop_watching()
            self.job.cancel()  # a no-op once finished; frees the slot when this request was abandoned


def _as_api_error(error: Exception) -> APIError:
    if isinstance(error, ShuttingDown):
        return APIError(503, str(error), "server_error", "server_shutting_down")
    if isinstance(error, ContextTooLong):
        return APIError(400, str(error), code="context_length_exceeded")
    if isinstance(error, (SpecfwError, ValidationError)):
        return APIError(400, str(error), code="invalid_value")
    return APIError(500, f"generation failed: {type(error).__name__}: {error}", "server_error", "internal_error")
