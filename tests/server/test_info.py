"""Read-only info routes, node-pack web assets, and `serve()` binding and shutting down."""
from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import torch

from execution.context import Config
from server.app import serve
from server.routes_info import system_stats
from tests.server.support import ctx_of, make_context


async def test_object_info(client):
    everything = await (await client.get("/object_info")).json()
    info = everything["TestSource"]
    assert {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
            "description", "python_module", "category", "output_node"} <= set(info)
    assert info["input"]["required"]["value"][0] == "INT"
    assert "SaveImage" in everything
    assert await (await client.get("/object_info/TestSource")).json() == {"TestSource": info}
    assert await (await client.get("/api/object_info/NoSuchNode")).json() == {}


async def test_system_stats_shape(client):
    stats = await (await client.get("/system_stats")).json()
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
            "embedded_python", "argv"} <= set(stats["system"])
    assert stats["system"]["ram_total"] >= stats["system"]["ram_free"] > 0
    device = stats["devices"][0]
    assert set(device) == {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total",
                           "torch_vram_free"}
    assert device["type"] in ("cpu", "cuda")


def test_system_stats_reports_the_cuda_device(monkeypatch):
    """The CUDA branch, checked without a GPU by faking torch.cuda's answers."""
    fake = {"is_available": lambda: True, "current_device": lambda: 0, "get_device_name": lambda i: "Fake GPU",
            "mem_get_info": lambda i: (6, 10), "memory_reserved": lambda i: 4, "memory_allocated": lambda i: 1}
    for name, value in fake.items():
        monkeypatch.setattr(torch.cuda, name, value)
    assert system_stats(Config())["devices"] == [{
        "name": "cuda:0 Fake GPU", "type": "cuda", "index": 0, "vram_total": 10, "vram_free": 6,
        "torch_vram_total": 4, "torch_vram_free": 3}]
    assert system_stats(Config(cpu=True))["devices"][0]["type"] == "cpu"


async def test_internal_routes(client):
    paths = await (await client.get("/internal/folder_paths")).json()
    assert paths["checkpoints"] and all(isinstance(p, str) for p in paths["checkpoints"])
    assert await (await client.get("/internal/logs")).json() == ""
    assert (await (await client.get("/internal/logs/raw")).json())["entries"] == []
    assert (await client.patch("/internal/logs/subscribe", json={"clientId": "x", "enabled": True})).status == 200


async def test_node_pack_assets(make_client, tmp_path):
    pack = tmp_path / "app0" / "custom_nodes" / "sumi_test_webpack"
    (pack / "js" / "lib").mkdir(parents=True)
    (pack / "__init__.py").write_text('NODE_CLASS_MAPPINGS = {}\nWEB_DIRECTORY = "./js"\n')
    (pack / "js" / "main.js").write_text("export const x = 1;")
    (pack / "js" / "lib" / "util.js").write_text("export const y = 2;")
    (pack / "locales" / "en").mkdir(parents=True)
    (pack / "locales" / "en" / "main.json").write_text(json.dumps({"menu": {"a": "A"}}))
    (pack / "locales" / "en" / "nodeDefs.json").write_text(json.dumps({"MyNode": {"display_name": "Mine"}}))
    (pack / "example_workflows").mkdir()
    (pack / "example_workflows" / "demo.json").write_text('{"nodes": []}')
    (pack / "subgraphs").mkdir()
    (pack / "subgraphs" / "blur.json").write_text('{"definitions": {}}')
    client = await make_client()
    web_ext = tmp_path / "app0" / "web" / "extensions" / "core"
    web_ext.mkdir(parents=True)
    (web_ext / "widgets.js").write_text("")

    assert await (await client.get("/extensions")).json() == [
        "/extensions/core/widgets.js", "/extensions/sumi_test_webpack/lib/util.js",
        "/extensions/sumi_test_webpack/main.js"]
    script = await client.get("/extensions/sumi_test_webpack/main.js")
    assert script.status == 200 and await script.text() == "export const x = 1;"
    assert (await client.get("/extensions/sumi_test_webpack/../__init__.py")).status == 404
    assert (await client.get("/extensions/core/widgets.js")).status == 200
    assert await (await client.get("/i18n")).json() == {
        "en": {"menu": {"a": "A"}, "nodeDefs": {"MyNode": {"display_name": "Mine"}}}}
    assert await (await client.get("/workflow_templates")).json() == {"sumi_test_webpack": ["demo"]}
    template = await client.get("/api/workflow_templates/sumi_test_webpack/demo.json")
    assert template.status == 200 and await template.json() == {"nodes": []}
    assert (await client.get("/api/workflow_templates/sumi_test_webpack/missing.json")).status == 404
    subgraphs = await (await client.get("/global_subgraphs")).json()
    [(key, entry)] = subgraphs.items()
    assert len(key) == 64
    assert entry == {"source": "custom_node", "name": "blur", "info": {"node_pack": "sumi_test_webpack"}}
    full = await (await client.get(f"/api/global_subgraphs/{key}")).json()
    assert full == {**entry, "data": '{"definitions": {}}'}
    assert (await client.get("/global_subgraphs/unknown")).status == 404


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_binds_and_stops_the_worker(tmp_path):
    ctx = make_context(tmp_path, listen="127.0.0.1", port=free_port())
    try:
        task = asyncio.create_task(serve(ctx))
        url = f"http://127.0.0.1:{ctx.config.port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{url}/api/prompt") as resp:
                        assert await resp.json() == {"exec_info": {"queue_remaining": 0}}
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("server did not come up")
            ws = await session.ws_connect(f"{url}/ws")
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "status"
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert not ctx.worker._thread.is_alive()
    finally:
        ctx.close()


async def test_shipped_workflows_are_listed_and_served(client):
    names = await (await client.get("/api/sumi/workflows")).json()
    assert "invert_image.json" in names
    workflow = await (await client.get("/api/sumi/workflows/invert_image.json")).json()
    assert workflow["nodes"][0]["type"] == "EmptyImage"
    assert (await client.get("/api/sumi/workflows/..%2Fpyproject.toml")).status in (400, 403, 404)
    assert (await client.get("/api/sumi/workflows/missing.json")).status == 404
