"""Typed aiohttp application keys: the only way handlers reach shared state (no module globals)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from execution.context import AppContext

if TYPE_CHECKING:
    from server.ws import WsHub

CTX = web.AppKey("sumi_ctx", AppContext)
WS: web.AppKey[WsHub] = web.AppKey("sumi_ws")
WEB_ROOT = web.AppKey("sumi_web_root", Path)  # the editor's static files
