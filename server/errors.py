"""Error responses: FastAPI's ``{"detail": ...}`` on the planner endpoints, OpenAI's
``{"error": {message, type, param, code}}`` under ``/v1``. Never a traceback.

- invalid JSON -> 400; JSON of the wrong shape -> 422 with one entry per field on the planner endpoints,
  400 naming the first field in ``error.param`` on the OpenAI API (as OpenAI and vLLM answer it);
- body over ``max_body_bytes`` -> 413 (checked on the raw stream, see :mod:`server.app`);
- missing or wrong API key -> 401; anything unexpected -> 500 with a fixed message;
- a pass that fell back under ``fallback.serve = error`` -> 503 in the OpenAI shape on every path, with
  the fallback reason as ``error.code`` and in the ``X-Fallback-Reason`` header (:func:`fallback_error`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _StarletteJSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.openai_api import ErrorBody, ErrorResponse
from engines.shadow.redact import json_bytes, redact_text

log = logging.getLogger("travel_slm.errors")


class JSONResponse(_StarletteJSONResponse):
    """Every JSON body of the service: UTF-8 whatever the text holds. A lone surrogate that a client sent
    (``"\\ud800"``, half an emoji) and that an answer echoes is written back as the same ``\\ud800``
    escape, instead of failing the response with a 500 (issue 11, finding 1)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)

_OPENAI_TYPES = {401: "invalid_request_error", 500: "server_error", 503: "server_error"}
_DEFAULT_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
                  413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_shape",
                  431: "request_header_fields_too_large",
                  500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error answered with ``status``; rendered in the planner or the OpenAI shape by path."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 detail: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                 openai_status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.openai_status = openai_status
        """The status on the OpenAI API when it differs (a request of the wrong shape: 400, not 422)."""
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.param = param
        self.detail = detail
        self.headers = headers


class BodyTooLargeError(StarletteHTTPException):
    """Raised from the request stream when the body passes the limit (FastAPI re-raises HTTPException)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


# --- documented error bodies (OpenAPI) ---------------------------------------------------------------


class ErrorMessage(BaseModel):
    """Planner endpoints: an error with a message."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class FieldErrors(BaseModel):
    """Planner endpoints: the request is JSON of the wrong shape (one entry per field)."""

    detail: list[FieldError]


PLANNER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "Invalid JSON, or an unknown X-Engine value."},
    401: {"model": ErrorMessage, "description": "Missing or wrong API key (when one is configured)."},
    413: {"model": ErrorMessage, "description": "Body over the size limit."},
    422: {"model": FieldErrors, "description": "JSON of the wrong shape; one message per field."},
}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid JSON, a request or pass input of the wrong shape or type "
          "(error.param names the field, e.g. stream, max_tokens, messages.0.content.turn.slot_state), an "
          "unsupported parameter (tools, n > 1), or a foreign response_format."},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when one is configured)."},
    404: {"model": ErrorResponse, "description": "Unknown model."},
    413: {"model": ErrorResponse, "description": "Body over the size limit."},
}


class FallbackErrorBody(ErrorBody):
    fallback_reason: str
    fallback_detail: str | None
    pass_: str = Field(alias="pass")
    engine: str


class FallbackError(BaseModel):
    """``fallback.serve = error``: the pass fell back; the reason is ``error.code`` and ``fallback_reason``."""

    error: FallbackErrorBody


FALLBACK_503: dict[int | str, dict[str, Any]] = {
    503: {"model": FallbackError, "description": "With fallback.serve = error: the engine's answer could not be "
          "served (the reason is in error.code, error.fallback_reason and the X-Fallback-Reason header)."},
}


# --- fallback --------------------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")
DETAIL_LIMIT = 300


def fallback_detail(error: str | None) -> str | None:
    """The fallback's detail text for callers and logs: one line, redacted (e-mails, phones, cards, the
    configured secrets), at most 300 characters; None when there is none."""
    if not error:
        return None
    line = redact_text(_SPACES.sub(" ", str(error)).strip())  # the environment's secrets too, wholly
    return line[:DETAIL_LIMIT] or None


def fallback_error(pass_: str, engine: str, reason: str, detail: str | None) -> JSONResponse:
    """HTTP 503, OpenAI error shape, for a pass that fell back under ``fallback.serve = error``."""
    message = f"the {engine} engine could not serve the {pass_} pass: fell back ({reason})"
    if detail:
        message += f": {detail}"
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": reason,
                      "fallback_reason": reason, "fallback_detail": detail, "pass": pass_, "engine": engine}}
    return JSONResponse(body, status_code=503, headers={"X-Fallback-Reason": reason})


