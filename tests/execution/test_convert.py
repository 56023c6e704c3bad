"""UI workflow -> API prompt conversion (spec comfy_api.md §2.2-2.4).

The main evidence is ComfyUI_examples: PNGs holding both the UI workflow and the API prompt the
upstream frontend produced from it.  `node_info` comes from fixtures/object_info_core.json, derived
by hand from the spec's §9 tables; a drift test pins it to the live registry where they overlap.
"""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from execution.convert import VIRTUAL_TYPES, WorkflowConversionError, load_any, read_png_metadata, ui_to_api
from tests.paths import SHARED

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = SHARED / "testdata/comfy_examples"
OBJECT_INFO: dict[str, dict] = json.loads((FIXTURES / "object_info_core.json").read_text())

# The example PNGs were written by older frontends; these differences are theirs, not ours.
# 1. They sent LoadImage's upload button value as an input.
LEGACY_UPLOAD_INPUTS = frozenset({"upload", "choose file to upload"})
# 2. These nodes gained an input after the example was saved (their widgets_values predate it).
#    Today's editor creates the widget with its default and sends it, and so do we.
INPUTS_ADDED_LATER = {
    ("inpaint__inpaint_example", "26"): {"grow_mask_by": 6},
    ("sdturbo__sdxlturbo_example", "22"): {"denoise": 1.0},
    ("unclip__unclip_example", "13"): {"crop": "center"},  # a combo without default: its first option
}


def _pairs(folder: Path) -> list[str]:
    return sorted(p.name[: -len(".ui.json")] for p in folder.glob("*.ui.json")
                  if (folder / p.name.replace(".ui.json", ".api.json")).exists())


def _load(folder: Path, name: str) -> tuple[dict, dict]:
    return (json.loads((folder / f"{name}.ui.json").read_text()),
            json.loads((folder / f"{name}.api.json").read_text()))


def _node_types(workflow: dict) -> set[str]:
    """Real node types used anywhere in a workflow, subgraph definitions and group nodes included."""
    graphs = [workflow]
    graphs += list(((workflow.get("extra") or {}).get("groupNodes") or {}).values())
    containers = [workflow]
    while containers:
        for definition in (containers.pop().get("definitions") or {}).get("subgraphs") or []:
            graphs.append(definition)
            containers.append(definition)
    skip = {g.get("id") for g in graphs[1:]} | set(VIRTUAL_TYPES)
    return {n["type"] for g in graphs for n in g.get("nodes") or []
            if n["type"] not in skip and not n["type"].startswith(("workflow>", "workflow/"))}


def _assert_prompt(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for node_id, want in expected.items():
        assert got[node_id]["class_type"] == want["class_type"], node_id
        assert got[node_id]["inputs"] == want["inputs"], node_id
        if "_meta" in want:
            assert got[node_id]["_meta"] == want["_meta"], node_id


def _info(extra: dict[str, dict]):
    return lambda class_type: extra.get(class_type) or OBJECT_INFO.get(class_type)


@pytest.mark.parametrize("name", _pairs(EXAMPLES))
def test_comfy_example_pair(name: str) -> None:
    ui, expected = _load(EXAMPLES, name)
    missing = _node_types(ui) - set(OBJECT_INFO)
    if missing:
        pytest.skip(f"node types not in object_info_core.json: {sorted(missing)}")
    got = ui_to_api(ui, OBJECT_INFO.get)
    for node_id, want in expected.items():
        want["inputs"] = {k: v for k, v in want["inputs"].items() if k not in LEGACY_UPLOAD_INPUTS}
        want["inputs"].update(INPUTS_ADDED_LATER.get((name, node_id), {}))
    _assert_prompt(got, expected)


def test_fixture_covers_every_example_node_type() -> None:
    """Otherwise example pairs would be skipped silently."""
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} not present")
    used = set().union(*(_node_types(_load(EXAMPLES, n)[0]) for n in _pairs(EXAMPLES)))
    assert used - set(OBJECT_INFO) == set()


@pytest.mark.parametrize("name", _pairs(FIXTURES))
def test_hand_made_fixture(name: str) -> None:
    """subgraph_nested, bypass, muted, primitive, reroute_size_dict, group_node."""
    ui, expected = _load(FIXTURES, name)
    _assert_prompt(ui_to_api(ui, OBJECT_INFO.get), expected)


