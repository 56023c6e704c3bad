"""WebSocket: feature-flag negotiation, opt-in binary frames (types 1, 3, 4), reconnect, ordering."""
from __future__ import annotations

import asyncio
import io
import json
import struct

import aiohttp
from PIL import Image

import server.ws
from execution.events import Message
from tests.server.support import ctx_of, next_json, post_prompt, until_done, wait_for, waiting_prompt

METADATA = {"supports_preview_metadata": True, "supports_manager_v4_ui": True}
LEGACY = {"supports_preview": True}


async def connect(client, client_id: str, flags: dict | None = None) -> aiohttp.ClientWebSocketResponse:
    """Open a socket, read the greeting and (if flags are sent) the server's feature_flags reply."""
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    assert (await next_json(ws))["type"] == "status"
    if flags is not None:
        await ws.send_json({"type": "feature_flags", "data": flags})
        reply = await next_json(ws)
        assert reply == {"type": "feature_flags", "data": await (await client.get("/features")).json()}
    return ws


def preview_message(sid: str | None) -> Message:
    data = {"prompt_id": "p1", "node_id": "7", "display_node_id": "7", "parent_node_id": None,
            "real_node_id": "7", "preview": ("JPEG", Image.new("RGB", (40, 20), (0, 0, 255)), 10)}
    return Message("preview", data, sid, sid is None)


async def publish_from_worker_thread(client, *messages: Message) -> None:
    """Publish like the worker does: from another thread, through the EventHub."""
    hub = ctx_of(client).hub
    await asyncio.to_thread(lambda: [hub.publish(m) for m in messages])


def marker() -> Message:
    return Message("test.marker", {"n": 1}, None, True)


async def test_features_shape(client):
    features = await (await client.get("/features")).json()
    assert features == {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024,
                        "extension": {"manager": {"supports_v4": True}}}


async def test_binary_previews_only_for_clients_that_asked(client):
    rich = await connect(client, "rich", METADATA)
    legacy = await connect(client, "legacy", LEGACY)
    plain = await connect(client, "plain")
    await publish_from_worker_thread(client, preview_message(None), marker())

    frame = await rich.receive(timeout=5)
    assert frame.type == aiohttp.WSMsgType.BINARY
    kind, meta_len = struct.unpack(">II", frame.data[:8])
    assert kind == 4
    meta = json.loads(frame.data[8:8 + meta_len])
    assert meta == {"node_id": "7", "prompt_id": "p1", "display_node_id": "7", "parent_node_id": None,
                    "real_node_id": "7", "image_type": "image/jpeg"}
    image = Image.open(io.BytesIO(frame.data[8 + meta_len:]))
    assert image.format == "JPEG" and image.size == (10, 5)  # fitted into max_size
    assert (await next_json(rich))["type"] == "test.marker"

    frame = await legacy.receive(timeout=5)
    assert frame.type == aiohttp.WSMsgType.BINARY
    assert struct.unpack(">II", frame.data[:8]) == (1, 1)
    assert frame.data[8:10] == b"\xff\xd8"
    assert (await next_json(legacy))["type"] == "test.marker"

    assert (await next_json(plain))["type"] == "test.marker"  # no binary frame came first
    for ws in (rich, legacy, plain):
        await ws.close()


async def test_text_frames_only_for_metadata_clients(client):
    rich = await connect(client, "rich", METADATA)
    legacy = await connect(client, "legacy", LEGACY)
    text = Message("progress_text", {"node_id": "12", "text": "width: 8", "prompt_id": "p1"}, None, True)
    await publish_from_worker_thread(client, text, marker())
    frame = await rich.receive(timeout=5)
    kind, length = struct.unpack(">II", frame.data[:8])
    assert kind == 3 and frame.data[8:8 + length] == b"12" and frame.data[8 + length:] == b"width: 8"
    assert (await next_json(rich))["type"] == "test.marker"
    assert (await next_json(legacy))["type"] == "test.marker"
    await rich.close()
    await legacy.close()


async def test_only_the_first_message_negotiates(client):
    ws = await connect(client, "late")
    await ws.send_str("hello")
    await ws.send_json({"type": "feature_flags", "data": METADATA})
    await asyncio.sleep(0.1)
    await publish_from_worker_thread(client, preview_message(None), marker())
    assert (await next_json(ws))["type"] == "test.marker"  # no feature_flags reply, no binary frame
    await ws.close()


async def test_preview_not_encoded_when_nobody_wants_it(client, monkeypatch):
    calls = []
    monkeypatch.setattr(server.ws, "encode_image", lambda *a: calls.append(a) or b"")
    ws = await connect(client, "plain")
    await publish_from_worker_thread(client, preview_message(None), preview_message("plain"), marker())
    assert (await next_json(ws))["type"] == "test.marker"
    assert calls == []
    await ws.close()


async def test_targeted_messages_reach_only_their_client(client):
    mine = await connect(client, "mine", METADATA)
    other = await connect(client, "other", METADATA)
    await publish_from_worker_thread(client, preview_message("mine"),
                                     Message("executing", {"node": "1", "prompt_id": "p"}, "mine", False), marker())
    assert (await mine.receive(timeout=5)).type == aiohttp.WSMsgType.BINARY
    assert (await next_json(mine))["type"] == "executing"
    assert (await next_json(other))["type"] == "test.marker"
    await mine.close()
    await other.close()


async def test_running_prompt_preview_precedes_progress(client):
    ws = await connect(client, "runner", METADATA)
    prompt = {"1": {"class_type": "TestPreview", "inputs": {"value": 4}},
              "2": {"class_type": "TestSink", "inputs": {"value": ["1", 0]}}}
    prompt_id = (await post_prompt(client, prompt, client_id="runner"))["prompt_id"]
    frames = []
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.BINARY:
            frames.append(("binary", struct.unpack(">I", msg.data[:4])[0]))
            continue
        data = json.loads(msg.data)
        if data["type"] in ("progress", "executing"):
            frames.append((data["type"], data["data"].get("value", data["data"].get("node"))))
        if data["type"] == "executing" and data["data"]["node"] is None:
            break
    assert frames == [("executing", "1"), ("binary", 4), ("progress", 1), ("binary", 3), ("progress", 2),
                      ("executing", "2"), ("executing", None)]
    await ws.close()


async def test_reconnect_of_running_client_gets_current_node(client):
    ctx = ctx_of(client)
    first = await connect(client, "again")
    prompt_id = (await post_prompt(client, waiting_prompt(), client_id="again"))["prompt_id"]
    await wait_for(lambda: ctx.worker.last_node.get("again") == "1")
    second = await client.ws_connect("/ws?clientId=again")
    assert (await next_json(second))["data"]["sid"] == "again"
    assert await next_json(second) == {"type": "executing", "data": {"node": "1"}}
    closed = await first.receive(timeout=5)  # the replaced socket is closed
    while closed.type == aiohttp.WSMsgType.TEXT:
        closed = await first.receive(timeout=5)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    ctx.services.settings["test_gate"].set()
    messages = await until_done(second, prompt_id)
    assert messages[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    await second.close()
