"""Every error a client sees is JSON: `{"error": "..."}` (POST /prompt keeps its richer body).

Handlers raise `RequestError` (or let `PathRefused` escape) instead of building responses, so
the status codes of a route read as a list of checks.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from model_management.folders import PathRefused

log = logging.getLogger("sumi.server")


class RequestError(Exception):
    """A client mistake with the HTTP status it deserves."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REQUIRED = object()


async def json_body(request: web.Request, *, if_empty: Any = _REQUIRED) -> Any:
    """The parsed JSON body; malformed JSON (or a missing required body) is a 400."""
    raw = await request.read()
    if not raw and if_empty is not _REQUIRED:
        return if_empty
    try:
        return json.loads(raw)
    except ValueError:
        raise RequestError(400, "the request body is not valid JSON") from None


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn exceptions (ours and aiohttp's text 4xx/5xx) into JSON error bodies."""
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc.status, exc.message)
    except PathRefused as exc:
        return error_response(403, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return error_response(exc.status, exc.reason, kept)
    except Exception:  # noqa: BLE001 - a handler bug must still answer in the documented shape
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "Internal server error (see the server log)")
