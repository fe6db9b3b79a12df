"""Native routes: ``POST /v1/inpaint``, ``GET /v1/health``, ``GET /v1/models``, ``GET /v1/progress/{id}``."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..pipeline.presets import get_preset, list_presets
from . import _images
from .batching import Job, QueueFull, RequestTimeout
from .errors import ERROR_RESPONSES, HTTPProblem, describe_validation
from .schemas import Health, InpaintOptions, ModelInfo, Models, Progress

router = APIRouter()

def _multipart_schema() -> dict[str, Any]:
    options = InpaintOptions.model_json_schema()
    properties = {"image": {"type": "string", "format": "binary", "description": "the image (PNG, JPEG, WebP...)"},
                  "mask": {"type": "string", "format": "binary",
                           "description": "white = fill; optional when the image has transparency"}}
    properties.update(options["properties"])
    schema = {"type": "object", "required": ["image"], "properties": properties, "additionalProperties": False}
    if "$defs" in options:
        schema["$defs"] = options["$defs"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post(
    "/v1/inpaint", tags=["inpaint"], response_class=Response, openapi_extra=_multipart_schema(),
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                     "description": "the inpainted image in the input's format; seed in X-Seed, how it was made in "
                                    "X-Moebius-Metadata (and a PNG text chunk)"}, **ERROR_RESPONSES})
async def inpaint(request: Request) -> Response:
    """Fill the white part of ``mask`` in ``image``. Unknown form fields are refused with 422."""
    settings = request.app.state.settings
    try:
        form = await request.form(max_files=2, max_fields=32)
    except HTTPProblem:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed multipart of any kind
        raise HTTPProblem(422, f"could not read the multipart form ({exc})") from None
    files: dict[str, bytes] = {}
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name in files or name in fields:
            raise HTTPProblem(422, f"field {name!r} given twice")
        if isinstance(value, UploadFile):
            if name not in ("image", "mask"):
                raise HTTPProblem(422, f"unknown file field {name!r}; send 'image' and optionally 'mask'")
            files[name] = await value.read()
        elif name in ("image", "mask"):
            raise HTTPProblem(422, f"{name!r} must be a file upload, not a text field")
        elif value != "":
            fields[name] = value
    if "image" not in files:
        raise HTTPProblem(422, "missing file field 'image'")
    try:
        options = InpaintOptions(**fields)
    except ValidationError as exc:
        raise HTTPProblem(422, describe_validation(exc.errors())) from None
    async with admitted(request, files) as deadline:
        upload, mask = await run_in_threadpool(_decode, files["image"], files.get("mask"), options,
                                               settings.max_pixels)
        image, meta = await run_job(request, _images.pipeline_input(upload), mask, options.seed, options.preset,
                                    options.call_options(), deadline)
        body, media = await run_in_threadpool(_images.encode, image, upload, {"moebius": meta.to_json()})
    return Response(body, media_type=media, headers=result_headers(meta))


def _decode(image_bytes: bytes, mask_bytes: bytes | None, options: InpaintOptions, max_pixels: int):
    upload = _images.decode_image(image_bytes, max_pixels)
    if mask_bytes is None:
        if upload.data.alpha is None:
            raise HTTPProblem(422, "no 'mask' given and the image has no transparency to take one from")
        return upload, None
    mask = _images.decode_mask(mask_bytes, max_pixels)
    _images.check_mask_size(mask, upload.data, bool(options.resize_mask))
    return upload, mask


@contextlib.asynccontextmanager
async def admitted(request: Request, uploads: dict[str, bytes]) -> AsyncIterator[float]:
    """Hold room in the pixel budget for the largest of ``uploads`` (name -> bytes, sized from their headers
    before anything is decoded) while the body runs -> its deadline (``time.monotonic()`` seconds).

    Waiting for room and waiting in the batch queue share the request's time limit; a full queue is 503 with
    ``Retry-After``, a request past its limit 504.
    """
    settings, budget = request.app.state.settings, request.app.state.budget
    deadline = time.monotonic() + settings.request_timeout_s
    pixels = max(_images.claimed_pixels(raw, name, settings.max_pixels) for name, raw in uploads.items())
    try:
        async with budget.admit(pixels, settings.request_timeout_s):
            yield deadline
    except QueueFull as exc:
        raise HTTPProblem(503, str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except RequestTimeout:
        raise HTTPProblem(504, f"no answer within {settings.request_timeout_s:g} s") from None


async def run_job(request: Request, image, mask, seed: int | None, preset: str, options: dict[str, Any],
                  deadline: float, request_id: str | None = None):
    """Queue one image (shared by both dialects; inside :func:`admitted`) -> (PIL image, InpaintMetadata).
    Its progress is kept under ``request_id``, else the ``X-Request-Id`` header."""
    batcher = request.app.state.batcher
    if seed is None:
        preset_seed = get_preset(preset).seed
        seed = preset_seed if preset_seed is not None else secrets.randbelow(2**31)
    job = Job(image, mask, seed, {"preset": preset, **options},
              request_id=request_id or request.headers.get("x-request-id"))
    return await batcher.submit(job, max(0.0, deadline - time.monotonic()))


def result_headers(meta) -> dict[str, str]:
    summary = {k: v for k, v in meta.to_dict().items() if k != "settings"}
    return {"X-Seed": str(meta.seed), "X-Moebius-Metadata": json.dumps(summary, separators=(",", ":")),
            "Cache-Control": "no-store"}


@router.get("/v1/health", tags=["server"], response_model=Health)
async def health(request: Request) -> Health:
    """Liveness and queue state (never needs the API key)."""
    batcher, runner, budget = request.app.state.batcher, request.app.state.runner, request.app.state.budget
    return Health(model=runner.model_name, device=str(runner.pipeline.device), queue_depth=batcher.depth,
                  queue_limit=batcher.max_queue, pixels_in_flight=budget.in_flight, pixel_budget=budget.capacity,
                  waiting_for_pixels=budget.waiting, requests=batcher.stats.requests, batches=batcher.stats.batches,
                  images_per_batch=round(batcher.stats.images_per_batch, 3))


@router.get("/v1/models", tags=["server"], response_model=Models)
async def models(request: Request) -> Models:
    """The loaded model and the presets it can run."""
    runner = request.app.state.runner
    pipe = runner.pipeline
    family = pipe.family if hasattr(pipe, "family") else getattr(pipe.unet.config, "family", "unknown")  # ONNX: no unet
    info = ModelInfo(name=runner.model_name, family=str(family),
                     variant=pipe.variant, device=str(pipe.device), dtype=str(pipe.dtype).replace("torch.", ""),
                     presets=list_presets(), size_multiple=pipe.size_multiple)
    return Models(current=runner.model_name, models=[info])


@router.get("/v1/progress/{request_id}", tags=["server"], response_model=Progress)
async def progress(request_id: str, request: Request) -> Progress:
    """Progress of a request sent with an ``X-Request-Id`` header (the editor polls this)."""
    job = request.app.state.batcher.progress(request_id)
    if job is None:
        return Progress(state="unknown")
    return Progress(state=job.state, step=job.step, total=job.total)
