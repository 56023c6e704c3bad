"""WebSocket clients: registry, ordered fan-out of worker events, feature flags, binary previews.

The worker thread publishes on `ctx.hub`; the listener only hops onto the server loop with
`call_soon_threadsafe`, so messages keep the worker's order (history is already written when a
terminal message arrives).  Each client has its own outbox and sender task: a slow socket
delays only itself.

Binary frames (spec §5.4) go only to clients that asked for them in their first message:
`supports_preview_metadata` → type 4 previews and type 3 text; `supports_preview` → type 1
previews; everyone else never gets a binary frame (third-party clients break on them).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import uuid
from typing import Any, Union

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image, ImageOps

from execution.context import AppContext
from execution.events import Message
from server.keys import WS

log = logging.getLogger("sumi.ws")

ROUTES = web.RouteTableDef()
OUTBOX_LIMIT = 4096  # frames queued for one client before it is considered dead and dropped
PREVIEW = 1
TEXT = 3
PREVIEW_WITH_METADATA = 4
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}

Frame = Union[str, bytes, "asyncio.Future[bytes | None]"]


def server_features(max_upload_mb: float) -> dict:
    """The flags GET /features returns and a negotiating socket receives."""
    return {"supports_preview_metadata": True, "max_upload_size": int(max_upload_mb * 1024 * 1024),
            "extension": {"manager": {"supports_v4": True}}}


def encode_image(fmt: str, image: Image.Image, max_size: int | None) -> bytes:
    """JPEG q95 or PNG level 1, shrunk to fit max_size × max_size."""
    if max_size is not None:
        image = ImageOps.contain(image, (max_size, max_size))
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, format="JPEG", quality=95)
    else:
        image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def json_frame(event: str, data: Any) -> str:
    return json.dumps({"type": event, "data": data}, default=str)


def text_frame(node_id: str, text: str) -> bytes:
    node = str(node_id).encode()
    return struct.pack(">II", TEXT, len(node)) + node + text.encode()


async def preview_frame(layout: int, fmt: str, encoded: "asyncio.Future[bytes]", data: dict) -> bytes | None:
    """Wrap the (shared) encoded image in a type 1 or type 4 frame; None if encoding failed."""
    try:
        image = await encoded
    except Exception:  # noqa: BLE001 - a broken preview must not break the socket
        log.exception("preview encoding failed")
        return None
    if layout == PREVIEW:
        return struct.pack(">II", PREVIEW, IMAGE_FORMATS[fmt]) + image
    meta = json.dumps({"node_id": data.get("node_id"), "prompt_id": data.get("prompt_id"),
                       "display_node_id": data.get("display_node_id"), "parent_node_id": data.get("parent_node_id"),
                       "real_node_id": data.get("real_node_id"),
                       "image_type": "image/jpeg" if fmt == "JPEG" else "image/png"}).encode()
    return struct.pack(">II", PREVIEW_WITH_METADATA, len(meta)) + meta + image


class Client:
    """One socket: its negotiated flags and an ordered outbox drained by its own task."""

    def __init__(self, sid: str, ws: web.WebSocketResponse) -> None:
        self.sid = sid
        self.ws = ws
        self.flags: dict = {}
        self.negotiated = False
        self.outbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.sender = asyncio.ensure_future(self._send_all())

    @property
    def preview_layout(self) -> int | None:
        if self.flags.get("supports_preview_metadata") is True:
            return PREVIEW_WITH_METADATA
        if self.flags.get("supports_preview") is True:
            return PREVIEW
        return None

    def send(self, frame: Frame) -> None:
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            log.warning("client %s is not reading; dropping it", self.sid)
            self.close()
            return
        self.outbox.put_nowait(frame)

    def close(self) -> None:
        self.sender.cancel()
        if not self.ws.closed:
            asyncio.ensure_future(self.ws.close(code=WSCloseCode.GOING_AWAY))

    async def _send_all(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                if isinstance(frame, asyncio.Future):
                    frame = await frame
                if isinstance(frame, str):
                    await self.ws.send_str(frame)
                elif frame is not None:
                    await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            pass  # the socket went away; its handler unregisters it


class WsHub:
    """Connected clients by sid, fed from the worker's EventHub."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.clients: dict[str, Client] = {}
        self.features = server_features(ctx.config.max_upload_mb)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe = None

    def attach(self, app: web.Application) -> None:
        app[WS] = self
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.ctx.hub.subscribe(self._from_worker)

    async def _stop(self, app: web.Application) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            client.sender.cancel()
        await asyncio.gather(*(c.ws.close(code=WSCloseCode.GOING_AWAY) for c in clients), return_exceptions=True)

    def _from_worker(self, message: Message) -> None:
        """Runs on the publishing thread: only hand the message to the loop, preserving order."""
        try:
            self._loop.call_soon_threadsafe(self.dispatch, message)
        except RuntimeError:
            pass  # the loop is closed: the server is gone

    # ------------------------------------------------------------------ connections
    def connect(self, sid: str, ws: web.WebSocketResponse) -> Client:
        """Register (replacing a socket with the same id) and greet with status and, on reconnect, the node."""
        old = self.clients.pop(sid, None)
        if old is not None:
            old.close()
        client = self.clients[sid] = Client(sid, ws)
        client.send(json_frame("status", {"status": {"exec_info": {"queue_remaining": self.ctx.queue.remaining()}},
                                          "sid": sid}))
        job = self.ctx.worker.current
        node = self.ctx.worker.last_node.get(sid)
        if job is not None and job.client_id == sid and node is not None:
            client.send(json_frame("executing", {"node": node}))
        return client

    def disconnect(self, client: Client) -> None:
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        client.sender.cancel()

    def negotiate(self, client: Client, text: str) -> None:
        """Only the first text message counts; a feature_flags message stores flags and gets ours back."""
        client.negotiated = True
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags" \
                and isinstance(message.get("data"), dict):
            client.flags = message["data"]
            client.send(json_frame("feature_flags", self.features))

    # ------------------------------------------------------------------ fan-out
    def _recipients(self, message: Message) -> list[Client]:
        if message.broadcast:
            return list(self.clients.values())
        client = self.clients.get(message.sid) if message.sid is not None else None
        return [client] if client is not None else []

    def dispatch(self, message: Message) -> None:
        clients = self._recipients(message)
        if not clients:
            return
        if message.event == "preview":
            self._send_preview(message.data, clients)
        elif message.event == "progress_text":
            frame = text_frame(message.data["node_id"], message.data["text"])
            for client in clients:
                if client.preview_layout == PREVIEW_WITH_METADATA:
                    client.send(frame)
        else:
            frame = json_frame(message.event, message.data)
            for client in clients:
                client.send(frame)

    def _send_preview(self, data: dict, clients: list[Client]) -> None:
        by_layout: dict[int, list[Client]] = {}
        for client in clients:
            if client.preview_layout is not None:
                by_layout.setdefault(client.preview_layout, []).append(client)
        if not by_layout:
            return  # nobody wants pixels: do not even encode them
        fmt, image, max_size = data["preview"]
        fmt = "JPEG" if fmt == "JPEG" else "PNG"
        encoded = asyncio.ensure_future(asyncio.to_thread(encode_image, fmt, image, max_size))
        for layout, wanting in by_layout.items():
            frame = asyncio.ensure_future(preview_frame(layout, fmt, encoded, data))
            for client in wanting:
                client.send(frame)


@ROUTES.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    hub = request.app[WS]
    client = hub.connect(request.query.get("clientId") or uuid.uuid4().hex, ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and not client.negotiated:
                hub.negotiate(client, msg.data)
    finally:
        hub.disconnect(client)
    return ws