def _widget_signature(info: dict) -> dict:
    """What the converter reads from an /object_info entry: order, io types and widget flags."""
    signature = {}
    for category in ("required", "optional"):
        section = info["input"].get(category) or {}
        for name in info["input_order"].get(category) or []:
            spec = section[name]
            options = spec[1] if len(spec) > 1 else {}
            io_type = "COMBO" if isinstance(spec[0], list) else spec[0]
            signature[name] = (category, io_type, bool(options.get("control_after_generate")),
                               bool(options.get("image_upload")), bool(options.get("forceInput")))
    return {"order": {k: v for k, v in info["input_order"].items() if k != "hidden"}, "inputs": signature}


def test_fixture_matches_live_registry(tmp_path: Path) -> None:
    """The hand-written fixture must not drift from the engine's real nodes where both exist."""
    import importlib

    from model_management.folders import Folders
    from nodes.registry import BUILTIN_MODULES, NodeRegistry
    from nodes.runtime import NodeServices

    registry = NodeRegistry(NodeServices(Folders.create(tmp_path)))
    unavailable = []
    for module in BUILTIN_MODULES:  # modules still being written must not hide the finished ones
        try:
            registry.register_module(importlib.import_module(module), "nodes")
        except ImportError as exc:
            unavailable.append(f"{module}: {exc}")
    live = registry.object_info()
    shared = sorted(set(live) & set(OBJECT_INFO))
    if not shared:
        pytest.skip(f"no fixture node type is registered yet (unavailable: {unavailable})")
    for class_type in shared:
        assert _widget_signature(OBJECT_INFO[class_type]) == _widget_signature(live[class_type]), class_type


