"""IOPaint's dialect: every ``/api/v1`` call IOPaint 1.6.0's web front-end makes, answered as IOPaint's server
answers it for an erase-type model (LaMa-like: no prompt, no sampler, no plugins), so IOPaint clients and
its front-end (``moebius serve --ui iopaint``) work unchanged.

``POST /api/v1/inpaint`` takes a JSON body of base64 ``image``/``mask`` and IOPaint's option names and answers
with image bytes in the input's format and ``X-Seed``. As IOPaint does:

- the mask is read by brightness (PIL's ``convert("L")``, alpha ignored) and pixels above 127 are the hole,
  so the front-end's ``#ffcc00bb`` strokes count with their soft edges;
- ``sd_seed`` defaults to 42 when absent; -1 draws a random seed (reported in ``X-Seed``);
- the result is pasted into the hole only: nothing outside the hole changes. ``sd_mask_blur`` (the
  front-end always sends 12) is a Stable-Diffusion option and is ignored, like the other SD-only fields.

Mapping: ``hd_strategy`` Original/Resize/Crop -> original/resize/crop with its three size fields;
``sd_steps`` -> steps; ``sd_guidance_scale`` -> guidance (values below 1, which IOPaint allows, mean no CFG);
``sd_strength``; ``sd_keep_unmasked_area=false`` -> raw decode; ``sd_match_histograms`` -> mean-colour
compensation of the hole. Every other field is ignored and named in ``X-Moebius-Ignored``.

IOPaint's front-end sends its Stable Diffusion defaults (50 steps, guidance 7.5, strength 1.0) until the user
moves a slider. Those values are read as unset, so that the preset's or the weights folder's own settings
apply (Moebius: 20 steps, guidance 2.5 or 2.0; the bundled refiner: one step at t = 0 without CFG) instead of
SD's. A user who picks exactly one of those values gets the model's setting for it.

Errors on ``/api/v1`` carry IOPaint's body keys ``error``, ``detail``, ``body`` and ``errors`` (the front-end
shows ``errors``); :class:`IOPaintErrorBody` rewrites them wherever they come from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import secrets
from typing import Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from . import _images, socketio_events
from .errors import ERROR_RESPONSES, HTTPProblem
from .routes import admitted, result_headers, run_job
from .schemas import IOPaintInpaintRequest
from .socketio_events import EventHub

router = APIRouter(tags=["iopaint"])

# What IOPaint's front-end sends when the user has not moved the slider.
IOPAINT_UI_DEFAULTS = {"sd_steps": 50, "sd_guidance_scale": 7.5, "sd_strength": 1.0}
# IOPaint's choices (iopaint/schema.py): the front-end's Settings form accepts only these names.
SAMPLERS = ["DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE", "DPM++ 2M SDE Karras", "DPM++ SDE", "DPM++ SDE Karras",
            "DPM2", "DPM2 Karras", "DPM2 a", "DPM2 a Karras", "Euler", "Euler a", "Heun", "LMS", "LMS Karras",
            "DDIM", "PNDM", "UniPC", "LCM"]
REMOVE_BG_MODEL = "briaai/RMBG-1.4"
REALESRGAN_MODEL = "realesr-general-x4v3"
INTERACTIVE_SEG_MODEL = "sam2_1_tiny"
# IOPaint's front-end paints and draws masks in this colour: #ffcb00 at 73 % opacity.
MASK_RGBA = (255, 203, 0, int(255 * 0.73))
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.IGNORECASE)


def decode_base64(text: str, label: str) -> bytes:
    """Standard or URL-safe base64, with or without a ``data:`` prefix and padding."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    body = re.sub(r"\s+", "", body)
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPProblem(422, f"{label}: not valid base64") from None


def read_mask(raw: bytes, max_pixels: int, label: str = "mask") -> np.ndarray:
    """IOPaint's mask reading: brightness (alpha ignored) above 127 is the hole -> (H, W) uint8, 0 or 255."""
    img = ImageOps.exif_transpose(_images.open_checked(raw, label, max_pixels))
    gray = np.asarray(img.convert("L"))
    return np.where(gray > 127, 255, 0).astype(np.uint8)


def chosen(req: IOPaintInpaintRequest, field: str) -> float | int | None:
    """The request's value of ``field``, or None where it is absent or IOPaint's untouched UI default."""
    value = getattr(req, field)
    return None if value is None or value == IOPAINT_UI_DEFAULTS[field] else value


def pipeline_options(req: IOPaintInpaintRequest) -> dict:
    """The pipeline keyword arguments a request asks for; the hole is pasted without a feather band."""
    guidance = chosen(req, "sd_guidance_scale")
    options = {
        "hd_strategy": req.hd_strategy.lower(),
        "crop_margin": req.hd_strategy_crop_margin,
        "crop_trigger_size": req.hd_strategy_crop_trigger_size,
        "resize_limit": req.hd_strategy_resize_limit,
        "num_inference_steps": chosen(req, "sd_steps"),
        "guidance_scale": None if guidance is None else max(1.0, guidance),
        "strength": chosen(req, "sd_strength"),
        "mask_blur": 0.0,
        "paste": "keep_unmasked" if req.sd_keep_unmasked_area else "none",
        "compensate": req.sd_match_histograms,
    }
    return {k: v for k, v in options.items() if v is not None}


