"""Server test fixtures: a fresh AppContext (worker running) in a tmp dir and an aiohttp test client
bound to 127.0.0.1 on a free port; both are closed after each test."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from execution.context import AppContext
from server.app import create_app
from tests.server.support import make_context

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    """Build a context + app with the given Config fields; everything is closed after the test."""
    opened: list[tuple[TestClient, AppContext]] = []

    async def make(**config: Any) -> TestClient:
        base = tmp_path / f"app{len(opened)}"
        web_root = base / "web"
        web_root.mkdir(parents=True)
        (web_root / "index.html").write_text("<!doctype html><title>test editor</title>")
        (web_root / "app.js").write_text("console.log('editor');")
        ctx = make_context(base, **config)
        client = TestClient(TestServer(create_app(ctx, web_root=web_root), host="127.0.0.1"))
        await client.start_server()
        opened.append((client, ctx))
        return client

    yield make
    for client, ctx in opened:
        ctx.services.settings["test_gate"].set()
        await client.close()
        await asyncio.to_thread(ctx.close)


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


