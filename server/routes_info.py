"""Read-only facts about this server: nodes, system, features, extensions, and node-pack data
(i18n, workflow templates, global subgraphs)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch
from aiohttp import hdrs, web

from execution.context import AppContext, Config
from model_management.folders import contained
from server.errors import RequestError
from server.keys import CTX, WEB_ROOT, WS
from server.security import served_as

ROUTES = web.RouteTableDef()
INTERNAL_ROUTES = web.RouteTableDef()
COMFYUI_API_VERSION = "0.8.0"  # the upstream version whose API Sumi implements
FRONTEND_API_VERSION = "1.35.9"
TEMPLATE_DIRS = ("example_workflows", "example", "examples", "workflow", "workflows")
LOCALE_PARTS = ("main", "nodeDefs", "commands", "settings")


# ------------------------------------------------------------------ nodes
@ROUTES.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    # INPUT_TYPES may list folders; keep that off the loop.
    return web.json_response(await asyncio.to_thread(request.app[CTX].registry.object_info))


@ROUTES.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    name = request.match_info["node_class"]
    schema = request.app[CTX].registry.get(name)
    if schema is None:
        return web.json_response({})
    return web.json_response({name: await asyncio.to_thread(schema.object_info)})


# ------------------------------------------------------------------ server
@ROUTES.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(request.app[WS].features)


def _ram() -> tuple[int, int]:
    """(total, available) bytes; MemAvailable is what a new allocation can really get."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return total, int(line.split()[1]) * 1024
    except OSError:
        pass
    return total, os.sysconf("SC_AVPHYS_PAGES") * page


def _device(config: Config, ram: tuple[int, int], budget: tuple[int, int] | None = None) -> dict:
    """The compute device; `budget` ((total, free) under --vram-budget, from the model manager) replaces
    the device's own total and free numbers."""
    if torch.cuda.is_available() and not config.cpu:
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        reserved = torch.cuda.memory_reserved(index)
        total, free = budget or (total, free)
        return {"name": f"cuda:{index} {torch.cuda.get_device_name(index)}", "type": "cuda", "index": index,
                "vram_total": total, "vram_free": free,
                "torch_vram_total": reserved, "torch_vram_free": reserved - torch.cuda.memory_allocated(index)}
    total, free = budget or ram
    return {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
            "torch_vram_total": total, "torch_vram_free": free}


def system_stats(config: Config, models: Any = None) -> dict:
    """ComfyUI's /system_stats; under --vram-budget the device numbers are the budget's, as the model
    manager (`models`) sees it with the models it holds."""
    ram = _ram()
    return {
        "system": {"os": sys.platform, "ram_total": ram[0], "ram_free": ram[1],
                   "comfyui_version": COMFYUI_API_VERSION, "required_frontend_version": FRONTEND_API_VERSION,
                   "installed_templates_version": None, "required_templates_version": None,
                   "python_version": sys.version, "pytorch_version": torch.__version__,
                   "embedded_python": False, "argv": list(config.argv)},
        "devices": [_device(config, ram, None if models is None else models.budget_view())],
    }


