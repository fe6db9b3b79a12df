"""How the server refuses a request: :class:`HTTPProblem`, the JSON body ``{"error": "..."}`` every failure
gets (with a 4xx, 503 or 504 status), the one-line description of a validation error, and the error
responses the OpenAPI schema declares."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import MoebiusError
from .schemas import ErrorResponse


class HTTPProblem(Exception):
    """A request the server refuses: ``status`` (4xx/5xx), a one-line ``message``, optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (401, "missing or wrong API key"), (413, "upload or image dimensions too large"),
        (422, "not an image, damaged, mask of another size, or an invalid or unknown option"),
        (503, "queue full; see Retry-After"), (504, "not answered within the request timeout"))
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None, detail: list | None = None):
    """The JSON answer ``{"error": message}`` (plus pydantic's ``detail`` list for a validation error)."""
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every failure with :func:`error_response`: HTTPProblem, a MoebiusError (422), a validation error
    (422, described on one line) and Starlette's own HTTP errors."""
    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(MoebiusError)
    async def _moebius(request: Request, exc: MoebiusError):
        return error_response(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(422, describe_validation(exc.errors()), detail=_jsonable(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list as one line: ``unknown field 'hd_stratgy'; num_inference_steps: ...``."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form")]
        name = ".".join(loc) or "request"
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field {name!r}")
        elif err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "cannot be parsed")
            where = f" at character {loc[0]}" if loc and loc[0].isdigit() else ""
            parts.append(f"body is not valid JSON: {reason}{where}")
        else:
            parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v if isinstance(v, (str, int, float, list, tuple, type(None))) else str(v))
             for k, v in err.items() if k != "ctx"} for err in errors]
