"""`specfw serve`: an OpenAI-compatible HTTP server over the same Run as `specfw run`.

``protocol`` holds the wire format (pydantic), ``engine`` the models, the
queue and the generation thread, ``app`` the routes. :func:`serve` binds the
socket and runs the app on uvicorn until SIGTERM or SIGINT, which lets the
requests in flight finish and then ends with status 0. A second SIGTERM or
SIGINT during that drain stops at once: every queued and running request
ends with an error (a stream gets an error event, then its clean end), and
the process exits with 128 + the signal's number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading

from specfw.config import RunConfig
from specfw.errors import SpecfwError


def _imports():
    try:
        import uvicorn
        from sse_starlette.sse import AppStatus
    except ImportError as exc:
        raise SpecfwError(f"specfw serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'specfw[serve]'") from None
    return uvicorn, AppStatus


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket, or one error line (a port in use, an address not on this machine)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise SpecfwError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(config: RunConfig, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          max_queue: int = 16, max_body_bytes: int = 4 * 1024 * 1024, prompt_cache: bool = True,
          max_batch: int | None = None, log=None) -> int:
    """Load the models of ``config``, then serve until SIGTERM/SIGINT; return the exit status."""
    uvicorn, AppStatus = _imports()
    from specfw.serve.app import create_app
    from specfw.serve.engine import ABORT_GRACE_S, DEFAULT_MAX_BATCH, Engine

    sock = listening_socket(host, port)
    try:
        engine = Engine(config, max_queue=max_queue, prompt_cache=prompt_cache,
                        max_batch=DEFAULT_MAX_BATCH if max_batch is None else max_batch, log=log)
    except BaseException:
        sock.close()
        raise
    app = create_app(engine, api_key=api_key, max_body_bytes=max_body_bytes)
    # Streams in flight at shutdown run to their end (they are bounded by max_tokens) instead of being cut.
    AppStatus.disable_automatic_graceful_drain()

    class Server(uvicorn.Server):
        aborted_by: int | None = None  # the second signal, which stopped the drain

        @contextlib.contextmanager
        def capture_signals(self):
            # As uvicorn's, except that the signal is not raised again after the graceful drain: exit status 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame):
            # A signal handler: it sets flags and hands the rest to the event loop (no I/O here: a print could
            # land inside another print of this thread).
            if self.aborted_by is not None:  # a third signal: nothing more to wait for
                os._exit(128 + sig)
            if self.should_exit:
                self.aborted_by = sig
            self.should_exit = True
            try:
                asyncio.get_running_loop().call_soon_threadsafe(self.on_signal)
            except RuntimeError:  # the loop is not running (starting or ending): nothing in flight to stop
                pass

        def on_signal(self):
            if self.aborted_by is None:
                if log is not None:
                    log("draining the requests in flight (send the signal again to stop them now)")
                return
            if log is not None:
                log("stopping the requests in flight")
            engine.abort()
            # The aborted streams end within a cycle; should a connection hang on regardless, stop waiting for it.
            timer = threading.Timer(ABORT_GRACE_S, lambda: setattr(self, "force_exit", True))
            timer.daemon = True
            timer.start()

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=None))
    if log is not None:
        for note in engine.notes:
            log(f"note: {note}")
        c = engine.config
        mode = "the target alone" if c.baseline else f"drafter {c.drafter}" + (
            f" ({engine.draft.source})" if engine.draft is not None else "") + f", translator {c.translator}, k {c.k}"
        shown = f"[{host}]" if ":" in host else host
        log(f"serving {engine.model_id} with {mode} at http://{shown}:{sock.getsockname()[1]}/v1"
            + (" (API key required)" if api_key else "")
            + (f"; up to {engine.max_batch} requests decode together" if engine.max_batch > 1
               else "; one request at a time"))
    server.run(sockets=[sock])
    import mlx.core as mx

    if server.aborted_by is not None:
        status = 128 + server.aborted_by
        engine.abort()  # a no-op unless uvicorn stopped waiting before the engine was told
        engine.join(ABORT_GRACE_S)
        if engine.running:  # still inside one long step (a prefill): do not wait it out
            sys.stderr.flush()
            os._exit(status)
        mx.clear_streams()
        return status
    mx.clear_streams()  # this thread's MLX streams, before interpreter teardown (see Engine._work)
    return 0
