"""Browser tests: Python Playwright driving Debian's chromium (never a downloaded browser) against
a live Sumi server on a free loopback port.

Every test gets a fresh browser profile (its own user-data dir), so localStorage starts empty.
"""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.live_server import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
LITEGRAPH = REPO / "web" / "node_modules" / "litegraph.js" / "build" / "litegraph.core.js"
# Listings the editor asks for at start-up that may legitimately be 404: no saved workflows yet,
# and the shipped-workflows route on servers that do not offer it.
OPTIONAL_ROUTES = ("/api/userdata?dir=workflows", "/api/sumi/workflows")


@pytest.fixture(scope="module")  # a running Playwright loop must not outlive the browser tests
def playwright_driver():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make setup installs Debian's chromium)")
    if not LITEGRAPH.exists():
        pytest.skip("web/node_modules is missing (make setup runs npm ci --prefix web)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    driver = sync_api.sync_playwright().start()
    yield driver
    driver.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("browser")) as live:
        yield live


class Editor:
    """One page of the editor plus the console errors it logged."""

    def __init__(self, page, server: LiveServer) -> None:
        self.page = page
        self.server = server
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if "Failed to load resource" in message.text and any(route in url for route in OPTIONAL_ROUTES):
            return
        self.errors.append(f"{message.text} ({url})")

    def open(self) -> "Editor":
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=20000)
        return self

    def reload(self) -> "Editor":
        self.page.reload()
        self.page.wait_for_selector("body[data-ready=true]", timeout=20000)
        return self

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def load(self, workflow: dict) -> list[str]:
        """Load a UI workflow; returns the node types shown as placeholders."""
        return self.js("(wf) => window.sumi.load(wf, 'test')", workflow)

    def serialize(self) -> dict:
        return self.js("() => window.sumi.serialize()")

    def add_node(self, node_type: str, pos: tuple[float, float]) -> int:
        return self.js("""([type, pos]) => {
            const node = LiteGraph.createNode(type);
            node.pos = pos;
            window.sumi.graph.add(node);
            return node.id;
        }""", [node_type, list(pos)])

    def connect(self, origin: int, slot: int, target: int, target_slot: int) -> None:
        self.js("""([a, slot, b, targetSlot]) => {
            const graph = window.sumi.graph;
            graph.getNodeById(a).connect(slot, graph.getNodeById(b), targetSlot);
        }""", [origin, slot, target, target_slot])

    def set_widget(self, node_id: int, name: str, value) -> None:
        self.js("""([id, name, value]) => {
            window.sumi.graph.getNodeById(id).widgets.find((w) => w.name === name).value = value;
        }""", [node_id, name, value])

    def widget(self, node_id: int, name: str):
        return self.js("""([id, name]) =>
            window.sumi.graph.getNodeById(id).widgets.find((w) => w.name === name).value""", [node_id, name])

    def build_invert_graph(self, *, width: int = 32, height: int = 16, color: int = 0x336699,
                           prefix: str = "browser") -> dict[str, int]:
        """EmptyImage -> ImageInvert -> SaveImage on an empty canvas; returns the node ids."""
        self.js("() => { window.sumi.graph.clear(); window.sumi.canvas.ds.offset = [0, 0]; window.sumi.canvas.ds.scale = 1; }")
        ids = {"empty": self.add_node("EmptyImage", (40, 100)), "invert": self.add_node("ImageInvert", (420, 100)),
               "save": self.add_node("SaveImage", (700, 100))}
        for name, value in (("width", width), ("height", height), ("color", color)):
            self.set_widget(ids["empty"], name, value)
        self.set_widget(ids["save"], "filename_prefix", prefix)
        self.connect(ids["empty"], 0, ids["invert"], 0)
        self.connect(ids["invert"], 0, ids["save"], 0)
        return ids

    def wait_for_node_image(self, node_id: int, timeout: float = 60000) -> None:
        self.page.wait_for_function("""(id) => {
            const image = window.sumi.graph.getNodeById(id)?.sumiImages?.[0];
            return Boolean(image && image.complete && image.naturalWidth > 0 && !image.src.startsWith("blob:"));
        }""", arg=node_id, timeout=timeout)


@contextmanager
def editor_page(driver, server: LiveServer, profile: Path):
    """An Editor in a browser with a fresh user-data dir at `profile`."""
    context = driver.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1600, "height": 900})
    try:
        yield Editor(context.new_page(), server)
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def editor(playwright_driver, server, tmp_path):
    with editor_page(playwright_driver, server, tmp_path / "profile") as page:
        yield page


def http_json(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()
