"""IOPaint's dialect: ``POST /api/v1/inpaint`` with a JSON body of base64 ``image``/``mask`` and IOPaint's
option names (anchors §2.2, §8.5), answered with image bytes and ``X-Seed``, so IOPaint clients work unchanged.

Mapping: ``hd_strategy`` Original/Resize/Crop -> original/resize/crop with its three size fields;
``sd_steps`` -> steps; ``sd_guidance_scale`` -> guidance (values below 1, which IOPaint allows, mean no CFG);
``sd_strength``; ``sd_seed`` (-1 = random); ``sd_mask_blur`` -> feather radius;
``sd_keep_unmasked_area=false`` -> raw decode; ``sd_match_histograms`` -> mean-colour compensation.
Every other IOPaint field (prompts, samplers, ControlNet...) is ignored and named in ``X-Moebius-Ignored``.

IOPaint's front-end sends its Stable Diffusion defaults (50 steps, guidance 7.5, strength 1.0) until the user
moves a slider. Those values are read as unset, so that the preset's or the weights folder's own settings
apply (Moebius: 20 steps, guidance 2.5 or 2.0; the bundled refiner: one step at t = 0 without CFG) instead of
SD's. A user who picks exactly one of those values gets the model's setting for it.
"""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from . import _images
from ._images import HTTPProblem
from .routes import _ERRORS, admitted, result_headers, run_job
from .schemas import IOPaintInpaintRequest

router = APIRouter()

# What IOPaint's front-end sends when the user has not moved the slider (anchors §2.2).
IOPAINT_UI_DEFAULTS = {"sd_steps": 50, "sd_guidance_scale": 7.5, "sd_strength": 1.0}

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


def chosen(req: IOPaintInpaintRequest, field: str) -> float | int | None:
    """The request's value of ``field``, or None where it is absent or IOPaint's untouched UI default."""
    value = getattr(req, field)
    return None if value is None or value == IOPAINT_UI_DEFAULTS[field] else value


@router.post("/api/v1/inpaint", tags=["iopaint"], response_class=Response,
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **_ERRORS})
async def iopaint_inpaint(req: IOPaintInpaintRequest, request: Request) -> Response:
    """IOPaint's ``/api/v1/inpaint``: base64 image and mask in, image bytes out (``X-Seed`` header)."""
    settings = request.app.state.settings
    image_bytes = decode_base64(req.image, "image")
    mask_bytes = decode_base64(req.mask, "mask")

    def decode():
        upload = _images.decode_image(image_bytes, settings.max_pixels)
        mask = _images.decode_mask(mask_bytes, settings.max_pixels)
        _images.check_mask_size(mask, upload.data, resize=None)
        return upload, mask

    guidance = chosen(req, "sd_guidance_scale")
    options = {
        "hd_strategy": req.hd_strategy.lower(),
        "crop_margin": req.hd_strategy_crop_margin,
        "crop_trigger_size": req.hd_strategy_crop_trigger_size,
        "resize_limit": req.hd_strategy_resize_limit,
        "num_inference_steps": chosen(req, "sd_steps"),
        "guidance_scale": None if guidance is None else max(1.0, guidance),
        "strength": chosen(req, "sd_strength"),
        "mask_blur": req.sd_mask_blur,
        "paste": "keep_unmasked" if req.sd_keep_unmasked_area else "none",
        "compensate": req.sd_match_histograms,
    }
    options = {k: v for k, v in options.items() if v is not None}
    seed = None if req.sd_seed < 0 else req.sd_seed
    async with admitted(request, {"image": image_bytes, "mask": mask_bytes}) as deadline:
        upload, mask = await run_in_threadpool(decode)
        image, meta = await run_job(request, _images.pipeline_input(upload), mask, seed, "default", options, deadline)
        body, media = await run_in_threadpool(_images.encode, image, upload, {"moebius": meta.to_json()})
    headers = result_headers(meta)
    ignored = sorted((req.model_extra or {}).keys())
    if ignored:
        headers["X-Moebius-Ignored"] = ",".join(ignored)[:2000]
    return Response(body, media_type=media, headers=headers)


@router.get("/api/v1/server-config", tags=["iopaint"])
async def server_config(request: Request) -> dict:
    """The subset of IOPaint's server config its front-end needs to start."""
    name = request.app.state.runner.model_name
    return {"plugins": [], "modelInfos": [{"name": name, "path": name, "model_type": "inpaint",
                                           "need_prompt": False, "support_strength": True,
                                           "support_outpainting": False}],
            "removeBGModel": "", "removeBGModels": [], "realesrganModel": "", "realesrganModels": [],
            "interactiveSegModel": "", "interactiveSegModels": [], "enableFileManager": False,
            "enableAutoSaving": False, "enableControlnet": False, "controlnetMethod": None,
            "disableModelSwitch": True, "isDesktop": False, "samplers": ["ddim"]}


@router.get("/api/v1/model", tags=["iopaint"])
async def current_model(request: Request) -> dict:
    """IOPaint's current-model route."""
    name = request.app.state.runner.model_name
    return {"name": name, "path": name, "model_type": "inpaint", "need_prompt": False, "support_strength": True,
            "support_outpainting": False, "controlnets": [], "brushnets": [], "support_brushnet": False,
            "support_powerpaint_v2": False, "support_controlnet": False, "support_lcm_lora": False,
            "is_single_file_diffusers": False}
