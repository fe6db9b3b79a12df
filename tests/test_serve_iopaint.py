"""IOPaint's dialect with a tiny random-weight pipeline: a replay of the body IOPaint 1.6.0's front-end sends with
untouched settings, every other call the front-end makes, IOPaint's response models, error shape, mask reading,
seed default, the socket.io progress channel, and ``--ui iopaint``.

IOPaint's own pydantic models are imported from an ``iopaint`` installed with ``pip install --no-deps
iopaint==1.6.0`` (its ``schema.py`` needs only pydantic and loguru); those checks are skipped without it.
In-process TestClient only (no sockets).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, PngImagePlugin

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient
from test_pipeline import scene, tiny_pipeline

from moebius.errors import ConfigError
from moebius.serve import ServeSettings, create_app


def _iopaint_schema():
    if importlib.util.find_spec("iopaint") is None or importlib.util.find_spec("loguru") is None:
        return None
    import warnings

    with warnings.catch_warnings():  # pydantic's deprecation notes on IOPaint's validators
        warnings.simplefilter("ignore", DeprecationWarning)
        import iopaint.schema
    return iopaint.schema


schema = _iopaint_schema()
needs_iopaint = pytest.mark.skipif(schema is None, reason="pip install --no-deps iopaint==1.6.0 (and loguru)")


@pytest.fixture(scope="module")
def client():
    # Two steps by default: the front-end's untouched sd_steps (50) leaves the folder's own step count.
    app = create_app(ServeSettings(max_upload_bytes=4 * 2**20, max_pixels=2_000_000, max_wait_ms=0),
                     pipeline=tiny_pipeline(defaults={"num_inference_steps": 2}))
    with TestClient(app) as c:
        yield c


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def data_url(raw: bytes, media: str) -> str:
    return f"data:{media};base64," + base64.b64encode(raw).decode()


def canvas_mask(width: int, height: int) -> Image.Image:
    """What the front-end's mask canvas exports: #ffcc00bb strokes on transparent black, with anti-aliased
    edges whose alpha falls below 128 while their colour stays #ffcc00."""
    size = 4  # draw large, then shrink: soft edges as a canvas anti-aliases them
    big = Image.new("RGBA", (width * size, height * size), (0, 0, 0, 0))
    ImageDraw.Draw(big).line([(10 * size, 20 * size), (50 * size, 40 * size)], fill=(255, 204, 0, 187),
                             width=9 * size)
    small = np.asarray(big.resize((width, height), Image.BOX)).copy()
    painted = small[:, :, 3] > 0
    small[painted, :3] = (255, 204, 0)  # a canvas exports un-premultiplied colour
    return Image.fromarray(small, "RGBA")


def front_end_body(image_url: str, mask_url: str) -> dict:
    """The 41 keys IOPaint 1.6.0's front-end posts to /api/v1/inpaint with every setting untouched (read from its
    bundle's inpaint call and default settings; its misspelt HD size keys included)."""
    return {"image": image_url, "mask": mask_url, "ldm_steps": 30, "ldm_sampler": "ddim", "zits_wireframe": True,
            "cv2_flag": "INPAINT_NS", "cv2_radius": 5, "hd_strategy": "Crop", "hd_strategy_crop_triger_size": 640,
            "hd_strategy_crop_margin": 128, "hd_trategy_resize_imit": 2048, "prompt": "",
            "negative_prompt": "out of frame, lowres, error, cropped, worst quality, low quality, jpeg artifacts, "
                               "ugly, duplicate, morbid, mutilated, out of frame, mutation, deformed, blurry, "
                               "dehydrated, bad anatomy, bad proportions, extra limbs, disfigured, gross "
                               "proportions, malformed limbs, watermark, signature",
            "use_croper": False, "croper_x": 0, "croper_y": 0, "croper_height": 512, "croper_width": 512,
            "use_extender": False, "extender_x": 0, "extender_y": 0, "extender_height": 512,
            "extender_width": 512, "sd_mask_blur": 12, "sd_strength": 1, "sd_steps": 50, "sd_guidance_scale": 7.5,
            "sd_sampler": "DPM++ 2M", "sd_seed": -1, "sd_match_histograms": False, "sd_lcm_lora": False,
            "paint_by_example_example_image": None, "p2p_image_guidance_scale": 1.5, "enable_controlnet": False,
            "controlnet_conditioning_scale": 0.4, "controlnet_method": "lllyasviel/control_v11p_sd15_canny",
            "enable_brushnet": False, "brushnet_method": "random_mask", "brushnet_conditioning_scale": 1,
            "enable_powerpaint_v2": False, "powerpaint_task": "text-guided"}


