"""Model folder routes: listings, embeddings, safetensors metadata, /experiment/models and previews."""
from __future__ import annotations

import base64
import io
import json
import struct

from PIL import Image

from tests.server.support import ctx_of


async def test_models_and_embeddings(client):
    folders = ctx_of(client).folders
    checkpoints = folders.models["checkpoints"][0]
    (checkpoints / "sub").mkdir()
    for name in ("a.safetensors", "sub/b.ckpt", "notes.txt"):
        (checkpoints / name).write_bytes(b"x")
    embeddings = folders.models["embeddings"][0]
    (embeddings / "sub").mkdir()
    for name in ("x.pt", "sub/y.safetensors"):
        (embeddings / name).write_bytes(b"x")
    keys = await (await client.get("/models")).json()
    assert keys == folders.model_keys() and "checkpoints" in keys and "clip" not in keys
    assert await (await client.get("/models/checkpoints")).json() == [  # then the bundled model (assets/)
        "a.safetensors", "sub/b.ckpt", "sumi-tiny-shapes.safetensors"]
    for unknown in ("clip", "unet", "nope"):
        assert (await client.get(f"/models/{unknown}")).status == 404, unknown
    assert await (await client.get("/embeddings")).json() == ["sub/y", "x"]


def write_safetensors(path, metadata: dict | None, header_pad: int = 0) -> None:
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode() + b" " * header_pad
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")


async def test_view_metadata(client):
    folders = ctx_of(client).folders
    loras = folders.models["loras"][0]
    write_safetensors(loras / "a.safetensors", {"ss_network_dim": "8"})
    write_safetensors(loras / "bare.safetensors", None)
    write_safetensors(loras / "huge.safetensors", {"x": "y"}, header_pad=1024 * 1024)
    resp = await client.get("/view_metadata/loras", params={"filename": "a.safetensors"})
    assert resp.status == 200 and await resp.json() == {"ss_network_dim": "8"}
    assert (await client.get("/api/view_metadata/loras?filename=a.safetensors")).status == 200
    for folder, name in (("loras", "bare.safetensors"), ("loras", "huge.safetensors"), ("loras", "a.ckpt"),
                         ("loras", "missing.safetensors"), ("nofolder", "a.safetensors")):
        assert (await client.get(f"/view_metadata/{folder}", params={"filename": name})).status == 404, name


def png(color: tuple, size: tuple = (6, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def dominant(webp: bytes) -> int:
    pixel = Image.open(io.BytesIO(webp)).convert("RGB").getpixel((0, 0))
    return pixel.index(max(pixel))


async def test_experiment_models(client):
    folders = ctx_of(client).folders
    loras = folders.models["loras"]
    (loras[0] / "a.safetensors").write_bytes(b"x" * 3)
    (loras[1]).mkdir(parents=True, exist_ok=True)
    (loras[1] / "b.pt").write_bytes(b"y")
    listing = await (await client.get("/experiment/models")).json()
    by_name = {entry["name"]: entry["folders"] for entry in listing}
    assert "configs" not in by_name and by_name["loras"] == [str(p) for p in loras]
    files = await (await client.get("/api/experiment/models/loras")).json()
    assert [(f["name"], f["pathIndex"], f["size"]) for f in files] == [("a.safetensors", 0, 3), ("b.pt", 1, 1)]
    assert {"modified", "created"} <= set(files[0])
    assert (await client.get("/experiment/models/unet")).status == 404


async def test_experiment_model_previews(client, tmp_path):
    folders = ctx_of(client).folders
    root = folders.models["checkpoints"][0]
    (root / "sub").mkdir()
    (root / "sub" / "m.safetensors").write_bytes(b"x")
    (root / "sub" / "m.preview.jpeg").write_bytes(png((0, 255, 0)))
    cover = "data:image/png;base64," + base64.b64encode(png((255, 0, 0))).decode()
    write_safetensors(root / "c.safetensors", {"ssmd_cover_images": json.dumps([cover])})
    write_safetensors(root / "plain.safetensors", {"x": "y"})
    (tmp_path / "outside.png").write_bytes(png((1, 1, 1)))
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    (root / "link.safetensors").write_bytes(b"x")

    async def preview(name: str, index: str = "0"):
        return await client.get(f"/experiment/models/preview/checkpoints/{index}/{name}")

    sibling = await preview("sub%2Fm.safetensors")
    assert sibling.status == 200 and sibling.headers["Content-Type"] == "image/webp"
    assert dominant(await sibling.read()) == 1  # green: the sibling image (WEBP is lossy)
    embedded = await preview("c.safetensors")
    assert embedded.status == 200
    assert dominant(await embedded.read()) == 0  # red: the embedded cover
    assert (await preview("plain.safetensors")).status == 404
    assert (await preview("link.safetensors")).status == 404  # the sibling symlink leads outside: ignored
    assert (await preview("..%2F..%2Foutside.png")).status == 400
    assert (await preview("c.safetensors", "7")).status == 404
    assert (await preview("c.safetensors", "-1")).status == 404
