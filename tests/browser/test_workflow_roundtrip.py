"""Every ComfyUI_examples UI workflow (and our own fixtures) loads without a console error and
serializes back unchanged; node types the server lacks become placeholders that keep their data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.conftest import editor_page
from tests.paths import SHARED

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = SHARED / "testdata/comfy_examples"
WORKFLOWS = sorted(EXAMPLES.glob("*.ui.json")) + sorted((REPO / "tests" / "execution" / "fixtures").glob("*.ui.json")) \
    + sorted((REPO / "workflows").glob("*.json"))
# litegraph recomputes the execution order on load; sizes come back as [w, h] even when a file
# stored litegraph's old {"0": w, "1": h} form.
RECOMPUTED = {"order"}
LAYOUT = {"pos", "size", "flags"}


@pytest.fixture(scope="module")
def shared_editor(playwright_driver, server, tmp_path_factory):
    with editor_page(playwright_driver, server, tmp_path_factory.mktemp("profile")) as editor:
        yield editor.open()


def normalized_node(node: dict) -> dict:
    out = {k: v for k, v in node.items() if k not in RECOMPUTED}
    if isinstance(out.get("size"), dict):
        out["size"] = [out["size"]["0"], out["size"]["1"]]
    return out


def assert_same_node(got: dict, want: dict, placeholder: bool) -> None:
    """Placeholders come back exactly, plus a position and size if a hand-written file had none.
    Known nodes keep every key they had, and may gain what the editor fills in for a hand-written
    or older file (position, size, default properties, and default values for widgets the node
    type gained after the file was saved)."""
    got, want = normalized_node(got), normalized_node(want)
    if placeholder:
        assert {k: v for k, v in got.items() if k in want or k not in LAYOUT} == want
        return
    values = want.get("widgets_values")
    if isinstance(values, list) and isinstance(got.get("widgets_values"), list):
        got["widgets_values"] = got["widgets_values"][:len(values)]
    assert {k: got.get(k) for k in want} == want


def assert_same_workflow(got: dict, want: dict, placeholders: set[int]) -> None:
    # A hand-written file may lack the sections every saved workflow has.
    assert set(want) <= set(got) and set(got) - set(want) <= {"config", "groups", "extra"}
    got_nodes = {n["id"]: n for n in got["nodes"]}
    assert list(got_nodes) == [n["id"] for n in want["nodes"]]
    for node in want["nodes"]:
        assert_same_node(got_nodes[node["id"]], node, node["id"] in placeholders)
    assert sorted(got["links"], key=lambda link: link[0]) == sorted(want["links"], key=lambda link: link[0])
    assert got["groups"] == want.get("groups", [])
    # extra.ds is the editor's view; it is written back when the file had one.
    if "extra" in want:
        assert {k: v for k, v in got["extra"].items() if k != "ds" or "ds" in want["extra"]} == want["extra"]
    for key in set(want) - {"nodes", "links", "groups", "extra"}:
        assert got[key] == want[key], key


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_round_trips(shared_editor, path):
    workflow = json.loads(path.read_text())
    shared_editor.errors.clear()
    missing = shared_editor.load(workflow)
    shared_editor.page.wait_for_timeout(50)  # let a frame render: drawing must not fail either
    assert shared_editor.errors == []
    placeholders = set(shared_editor.js("() => window.sumi.graph._nodes.filter((n) => n.isMissing).map((n) => n.id)"))
    assert {n["type"] for n in workflow["nodes"] if n["id"] in placeholders} == set(missing)
    assert_same_workflow(shared_editor.serialize(), workflow, placeholders)

    # Configuring from our own output is stable too.
    once = shared_editor.serialize()
    shared_editor.load(once)
    assert shared_editor.serialize() == once
    assert shared_editor.errors == []
