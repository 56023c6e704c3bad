"""Application assembly: middlewares, route tables (each also under /api), static files, serving.

`create_app(ctx)` wires one AppContext into an aiohttp app; `serve(ctx)` binds every address
of `config.listen` on `config.port` and runs until cancelled, then closes sockets and stops
the worker.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from execution.context import AppContext
from model_management.folders import contained
from server import routes_files, routes_info, routes_models, routes_prompt, routes_userdata, security, ws
from server.errors import RequestError, json_errors
from server.keys import CTX, WEB_ROOT

log = logging.getLogger("sumi.server")

DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
API_PREFIXES = ("", "/api")  # every dynamic route answers at /path and /api/path (spec §5.1)
API_TABLES = (routes_prompt.ROUTES, routes_files.ROUTES, routes_userdata.ROUTES, routes_models.ROUTES,
              routes_info.ROUTES, ws.ROUTES)
INTERNAL_TABLES = (routes_files.INTERNAL_ROUTES, routes_info.INTERNAL_ROUTES)
NO_CACHE = {hdrs.CACHE_CONTROL: "no-cache", hdrs.PRAGMA: "no-cache", hdrs.EXPIRES: "0"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def create_app(ctx: AppContext, *, web_root: Path = DEFAULT_WEB_ROOT) -> web.Application:
    app = web.Application(client_max_size=int(ctx.config.max_upload_mb * 1024 * 1024),
                          middlewares=[security.middleware(ctx.config), json_errors])
    app[CTX] = ctx
    app[WEB_ROOT] = web_root
    ws.WsHub(ctx).attach(app)
    for table in API_TABLES:
        for prefix in API_PREFIXES:
            for route in table:
                web.RouteDef(route.method, prefix + route.path, route.handler, route.kwargs).register(app.router)
    for table in INTERNAL_TABLES:
        app.router.add_routes(table)
    app.router.add_get("/", index, name=security.public_name("index"))
    for i, (pack, directory) in enumerate(ctx.registry.web_dirs.items()):
        app.router.add_get(f"/extensions/{quote(pack)}/{{path:.+}}", static_files(directory),
                           name=security.public_name(f"extension_{i}"))
    app.router.add_get("/{path:.+}", static_files(web_root), name=security.public_name("web"))
    app.on_response_prepare.append(cache_control)
    app.on_response_prepare.append(security.response_headers(ctx.config))
    return app


async def index(request: web.Request) -> web.StreamResponse:
    page = request.app[WEB_ROOT] / "index.html"
    if not page.is_file():
        raise RequestError(404, "the editor is not installed (web/index.html is missing)")
    return web.FileResponse(page, headers=NO_CACHE)


def static_files(root: Path) -> Handler:
    """Serve files under `root` (realpath-contained, so symlinks cannot lead out); JSON 404 otherwise."""
    async def serve_file(request: web.Request) -> web.StreamResponse:
        path = contained(root, request.match_info["path"])
        if not path.is_file():
            raise RequestError(404, "Not Found")
        return web.FileResponse(path)
    return serve_file


def _image_cache_policy(status: int) -> str | None:
    if 200 <= status <= 206 or status in (301, 308):
        return "public, max-age=86400"
    if status == 404:
        return "public, max-age=3600"
    if status in (302, 303, 307):
        return "no-cache"
    return None


async def cache_control(request: web.Request, response: web.StreamResponse) -> None:
    """Spec §5.1 matrix: scripts and index JSON revalidate, images cache; existing headers win."""
    path = request.path
    name = path.rsplit("/", 1)[-1]
    if path.endswith((".js", ".css")) or (name.startswith("index") and name.endswith(".json")):
        policy: str | None = "no-cache"
    elif path.lower().endswith(IMAGE_SUFFIXES):
        policy = _image_cache_policy(response.status)
    else:
        policy = None
    if policy is not None:
        response.headers.setdefault(hdrs.CACHE_CONTROL, policy)


async def serve(ctx: AppContext, *, web_root: Path = DEFAULT_WEB_ROOT) -> None:
    """Serve until cancelled; then stop accepting, close sockets, and stop the worker."""
    runner = web.AppRunner(create_app(ctx, web_root=web_root), handle_signals=False)
    await runner.setup()
    try:
        for host in security.listen_addresses(ctx.config.listen):
            await web.TCPSite(runner, host, ctx.config.port).start()
            log.info("Sumi listening on http://%s:%d", f"[{host}]" if ":" in host else host, ctx.config.port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(ctx.worker.stop)
