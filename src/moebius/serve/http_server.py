"""The uvicorn server for ``moebius serve``: HTTP/1.1 (h11) with read deadlines and a connection cap.

uvicorn alone holds a connection that sends its request one byte a second for as long as the client likes
(its keep-alive timer only covers the idle time between requests). :class:`ReadDeadlineH11Protocol` closes a
connection whose request headers take longer than ``header_timeout_s`` to arrive, or whose body takes longer
than ``body_timeout_s`` after the headers, answering 408 when no response has started. Connections beyond
``max_connections`` are answered 503 by uvicorn's ``limit_concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h11
from uvicorn import Server
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from .app import ServeSettings

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s")


class ReadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request (headers, then body)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: str | None = None  # "headers" or "body": what the armed timer waits for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request_state()

    def on_response_complete(self) -> None:
        # The idle wait for the next request is the keep-alive timer's; ours starts with its first byte.
        self._disarm()
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY:  # a body still arriving (pipelined, or answered early)
            self._arm("body", self.body_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_request_state(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:  # part of a request line or headers has arrived
            if self._deadline_for != "headers":
                self._arm("headers", self.header_timeout_s)
        elif state is h11.SEND_BODY:
            if self._deadline_for != "body":
                self._arm("body", self.body_timeout_s)
        else:  # the request is complete (DONE), or the connection is closing
            self._disarm()

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._deadline_for = what
        self._deadline = self.loop.call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._deadline_for = None

    def _expire(self, what: str, seconds: float) -> None:
        self._deadline = self._deadline_for = None
        if self.transport.is_closing():
            return
        self.logger.warning("closing a connection whose request %s did not arrive within %g s", what, seconds)
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            body = b'{"error":"the request %s did not arrive within %g s"}' % (what.encode(), seconds)
            self.transport.write(_TIMEOUT_RESPONSE % (len(body), body))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now says http.disconnect and its send() is dropped
            cycle.message_event.set()
        self.transport.close()


def server_config(app: Any, settings: ServeSettings, host: str, port: int, **uvicorn_options: Any) -> Config:
    """A uvicorn ``Config`` serving ``app`` with the settings' read deadlines and connection cap."""
    protocol = type("ReadDeadlineH11Protocol", (ReadDeadlineH11Protocol,),
                    {"header_timeout_s": settings.header_timeout_s, "body_timeout_s": settings.body_timeout_s})
    # uvicorn answers 503 once the open connections (this one included) reach limit_concurrency.
    return Config(app, host=host, port=port, http=protocol, limit_concurrency=settings.max_connections + 1,
                  **uvicorn_options)


@contextlib.contextmanager
def serving_in_thread(app: Any, settings: ServeSettings, **uvicorn_options: Any) -> Iterator[int]:
    """Serve ``app`` on a free 127.0.0.1 port from a background thread (benchmarks, tests, notebooks) -> the
    port, once it accepts connections; the server stops when the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server(server_config(app, settings, "127.0.0.1", port, **uvicorn_options))
    thread = threading.Thread(target=server.run, name="moebius-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
