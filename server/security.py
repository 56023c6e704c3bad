"""Who may talk to the server and what it hands out: Host/Origin/Fetch-Metadata checks, CORS,
optional bearer token, and the rules for user-supplied file names and served user files.

Defaults are stricter than ComfyUI's (spec §5.6, ecosystem §2): `Origin: null` is refused,
cross-site fetches are refused, and while the server listens on loopback only a loopback (or
trusted) Host is accepted, which defeats DNS rebinding.  `cors_origin` opts out of the origin
checks on purpose; the Host check stays.
"""
from __future__ import annotations

import hmac
import ipaddress
import mimetypes
import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from execution.context import Config
from server.errors import RequestError, error_response

CORS_METHODS = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
CORS_HEADERS = "Content-Type, Authorization"
# Where a token may come as ?token= because the browser cannot set headers (WebSocket, <img src>).
TOKEN_QUERY_PATHS = frozenset({"/ws", "/api/ws", "/view", "/api/view"})
# Percent-encoded '.', '/' or '\\' left after aiohttp's single decoding means double encoding: an attack.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
# Content types a browser would render or execute; user files of these kinds are only ever downloaded.
_ACTIVE_CONTENT = ("html", "javascript", "ecmascript", "css", "xml", "svg")
_INLINE_PREFIXES = ("image/", "video/", "audio/")


def listen_addresses(listen: str) -> list[str]:
    """The comma list of bind addresses in Config.listen (loopback when empty)."""
    return [a.strip() for a in listen.split(",") if a.strip()] or ["127.0.0.1"]


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_key(url: URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def host_key(host_header: str, scheme: str) -> tuple[str, int | None]:
    url = URL.build(scheme=scheme, authority=host_header)
    return ((url.host or "").lower(), url.port)


@dataclass(frozen=True)
class Policy:
    """The checks derived once from Config."""

    cors_origin: str | None
    trusted: frozenset[tuple[str, str, int | None]]
    trusted_hosts: frozenset[str]
    loopback_only: bool
    token: str | None

    @classmethod
    def from_config(cls, config: Config) -> "Policy":
        trusted = {origin_key(URL(o)) for o in config.trusted_origins}
        return cls(config.cors_origin, frozenset(trusted), frozenset(h for _, h, _ in trusted),
                   all(is_loopback(a) for a in listen_addresses(config.listen)), config.auth_token or None)

    def host_refusal(self, request: web.Request) -> str | None:
        host = request.headers.get(hdrs.HOST)
        if not self.loopback_only or host is None:
            return None
        try:
            name, _ = host_key(host, request.scheme)
        except ValueError:
            return "malformed Host header"
        if is_loopback(name) or name in self.trusted_hosts:
            return None
        return f"Host {host!r} is not a loopback name; this server only answers local requests"

    def origin_refusal(self, request: web.Request) -> str | None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            if origin.strip().lower() == "null":
                return "requests with Origin: null are refused"
            try:
                key = origin_key(URL(origin))
            except ValueError:
                return "malformed Origin header"
            if key in self.trusted:
                return None
            host = request.headers.get(hdrs.HOST, "")
            try:
                same = host_key(host, key[0]) == key[1:]
            except ValueError:
                same = False
            if not same:
                return f"cross-origin request from {origin} refused"
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site" and not _top_level_index(request):
            return "cross-site request refused"
        return None

    def authorized(self, request: web.Request) -> bool:
        if self.token is None or _public(request):
            return True
        supplied = ""
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "bearer":
            supplied = value.strip()
        elif request.path in TOKEN_QUERY_PATHS:
            supplied = request.query.get("token", "")
        return hmac.compare_digest(supplied.encode(), self.token.encode())


def _top_level_index(request: web.Request) -> bool:
    """A user following a link to the editor is fine; anything else cross-site is not."""
    return (request.method in ("GET", "HEAD") and request.path == "/"
            and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate")


def public_name(name: str) -> str:
    """Route name marking a GET route that needs no token: the editor page and static assets."""
    return f"public:{name}"


def _public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    return request.method in ("GET", "HEAD") and bool(name) and name.startswith(public_name(""))


def middleware(config: Config) -> Handler:
    policy = Policy.from_config(config)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = policy.host_refusal(request)
        if refusal is None and policy.cors_origin is None:
            refusal = policy.origin_refusal(request)
        if refusal is not None:
            return error_response(403, refusal)
        if request.method == "OPTIONS":
            return web.Response(status=200)
        if not policy.authorized(request):
            return error_response(401, "a valid bearer token is required",
                                  {hdrs.WWW_AUTHENTICATE: 'Bearer realm="sumi"'})
        return await handler(request)

    return guard


def response_headers(config: Config) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """on_response_prepare hook: nosniff everywhere, CORS headers when enabled."""
    cors = {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: config.cors_origin,
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_METHODS,
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
        hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
    } if config.cors_origin else {}

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        for name, value in cors.items():
            response.headers.setdefault(name, value)

    return add


# ---------------------------------------------------------------------------------------------
# user-supplied names and served user files


def checked_name(value: str, what: str) -> str:
    """Refuse malformed relative paths with a 400 before the disk is touched.

    Containment (realpath, symlinks) is checked afterwards by `folders.contained`; this only
    rejects what is never legitimate: NUL, backslashes, absolute or drive paths, double-encoded
    separators and '..' segments.  Names such as 'test..png' are fine.
    """
    problem = None
    if "\x00" in value or "\\" in value:
        problem = "NUL bytes and backslashes are not allowed"
    elif value.startswith("/") or _DRIVE.match(value):
        problem = "absolute paths are not allowed"
    elif _ENCODED_SEPARATOR.search(value):
        problem = "percent-encoded dots or separators are not allowed"
    elif ".." in value.split("/"):
        problem = "'..' segments are not allowed"
    if problem:
        raise RequestError(400, f"invalid {what} {value!r}: {problem}")
    return value


def disposition(kind: str, name: str) -> str:
    """A Content-Disposition value safe for any file name (ASCII fallback plus RFC 5987 form)."""
    plain = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
    header = f'{kind}; filename="{plain}"'
    if plain != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


def served_as(name: str) -> tuple[str, str]:
    """(Content-Type, Content-Disposition) for a user file: active content is never rendered inline."""
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if any(word in content_type for word in _ACTIVE_CONTENT):
        return "application/octet-stream", disposition("attachment", name)
    kind = "inline" if content_type.startswith(_INLINE_PREFIXES) else "attachment"
    return content_type, disposition(kind, name)
