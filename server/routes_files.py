"""Files of the input/output/temp folders: /view, uploads, folder listings.

Every name from a request passes `checked_name` (malformed → 400) and then `folders.contained`
(realpath, then containment → 403 for /view, 400 for uploads), so symlinks cannot escape.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from aiohttp import hdrs, web
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from model_management.folders import FILE_TYPES, PathRefused, contained, split_annotation
from server.errors import RequestError
from server.keys import CTX
from server.security import checked_name, disposition, served_as

ROUTES = web.RouteTableDef()
INTERNAL_ROUTES = web.RouteTableDef()
CHANNELS = ("rgba", "rgb", "a")


def _file_type(value: str) -> str:
    if value not in FILE_TYPES:
        raise RequestError(400, f"invalid type {value!r}; expected one of {', '.join(FILE_TYPES)}")
    return value


# ------------------------------------------------------------------ /view
@ROUTES.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    folders = request.app[CTX].folders
    query = request.query
    if not query.get("filename"):
        raise RequestError(400, "the filename parameter is required")
    name, file_type = split_annotation(query["filename"], query.get("type") or "output")
    subfolder = query.get("subfolder", "")
    checked_name(name, "filename")
    checked_name(subfolder, "subfolder")
    path = contained(folders.type_dir(_file_type(file_type)), subfolder, name)
    if not path.is_file():
        raise RequestError(404, "file not found")
    channel, preview = query.get("channel"), query.get("preview")
    if channel is not None and channel not in CHANNELS:
        raise RequestError(400, f"invalid channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    shown = os.path.basename(name)
    if preview or channel in ("rgb", "a"):
        body, content_type = await asyncio.to_thread(_render, path, preview, channel)
        return web.Response(body=body, content_type=content_type,
                            headers={hdrs.CONTENT_DISPOSITION: disposition("inline", shown)})
    content_type, content_disposition = served_as(shown)
    return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: content_type,
                                           hdrs.CONTENT_DISPOSITION: content_disposition})


def _render(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """Re-encode for ?preview=fmt;quality or extract ?channel=rgb|a (spec §5.3.4)."""
    out = io.BytesIO()
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA"):
                img = img.convert("RGBA")
            if preview:
                fmt, _, quality = preview.partition(";")
                if fmt not in ("webp", "jpeg") or "a" in (channel or ""):
                    fmt = "webp"
                if fmt == "jpeg" or channel == "rgb":
                    img = img.convert("RGB")
                img.save(out, format=fmt, quality=int(quality) if quality.isdigit() else 90)
                return out.getvalue(), f"image/{fmt}"
            if channel == "rgb":
                img.convert("RGB").save(out, format="PNG")
            else:
                alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
                result = Image.new("RGBA", img.size, (0, 0, 0, 0))
                result.putalpha(alpha)
                result.save(out, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(400, f"the file cannot be read as an image: {exc}") from None
    return out.getvalue(), "image/png"


# ------------------------------------------------------------------ uploads
@dataclass(frozen=True)
class UploadTarget:
    folder: Path
    subfolder: str
    type: str
    overwrite: bool


def _contain_upload(root: Path, *parts: str) -> Path:
    try:
        return contained(root, *parts)
    except PathRefused as exc:
        raise RequestError(400, str(exc)) from None


def _upload_target(request: web.Request, form: Mapping[str, Any]) -> UploadTarget:
    """Where the form's type/subfolder/overwrite fields say the upload goes (checked, not yet created)."""
    file_type = _file_type(str(form.get("type") or "input"))
    subfolder = checked_name(str(form.get("subfolder") or ""), "subfolder")
    folder = _contain_upload(request.app[CTX].folders.type_dir(file_type), subfolder)
    return UploadTarget(folder, subfolder, file_type, str(form.get("overwrite", "")).lower() in ("true", "1"))


