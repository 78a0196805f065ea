"""`specfw serve`: an OpenAI-compatible HTTP server over the same Run as `specfw run`.

``protocol`` holds the wire format (pydantic), ``engine`` the models, the
queue and the generation thread, ``app`` the routes. :func:`serve` binds the
socket and runs the app on uvicorn until SIGTERM or SIGINT, which lets the
requests in flight finish and then ends with status 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
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
          max_queue: int = 16, max_body_bytes: int = 4 * 1024 * 1024, prompt_cache: bool = True, log=None) -> int:
    """Load the models of ``config``, then serve until SIGTERM/SIGINT; return the exit status."""
    uvicorn, AppStatus = _imports()
    from specfw.serve.app import create_app
    from specfw.serve.engine import Engine

    sock = listening_socket(host, port)
    try:
        engine = Engine(config, max_queue=max_queue, prompt_cache=prompt_cache, log=log)
    except BaseException:
        sock.close()
        raise
    app = create_app(engine, api_key=api_key, max_body_bytes=max_body_bytes)
    # Streams in flight at shutdown run to their end (they are bounded by max_tokens) instead of being cut.
    AppStatus.disable_automatic_graceful_drain()

    class Server(uvicorn.Server):
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

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=None))
    if log is not None:
        for note in engine.notes:
            log(f"note: {note}")
        c = engine.config
        mode = "the target alone" if c.baseline else f"drafter {c.drafter}" + (
            f" ({engine.draft.source})" if engine.draft is not None else "") + f", translator {c.translator}, k {c.k}"
        shown = f"[{host}]" if ":" in host else host
        log(f"serving {engine.model_id} with {mode} at http://{shown}:{sock.getsockname()[1]}/v1"
            + (" (API key required)" if api_key else ""))
    server.run(sockets=[sock])
    import mlx.core as mx

    mx.clear_streams()  # this thread's MLX streams, before interpreter teardown (see Engine._work)
    return 0
