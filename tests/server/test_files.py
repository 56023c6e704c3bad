"""/view, uploads, /view_metadata, /internal/files, userdata and settings."""
from __future__ import annotations

import io
import json
import os

import aiohttp
import pytest
from PIL import Image, PngImagePlugin

from tests.server.support import ctx_of


def png_bytes(color: tuple = (255, 0, 0, 255), size: tuple = (4, 4), text: dict | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGBA", size, color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def form(data: bytes, filename: str = "up.png", **fields: str) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        f.add_field(key, value)
    return f


async def upload(client, data: bytes, filename: str = "up.png", **fields: str) -> dict:
    resp = await client.post("/upload/image", data=form(data, filename, **fields))
    assert resp.status == 200, await resp.text()
    return await resp.json()


# ------------------------------------------------------------------ uploads
async def test_upload_collision_naming_and_dedup(client):
    input_dir = ctx_of(client).folders.input
    a, b, c = png_bytes((1, 2, 3, 255)), png_bytes((4, 5, 6, 255)), png_bytes((7, 8, 9, 255))
    assert await upload(client, a) == {"name": "up.png", "subfolder": "", "type": "input"}
    assert (await upload(client, a))["name"] == "up.png"  # same content: deduplicated
    assert (await upload(client, b))["name"] == "up (1).png"
    assert (await upload(client, b))["name"] == "up (1).png"
    assert (await upload(client, c))["name"] == "up (2).png"
    assert (input_dir / "up (1).png").read_bytes() == b
    assert (await upload(client, c, overwrite="true"))["name"] == "up.png"
    assert (input_dir / "up.png").read_bytes() == c
    assert sorted(os.listdir(input_dir)) == ["up (1).png", "up (2).png", "up.png"]  # no temp files left


async def test_upload_subfolder_and_types(client):
    folders = ctx_of(client).folders
    body = await upload(client, png_bytes(), subfolder="a/b", type="temp")
    assert body == {"name": "up.png", "subfolder": "a/b", "type": "temp"}
    assert (folders.temp / "a" / "b" / "up.png").is_file()
    assert (await upload(client, png_bytes(), filename="test..png", type="output"))["name"] == "test..png"


@pytest.mark.parametrize("fields, filename", [
    ({"type": "models"}, "up.png"),
    ({"subfolder": "../../etc"}, "up.png"),
    ({"subfolder": "/abs"}, "up.png"),
    ({"subfolder": "a\\..\\.."}, "up.png"),
    ({"subfolder": "%2e%2e"}, "up.png"),
    ({}, "../evil.png"),
    ({}, "sub/evil.png"),
])
async def test_upload_refusals_are_400(client, fields, filename):
    resp = await client.post("/upload/image", data=form(png_bytes(), filename, **fields))
    assert resp.status == 400
    assert "error" in await resp.json()


async def test_upload_without_file_is_400(client):
    f = aiohttp.FormData()
    f.add_field("image", "just text")
    assert (await client.post("/upload/image", data=f)).status == 400
    assert (await client.post("/upload/image", data=aiohttp.FormData({"type": "input"}))).status == 400


async def test_upload_symlinked_subfolder_escape_refused(client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (ctx_of(client).folders.input / "link").symlink_to(outside, target_is_directory=True)
    resp = await client.post("/upload/image", data=form(png_bytes(), subfolder="link"))
    assert resp.status == 400
    assert list(outside.iterdir()) == []


async def test_upload_size_limit(make_client):
    client = await make_client(max_upload_mb=0.01)
    resp = await client.post("/upload/image", data=form(b"x" * 20000))
    assert resp.status == 413
    assert "error" in await resp.json()


async def test_upload_mask_replaces_alpha_and_keeps_text(client):
    folders = ctx_of(client).folders
    original = png_bytes((10, 20, 30, 255), (4, 4), {"prompt": "{}"})
    (folders.input / "clipspace").mkdir()
    (folders.input / "clipspace" / "orig.png").write_bytes(original)
    mask = png_bytes((0, 0, 0, 0), (2, 2))  # smaller: resized to the original
    resp = await client.post("/upload/mask", data=form(
        mask, "mask.png", subfolder="clipspace", type="input",
        original_ref=json.dumps({"filename": "orig.png [input]", "subfolder": "clipspace"})))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"name": "mask.png", "subfolder": "clipspace", "type": "input"}
    with Image.open(folders.input / "clipspace" / "mask.png") as saved:
        assert saved.mode == "RGBA"
        assert saved.getpixel((0, 0)) == (10, 20, 30, 0)
        assert saved.text.get("prompt") == "{}"
    for ref in ('{"filename": "../x.png"}', "not json", '{"filename": "missing.png", "type": "input"}'):
        resp = await client.post("/upload/mask", data=form(mask, "m.png", original_ref=ref))
        assert resp.status in (400, 404), ref


# ------------------------------------------------------------------ /view
async def test_view_serves_annotated_and_typed_files(client):
    folders = ctx_of(client).folders
    (folders.output / "sub").mkdir()
    (folders.output / "sub" / "a.png").write_bytes(png_bytes())
    (folders.input / "test..png").write_bytes(png_bytes((0, 255, 0, 255)))
    resp = await client.get("/view", params={"filename": "a.png", "subfolder": "sub"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Disposition"] == 'inline; filename="a.png"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/api/view", params={"filename": "test..png [input]"})).status == 200
    assert (await client.get("/view", params={"filename": "test..png", "type": "input"})).status == 200
    assert (await client.get("/view", params={"filename": "a.png", "type": "models"})).status == 400
    assert (await client.get("/view", params={"filename": "nope.png"})).status == 404
    assert (await client.get("/view")).status == 400
    assert (await client.head("/view", params={"filename": "a.png", "subfolder": "sub"})).status == 200


@pytest.mark.parametrize("query, status", [
    ("filename=../secret.txt&type=input", 400),
    ("filename=a.png&subfolder=../..", 400),
    ("filename=/etc/passwd", 400),
    ("filename=passwd&subfolder=/etc", 400),
    ("filename=%252e%252e%252fsecret.txt&type=input", 400),
    ("filename=x&subfolder=%252e%252e&type=input", 400),
    ("filename=..%5Csecret.txt&type=input", 400),
    ("filename=secret.txt&subfolder=..%5C&type=input", 400),
    ("filename=secret.txt&subfolder=escape&type=input", 403),
    ("filename=escape%2Fsecret.txt&type=input", 403),
    ("filename=secret.txt&subfolder=escape", 404),
])
async def test_view_traversal_refusals(client, tmp_path, query, status):
    """'..', absolute, double-encoded and backslash names are malformed (400); a symlink that
    leads out of input/ is caught after realpath (403)."""
    folders = ctx_of(client).folders
    (folders.base / "secret.txt").write_text("secret")
    (folders.input / "escape").symlink_to(folders.base, target_is_directory=True)
    resp = await client.get(f"/view?{query}")
    assert resp.status == status
    assert "error" in await resp.json()


@pytest.mark.parametrize("name, content_type", [
    ("evil.svg", "application/octet-stream"),
    ("evil.html", "application/octet-stream"),
    ("evil.js", "application/octet-stream"),
    ("evil.css", "application/octet-stream"),
    ("data.json", "application/json"),
])
async def test_view_active_content_is_downloaded(client, name, content_type):
    (ctx_of(client).folders.output / name).write_text("<svg onload=alert(1)>")
    resp = await client.get("/view", params={"filename": name})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_view_channels_and_preview(client):
    (ctx_of(client).folders.output / "c.png").write_bytes(png_bytes((10, 20, 30, 128)))

    async def image(**params: str) -> tuple[Image.Image, str]:
        resp = await client.get("/view", params={"filename": "c.png", **params})
        assert resp.status == 200
        return Image.open(io.BytesIO(await resp.read())), resp.headers["Content-Type"]

    rgb, ctype = await image(channel="rgb")
    assert ctype == "image/png" and rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (10, 20, 30)
    alpha, _ = await image(channel="a")
    assert alpha.mode == "RGBA" and alpha.getpixel((0, 0)) == (0, 0, 0, 128)
    jpeg, ctype = await image(preview="jpeg;50")
    assert ctype == "image/jpeg" and jpeg.format == "JPEG"
    webp, ctype = await image(preview="bmp;50")
    assert ctype == "image/webp" and webp.format == "WEBP"
    webp, ctype = await image(preview="jpeg;80", channel="rgba")
    assert ctype == "image/webp"
    assert (await client.get("/view", params={"filename": "c.png", "channel": "x"})).status == 400
    (ctx_of(client).folders.output / "t.txt").write_text("text")
    assert (await client.get("/view", params={"filename": "t.txt", "channel": "rgb"})).status == 400


# ------------------------------------------------------------------ /internal/files
async def test_internal_files_newest_first(client):
    folders = ctx_of(client).folders
    for i, name in enumerate(("old.png", "new.png", ".hidden")):
        (folders.input / name).write_bytes(b"x")
        os.utime(folders.input / name, (1000 + i, 1000 + i))
    (folders.input / "dir").mkdir()
    assert await (await client.get("/internal/files/input")).json() == ["new.png", "old.png"]
    assert (await client.get("/internal/files/models")).status == 400


# ------------------------------------------------------------------ userdata / settings
async def test_userdata_roundtrip(client):
    user_dir = ctx_of(client).folders.user / "default"
    resp = await client.post("/userdata/workflows%2Fa.json", data=b'{"nodes": []}')
    assert resp.status == 200 and await resp.json() == "workflows/a.json"
    assert (user_dir / "workflows" / "a.json").read_bytes() == b'{"nodes": []}'
    resp = await client.post("/userdata/workflows%2Fa.json?overwrite=false", data=b"{}")
    assert resp.status == 409
    resp = await client.get("/api/userdata/workflows%2Fa.json")
    assert resp.status == 200 and await resp.read() == b'{"nodes": []}'
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    info = await (await client.post("/userdata/workflows%2Fb.json?full_info=true", data=b"[]")).json()
    assert info["path"] == "workflows/b.json" and info["size"] == 2 and {"modified", "created"} <= set(info)
    listing = await (await client.get("/userdata?dir=workflows&recurse=true")).json()
    assert listing == ["a.json", "b.json"]
    split = await (await client.get("/userdata?dir=workflows&split=true")).json()
    assert split == [["a.json", "a.json"], ["b.json", "b.json"]]
    full = await (await client.get("/userdata?dir=workflows&full_info=true")).json()
    assert [f["path"] for f in full] == ["a.json", "b.json"]
    moved = await client.post("/userdata/workflows%2Fa.json/move/workflows%2Fsub%2Fc.json")
    assert moved.status == 200 and await moved.json() == "workflows/sub/c.json"
    assert (await client.post("/userdata/workflows%2Fmissing.json/move/x.json")).status == 404
    assert (await client.post("/userdata/workflows%2Fb.json/move/workflows%2Fsub%2Fc.json?overwrite=false")
            ).status == 409
    assert await (await client.get("/userdata?dir=workflows&recurse=true")).json() == ["b.json", "sub/c.json"]
    assert (await client.delete("/userdata/workflows%2Fb.json")).status == 204
    assert (await client.delete("/userdata/workflows%2Fb.json")).status == 404
    assert (await client.get("/userdata")).status == 400
    assert (await client.get("/userdata?dir=nope")).status == 404


async def test_userdata_confinement(client):
    folders = ctx_of(client).folders
    (folders.user / "__system").mkdir(parents=True)
    (folders.user / "__system" / "secret.json").write_text("{}")
    (folders.user / "default").mkdir(parents=True, exist_ok=True)
    (folders.user / "default" / "out").symlink_to(folders.base, target_is_directory=True)
    for path in ("/userdata/..%2F__system%2Fsecret.json", "/userdata/out%2Fuser%2F__system%2Fsecret.json",
                 "/userdata?dir=..%2F__system", "/v2/userdata?path=..%2F__system"):
        assert (await client.get(path)).status == 403, path
    resp = await client.get("/userdata?dir=workflows", headers={"comfy-user": "__system"})
    assert resp.status == 403
    assert (await client.post("/users", json={"username": "__system"})).status == 400


async def test_v2_userdata_listing(make_client):
    client = await make_client()
    assert await (await client.get("/v2/userdata")).json() == []  # user folder not created yet
    await client.post("/userdata/workflows%2Fz.json", data=b"{}")
    await client.post("/userdata/a.txt", data=b"hello")
    entries = await (await client.get("/v2/userdata")).json()
    assert [(e["name"], e["type"]) for e in entries] == [("workflows", "directory"), ("a.txt", "file")]
    assert entries[1]["path"] == "a.txt" and entries[1]["size"] == 5 and "modified" in entries[1]
    inner = await (await client.get("/v2/userdata?path=workflows")).json()
    assert [e["path"] for e in inner] == ["workflows/z.json"]
    assert (await client.get("/v2/userdata?path=missing")).status == 404
    assert (await client.get("/v2/userdata?path=a.txt")).status == 400


async def test_settings_and_users(client):
    users = await (await client.get("/users")).json()
    assert users == {"storage": "server", "migrated": False}
    assert await (await client.get("/settings")).json() == {}
    assert await (await client.get("/settings/Comfy.Theme")).json() is None
    assert (await client.post("/settings", json={"a": 1, "b": {"c": 2}})).status == 200
    assert (await client.post("/api/settings/Comfy.Theme", json="dark")).status == 200
    assert await (await client.get("/settings")).json() == {"a": 1, "b": {"c": 2}, "Comfy.Theme": "dark"}
    assert await (await client.get("/settings/Comfy.Theme")).json() == "dark"
    assert (await client.post("/settings", json=[1])).status == 400
    assert (await client.post("/settings", data="{bad")).status == 400
    assert (await (await client.get("/users")).json())["migrated"] is True
