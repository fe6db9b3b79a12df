"""A minimal socket.io server (Engine.IO v4, HTTP long-polling only) that pushes events to IOPaint's front-end.

IOPaint's page opens a socket.io connection to ``/socket.io/`` and listens for ``diffusion_progress``
(``{"step": i}``, zero-based) while a request runs and ``diffusion_finish`` when it is done. This module
speaks just enough of the protocol for that: the handshake offers no transport upgrade, so the client stays
on polling; the server never reads events from clients. Events are broadcast to every connected page, as
IOPaint does.

Protocol (Engine.IO v4 over polling): ``GET ?EIO=4&transport=polling`` opens a session (``0{...}``);
``POST ?sid=`` carries client packets (``40`` connect, ``3`` pong, ``1`` close), answered ``ok``;
``GET ?sid=`` waits up to ``ping_interval`` for packets and returns them joined by ``\\x1e``, or a ping
(``2``). A session not polled for ``ping_interval + ping_timeout`` is dropped.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

_SEPARATOR = "\x1e"
_UNKNOWN_SID = {"code": 1, "message": "Session ID unknown"}


@dataclass
class _Session:
    packets: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_seen: float = field(default_factory=time.monotonic)
    connected: bool = False  # socket.io namespace "/" joined


class EventHub:
    """Sessions of connected pages and the events waiting for them.

    Args:
        ping_interval: seconds a poll waits before answering with a ping.
        ping_timeout: seconds a client may take to poll again before its session is dropped.
        max_sessions: open sessions at most; the oldest is dropped beyond it.
        max_packets: events kept for a page that has not polled; the oldest are dropped beyond it.
    """

    def __init__(self, ping_interval: float = 25.0, ping_timeout: float = 20.0, max_sessions: int = 256,
                 max_packets: int = 1024) -> None:
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.max_sessions, self.max_packets = max_sessions, max_packets
        self._sessions: dict[str, _Session] = {}

    @property
    def connected(self) -> int:
        return sum(s.connected for s in self._sessions.values())

    def emit(self, event: str, data: dict | None = None) -> None:
        """Queue a socket.io event for every connected page."""
        payload = [event] if data is None else [event, data]
        packet = "42" + json.dumps(payload, separators=(",", ":"))
        self._expire()
        for session in self._sessions.values():
            if session.connected:
                session.packets.append(packet)
                del session.packets[:-self.max_packets]
                session.wake.set()

    def open(self) -> str:
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(15)
        self._sessions[sid] = _Session()
        handshake = {"sid": sid, "upgrades": [], "pingInterval": int(self.ping_interval * 1000),
                     "pingTimeout": int(self.ping_timeout * 1000), "maxPayload": 100_000}
        return "0" + json.dumps(handshake, separators=(",", ":"))

    def receive(self, sid: str, body: str) -> bool:
        """Handle the packets of one client POST; False for an unknown session."""
        session = self._sessions.get(sid)
        if session is None:
            return False
        session.last_seen = time.monotonic()
        for packet in body.split(_SEPARATOR):
            if packet.startswith("40"):  # socket.io CONNECT to "/" (an auth payload may follow; none is needed)
                session.connected = True
                session.packets.append("40" + json.dumps({"sid": secrets.token_urlsafe(15)}, separators=(",", ":")))
                session.wake.set()
            elif packet.startswith("41"):
                session.connected = False
            elif packet.startswith("1"):  # Engine.IO close
                self._sessions.pop(sid, None)
                session.wake.set()
                return True
        return True

    async def poll(self, sid: str, request: Request) -> str | None:
        """Wait for packets of ``sid`` (None: unknown session); a ping if none come within ``ping_interval``."""
        session = self._sessions.get(sid)
        if session is None:
            return None
        session.last_seen = time.monotonic()
        deadline = time.monotonic() + self.ping_interval
        while not session.packets and sid in self._sessions:
            left = deadline - time.monotonic()
            if left <= 0:
                return "2"
            session.wake.clear()
            try:
                await asyncio.wait_for(session.wake.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return "2"
        if sid not in self._sessions:
            return "6"  # noop: the session was closed while waiting
        packets, session.packets = session.packets, []
        session.last_seen = time.monotonic()
        return _SEPARATOR.join(packets)

    def _expire(self) -> None:
        stale = time.monotonic() - self.ping_interval - self.ping_timeout
        for sid in [sid for sid, s in self._sessions.items() if s.last_seen < stale]:
            self._sessions.pop(sid, None)


def router(hub: EventHub) -> APIRouter:
    """``/socket.io/`` (GET and POST) answering from ``hub``."""
    api = APIRouter(include_in_schema=False)

    @api.get("/socket.io/")
    async def poll(request: Request) -> Response:
        params = request.query_params
        if params.get("transport") != "polling" or params.get("EIO") != "4":
            return JSONResponse({"code": 0, "message": "Transport unknown"}, status_code=400)
        sid = params.get("sid")
        if sid is None:
            return PlainTextResponse(hub.open(), headers={"Cache-Control": "no-store"})
        text = await hub.poll(sid, request)
        if text is None:
            return JSONResponse(_UNKNOWN_SID, status_code=400)
        return PlainTextResponse(text, headers={"Cache-Control": "no-store"})

    @api.post("/socket.io/")
    async def send(request: Request) -> Response:
        sid = request.query_params.get("sid")
        body = (await request.body()).decode("utf-8", "replace")
        if sid is None or not hub.receive(sid, body):
            return JSONResponse(_UNKNOWN_SID, status_code=400)
        return PlainTextResponse("ok")

    return api
