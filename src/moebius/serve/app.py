"""The FastAPI application: ``create_app(settings)`` or ``create_app(pipeline=...)``.

The model is loaded in the lifespan, so importing this module or building the app loads no weights
(tests inject a tiny pipeline instead). Routes live in :mod:`.routes` (native ``/v1``) and
:mod:`.iopaint_compat` (IOPaint's ``/api/v1`` dialect); the editor is ``static/`` at ``/``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from ..errors import MoebiusError
from . import iopaint_compat, routes
from ._runner import PipelineRunner
from .admission import PixelBudget
from .batching import MicroBatcher
from .errors import HTTPProblem, add_error_handlers, error_response
from .iopaint_ui import iopaint_web_app

logger = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Everything ``moebius serve`` can set. Sizes are bytes and pixels; times are seconds."""

    weights: str | Path | None = None
    variant: str | None = None
    vae: str | Path | None = None
    device: str = "cpu"
    dtype: str = "float32"
    fast: bool = True
    compile: bool = False  # torch.compile the U-Net; each new request size compiles once
    model_name: str = "moebius"
    max_upload_bytes: int = 40 * 2**20
    max_pixels: int = 50_000_000
    max_pixels_in_flight: int = 50_000_000  # decoded pixels admitted at once (see .admission)
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 32
    request_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    max_connections: int = 64
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    editor: bool = True
    ui: Literal["moebius", "iopaint"] = "moebius"  # the front-end at /: our editor, or IOPaint's installed beside
    extra: dict[str, Any] = field(default_factory=dict)


def create_app(settings: ServeSettings | None = None, *, pipeline: Any = None) -> FastAPI:
    """Build the app. With ``pipeline`` (a MoebiusInpaintPipeline) it is used as is; otherwise the lifespan
    loads ``settings.weights``."""
    settings = settings or ServeSettings()
    if settings.max_pixels_in_flight < settings.max_pixels:
        raise ValueError(f"max_pixels_in_flight ({settings.max_pixels_in_flight}) must be at least max_pixels "
                         f"({settings.max_pixels}), or the largest image accepted could never be admitted")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        pipe = pipeline if pipeline is not None else _load(settings)
        runner = PipelineRunner(pipe, settings.model_name)
        batcher = MicroBatcher(runner.run_batch, max_batch=settings.max_batch,
                               max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue)
        await batcher.start()
        budget = PixelBudget(settings.max_pixels_in_flight, max_waiting=settings.max_queue,
                             retry_after=batcher.retry_after)
        app.state.runner, app.state.batcher, app.state.budget = runner, batcher, budget
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="Moebius inpainting server", version=_version(), lifespan=lifespan,
                  description="Inpaint images with Moebius. White (255) in the mask means *fill*. Native API under "
                              "`/v1`; IOPaint's dialect at `/api/v1/inpaint`; the editor at `/`.")
    app.state.settings = settings
    add_error_handlers(app)
    _add_guards(app, settings)

    app.include_router(routes.router)
    iopaint_compat.install(app, ui_folder=iopaint_web_app() if settings.editor and settings.ui == "iopaint" else None)
    if settings.editor and settings.ui == "moebius":
        static = resources.files("moebius.serve") / "static"
        app.mount("/", StaticFiles(directory=str(static), html=True), name="editor")
    return app


def _load(settings: ServeSettings) -> Any:
    from ..onnx.layout import is_export_folder

    if settings.weights is None:
        raise MoebiusError("no weights configured")
    if is_export_folder(settings.weights):
        from ..onnx.pipeline import OnnxInpaintPipeline

        if settings.compile:
            raise MoebiusError(f"--compile compiles torch weights; {settings.weights} is an ONNX export")

        onnx_pipe = OnnxInpaintPipeline(settings.weights)
        onnx_pipe.set_progress_bar_config(disable=True)
        return onnx_pipe

    from ..pipeline.builder import build_pipeline

    pipe = build_pipeline(settings.weights, variant=settings.variant, vae=settings.vae, device=settings.device,
                          dtype=settings.dtype, fast=settings.fast, compile=settings.compile)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------
# Guards: upload size, API key, CORS


def _add_guards(app: FastAPI, settings: ServeSettings) -> None:
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    if settings.api_key:
        key = settings.api_key

        @app.middleware("http")
        async def _api_key(request: Request, call_next):
            path = request.url.path
            guarded = path.startswith(("/v1/", "/api/")) and path != "/v1/health"
            if guarded and not _key_ok(request, key):
                return error_response(401, "missing or wrong API key: send it as 'X-API-Key: <key>' or "
                                           "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
            return await call_next(request)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["X-Seed", "X-Moebius-Metadata"])


def _key_ok(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


class BodyLimit:
    """ASGI middleware refusing a request body over ``max_bytes`` with 413, whether or not it declares
    Content-Length (a chunked upload is counted as it arrives).

    Past the limit, whatever the app answers instead (FastAPI turns a failed JSON read into a 400) is dropped
    and the 413 is sent in its place.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        message = f"request body too large: this server accepts at most {limit / 2**20:.1f} MiB"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    return await error_response(413, message)(scope, receive, send)
        seen = 0
        over = started = False

        async def counting_receive():
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    over = True
                    raise HTTPProblem(413, message)
            return msg

        async def guarded_send(msg):
            nonlocal started
            if over:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except HTTPProblem:
            if not over:
                raise
        if over and not started:
            await error_response(413, message)(scope, receive, send)
