"""The real server on a loopback port: slow clients are cut off by the read deadlines, and connections beyond
the cap are answered 503 (serve/http_server.py). Each test is bounded to a few seconds."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def pipe():
    from test_pipeline import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture
def serve(pipe):
    """serve(**settings) -> port of a running server; stopped after the test."""
    from moebius.serve import ServeSettings, create_app
    from moebius.serve.http_server import serving_in_thread

    with contextlib.ExitStack() as servers:
        def start(**settings) -> int:
            settings = ServeSettings(**settings)
            return servers.enter_context(serving_in_thread(create_app(settings, pipeline=pipe), settings,
                                                            log_level="error"))

        yield start


def trickle(port: int, data: bytes, interval_s: float, give_up_s: float) -> tuple[bytes, float]:
    """Send ``data`` one byte every ``interval_s`` -> (what the server answered, seconds until it closed)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as sock:
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server has closed the connection
                break
            time.sleep(interval_s)
            if time.monotonic() - started > give_up_s:
                break
        sock.settimeout(max(0.1, give_up_s - (time.monotonic() - started)))
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer, time.monotonic() - started


def test_slow_headers_are_cut_off_with_408(serve):
    port = serve(header_timeout_s=0.5, body_timeout_s=30)
    answer, seconds = trickle(port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n",
                              interval_s=0.05, give_up_s=6)
    assert answer.startswith(b"HTTP/1.1 408") and b"headers did not arrive within 0.5 s" in answer, answer
    assert seconds < 3


def test_slow_body_is_cut_off_with_408(serve):
    port = serve(header_timeout_s=5, body_timeout_s=0.8)
    head = (b"POST /api/v1/inpaint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=6) as sock:
        sock.sendall(head)
        answer = b""
        try:
            for _ in range(100):  # one byte every 50 ms: the 1000 bytes would take 50 s
                sock.sendall(b" ")
                time.sleep(0.05)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 408") and b"body did not arrive within 0.8 s" in answer, answer
    assert time.monotonic() - started < 4


def test_a_prompt_client_is_served_and_kept_alive(serve):
    import httpx

    port = serve(header_timeout_s=0.5, body_timeout_s=0.5)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(3):  # one connection, several requests, with pauses longer than the header deadline
            assert client.get("/v1/health").status_code == 200
            time.sleep(0.7)


def test_connections_beyond_the_cap_get_503(serve):
    import httpx

    port = serve(max_connections=2, header_timeout_s=5)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        assert r.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200
