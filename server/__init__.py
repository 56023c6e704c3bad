"""HTTP + WebSocket API: translates ComfyUI-compatible requests into `execution/` calls.

`create_app(ctx)` builds the aiohttp application for one AppContext; `serve(ctx)` binds it.
"""
from server.app import create_app, serve

__all__ = ["create_app", "serve"]
