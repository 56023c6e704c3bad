"""Model folders as the editor sees them: listings, embeddings, safetensors metadata, previews.

Read-only; every file name from a request goes through `folders.contained` (the preview route is
where upstream had CVE-2026-56671, a path traversal).
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from model_management.folders import Folders, PathRefused, contained
from server.errors import RequestError
from server.keys import CTX
from server.security import checked_name

ROUTES = web.RouteTableDef()
METADATA_HEADER_LIMIT = 1024 * 1024
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
HIDDEN_FROM_EXPERIMENT = frozenset({"configs", "custom_nodes"})


def _known_folder(folders: Folders, key: str) -> str:
    if key not in folders.models:  # legacy 'clip'/'unet' deliberately unmapped here, as upstream
        raise RequestError(404, f"unknown model folder {key!r}")
    return key


@ROUTES.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(request.app[CTX].folders.model_keys())


@ROUTES.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folders = request.app[CTX].folders
    key = _known_folder(folders, request.match_info["folder"])
    return web.json_response(await asyncio.to_thread(folders.list_models, key))


@ROUTES.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    names = await asyncio.to_thread(request.app[CTX].folders.list_models, "embeddings")
    return web.json_response([os.path.splitext(n)[0] for n in names])


# ------------------------------------------------------------------ safetensors metadata
def read_safetensors_metadata(path: Path) -> dict | None:
    """The `__metadata__` of a safetensors header, reading at most 1 MiB of header."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > METADATA_HEADER_LIMIT:
            return None
        try:
            header = json.loads(f.read(size))
        except ValueError:
            return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else None


@ROUTES.get("/view_metadata/{folder_name}")
async def view_metadata(request: web.Request) -> web.Response:
    filename = checked_name(request.query.get("filename", ""), "filename")
    if not filename.endswith(".safetensors"):
        raise RequestError(404, "only .safetensors files carry metadata")
    try:
        path = request.app[CTX].folders.model_path(request.match_info["folder_name"], filename)
    except FileNotFoundError:
        raise RequestError(404, "model file not found") from None
    metadata = await asyncio.to_thread(read_safetensors_metadata, path)
    if metadata is None:
        raise RequestError(404, "the file has no readable metadata")
    return web.json_response(metadata)


# ------------------------------------------------------------------ /experiment/models
@ROUTES.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    folders = request.app[CTX].folders
    return web.json_response([{"name": key, "folders": [str(p) for p in paths]}
                              for key, paths in folders.models.items() if key not in HIDDEN_FROM_EXPERIMENT])


def _model_entries(folders: Folders, key: str) -> list[dict]:
    """Each listed model with the index of the folder it was found in (first match wins)."""
    entries = []
    for name in folders.list_models(key):
        for index, root in enumerate(folders.models[key]):
            path = root / name
            if path.exists():
                st = path.stat()
                entries.append({"name": name, "pathIndex": index, "modified": st.st_mtime,
                                "created": st.st_ctime, "size": st.st_size})
                break
    return entries


@ROUTES.get("/experiment/models/{folder}")
async def experiment_model_files(request: web.Request) -> web.Response:
    folders = request.app[CTX].folders
    key = _known_folder(folders, request.match_info["folder"])
    return web.json_response(await asyncio.to_thread(_model_entries, folders, key))


def _as_webp(source: bytes | Path) -> bytes | None:
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            out = io.BytesIO()
            img.convert("RGBA").save(out, format="WEBP")
            return out.getvalue()
    except (UnidentifiedImageError, OSError):
        return None


def model_preview(root: Path, filename: str) -> bytes | None:
    """A sibling image (name.png, name.preview.png, ...) or the first `ssmd_cover_images` entry, as WEBP."""
    model = contained(root, filename)
    stem = os.path.splitext(filename)[0]
    for candidate in (f"{stem}{infix}{suffix}" for infix in ("", ".preview") for suffix in PREVIEW_SUFFIXES):
        try:
            path = contained(root, candidate)
        except PathRefused:
            continue
        if path.is_file():
            return _as_webp(path)
    if model.suffix != ".safetensors" or not model.is_file():
        return None
    covers = (read_safetensors_metadata(model) or {}).get("ssmd_cover_images")
    try:
        covers = json.loads(covers) if isinstance(covers, str) else covers
        first = covers[0].split(",", 1)[-1]  # a data: URL or bare base64
        return _as_webp(base64.b64decode(first, validate=True))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None


@ROUTES.get("/experiment/models/preview/{folder}/{path_index}/{filename}")
async def experiment_model_preview(request: web.Request) -> web.Response:
    folders = request.app[CTX].folders
    roots = folders.models[_known_folder(folders, request.match_info["folder"])]
    index = request.match_info["path_index"]
    if not index.isdigit() or int(index) >= len(roots):
        raise RequestError(404, "no such model folder index")
    root = roots[int(index)]
    filename = checked_name(request.match_info["filename"], "filename")
    preview = await asyncio.to_thread(model_preview, root, filename)
    if preview is None:
        raise RequestError(404, "no preview for this model")
    return web.Response(body=preview, content_type="image/webp")
