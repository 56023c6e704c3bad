"""The editor's client-side UI -> API conversion (graphToPrompt) gives the same prompt as the
server's converter (execution/convert.py) for every ComfyUI_examples workflow and our fixtures.

Node types the server does not implement yet come from tests/execution/fixtures/object_info_core.json,
served to the page in place of /object_info, so the comparison covers model nodes too.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from execution.convert import VIRTUAL_TYPES, ui_to_api
from tests.browser.conftest import editor_page
from tests.paths import SHARED

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "execution" / "fixtures"
EXAMPLES = SHARED / "testdata/comfy_examples"
WORKFLOWS = sorted(EXAMPLES.glob("*.ui.json")) + sorted(FIXTURES.glob("*.ui.json")) + sorted((REPO / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def node_info(server) -> dict:
    with urllib.request.urlopen(server.url + "/object_info", timeout=30) as response:
        live = json.loads(response.read())
    return {**json.loads((FIXTURES / "object_info_core.json").read_text()), **live}


@pytest.fixture(scope="module")
def parity_editor(playwright_driver, server, node_info, tmp_path_factory):
    with editor_page(playwright_driver, server, tmp_path_factory.mktemp("profile")) as editor:
        body = json.dumps(node_info)
        editor.page.route("**/api/object_info", lambda route: route.fulfill(
            status=200, content_type="application/json", body=body))
        yield editor.open()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_client_prompt_matches_server_converter(parity_editor, node_info, path):
    workflow = json.loads(path.read_text())
    unknown = {n["type"] for n in workflow["nodes"]} - set(node_info) - VIRTUAL_TYPES
    if unknown:
        pytest.skip(f"converted by the server (subgraph / group node instances): {sorted(unknown)}")
    assert parity_editor.load(workflow) == []
    client = parity_editor.js("() => window.sumi.graphToPrompt().output")
    assert client == ui_to_api(workflow, node_info.get)
    assert parity_editor.errors == []
