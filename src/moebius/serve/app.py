"""The FastAPI application: ``create_app(settings)`` or ``create_app(pipeline=...)`` (anchors §8.5).

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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InputError, MoebiusError
from ._images import HTTPProblem
from ._runner import PipelineRunner
from .batching import MicroBatcher

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
    model_name: str = "moebius"
    max_upload_bytes: int = 40 * 2**20
    max_pixels: int = 50_000_000
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 32
    request_timeout_s: float = 300.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    editor: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def create_app(settings: ServeSettings | None = None, *, pipeline: Any = None) -> FastAPI:
    """Build the app. With ``pipeline`` (a MoebiusInpaintPipeline) it is used as is; otherwise the lifespan
    loads ``settings.weights``."""
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        pipe = pipeline if pipeline is not None else _load(settings)
        runner = PipelineRunner(pipe, settings.model_name)
        batcher = MicroBatcher(runner.run_batch, max_batch=settings.max_batch,
                               max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue)
        await batcher.start()
        app.state.runner, app.state.batcher = runner, batcher
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="Moebius inpainting server", version=_version(), lifespan=lifespan,
                  description="Inpaint images with Moebius. White (255) in the mask means *fill*. Native API under "
                              "`/v1`; IOPaint's dialect at `/api/v1/inpaint`; the editor at `/`.")
    app.state.settings = settings
    _add_error_handlers(app)
    _add_guards(app, settings)

    from . import iopaint_compat, routes

    app.include_router(routes.router)
    app.include_router(iopaint_compat.router)
    if settings.editor:
        static = resources.files("moebius.serve") / "static"
        app.mount("/", StaticFiles(directory=str(static), html=True), name="editor")
    return app


def _load(settings: ServeSettings) -> Any:
    from ..onnx.layout import is_export_folder

    if settings.weights is None:
        raise MoebiusError("no weights configured")
    if is_export_folder(settings.weights):
        from ..onnx.pipeline import OnnxInpaintPipeline

        onnx_pipe = OnnxInpaintPipeline(settings.weights)
        onnx_pipe.set_progress_bar_config(disable=True)
        return onnx_pipe

    import torch

    from ..pipeline.pipeline import MoebiusInpaintPipeline

    pipe = MoebiusInpaintPipeline.from_pretrained(settings.weights, variant=settings.variant, vae=settings.vae,
                                                  fast=settings.fast)
    try:
        pipe.to(settings.device, getattr(torch, settings.dtype))
    except (RuntimeError, AssertionError, ValueError) as exc:  # unknown or unavailable device
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot use device {settings.device!r}: {detail}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _version() -> str:
    from .. import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------
# Errors: every failure is JSON {"error": "..."} with a 4xx (or 503/504) status


def _error(status: int, message: str, headers: dict[str, str] | None = None, detail: list | None = None):
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(MoebiusError)
    async def _moebius(request: Request, exc: MoebiusError):
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(422, describe_validation(exc.errors()), detail=_jsonable(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list as one line: ``unknown field 'hd_stratgy'; num_inference_steps: ...``."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form")]
        name = ".".join(loc) or "request"
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field {name!r}")
        else:
            parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v if isinstance(v, (str, int, float, list, tuple, type(None))) else str(v))
             for k, v in err.items() if k != "ctx"} for err in errors]


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
                return _error(401, "missing or wrong API key: send it as 'X-API-Key: <key>' or "
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
    Content-Length (a chunked upload is counted as it arrives)."""

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
                    return await _error(413, message)(scope, receive, send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HTTPProblem(413, message)
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except HTTPProblem as exc:
            if not started:
                await _error(exc.status, exc.message)(scope, receive, send)