@router.post("/api/v1/inpaint", response_class=Response,
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **ERROR_RESPONSES})
async def iopaint_inpaint(req: IOPaintInpaintRequest, request: Request) -> Response:
    """IOPaint's ``/api/v1/inpaint``: base64 image and mask in, image bytes out (``X-Seed`` header).

    While the pipeline steps, ``diffusion_progress`` events go to the socket.io clients; ``diffusion_finish``
    follows the answer."""
    settings = request.app.state.settings
    image_bytes = decode_base64(req.image, "image")
    mask_bytes = decode_base64(req.mask, "mask")

    def decode():
        upload = _images.decode_image(image_bytes, settings.max_pixels)
        mask = read_mask(mask_bytes, settings.max_pixels)
        _images.check_mask_size(mask, upload.data, resize=None)
        return upload, mask

    seed = None if req.sd_seed < 0 else req.sd_seed
    request_id = request.headers.get("x-request-id") or f"iopaint-{secrets.token_hex(8)}"
    progress = ProgressEvents(request, request_id)
    async with admitted(request, {"image": image_bytes, "mask": mask_bytes}) as deadline:
        upload, mask = await run_in_threadpool(decode)
        watcher = asyncio.create_task(progress.follow())
        try:
            image, meta = await run_job(request, _images.pipeline_input(upload), mask, seed, "default",
                                        pipeline_options(req), deadline, request_id=request_id)
            progress.report()  # steps taken since the watcher last looked
        finally:
            watcher.cancel()
            progress.hub.emit("diffusion_finish")
        body, media = await run_in_threadpool(_images.encode, image, upload, {"moebius": meta.to_json()})
    headers = result_headers(meta)
    ignored = sorted((req.model_extra or {}).keys())
    if ignored:
        headers["X-Moebius-Ignored"] = ",".join(ignored)[:2000]
    return Response(body, media_type=media, headers=headers)


class ProgressEvents:
    """Emits ``diffusion_progress`` ({"step": zero-based}) once for each step the request's job has taken."""

    def __init__(self, request: Request, request_id: str) -> None:
        self.hub: EventHub = request.app.state.iopaint_events
        self.batcher, self.request_id, self.reported = request.app.state.batcher, request_id, 0

    def report(self) -> None:
        job = self.batcher.progress(self.request_id)
        step = 0 if job is None else job.step
        for done in range(self.reported, step):
            self.hub.emit("diffusion_progress", {"step": done})
        self.reported = max(self.reported, step)

    async def follow(self, every_s: float = 0.05) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.report()


class GenInfo(BaseModel):
    prompt: str = ""
    negative_prompt: str = ""


@router.post("/api/v1/gen-info", response_model=GenInfo)
async def gen_info(file: UploadFile) -> GenInfo:
    """The prompts written in an image's ``parameters`` text chunk (Stable Diffusion web UIs write one).

    The front-end calls this on every image it opens; an image without one (or a file that is no image)
    answers empty prompts."""
    raw = await file.read()
    try:
        text = Image.open(io.BytesIO(raw)).info.get("parameters", "")
    except Exception:  # noqa: BLE001 - any unreadable file simply has no prompt
        text = ""
    parts = str(text).split("Negative prompt: ")
    negative = parts[1].split("\n")[0].strip() if len(parts) > 1 else ""
    return GenInfo(prompt=parts[0].strip(), negative_prompt=negative)


def model_info(name: str) -> dict:
    """IOPaint's ``ModelInfo`` of an erase-type model (``model_type`` "inpaint") with its computed fields."""
    return {"name": name, "path": name, "model_type": "inpaint", "is_single_file_diffusers": False,
            "need_prompt": False, "controlnets": [], "brushnets": [], "support_strength": False,
            "support_outpainting": False, "support_lcm_lora": False, "support_controlnet": False,
            "support_brushnet": False, "support_powerpaint_v2": False}


@router.get("/api/v1/server-config")
async def server_config(request: Request) -> dict:
    """IOPaint's server config: one model, no plugins, no file manager, no auto-saving, model switch allowed
    (which keeps the Settings dialog reachable; switching to another model is refused)."""
    name = request.app.state.runner.model_name
    return {"plugins": [], "modelInfos": [model_info(name)],
            "removeBGModel": REMOVE_BG_MODEL, "removeBGModels": [REMOVE_BG_MODEL],
            "realesrganModel": REALESRGAN_MODEL, "realesrganModels": [REALESRGAN_MODEL],
            "interactiveSegModel": INTERACTIVE_SEG_MODEL, "interactiveSegModels": [INTERACTIVE_SEG_MODEL],
            "enableFileManager": False, "enableAutoSaving": False, "enableControlnet": False,
            "controlnetMethod": "", "disableModelSwitch": False, "isDesktop": False, "samplers": SAMPLERS}