def decoded(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)


# ----------------------------------------------------------------------------------------------------
# /api/v1/inpaint


def test_front_end_replay_changes_only_the_bright_part_of_the_mask(client):
    rgb, _ = scene(64, 48, seed=4)
    mask = canvas_mask(64, 48)
    rgba = np.asarray(mask)
    bright = np.asarray(mask.convert("L")) > 127
    soft = bright & (rgba[:, :, 3] < 128)
    assert soft.sum() > 10  # the canvas' soft edges: filled by IOPaint, not read as hole from alpha
    body = front_end_body(data_url(encoded(Image.fromarray(rgb), "JPEG", quality=95), "image/jpeg"),
                          data_url(encoded(mask, "PNG"), "image/png"))
    assert len(body) == 41

    r = client.post("/api/v1/inpaint", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and int(r.headers["x-seed"]) >= 0
    assert decoded(r.content).shape == (48, 64, 3)
    ignored = r.headers["x-moebius-ignored"].split(",")
    assert "sd_mask_blur" in ignored and "prompt" in ignored and "hd_strategy_crop_triger_size" in ignored

    # The same body with a lossless image: every pixel outside the bright strokes is byte-identical, although
    # the front-end asks for a 12 px blur; the soft edges were inpainted.
    r = client.post("/api/v1/inpaint", json={**body, "image": data_url(encoded(Image.fromarray(rgb), "PNG"),
                                                                        "image/png"), "sd_seed": 5})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "5"
    out = decoded(r.content)
    assert np.array_equal(out[~bright], rgb[~bright])
    assert (out[soft] != rgb[soft]).any(axis=1).mean() > 0.5


def test_seed_defaults_to_42_as_in_iopaint(client):
    rgb, mask = scene(48, 48, seed=1)
    body = {"image": base64.b64encode(encoded(Image.fromarray(rgb), "PNG")).decode(),
            "mask": base64.b64encode(encoded(Image.fromarray(mask), "PNG")).decode(), "sd_steps": 2}
    first, second = client.post("/api/v1/inpaint", json=body), client.post("/api/v1/inpaint", json=body)
    assert first.headers["x-seed"] == second.headers["x-seed"] == "42"
    assert first.content == second.content
    drawn = client.post("/api/v1/inpaint", json={**body, "sd_seed": -1})
    assert drawn.status_code == 200 and drawn.headers["x-seed"] != "42"


@needs_iopaint
def test_every_field_of_iopaints_inpaint_request_at_its_defaults(client):
    """All 46 fields of IOPaint's own InpaintRequest, as IOPaint's model dumps them: accepted, and nothing
    outside the hole changes, also with the Stable Diffusion fields moved."""
    rgb, mask = scene(64, 64, seed=6)
    fields = schema.InpaintRequest().model_dump(mode="json")
    assert len(fields) == 46
    fields.update(image=data_url(encoded(Image.fromarray(rgb), "PNG"), "image/png"),
                  mask=base64.b64encode(encoded(Image.fromarray(mask), "PNG")).decode())
    hole = mask > 127
    stable_diffusion = {"sd_mask_blur": 40, "sd_match_histograms": True, "sd_scale": 0.5, "sd_steps": 3,
                        "sd_guidance_scale": 4.0, "sd_strength": 0.6, "sd_sampler": "Euler a", "sd_lcm_lora": True}
    for changes in ({}, stable_diffusion):
        r = client.post("/api/v1/inpaint", json={**fields, **changes})
        assert r.status_code == 200, r.text
        assert np.array_equal(decoded(r.content)[~hole], rgb[~hole]), changes


@needs_iopaint
def test_the_replayed_body_is_a_valid_iopaint_request():
    body = front_end_body("data:image/png;base64,AAAA", "data:image/png;base64,AAAA")
    request = schema.InpaintRequest(**body)
    assert request.sd_mask_blur == 12 and request.hd_strategy == "Crop"


# ----------------------------------------------------------------------------------------------------
# The other calls the front-end makes


@needs_iopaint
def test_server_config_model_and_gen_info_fit_iopaints_response_models(client):
    config = client.get("/api/v1/server-config")
    assert config.status_code == 200
    parsed = schema.ServerConfigResponse(**config.json())  # IOPaint's own model accepts every field
    assert parsed.disableModelSwitch is False  # keeps the Settings dialog on the page
    assert isinstance(config.json()["controlnetMethod"], str)
    assert [m.model_type for m in parsed.modelInfos] == ["inpaint"]
    assert parsed.samplers == [s.value for s in schema.SDSampler]
    model = client.get("/api/v1/model").json()
    expected = schema.ModelInfo(name=model["name"], path=model["path"], model_type="inpaint").model_dump(mode="json")
    assert model == expected
    info = client.post("/api/v1/gen-info", files={"file": ("a.png", b"not an image", "image/png")})
    assert info.status_code == 200 and schema.GenInfoResponse(**info.json()) == schema.GenInfoResponse()


def test_gen_info_reads_the_parameters_chunk(client):
    chunk = PngImagePlugin.PngInfo()
    chunk.add_text("parameters", "a red barn\nNegative prompt: blurry, dark\nSteps: 20")
    raw = encoded(Image.new("RGB", (8, 8)), "PNG", pnginfo=chunk)
    r = client.post("/api/v1/gen-info", files={"file": ("barn.png", raw, "image/png")})
    assert r.status_code == 200
    assert r.json() == {"prompt": "a red barn", "negative_prompt": "blurry, dark"}


@pytest.mark.parametrize("operate", ["expand", "shrink", "reverse"])
def test_adjust_mask_is_plain_opencv(client, operate):
    import cv2

    mask = canvas_mask(64, 48)
    r = client.post("/api/v1/adjust_mask", json={"mask": data_url(encoded(mask, "PNG"), "image/png"),
                                                 "operate": operate, "kernel_size": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    hole = np.where(np.asarray(mask.convert("L")) >= 127, 255, 0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    want = {"expand": cv2.dilate(hole, kernel), "shrink": cv2.erode(hole, kernel), "reverse": 255 - hole}[operate]
    assert out.shape == (48, 64, 4)
    assert np.array_equal(out[:, :, 3] > 0, want > 128)
    assert set(map(tuple, out[want > 128].tolist())) == {(255, 203, 0, 186)}


def test_routes_of_features_that_are_off_answer_as_iopaint_does(client):
    name = client.get("/api/v1/model").json()["name"]
    assert client.post("/api/v1/model", json={"name": name}).json()["name"] == name
    other = client.post("/api/v1/model", json={"name": "lama"})
    assert other.status_code == 422 and "'lama' is not available" in other.json()["errors"]
    assert client.post("/api/v1/switch_plugin_model", json={"plugin_name": "RemoveBG",
                                                            "model_name": "u2net"}).status_code == 200
    for route in ("run_plugin_gen_mask", "run_plugin_gen_image"):
        r = client.post(f"/api/v1/{route}", json={"name": "RemoveBG", "image": "AAAA"})
        assert r.status_code == 422 and r.json()["errors"] == "Plugin not found"
    saved = client.post("/api/v1/save_image", files={"file": ("out.png", b"x", "image/png")})
    assert saved.status_code == 400 and "Output directory" in saved.json()["errors"]
    assert client.get("/api/v1/samplers").json() == client.post("/api/v1/samplers").json()
    no_input = client.get("/api/v1/inputimage")
    assert no_input.status_code == 200 and no_input.headers["content-type"] == "application/json"


# ----------------------------------------------------------------------------------------------------
# Errors, key


def test_errors_have_iopaints_body_shape(client):
    r = client.post("/api/v1/inpaint", json={"image": "%%%", "mask": "AAAA"})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"} and "not valid base64" in body["errors"]
    r = client.post("/api/v1/adjust_mask", json={"mask": "AAAA", "operate": "grow"})
    assert r.status_code == 422 and "operate" in r.json()["errors"]
    big = client.post("/api/v1/inpaint", json={"image": "A" * (5 * 2**20), "mask": "A"})
    assert big.status_code == 413 and "too large" in big.json()["errors"]
    assert int(big.headers["content-length"]) == len(big.content)
    native = client.post("/v1/inpaint", data={"seed": "1"})
    assert native.status_code == 422 and "errors" not in native.json()  # /v1 keeps its own shape


def test_key_guards_api_v1_and_says_so_in_iopaints_shape():
    app = create_app(ServeSettings(api_key="s3cret"), pipeline=tiny_pipeline())
    with TestClient(app) as c:
        r = c.get("/api/v1/server-config")
        assert r.status_code == 401 and "API key" in r.json()["errors"]
        assert c.get("/api/v1/server-config", headers={"X-API-Key": "s3cret"}).status_code == 200


# ----------------------------------------------------------------------------------------------------
# socket.io


def packets(text: str) -> list[str]:
    return text.split("\x1e")


def test_socketio_polling_connects_and_receives_progress(client):
    opened = client.get("/socket.io/", params={"EIO": "4", "transport": "polling", "t": "x"})
    assert opened.status_code == 200 and opened.text.startswith("0")
    handshake = json.loads(opened.text[1:])
    assert handshake["upgrades"] == [] and handshake["pingInterval"] > 0
    query = {"EIO": "4", "transport": "polling", "sid": handshake["sid"]}
    assert client.post("/socket.io/", params=query, content="40").text == "ok"
    connected = packets(client.get("/socket.io/", params=query).text)
    assert connected[0].startswith("40{") and "sid" in json.loads(connected[0][2:])

    rgb, mask = scene(48, 48, seed=2)
    body = {"image": base64.b64encode(encoded(Image.fromarray(rgb), "PNG")).decode(),
            "mask": base64.b64encode(encoded(Image.fromarray(mask), "PNG")).decode(), "sd_steps": 3}
    assert client.post("/api/v1/inpaint", json=body).status_code == 200
    events = [json.loads(p[2:]) for p in packets(client.get("/socket.io/", params=query).text)]
    assert events == [["diffusion_progress", {"step": 0}], ["diffusion_progress", {"step": 1}],
                      ["diffusion_progress", {"step": 2}], ["diffusion_finish"]]

    assert client.post("/socket.io/", params=query, content="1").text == "ok"  # close
    gone = client.get("/socket.io/", params=query)
    assert gone.status_code == 400 and gone.json()["message"] == "Session ID unknown"


def test_socketio_poll_without_events_answers_a_ping():
    from moebius.serve import socketio_events

    app = create_app(ServeSettings(), pipeline=tiny_pipeline())
    with TestClient(app) as c:
        app.state.iopaint_events.ping_interval = 0.2
        sid = json.loads(c.get("/socket.io/", params={"EIO": "4", "transport": "polling"}).text[1:])["sid"]
        assert c.get("/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid}).text == "2"
        assert c.post("/socket.io/", params={"sid": sid}, content="3").text == "ok"
        assert c.get("/socket.io/", params={"EIO": "4", "transport": "websocket"}).status_code == 400
    assert isinstance(app.state.iopaint_events, socketio_events.EventHub)


# ----------------------------------------------------------------------------------------------------
# --ui iopaint


@needs_iopaint
def test_ui_iopaint_serves_iopaints_front_end_beside_the_api():
    app = create_app(ServeSettings(ui="iopaint"), pipeline=tiny_pipeline())
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and "<title>IOPaint</title>" in page.text
        script = page.text.split('src="', 1)[1].split('"', 1)[0]
        assert c.get(script).status_code == 200
        assert c.get("/api/v1/server-config").status_code == 200
    with TestClient(create_app(ServeSettings(), pipeline=tiny_pipeline())) as c:
        assert "<title>IOPaint</title>" not in c.get("/").text  # our editor stays the default


def serve_args(*argv: str):
    import argparse

    from moebius.cli import serve as serve_command

    parser = argparse.ArgumentParser(prog="moebius")
    serve_command.register(parser.add_subparsers(dest="command"))
    return serve_command.settings_from_args(parser.parse_args(["serve", *argv]))


@needs_iopaint
def test_cli_ui_option(tmp_path):
    assert serve_args("--weights", str(tmp_path)).ui == "moebius"
    assert serve_args("--weights", str(tmp_path), "--ui", "iopaint").ui == "iopaint"


def test_ui_iopaint_without_the_package_is_one_line_naming_the_install(monkeypatch, tmp_path):
    from moebius.serve import iopaint_ui

    monkeypatch.setattr(iopaint_ui.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps iopaint==1\.6\.0") as exc:
        create_app(ServeSettings(ui="iopaint"), pipeline=tiny_pipeline())
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="is not installed"):
        serve_args("--weights", str(tmp_path), "--ui", "iopaint")
    assert serve_args("--weights", str(tmp_path), "--ui", "iopaint", "--no-editor").editor is False
