"""``moebius serve`` argument handling: defaults, one-line user errors, settings, and a real start on loopback."""

from __future__ import annotations

import argparse
import socket
import threading
import time

import pytest

from moebius.cli import serve as serve_command
from moebius.errors import MoebiusError

pytest.importorskip("fastapi")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moebius")
    serve_command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_defaults_bind_loopback():
    args = parse()
    assert (args.host, args.port, args.weights, args.cors_origin) == ("127.0.0.1", 8080, None, [])


def test_no_weights_is_one_clear_line(tmp_path, monkeypatch):
    from moebius.weights import bundled

    monkeypatch.setenv("MOEBIUS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "bundled")
    with pytest.raises(MoebiusError, match="pass --weights DIR") as exc:
        serve_command.run(parse())
    assert "\n" not in str(exc.value) and str(tmp_path / "home") in str(exc.value)


def test_without_weights_serves_the_bundled_model(tmp_path, monkeypatch):
    from moebius.weights import bundled
    from test_pipeline import tiny_pipeline

    monkeypatch.setenv("MOEBIUS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "bundled")
    tiny_pipeline().save_pretrained(tmp_path / "bundled")
    assert serve_command.settings_from_args(parse()).weights == str(tmp_path / "bundled")


@pytest.mark.parametrize("argv, words", [
    (("--weights", "/nonexistent/moebius"), "no such folder"),
    (("--weights", ".", "--port", "70000"), "--port"),
    (("--weights", ".", "--max-queue", "0"), "--max-queue"),
    (("--weights", ".", "--device", "cpu", "--dtype", "float16"), "float16 is for CUDA and MPS"),
    (("--weights", ".", "--max-connections", "0"), "--max-connections"),
    (("--weights", ".", "--header-timeout", "0"), "--header-timeout"),
])
def test_user_mistakes(argv, words):
    with pytest.raises(MoebiusError, match=words):
        serve_command.settings_from_args(parse(*argv))


def test_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEBIUS_API_KEY", raising=False)
    s = serve_command.settings_from_args(parse("--weights", str(tmp_path), "--device", "cpu", "--max-upload-mb", "1",
                                               "--cors-origin", "http://a", "--api-key", "k"))
    assert (s.device, s.max_upload_bytes, s.cors_origins, s.api_key) == ("cpu", 2**20, ("http://a",), "k")
    assert (s.max_connections, s.header_timeout_s, s.body_timeout_s) == (64, 10.0, 120.0)
    s = serve_command.settings_from_args(parse("--weights", str(tmp_path), "--max-connections", "5",
                                               "--header-timeout", "2.5", "--body-timeout", "30"))
    assert (s.max_connections, s.header_timeout_s, s.body_timeout_s) == (5, 2.5, 30.0)
    assert not s.compile
    assert serve_command.settings_from_args(parse("--weights", str(tmp_path), "--compile")).compile


def test_serve_starts_on_loopback_with_saved_weights(tmp_path, monkeypatch):
    """The whole command with a tiny saved pipeline: load, bind 127.0.0.1, answer /v1/health, shut down."""
    import httpx
    import uvicorn
    from test_pipeline import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path / "tiny")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers = []

    class Recorder(uvicorn.Server):
        def __init__(self, config):
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorder)
    args = parse("--weights", str(tmp_path / "tiny"), "--port", str(port), "--device", "cpu")
    thread = threading.Thread(target=serve_command.run, args=(args,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    servers[0].should_exit = True
    thread.join(30)
    assert not thread.is_alive()


def test_unusable_device_is_one_line(tmp_path):
    from moebius.serve.app import _load
    from test_pipeline import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path / "tiny")
    settings = serve_command.settings_from_args(parse("--weights", str(tmp_path / "tiny"), "--device", "nodevice"))
    with pytest.raises(MoebiusError, match="cannot use device 'nodevice'"):
        _load(settings)


def test_pixel_budget_defaults_to_the_image_limit_and_may_not_be_below_it(tmp_path):
    s = serve_command.settings_from_args(parse("--weights", str(tmp_path), "--max-megapixels", "12"))
    assert (s.max_pixels, s.max_pixels_in_flight) == (12_000_000, 12_000_000)
    s = serve_command.settings_from_args(parse("--weights", str(tmp_path), "--max-megapixels-in-flight", "96"))
    assert (s.max_pixels, s.max_pixels_in_flight) == (50_000_000, 96_000_000)
    with pytest.raises(MoebiusError, match=r"--max-megapixels-in-flight \(24\) must be at least --max-megapixels"):
        serve_command.settings_from_args(parse("--weights", str(tmp_path), "--max-megapixels-in-flight", "24"))