def _file_part(form: Mapping[str, Any], field: str) -> web.FileField:
    part = form.get(field)
    if not isinstance(part, web.FileField) or not part.filename:
        raise RequestError(400, f"a file is required in the multipart field {field!r}")
    name = checked_name(part.filename, "file name")
    if "/" in name or name in (".", ".."):
        raise RequestError(400, f"invalid file name {name!r}: it must be a plain file name")
    return part


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Readers never see a half-written file, and an existing entry (even a symlink) is replaced, not followed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def store_upload(target: UploadTarget, filename: str, data: bytes, algorithm: str) -> str:
    """Write an upload; returns the final name.

    Without overwrite, an existing file with the same content is reused and otherwise the name
    becomes 'name (1).ext', 'name (2).ext', ... Exclusive creation makes concurrent uploads safe
    and never writes through a planted symlink; overwrites replace the entry atomically.
    """
    folder = target.folder
    folder.mkdir(parents=True, exist_ok=True)
    if target.overwrite:
        write_atomically(folder / filename, data)
        return filename
    stem, ext = os.path.splitext(filename)
    wanted = None
    for i in range(10000):
        name = filename if i == 0 else f"{stem} ({i}){ext}"
        try:
            with open(folder / name, "xb") as f:
                f.write(data)
            return name
        except FileExistsError:
            wanted = wanted or hashlib.new(algorithm, data).hexdigest()
            try:
                existing = contained(folder, name)
            except PathRefused:
                continue
            if existing.is_file() and _file_digest(existing, algorithm) == wanted:
                return name
    raise RequestError(409, f"too many files named like {filename!r}")


async def _save(request: web.Request, target: UploadTarget, filename: str, data: bytes) -> web.Response:
    name = await asyncio.to_thread(store_upload, target, filename, data, request.app[CTX].config.hashing)
    return web.json_response({"name": name, "subfolder": target.subfolder, "type": target.type})


@ROUTES.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    form = await request.post()
    part = _file_part(form, "image")
    target = _upload_target(request, form)
    return await _save(request, target, part.filename, await asyncio.to_thread(part.file.read))


@ROUTES.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    """The uploaded image's alpha replaces the original's alpha; saved as PNG with its text chunks."""
    form = await request.post()
    part = _file_part(form, "image")
    target = _upload_target(request, form)
    original = _original_image(request, form.get("original_ref"))
    mask = await asyncio.to_thread(part.file.read)
    return await _save(request, target, part.filename, await asyncio.to_thread(_apply_mask, original, mask))


def _original_image(request: web.Request, raw: object) -> Path:
    try:
        ref = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise RequestError(400, 'original_ref must be JSON like {"filename": ..., "subfolder": ..., "type": ...}')
    name, file_type = split_annotation(ref["filename"], ref.get("type") or "output")
    subfolder = checked_name(str(ref.get("subfolder") or ""), "original_ref subfolder")
    path = _contain_upload(request.app[CTX].folders.type_dir(_file_type(file_type)), subfolder,
                           checked_name(name, "original_ref filename"))
    if not path.is_file():
        raise RequestError(404, "the original image of the mask was not found")
    return path


def _apply_mask(original: Path, mask: bytes) -> bytes:
    try:
        with Image.open(original) as img:
            text = dict(getattr(img, "text", {}) or {})
            result = img.convert("RGBA")
        with Image.open(io.BytesIO(mask)) as m:
            alpha = m.convert("RGBA").getchannel("A")
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(400, f"the mask or its original is not a readable image: {exc}") from None
    if alpha.size != result.size:
        alpha = alpha.resize(result.size, Image.Resampling.BILINEAR)
    result.putalpha(alpha)
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    result.save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


# ------------------------------------------------------------------ /internal/files
def _newest_first(root: Path) -> list[str]:
    entries = [e for e in os.scandir(root) if not e.name.startswith(".") and e.is_file()]
    return [e.name for e in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True)]


@INTERNAL_ROUTES.get("/internal/files/{directory_type}")
async def internal_files(request: web.Request) -> web.Response:
    root = request.app[CTX].folders.type_dir(_file_type(request.match_info["directory_type"]))
    return web.json_response(await asyncio.to_thread(_newest_first, root))
