"""The HTTP server with a tiny random-weight pipeline: each route, the IOPaint dialect, every bad input
answered with a 4xx and a clear message, the queue (batching, 503 when full, timeouts), key and CORS.

Needs the ``serve`` extra; skipped without it. Only the in-process TestClient is used (no sockets).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient
from test_pipeline import scene, tiny_pipeline

from moebius.serve import ServeSettings, create_app
from moebius.serve.batching import Job, MicroBatcher, QueueFull, RequestTimeout

STEPS = "2"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def client(pipe):
    app = create_app(ServeSettings(max_upload_bytes=2 * 2**20, max_pixels=2_000_000), pipeline=pipe)
    with TestClient(app) as c:
        yield c


def png(array: np.ndarray, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=save.pop("format", "PNG"), **save)
    return out.getvalue()


def post(client, image: bytes, mask: bytes | None, **fields):
    files = {"image": ("image", image, "application/octet-stream")}
    if mask is not None:
        files["mask"] = ("mask", mask, "image/png")
    data = {"num_inference_steps": STEPS, **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/inpaint", files=files, data=data)


def assert_healthy(client):
    r = client.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# ----------------------------------------------------------------------------------------------------
# Routes


def test_inpaint_png_returns_png_seed_and_metadata(client):
    rgb, mask = scene(96, 64)
    r = post(client, png(rgb), png(mask), seed=7)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "7"
    meta = json.loads(r.headers["x-moebius-metadata"])
    assert meta["seed"] == 7 and meta["num_inference_steps"] == 2 and meta["size"] == [96, 64]
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (96, 64) and json.loads(out.info["moebius"])["seed"] == 7
    result = np.asarray(out.convert("RGB")).astype(int)
    keep = mask == 0
    far = np.ones_like(keep)
    far[8:40, 24:56] = False  # outside the hole and its feather band
    assert np.array_equal(result[far & keep], rgb[far & keep])
    assert np.abs(result[mask > 0] - rgb[mask > 0]).mean() > 1


def test_same_seed_same_bytes_and_random_seed_reported(client):
    rgb, mask = scene(64, 64, seed=1)
    a, b = post(client, png(rgb), png(mask), seed=3), post(client, png(rgb), png(mask), seed=3)
    assert a.content == b.content
    c = post(client, png(rgb), png(mask))
    assert c.status_code == 200 and int(c.headers["x-seed"]) >= 0


def test_jpeg_in_jpeg_out_with_exif(client):
    rgb, mask = scene(64, 64)
    exif = Image.Exif()
    exif[0x010F] = "moebius-test-camera"
    r = post(client, png(rgb, format="JPEG", exif=exif.tobytes()), png(mask), seed=0)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).getexif()[0x010F] == "moebius-test-camera"


def test_alpha_is_kept_and_can_be_the_mask(client):
    rgb, mask = scene(64, 64)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:8] = 100  # partly transparent band, outside the hole
    rgba = np.dstack([rgb, alpha])
    r = post(client, png(rgba), png(mask), seed=0)
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    assert out.shape == (64, 64, 4) and np.array_equal(out[:, :, 3], alpha)
    alpha_hole = alpha.copy()
    alpha_hole[mask > 0] = 0  # no mask field: the transparent pixels are the hole
    r = post(client, png(np.dstack([rgb, alpha_hole])), None, seed=0)
    assert r.status_code == 200, r.text
    assert np.asarray(Image.open(io.BytesIO(r.content)))[mask > 0, 3].min() == 255


def test_fast_preset_is_served(client):
    rgb, mask = scene(64, 64)
    r = post(client, png(rgb), png(mask), seed=2, preset="fast")
    assert r.status_code == 200, r.text
    meta = json.loads(r.headers["x-moebius-metadata"])
    assert (meta["preset"], meta["scheduler"]) == ("fast", "unipc")
    assert post(client, png(rgb), png(mask), preset="fastest").status_code == 422


def test_health_models_docs_and_editor(client):
    assert_healthy(client)
    models = client.get("/v1/models").json()
    assert models["current"] == "moebius" and models["models"][0]["presets"] == ["default", "fast", "official", "portrait"]
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/v1/inpaint"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "mask", "seed", "hd_strategy"} <= set(form["properties"])
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text.lower()
    for asset in ("/", "/editor.js", "/editor.css"):  # everything ships in the package: no CDN, no remote URL
        text = client.get(asset).text
        assert client.get(asset).status_code == 200 and "http://" not in text and "https://" not in text


# ----------------------------------------------------------------------------------------------------
# Bad inputs: a 4xx with a clear one-line message, and the server still healthy


def _truncated_png() -> bytes:
    return png(scene(64, 64)[0])[:300]


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming a huge canvas with (almost) no pixel data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case, status, words", [
    ("not_an_image", 422, "image: not a readable image (PNG, JPEG"),
    ("truncated_png", 422, "truncated"),
    ("mask_size", 422, "mask is 32x32 but the image is 64x64"),
    ("huge_dimensions", 413, "MP"),
    ("too_many_bytes", 413, "too large"),
    ("unknown_field", 422, "unknown field 'hd_stratgy'"),
    ("bad_value", 422, "hd_strategy"),
    ("prefill_from_noise", 422, "needs strength < 1"),
    ("no_mask_no_alpha", 422, "no 'mask'"),
    ("missing_image", 422, "missing file field 'image'"),
    ("empty_image", 422, "empty"),
])
def test_bad_inputs_are_4xx_with_a_message(client, case, status, words):
    rgb, mask = scene(64, 64)
    image, msk, fields = png(rgb), png(mask), {}
    if case == "not_an_image":
        image = b"this is not an image at all" * 10
    elif case == "truncated_png":
        image = _truncated_png()
    elif case == "mask_size":
        msk = png(mask[:32, :32])
    elif case == "huge_dimensions":
        image = _bomb_png()
    elif case == "too_many_bytes":
        image = b"\0" * (3 * 2**20)
    elif case == "unknown_field":
        fields = {"hd_stratgy": "crop"}
    elif case == "bad_value":
        fields = {"hd_strategy": "tiles"}
    elif case == "prefill_from_noise":
        fields = {"prefill": "telea"}
    elif case == "no_mask_no_alpha":
        msk = None
    elif case == "empty_image":
        image = b""
    if case == "missing_image":
        r = client.post("/v1/inpaint", files={"mask": ("m", msk, "image/png")})
    else:
        r = post(client, image, msk, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"] and "\n" not in body["error"]
    assert_healthy(client)


def test_chunked_upload_over_the_limit_is_413(client):
    def body():
        for _ in range(40):
            yield b"x" * 65536

    r = client.post("/v1/inpaint", content=body(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    assert_healthy(client)


# ----------------------------------------------------------------------------------------------------
# IOPaint dialect


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_iopaint_dialect(client):
    rgb, mask = scene(64, 64)
    body = {"image": "data:image/png;base64," + b64(png(rgb)), "mask": b64(png(mask)), "sd_seed": 11,
            "sd_steps": 2, "hd_strategy": "Crop", "hd_strategy_crop_margin": 64, "prompt": "", "ldm_steps": 20}
    r = client.post("/api/v1/inpaint", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-seed"] == "11" and r.headers["content-type"] == "image/png"
    assert r.headers["x-moebius-ignored"] == "ldm_steps,prompt"
    native = post(client, png(rgb), png(mask), seed=11, crop_margin=64, mask_blur=0)
    assert native.content == r.content  # same options, same pixels, either dialect (IOPaint's: no feather)
    r = client.post("/api/v1/inpaint", json={**body, "sd_seed": -1})
    assert r.status_code == 200 and int(r.headers["x-seed"]) >= 0
    assert client.get("/api/v1/server-config").status_code == 200


def test_iopaint_ui_defaults_leave_a_folders_own_settings(tmp_path):
    """IOPaint's UI sends SD's sd_steps 50, sd_guidance_scale 7.5 and sd_strength 1.0 until the user moves them;
    a folder that refines a pre-fill (the bundled model) must answer with its own settings, while values the
    user moved are used."""
    refiner = tiny_pipeline(defaults={"prefill": "navier-stokes", "strength": 0.5, "num_inference_steps": 4,
                                      "guidance_scale": 1.0})
    rgb, mask = scene(64, 64)
    body = {"image": b64(png(rgb)), "mask": b64(png(mask)), "sd_seed": 3}
    ui = {"sd_steps": 50, "sd_guidance_scale": 7.5, "sd_strength": 1.0}
    with TestClient(create_app(ServeSettings(), pipeline=refiner)) as c:
        unset, untouched, *moved = (c.post("/api/v1/inpaint", json={**body, **extra}) for extra in (
            {}, ui, {**ui, "sd_strength": 0.25}, {**ui, "sd_steps": 8}, {**ui, "sd_guidance_scale": 3.0}))
        assert all(r.status_code == 200 for r in (unset, untouched, *moved)), untouched.text
        assert untouched.content == unset.content
        assert all(r.content != unset.content for r in moved)
        assert c.post("/v1/inpaint", files={"image": ("i.png", png(rgb)), "mask": ("m.png", png(mask))},
                      data={"strength": "1.0"}).status_code == 422  # the native API says what is wrong


@pytest.mark.parametrize("change, words", [
    ({"image": "%%%not base64%%%"}, "base64"),
    ({"mask": b64(png(np.zeros((10, 10), np.uint8)))}, "mask is 10x10"),
    ({"hd_strategy": "Tiles"}, "hd_strategy"),
    ({"image": b64(b"GIF89a broken")}, "image"),
])
def test_iopaint_bad_inputs(client, change, words):
    rgb, mask = scene(64, 64)
    body = {"image": b64(png(rgb)), "mask": b64(png(mask)), "sd_steps": 2, **change}
    r = client.post("/api/v1/inpaint", json=body)
    assert 400 <= r.status_code < 500 and words in r.json()["error"], r.text
    assert_healthy(client)


# ----------------------------------------------------------------------------------------------------
# Queue


def test_concurrent_same_size_requests_share_a_call(pipe):
    app = create_app(ServeSettings(max_wait_ms=50, max_batch=8, max_queue=16), pipeline=pipe)
    rgb, mask = scene(64, 64)
    image, msk = png(rgb), png(mask)
    with TestClient(app) as c:
        solo = post(c, image, msk, seed=5).content
        calls_before = app.state.runner.calls
        results: dict[int, bytes] = {}

        def send(i):
            r = post(c, image, msk, seed=i)
            assert r.status_code == 200 and r.headers["x-seed"] == str(i)
            results[i] = r.content

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == list(range(6))
        assert app.state.runner.calls - calls_before < 6
        assert results[5] == solo  # batching does not change a request's pixels


def test_full_queue_is_503_with_retry_after_and_a_timed_out_job_never_runs():
    release = threading.Event()
    ran: list[int] = []

    def slow(jobs):
        release.wait(10)
        ran.extend(job.seed for job in jobs)
        return [job.seed for job in jobs]

    def job(seed):
        return Job(np.zeros((8, 8, 3), np.uint8), None, seed, {})

    async def scenario():
        batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0, max_queue=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(job(0), 30))
        await asyncio.sleep(0.1)  # job 0 is running, the queue is empty
        second = asyncio.ensure_future(batcher.submit(job(2), 30))
        late = asyncio.ensure_future(batcher.submit(job(1), 0.05))  # behind job 2, so found by identity
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as full:  # 1 and 2 wait: the queue is full
            await batcher.submit(job(3), 30)
        assert full.value.retry_after >= 1
        with pytest.raises(RequestTimeout):
            await late
        assert batcher.depth == 1  # the timed-out job left the queue
        release.set()
        assert (await first, await second) == (0, 2)
        await batcher.stop()
        assert ran == [0, 2] and batcher.stats.rejected == 1 and batcher.stats.timed_out == 1

    asyncio.run(scenario())


def test_busy_server_answers_503_with_retry_after(pipe):
    app = create_app(ServeSettings(max_queue=1, max_batch=1), pipeline=pipe)
    with TestClient(app) as c:
        c.app.state.batcher.max_queue = 0  # as if the queue were full
        rgb, mask = scene(64, 64)
        r = post(c, png(rgb), png(mask))
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
        c.app.state.batcher.max_queue = 1
        assert post(c, png(rgb), png(mask)).status_code == 200


def test_api_key_and_cors(pipe):
    app = create_app(ServeSettings(api_key="s3cret", cors_origins=("http://localhost:5173",)), pipeline=pipe)
    with TestClient(app) as c:
        assert c.get("/v1/health").status_code == 200  # health stays open
        r = c.get("/v1/models")
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        pre = c.options("/v1/inpaint", headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
        assert pre.headers.get("access-control-allow-origin") == "http://localhost:5173"
    with TestClient(create_app(ServeSettings(), pipeline=pipe)) as c:  # CORS off by default
        r = c.get("/v1/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_iopaint_body_over_the_limit_is_413(client):
    r = client.post("/api/v1/inpaint", json={"image": "A" * (3 * 2**20), "mask": "A"})
    assert r.status_code == 413 and "too large" in r.json()["error"]
    assert_healthy(client)


def test_request_timeout_is_504(pipe):
    app = create_app(ServeSettings(request_timeout_s=0.001, max_wait_ms=50), pipeline=pipe)
    rgb, mask = scene(64, 64)
    with TestClient(app) as c:
        r = post(c, png(rgb), png(mask))
        assert r.status_code == 504 and "no answer within" in r.json()["error"]
        assert_healthy(c)


def test_chunked_json_over_the_limit_is_413_not_400(client):
    """A JSON body without Content-Length is counted as it arrives; past the limit the answer is 413, not
    FastAPI's 400 for a body it could not read."""
    def body():
        yield b'{"image": "'
        for _ in range(40):
            yield b"A" * 65536

    r = client.post("/api/v1/inpaint", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"], r.text
    assert_healthy(client)


def test_error_messages_name_the_field_not_python_objects(client):
    rgb, mask = scene(64, 64)
    r = post(client, b"this is not an image at all" * 10, png(mask))
    assert r.status_code == 422 and r.json()["error"] == "image: not a readable image (PNG, JPEG, WebP, BMP, TIFF or GIF)"
    r = post(client, png(rgb), b"GIF89a broken")
    assert r.status_code == 422 and r.json()["error"].startswith("mask: not a readable image")
    assert "object at 0x" not in r.json()["error"]
    # IOPaint's route takes no resize_mask, so its mask-size error does not offer one
    r = client.post("/api/v1/inpaint", json={"image": b64(png(rgb)), "mask": b64(png(mask[:10, :10]))})
    assert r.status_code == 422 and r.json()["error"] == ("mask is 10x10 but the image is 64x64; send a mask of "
                                                          "the image's size")
    r = client.post("/api/v1/inpaint", content=b'{"image": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("body is not valid JSON: "), r.text
    assert "JSON decode error" not in r.json()["error"]


# ----------------------------------------------------------------------------------------------------
# Pixel budget


def test_pixel_budget_admits_in_order_within_capacity():
    from moebius.serve.admission import PixelBudget

    async def scenario():
        budget = PixelBudget(10, max_waiting=2, retry_after=lambda: 7)
        order: list[str] = []

        async def hold(name: str, pixels: int, release: asyncio.Event, timeout: float = 5):
            async with budget.admit(pixels, timeout):
                order.append(name)
                assert budget.in_flight <= budget.capacity
                await release.wait()

        go_a, go_b, go_c = asyncio.Event(), asyncio.Event(), asyncio.Event()
        a = asyncio.ensure_future(hold("a", 6, go_a))
        await asyncio.sleep(0)
        b = asyncio.ensure_future(hold("b", 6, go_b))  # does not fit beside a
        c = asyncio.ensure_future(hold("c", 2, go_c))  # would fit, but waits behind b (no overtaking)
        await asyncio.sleep(0.01)
        assert order == ["a"] and budget.waiting == 2
        with pytest.raises(QueueFull) as full:
            await budget._acquire(1, 5)
        assert full.value.retry_after == 7
        go_a.set()
        await asyncio.sleep(0.01)
        assert order == ["a", "b", "c"] and budget.in_flight == 8
        with pytest.raises(RequestTimeout):  # 3 more do not fit beside b and c
            await hold("late", 3, asyncio.Event(), timeout=0.05)
        assert budget.waiting == 0
        go_b.set(), go_c.set()
        await asyncio.gather(a, b, c)
        assert budget.in_flight == 0 and budget.peak == 8

    asyncio.run(scenario())


class GatedPipeline:
    """The tiny pipeline, holding each call until ``gate`` is set (so a test can look at the server meanwhile)."""

    def __init__(self, pipe):
        self.pipe, self.gate, self.entered = pipe, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self.pipe(*args, **kwargs)


def test_decoding_waits_for_room_in_the_pixel_budget(pipe, monkeypatch):
    """With 10,000 pixels in flight allowed, a 96x96 request in the pipeline keeps a 64x40 one from even being
    decoded (it waits, sized from its header), a third waiting request is 503, and both are then answered."""
    from moebius.serve import _images

    decoded: list[tuple[int, int]] = []
    real_decode = _images.decode_image

    def counting_decode(raw, max_pixels, label="image"):
        upload = real_decode(raw, max_pixels, label)
        decoded.append(upload.data.size)
        return upload

    monkeypatch.setattr(_images, "decode_image", counting_decode)
    gated = GatedPipeline(pipe)
    app = create_app(ServeSettings(max_pixels=10_000, max_pixels_in_flight=10_000, max_queue=1, max_wait_ms=0),
                     pipeline=gated)

    def request(width, height):
        rgb = np.zeros((height, width, 3), np.uint8)
        mask = np.zeros((height, width), np.uint8)
        mask[:16, :16] = 255
        return png(rgb), png(mask)

    big, small = request(96, 96), request(64, 40)
    answers: dict[str, int] = {}
    with TestClient(app) as c:
        def send(name, files):
            answers[name] = post(c, *files, seed=1).status_code

        first = threading.Thread(target=send, args=("big", big))
        first.start()
        assert gated.entered.wait(30)
        second = threading.Thread(target=send, args=("small", small))
        second.start()
        for _ in range(200):
            health = c.get("/v1/health").json()
            if health["waiting_for_pixels"] == 1:
                break
            threading.Event().wait(0.02)
        assert (health["pixels_in_flight"], health["pixel_budget"]) == (9216, 10_000), health
        assert health["waiting_for_pixels"] == 1 and decoded == [(96, 96)]
        busy = post(c, *small)
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        gated.gate.set()
        first.join(60), second.join(60)
        assert answers == {"big": 200, "small": 200}
        assert app.state.budget.peak == 9216 and app.state.budget.in_flight == 0
        too_big = post(c, *request(120, 100))
        assert too_big.status_code == 413 and "120x100" in too_big.json()["error"]  # the per-image limit still holds


def test_a_budget_below_the_image_limit_is_refused(pipe):
    with pytest.raises(ValueError, match="max_pixels_in_flight"):
        create_app(ServeSettings(max_pixels=2_000_000, max_pixels_in_flight=1_000_000), pipeline=pipe)
