"""A screenshot of the editor after a finished run of the default workflow, at
tests/artifacts/editor_default_run.png: the first-open graph (workflows/default.json) drawing with the
bundled tiny model on a fresh base directory, with nothing added to models/.
"""
from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import editor_page, fetch, http_json
from tests.integration.live_server import LiveServer
from tools.eval_tiny import classify

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "tests" / "artifacts" / "editor_default_run.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("screenshot")) as live:
        yield live


def test_first_open_shows_the_shipped_default_workflow_and_runs_it(playwright_driver, server, tmp_path):
    shipped = json.loads((REPO / "workflows" / "default.json").read_text())
    with editor_page(playwright_driver, server, tmp_path / "profile") as editor:
        editor.open()
        shown = editor.js("() => window.sumi.serialize().nodes.map((n) => [n.id, n.type, n.widgets_values])")
        assert sorted((n[0], n[1]) for n in shown) == sorted((n["id"], n["type"]) for n in shipped["nodes"])
        loader = next(n for n in shown if n[1] == "CheckpointLoaderSimple")
        assert loader[2] == ["sumi-tiny-shapes.safetensors"]
        editor.page.click("#queue-button")
        editor.wait_for_node_image(9, timeout=120_000)
        editor.page.wait_for_selector("#job-list .job.completed img")
        editor.js("() => { document.getElementById('notice').hidden = true; window.sumi.fitView(); }")
        editor.page.wait_for_timeout(300)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        editor.page.screenshot(path=str(ARTIFACT))
        assert editor.errors == []
    # What the run drew: the default prompt is "a red circle on the left, blue background" (seed 0).
    _, history = http_json(server.url + "/history")
    (entry,) = history.values()
    (image,) = entry["outputs"]["9"]["images"]
    png = fetch(f"{server.url}/view?{urllib.parse.urlencode(image)}")
    reading = classify(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) / 255.0)
    assert (reading.colour, reading.position) == ("red", "left"), reading