# --- rendering ------------------------------------------------------------------------------------------


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(("/v1/shadow", "/v1/stats"))


def error_body(path: str, status: int, message: str, *, code: str | None = None, param: str | None = None,
               detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if is_openai_path(path):
        return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                          "param": param, "code": code or _DEFAULT_CODES.get(status, "error")}}
    if detail is not None:
        return {"detail": detail}
    return {"detail": message}


def error_response(path: str, status: int, message: str, *, code: str | None = None, param: str | None = None,
                   detail: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message, code=code, param=param, detail=detail), status_code=status,
                        headers=headers)


#: pydantic's names of union members in an error's ``loc`` (``str``, ``list[str]``, ``literal['a']``,
#: ``function-after[...]``): not fields, so left out of the path a client reads
_UNION_TAG = re.compile(r"^(?:str|int|float|bool|bytes|none|[a-z][a-z-]*\[.*\])$", re.DOTALL)


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors -> ``[{loc, msg, type}]`` (the offending input is not echoed). The ``loc`` is
    the field path (union member names dropped); the members' errors at one path are one entry."""
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str | int, ...], dict[str, Any]] = {}
    for err in errors[:50]:
        loc = [*prefix, *(p for p in err.get("loc", ()) if isinstance(p, int)
                          or (isinstance(p, str) and not _UNION_TAG.match(p)))]
        msg = str(err.get("msg", "invalid"))[:500]
        same = seen.get(tuple(loc))
        if same is not None:
            if msg not in same["msg"]:
                same["msg"] = f"{same['msg']}, or {msg[:1].lower()}{msg[1:]}"[:1000]
            continue
        entry = {"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))}
        seen[tuple(loc)] = entry
        out.append(entry)
    return out


def summary(detail: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in d['loc'] if p != 'body') or '<root>'}: {d['msg']}" for d in detail[:10]]
    return "; ".join(parts) or "invalid request"


def _param(detail: list[dict[str, Any]]) -> str | None:
    first = detail[0]["loc"] if detail else []
    return ".".join(str(p) for p in first if p != "body") or None


def _shape_code(detail: list[dict[str, Any]]) -> str:
    """OpenAI's codes for a parameter of the wrong shape: ``missing_required_parameter``, ``invalid_type``
    or ``invalid_value`` (from the first field's pydantic error type)."""
    kind = str(detail[0]["type"]) if detail else ""
    if kind == "missing":
        return "missing_required_parameter"
    if kind.endswith(("_type", "_parsing")) or kind in ("model_attributes_type", "union_tag_invalid"):
        return "invalid_type"
    return "invalid_value"


def shape_error(detail: list[dict[str, Any]]) -> ApiError:
    """JSON of the wrong shape: 422 with ``detail`` on the planner endpoints, 400 on the OpenAI API."""
    return ApiError(422, summary(detail), param=_param(detail), detail=detail, openai_status=400,
                    code=_shape_code(detail))


def validation_error(exc: ValidationError, prefix: tuple[str | int, ...] = ("body",)) -> ApiError:
    return shape_error(field_errors(exc.errors(include_url=False, include_input=False), prefix))


def api_error_response(path: str, exc: ApiError) -> JSONResponse:
    if exc.openai_status is not None and is_openai_path(path):
        return error_response(path, exc.openai_status, exc.message, code=exc.code, param=exc.param,
                              headers=exc.headers)
    return error_response(path, exc.status, exc.message, code=exc.code, param=exc.param, detail=exc.detail,
                          headers=exc.headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            reason = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(request.url.path, 400, f"invalid JSON body: {reason}", code="invalid_json")
        return api_error_response(request.url.path, shape_error(field_errors(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        detail = None
        if exc.status_code == 422:  # 422 always carries field-level entries (FastAPI's HTTPValidationError)
            if isinstance(exc.detail, list):
                detail = field_errors(exc.detail)
            else:
                detail = [{"loc": [], "msg": message, "type": "value_error"}]
            message = summary(detail)
        return error_response(request.url.path, exc.status_code, message, detail=detail,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"path": request.scope.get("route_path", ""), "error": type(exc).__name__},
                  exc_info=exc)
        return error_response(request.url.path, 500, "internal server error")
