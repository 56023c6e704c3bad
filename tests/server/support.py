"""Server test support: tiny test nodes, a context factory, prompt builders and WebSocket helpers."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestClient
from PIL import Image

from execution.context import AppContext, Config, build_context
from nodes.runtime import NodeRuntime
from nodes.schema import Int, Node, Out
from server.keys import CTX


class SourceNode:
    """A classic (v1) node with one INT output."""

    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - protocol name
        return {"required": {"value": ("INT", {"default": 1, "min": 0, "max": 1000})}}

    def run(self, value: int) -> tuple[int]:
        return (value,)


class SinkNode:
    """An output node whose ui ends up in history."""

    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - protocol name
        return {"required": {"value": ("INT",)}}

    def run(self, value: int) -> dict:
        return {"ui": {"text": [str(value)]}}


class WaitNode(Node):
    """Reports progress until released (or interrupted): lets tests act while a prompt runs."""

    CATEGORY = "test"
    INPUTS = (Int("value", 0),)
    OUTPUTS = (Out("INT"),)

    def execute(self, value: int, rt: NodeRuntime) -> tuple[int]:
        gate: threading.Event = rt.services.settings["test_gate"]
        deadline = time.monotonic() + 30
        step = 0
        while not gate.is_set() and time.monotonic() < deadline:
            step += 1
            rt.progress(min(step, 99), 100)
            time.sleep(0.02)
        return (value,)


class PreviewNode(Node):
    """Sends one JPEG preview (64x32 shrunk to fit 16) and one progress text, like a sampler would."""

    CATEGORY = "test"
    INPUTS = (Int("value", 0),)
    OUTPUTS = (Out("INT"),)

    def execute(self, value: int, rt: NodeRuntime) -> tuple[int]:
        rt.progress(1, 2, ("JPEG", Image.new("RGB", (64, 32), (255, 0, 0)), 16))
        rt.send_text(f"value is {value}")
        rt.progress(2, 2)
        return (value,)


TEST_NODES = {"TestSource": SourceNode, "TestSink": SinkNode, "TestWait": WaitNode, "TestPreview": PreviewNode}


def small_prompt(value: int = 3) -> dict:
    return {"1": {"class_type": "TestSource", "inputs": {"value": value}},
            "2": {"class_type": "TestSink", "inputs": {"value": ["1", 0]}}}


def waiting_prompt(value: int = 5) -> dict:
    return {"1": {"class_type": "TestWait", "inputs": {"value": value}},
            "2": {"class_type": "TestSink", "inputs": {"value": ["1", 0]}}}


def make_context(base: Path, **config: Any) -> AppContext:
    ctx = build_context(Config(base_dir=base, **config), start_worker=True)
    for name, cls in TEST_NODES.items():
        ctx.registry.register(name, cls, python_module="tests")
    ctx.services.settings["test_gate"] = threading.Event()
    return ctx


def ctx_of(client: TestClient) -> AppContext:
    return client.app[CTX]


async def post_prompt(client: TestClient, prompt: dict, **body: Any) -> dict:
    resp = await client.post("/prompt", json={"prompt": prompt, **body})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict:
    """The next text frame as JSON (fails on binary frames: they must never arrive unasked)."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r:.80}"
    return json.loads(msg.data)


async def until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str,
                     on_message: Callable[[dict], Awaitable[None]] | None = None) -> list[dict]:
    """Collect messages until `executing` with node null for prompt_id."""
    seen = []
    while True:
        message = await next_json(ws)
        seen.append(message)
        if on_message is not None:
            await on_message(message)
        data = message.get("data") or {}
        if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return seen


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