@router.get("/api/v1/model")
async def current_model(request: Request) -> dict:
    """IOPaint's current-model route."""
    return model_info(request.app.state.runner.model_name)


class SwitchModel(BaseModel):
    name: str


@router.post("/api/v1/model")
async def switch_model(req: SwitchModel, request: Request) -> dict:
    """Switching to the loaded model answers it; any other name is refused (one model per server)."""
    name = request.app.state.runner.model_name
    if req.name != name:
        raise HTTPProblem(422, f"model {req.name!r} is not available: this server runs {name!r} only")
    return model_info(name)


@router.get("/api/v1/inputimage")
async def input_image() -> JSONResponse:
    """IOPaint answers 200 with an error body when no input image was given at start (never here)."""
    return JSONResponse(_error_body("No input image configured"), status_code=200)


@router.get("/api/v1/samplers")
@router.post("/api/v1/samplers")
async def samplers() -> list[str]:
    """IOPaint's sampler names (GET on IOPaint's server; the front-end's helper posts)."""
    return SAMPLERS


class AdjustMask(BaseModel):
    mask: str = Field(..., description="base64 mask; brightness >= 127 is the hole")
    operate: Literal["expand", "shrink", "reverse"]
    kernel_size: int = Field(5, ge=0, le=512, description="the ellipse's radius in pixels")


@router.post("/api/v1/adjust_mask", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def adjust_mask(req: AdjustMask, request: Request) -> Response:
    """Grow, shrink or invert a mask (OpenCV, ellipse of ``2·kernel_size + 1``) -> RGBA PNG in the front-end's
    mask colour."""
    raw = decode_base64(req.mask, "mask")
    max_pixels = request.app.state.settings.max_pixels

    def adjust() -> bytes:
        import cv2

        gray = np.asarray(ImageOps.exif_transpose(_images.open_checked(raw, "mask", max_pixels)).convert("L"))
        hole = np.where(gray >= 127, 255, 0).astype(np.uint8)
        if req.operate == "reverse":
            hole = 255 - hole
        else:
            size = 2 * req.kernel_size + 1
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            hole = (cv2.dilate if req.operate == "expand" else cv2.erode)(hole, kernel, iterations=1)
        rgba = np.zeros((*hole.shape, 4), np.uint8)
        rgba[hole > 128] = MASK_RGBA
        out = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(out, format="PNG")
        return out.getvalue()

    return Response(await run_in_threadpool(adjust), media_type="image/png")


@router.post("/api/v1/save_image")
async def save_image() -> None:
    """Saving to a server folder is off (IOPaint's ``--output-dir`` unset); the front-end then downloads."""
    raise HTTPProblem(400, "Output directory not configured or doesn't exist")


@router.post("/api/v1/switch_plugin_model")
async def switch_plugin_model() -> None:
    """No plugin is loaded; IOPaint answers an unknown plugin with 200 and does nothing."""
    return None


@router.post("/api/v1/run_plugin_gen_mask")
@router.post("/api/v1/run_plugin_gen_image")
async def run_plugin() -> None:
    """No plugin is loaded; IOPaint's answer for a plugin it does not run."""
    raise HTTPProblem(422, "Plugin not found")


# ----------------------------------------------------------------------------------------------------
# Errors in IOPaint's shape


def _error_body(message: str, detail=None) -> dict:
    return {"error": message, "detail": message if detail is None else detail, "body": "", "errors": message}


class IOPaintErrorBody:
    """ASGI middleware giving every JSON error under ``/api/`` IOPaint's keys: ``errors`` (which its front-end
    shows), ``detail``, ``body``, and ``error`` (this server's one-line message, as on ``/v1``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", ()))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    start = message
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = _reshape(b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", ()) if k != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, reshaping_send)


def _reshape(raw: bytes) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(body, dict) or "errors" in body:
        return raw
    message = body.get("error")
    if not isinstance(message, str):
        message = str(body.get("detail", "request failed"))
    return json.dumps(_error_body(message, body.get("detail")), separators=(",", ":")).encode()


def install(app: FastAPI, ui_folder=None) -> None:
    """Add the ``/api/v1`` routes, the socket.io endpoint and the error reshaping to ``app``; with
    ``ui_folder``, IOPaint's built front-end is served from it at ``/``."""
    hub = EventHub()
    app.state.iopaint_events = hub
    app.include_router(router)
    app.include_router(socketio_events.router(hub))
    app.add_middleware(IOPaintErrorBody)
    if ui_folder is not None:
        app.mount("/", StaticFiles(directory=str(ui_folder), html=True), name="iopaint-ui")
