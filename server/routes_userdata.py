"""Per-user storage (spec §5.2): /users, /userdata, /v2/userdata and /settings.

Sumi is single-user: everything lives in `user/default`.  `__`-prefixed (system) users are never
reachable, and every path is confined to the user's folder with `folders.contained` (→ 403).
Files are served as downloads with nosniff so stored content can never run as a page.
"""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from model_management.folders import contained
from server.errors import RequestError, json_body
from server.keys import CTX
from server.routes_files import write_atomically
from server.security import disposition

ROUTES = web.RouteTableDef()
DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
# Types the editor loads as subresources; anything else is a plain download.
USERDATA_TYPES = {".json": "application/json", ".css": "text/css"}


def _user_root(request: web.Request) -> Path:
    if request.headers.get("comfy-user", "").startswith("__"):
        raise RequestError(403, "system users are not accessible")
    return request.app[CTX].folders.user / DEFAULT_USER


def _user_path(request: web.Request, relative: str) -> Path:
    return contained(_user_root(request), relative)


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() != "false"


def _file_info(path: Path, relative: str) -> dict:
    st = path.stat()
    return {"path": relative, "size": st.st_size, "modified": st.st_mtime, "created": st.st_ctime}


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root.resolve()).as_posix()


# ------------------------------------------------------------------ users
@ROUTES.get("/users")
async def get_users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": _user_root(request).is_dir()})


@ROUTES.post("/users")
async def post_users(request: web.Request) -> web.Response:
    raise RequestError(400, "Sumi runs in single-user mode; all user data belongs to the 'default' user")


# ------------------------------------------------------------------ /userdata
def _list_files(folder: Path, recurse: bool) -> list[str]:
    if not recurse:
        return sorted(e.name for e in os.scandir(folder) if e.is_file())
    found = []
    for dirpath, _, filenames in os.walk(folder):
        found.extend(Path(dirpath, fn).relative_to(folder).as_posix() for fn in filenames)
    return sorted(found)


@ROUTES.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    directory = request.query.get("dir")
    if not directory:
        raise RequestError(400, "the dir parameter is required")
    folder = _user_path(request, directory)
    if not folder.is_dir():
        raise RequestError(404, f"directory {directory!r} not found")
    files = await asyncio.to_thread(_list_files, folder, _flag(request, "recurse"))
    if _flag(request, "full_info"):
        return web.json_response([_file_info(folder / rel, rel) for rel in files])
    if _flag(request, "split"):
        return web.json_response([[rel, *rel.split("/")] for rel in files])
    return web.json_response(files)


@ROUTES.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise RequestError(404, "file not found")
    return web.FileResponse(path, headers={
        hdrs.CONTENT_TYPE: USERDATA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        hdrs.CONTENT_DISPOSITION: disposition("attachment", path.name)})


def _written(request: web.Request, path: Path) -> web.Response:
    relative = _relative(path, _user_root(request))
    return web.json_response(_file_info(path, relative) if _flag(request, "full_info") else relative)


@ROUTES.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    path = _user_path(request, request.match_info["file"])
    if path.exists() and not _flag(request, "overwrite", True):
        raise RequestError(409, "File already exists")
    if path.is_dir():
        raise RequestError(400, "a directory has that name")
    data = await request.read()
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(write_atomically, path, data)
    return _written(request, path)


@ROUTES.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise RequestError(404, "file not found")
    path.unlink()
    return web.Response(status=204)


@ROUTES.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    source = _user_path(request, request.match_info["file"])
    dest = _user_path(request, request.match_info["dest"])
    if not source.is_file():
        raise RequestError(404, "source file not found")
    if dest.exists() and not _flag(request, "overwrite", True):
        raise RequestError(409, "File already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)
    return _written(request, dest)


# ------------------------------------------------------------------ /v2/userdata
def _entries(folder: Path, root: Path) -> list[dict]:
    entries = []
    for entry in os.scandir(folder):
        is_dir = entry.is_dir()
        item: dict[str, Any] = {"name": entry.name, "path": _relative(Path(entry.path), root),
                                "type": "directory" if is_dir else "file"}
        if not is_dir:
            st = entry.stat()
            item.update(size=st.st_size, modified=st.st_mtime)
        entries.append(item)
    return sorted(entries, key=lambda e: (e["type"] != "directory", e["name"].lower()))


@ROUTES.get("/v2/userdata")
async def list_userdata_v2(request: web.Request) -> web.Response:
    root = _user_root(request)
    folder = _user_path(request, request.query.get("path", ""))
    if not root.exists():
        return web.json_response([])
    if not folder.exists():
        raise RequestError(404, "path not found")
    if not folder.is_dir():
        raise RequestError(400, "path is not a directory")
    return web.json_response(await asyncio.to_thread(_entries, folder, root))


# ------------------------------------------------------------------ /settings
def _settings_file(request: web.Request) -> Path:
    return _user_root(request) / SETTINGS_FILE


def _read_settings(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _update_settings(path: Path, changes: dict) -> None:
    """Read-modify-write with no await in between, so concurrent requests cannot lose updates."""
    settings = _read_settings(path)
    settings.update(changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(settings, indent=4).encode())


@ROUTES.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(_settings_file(request)))


@ROUTES.get("/settings/{id}")
async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(_settings_file(request)).get(request.match_info["id"]))


@ROUTES.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    changes = await json_body(request)
    if not isinstance(changes, dict):
        raise RequestError(400, "settings must be a JSON object")
    _update_settings(_settings_file(request), changes)
    return web.Response()


@ROUTES.post("/settings/{id}")
async def post_setting(request: web.Request) -> web.Response:
    value = await json_body(request)
    _update_settings(_settings_file(request), {request.match_info["id"]: value})
    return web.Response()