def test_deep_reroute_chain_is_iterative() -> None:
    depth = 5000
    nodes = [{"id": 1, "type": "LoadImage", "widgets_values": ["a.png", "image"]},
             {"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": depth}]}]
    links = []
    for i in range(depth):
        nodes.append({"id": 100 + i, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": i}]})
        links.append([i + 1, 100 + i, 0, 100 + i + 1 if i + 1 < depth else 2, 0, "IMAGE"])
    links.append([0, 1, 0, 100, 0, "IMAGE"])
    prompt = ui_to_api({"nodes": nodes, "links": links}, OBJECT_INFO.get)
    assert prompt["2"]["inputs"] == {"images": ["1", 0]}
    assert set(prompt) == {"1", "2"}


def test_every_unknown_node_type_is_reported() -> None:
    ui, _ = _load(FIXTURES, "subgraph_nested")
    ui["nodes"][0]["type"] = "FooLoader"
    ui["nodes"].append({"id": 30, "type": "BarNode", "mode": 0})
    ui["nodes"].append({"id": 31, "type": "MutedMissing", "mode": 2})  # never sent, so never needed
    ui["definitions"]["subgraphs"][0]["definitions"]["subgraphs"][0]["nodes"][0]["type"] = "BazEncode"
    with pytest.raises(WorkflowConversionError) as caught:
        ui_to_api(ui, OBJECT_INFO.get)
    problems = {(p.node_id, p.class_type) for p in caught.value.problems}
    assert problems == {("1", "FooLoader"), ("30", "BarNode"), ("10:5:3", "BazEncode"), ("11:5:3", "BazEncode")}
    for node_id, class_type in problems:
        assert f"node {node_id} ({class_type})" in str(caught.value)


def test_bad_widgets_values_names_node_and_widget() -> None:
    ui = {"nodes": [{"id": 7, "type": "EmptyLatentImage", "widgets_values": "512x512"}], "links": []}
    with pytest.raises(WorkflowConversionError, match=r"node 7 \(EmptyLatentImage\) input 'widgets_values'"):
        ui_to_api(ui, OBJECT_INFO.get)


def test_reroute_cycle_names_the_consumer() -> None:
    ui = {"nodes": [{"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}]},
                    {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}]},
                    {"id": 3, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]}],
          "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "IMAGE"]]}
    with pytest.raises(WorkflowConversionError, match=r"node 3 \(PreviewImage\) input 'images': link cycle"):
        ui_to_api(ui, OBJECT_INFO.get)


def test_subgraph_containing_itself_is_refused() -> None:
    definition = {"id": "loop", "nodes": [{"id": 1, "type": "loop"}], "links": [], "inputs": [], "outputs": []}
    ui = {"nodes": [{"id": 5, "type": "loop"}], "links": [], "definitions": {"subgraphs": [definition]}}
    with pytest.raises(WorkflowConversionError, match="node 5:1 .*contains an instance of itself"):
        ui_to_api(ui, OBJECT_INFO.get)


@pytest.mark.parametrize(("mode", "positive"), [(2, None), (4, None)])
def test_muted_or_bypassed_subgraph_instance(mode: int, positive: Any) -> None:
    """Muted: inner nodes vanish and links to it dangle.  Bypassed: its only input is CLIP, the
    sampler wants CONDITIONING, so nothing passes through and the link is dropped."""
    ui, _ = _load(FIXTURES, "subgraph_nested")
    next(n for n in ui["nodes"] if n["id"] == 10)["mode"] = mode
    prompt = ui_to_api(ui, OBJECT_INFO.get)
    assert not [k for k in prompt if k.startswith("10:")]
    assert prompt["3"]["inputs"].get("positive") == positive
    assert prompt["3"]["inputs"]["negative"] == ["11:6", 0]


def test_subgraph_definitions_keyed_by_id() -> None:
    """Some tools write definitions.subgraphs as {id: definition} instead of a list."""
    ui, expected = _load(FIXTURES, "subgraph_nested")
    outer = ui["definitions"]["subgraphs"][0]
    inner = outer["definitions"]["subgraphs"][0]
    outer["definitions"]["subgraphs"] = {inner.pop("id"): inner}
    ui["definitions"]["subgraphs"] = {outer.pop("id"): outer}
    _assert_prompt(ui_to_api(ui, OBJECT_INFO.get), expected)


def test_bypass_matches_comma_types_and_wildcards() -> None:
    """Wanting IMAGE: slot 0 (LATENT) does not fit and no input is exactly IMAGE, so the first
    compatible one ("IMAGE,MASK") passes through.  Wanting "*": the same slot index."""
    ui = {"nodes": [
        {"id": 1, "type": "EmptyLatentImage", "widgets_values": [64, 64, 1]},
        {"id": 2, "type": "LoadImage", "widgets_values": ["a.png", "image"]},
        {"id": 3, "type": "AnyCustomNode", "mode": 4,
         "inputs": [{"name": "a", "type": "LATENT", "link": 1}, {"name": "b", "type": "IMAGE,MASK", "link": 2}]},
        {"id": 4, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]},
        {"id": 5, "type": "PreviewImage", "inputs": [{"name": "images", "type": "*", "link": 4}]}],
        "links": [[1, 1, 0, 3, 0, "LATENT"], [2, 2, 0, 3, 1, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"], [4, 3, 0, 5, 0, "*"]]}
    prompt = ui_to_api(ui, OBJECT_INFO.get)
    assert prompt["4"]["inputs"] == {"images": ["2", 0]}
    assert prompt["5"]["inputs"] == {"images": ["1", 0]}


@pytest.mark.parametrize("separator", [">", "/"])
def test_group_node_widget_socket_fed_from_outside(separator: str) -> None:
    """Both legacy type spellings; a group widget converted to a socket takes the outside value."""
    ui, expected = _load(FIXTURES, "group_node")
    group = next(n for n in ui["nodes"] if n["id"] == 12)
    group["type"] = f"workflow{separator}SampleAndDecode"
    group["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 20})
    ui["nodes"].append({"id": 20, "type": "PrimitiveNode", "widgets_values": [99, "fixed"],
                        "outputs": [{"name": "INT", "type": "INT", "links": [20], "widget": {"name": "seed"}}]})
    ui["links"].append([20, 20, 0, 12, 5, "INT"])
    expected["12:0"]["inputs"]["seed"] = 99
    _assert_prompt(ui_to_api(ui, OBJECT_INFO.get), expected)


def test_misaligned_proxy_widgets_keep_inner_values() -> None:
    ui, _ = _load(FIXTURES, "subgraph_nested")
    next(n for n in ui["nodes"] if n["id"] == 10)["widgets_values"] = ["only one value"]
    prompt = ui_to_api(ui, OBJECT_INFO.get)
    assert prompt["10:5:3"]["inputs"]["text"] == "inner default"
    assert prompt["10:6"]["inputs"]["strength"] == 1.0


def test_seed_companion_without_the_info_flag() -> None:
    """Infos that omit control_after_generate on seed/noise_seed still get the companion skipped;
    an explicit False turns it off."""
    stripped = copy.deepcopy(OBJECT_INFO["KSampler"])
    del stripped["input"]["required"]["seed"][1]["control_after_generate"]
    ui = {"nodes": [{"id": 3, "type": "KSampler", "widgets_values": [5, "fixed", 30, 7, "euler", "karras", 0.6]}],
          "links": []}
    inputs = ui_to_api(ui, _info({"KSampler": stripped}))["3"]["inputs"]
    assert inputs == {"seed": 5, "steps": 30, "cfg": 7, "sampler_name": "euler", "scheduler": "karras", "denoise": 0.6}
    stripped["input"]["required"]["seed"][1]["control_after_generate"] = False
    ui["nodes"][0]["widgets_values"] = [5, 30, 7, "euler", "karras", 0.6]
    assert ui_to_api(ui, _info({"KSampler": stripped}))["3"]["inputs"] == inputs


PICKER = {"input": {"required": {
    "choice": ["COMBO", {"options": ["a", "b"], "control_after_generate": True}],
    "tags": ["COMBO", {"options": ["x", "y", "z"], "multiselect": True, "default": ["y"]}],
    "count": ["INT", {"default": 3}]}},
    "input_order": {"required": ["choice", "tags", "count"]}, "output": ["STRING"], "display_name": "Picker"}
INT_SOURCE = {"input": {"required": {}}, "input_order": {"required": []}, "output": ["INT"], "display_name": "Int"}


@pytest.mark.parametrize("values", [["b", "fixed", ["x", "z"], 9], ["b", "fixed", "", ["x", "z"], 9]])
def test_combo_control_with_and_without_filter_list(values: list) -> None:
    """List constants are wrapped, as lists in a prompt mean links."""
    ui = {"nodes": [{"id": 1, "type": "Picker", "widgets_values": values}], "links": []}
    assert ui_to_api(ui, _info({"Picker": PICKER}))["1"] == {
        "class_type": "Picker", "_meta": {"title": "Picker"},
        "inputs": {"choice": "b", "tags": {"__value__": ["x", "z"]}, "count": 9}}


def test_missing_widget_values_take_declared_defaults() -> None:
    ui = {"nodes": [{"id": 1, "type": "Picker", "widgets_values": ["b", "fixed"]}], "links": []}
    assert ui_to_api(ui, _info({"Picker": PICKER}))["1"]["inputs"] == {
        "choice": "b", "tags": {"__value__": ["y"]}, "count": 3}


def test_widget_linked_to_muted_source_is_removed() -> None:
    """The frontend writes the link, then deletes it because its source is not sent: the widget
    value goes with it.  An unlinked widget socket keeps its value."""
    ui = {"nodes": [{"id": 1, "type": "IntSource", "mode": 2},
                    {"id": 2, "type": "Picker", "widgets_values": ["a", "fixed", [], 4],
                     "inputs": [{"name": "count", "type": "INT", "widget": {"name": "count"}, "link": 1}]},
                    {"id": 3, "type": "Picker", "widgets_values": ["a", "fixed", [], 4],
                     "inputs": [{"name": "count", "type": "INT", "widget": {"name": "count"}, "link": None}]}],
          "links": [[1, 1, 0, 2, 0, "INT"]]}
    prompt = ui_to_api(ui, _info({"Picker": PICKER, "IntSource": INT_SOURCE}))
    assert "count" not in prompt["2"]["inputs"]
    assert prompt["3"]["inputs"]["count"] == 4


def _png(**chunks: dict) -> bytes:
    meta = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        meta.add_text(key, json.dumps(value))
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=meta)
    return buffer.getvalue()


def test_png_metadata_and_load_any(tmp_path: Path) -> None:
    ui, api = _load(FIXTURES, "primitive")
    both = _png(prompt=api, workflow=ui)
    assert read_png_metadata(both) == {"prompt": api, "workflow": ui}
    assert load_any(both) == ("api", api)  # what actually ran, seeds included
    path = tmp_path / "only_workflow.png"
    path.write_bytes(_png(workflow=ui))
    assert load_any(path) == ("ui", ui)
    assert load_any(str(FIXTURES / "primitive.ui.json")) == ("ui", ui)
    assert load_any(json.dumps(api).encode()) == ("api", api)
    assert load_any(json.dumps({"prompt": api, "client_id": "x"}).encode()) == ("api", api)
    for bad in (_png(), b"not json", b"[1, 2]"):
        with pytest.raises(WorkflowConversionError):
            load_any(bad)