@ROUTES.get("/system_stats")
async def get_system_stats(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    return web.json_response(await asyncio.to_thread(system_stats, ctx.config, ctx.services.models))


@ROUTES.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    """Extension scripts the editor should import: web/extensions/** and each node pack's WEB_DIRECTORY."""
    def scripts(root: Path, prefix: str) -> list[str]:
        return [f"{prefix}/{p.relative_to(root).as_posix()}" for p in sorted(root.rglob("*.js"))] \
            if root.is_dir() else []

    urls = scripts(request.app[WEB_ROOT] / "extensions", "/extensions")
    for pack, directory in request.app[CTX].registry.web_dirs.items():
        urls += scripts(directory, f"/extensions/{quote(pack)}")
    return web.json_response(urls)


# ------------------------------------------------------------------ node pack data: i18n, templates
def _packs(ctx: AppContext) -> list[Path]:
    return [entry for root in ctx.folders.custom_nodes if root.is_dir() for entry in sorted(root.iterdir())
            if entry.is_dir() and not entry.name.startswith((".", "__")) and not entry.name.endswith(".disabled")]


def _merge(into: dict, data: dict) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _translations(packs: list[Path]) -> dict:
    """{lang: main.json merged at the top, nodeDefs/commands/settings under their own keys}."""
    result: dict[str, dict] = {}
    for pack in packs:
        locales = pack / "locales"
        for lang_dir in sorted(locales.iterdir()) if locales.is_dir() else ():
            for part in LOCALE_PARTS:
                try:
                    data = json.loads((lang_dir / f"{part}.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    lang = result.setdefault(lang_dir.name, {})
                    _merge(lang if part == "main" else lang.setdefault(part, {}), data)
    return result


@ROUTES.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_translations, _packs(request.app[CTX])))


def _template_dirs(ctx: AppContext) -> dict[str, Path]:
    found = {}
    for pack in _packs(ctx):
        directory = next((pack / d for d in TEMPLATE_DIRS if (pack / d).is_dir()), None)
        if directory is not None:
            found[pack.name] = directory
    return found


@ROUTES.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    dirs = _template_dirs(request.app[CTX])
    return web.json_response({pack: sorted(p.stem for p in d.glob("*.json")) for pack, d in dirs.items()})


@ROUTES.get("/workflow_templates/{pack}/{name}")
async def workflow_template(request: web.Request) -> web.StreamResponse:
    directory = _template_dirs(request.app[CTX]).get(request.match_info["pack"])
    path = contained(directory, request.match_info["name"]) if directory is not None else None
    if path is None or not path.is_file():
        raise RequestError(404, "template not found")
    content_type, content_disposition = served_as(path.name)
    return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: content_type,
                                           hdrs.CONTENT_DISPOSITION: content_disposition})


SHIPPED_WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@ROUTES.get("/sumi/workflows")
async def shipped_workflows(request: web.Request) -> web.Response:
    """Sumi extension: the example workflows that ship in the repository's workflows/ folder."""
    return web.json_response(sorted(p.name for p in SHIPPED_WORKFLOWS.glob("*.json")))


@ROUTES.get("/sumi/workflows/{name}")
async def shipped_workflow(request: web.Request) -> web.StreamResponse:
    path = contained(SHIPPED_WORKFLOWS, request.match_info["name"])
    if path.suffix != ".json" or not path.is_file():
        raise RequestError(404, "workflow not found")
    return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: "application/json"})


def _subgraphs(ctx: AppContext) -> dict[str, tuple[dict, Path]]:
    """{id: (entry, file)} for custom_nodes/*/subgraphs/*.json; the id is sha256(source + path)."""
    found = {}
    for pack in _packs(ctx):
        for path in sorted((pack / "subgraphs").glob("*.json")):
            key = hashlib.sha256(f"custom_node{path}".encode()).hexdigest()
            found[key] = ({"source": "custom_node", "name": path.stem, "info": {"node_pack": pack.name}}, path)
    return found


@ROUTES.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(_subgraphs, request.app[CTX])
    return web.json_response({key: entry for key, (entry, _) in found.items()})


@ROUTES.get("/global_subgraphs/{id}")
async def global_subgraph(request: web.Request) -> web.Response:
    found = (await asyncio.to_thread(_subgraphs, request.app[CTX])).get(request.match_info["id"])
    if found is None:
        raise RequestError(404, "subgraph not found")
    entry, path = found
    return web.json_response({**entry, "data": await asyncio.to_thread(path.read_text, encoding="utf-8")})


# ------------------------------------------------------------------ /internal (not duplicated under /api)
@INTERNAL_ROUTES.get("/internal/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    return web.json_response({key: [str(p) for p in paths]
                              for key, paths in request.app[CTX].folders.models.items()})


@INTERNAL_ROUTES.get("/internal/logs")
async def logs(request: web.Request) -> web.Response:
    """Log streaming is not implemented; the editor gets an empty log."""
    return web.json_response("")


@INTERNAL_ROUTES.get("/internal/logs/raw")
async def logs_raw(request: web.Request) -> web.Response:
    return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})


@INTERNAL_ROUTES.patch("/internal/logs/subscribe")
async def logs_subscribe(request: web.Request) -> web.Response:
    return web.Response()
