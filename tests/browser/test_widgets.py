"""Widgets built from /object_info input specs: both COMBO spellings, INT/FLOAT bounds, step and
rounding, BOOLEAN labels, multiline STRING, seed control_after_generate, sockets for the rest
(with link validation, `*` and comma multi-types), and what reaches the API prompt.

A synthetic node definition is served to the page next to the server's real ones."""
from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.conftest import editor_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC_NODE = {
    "input": {
        "required": {
            "old_combo": [["alpha", "beta", "gamma"], {}],
            "new_combo": ["COMBO", {"options": ["x", "y", "z"], "default": "y"}],
            "count": ["INT", {"default": 5, "min": 1, "max": 10, "step": 1}],
            "seed": ["INT", {"default": 7, "min": 0, "max": 2 ** 64 - 1}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
            "flag": ["BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}],
            "text": ["STRING", {"multiline": True, "default": "hello"}],
            "line": ["STRING", {"default": "one line"}],
            "image": ["IMAGE", {}],
        },
        "optional": {
            "either": ["IMAGE,MASK", {}],
            "anything": ["*", {}],
            "forced": ["INT", {"forceInput": True}],
        },
    },
    "input_order": {"required": ["old_combo", "new_combo", "count", "seed", "cfg", "flag", "text", "line", "image"],
                    "optional": ["either", "anything", "forced"]},
    "output": ["IMAGE", "MASK"], "output_is_list": [False, True], "output_name": ["IMAGE", "MASK"],
    "name": "SpecTest", "display_name": "Spec Test", "description": "Every kind of widget.",
    "python_module": "tests", "category": "testing/specs", "output_node": False,
}


@pytest.fixture(scope="module")
def spec_editor(playwright_driver, server, tmp_path_factory):
    with urllib.request.urlopen(server.url + "/object_info", timeout=30) as response:
        info = {**json.loads(response.read()), "SpecTest": SPEC_NODE}
    with editor_page(playwright_driver, server, tmp_path_factory.mktemp("profile")) as editor:
        editor.page.route("**/api/object_info", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(info)))
        yield editor.open()


@pytest.fixture
def spec_node(spec_editor):
    spec_editor.js("() => window.sumi.graph.clear()")
    return spec_editor.add_node("SpecTest", (100, 100))


WIDGETS = """(id) => window.sumi.graph.getNodeById(id).widgets.map((w) => ({
    name: w.name, type: w.type, value: w.value, values: w.options.values ?? null,
    serialize: w.options.serialize ?? true, on: w.options.on ?? null, off: w.options.off ?? null}))"""


def test_widgets_in_widgets_values_order(spec_editor, spec_node):
    widgets = spec_editor.js(WIDGETS, spec_node)
    assert [(w["name"], w["type"], w["value"]) for w in widgets] == [
        ("old_combo", "combo", "alpha"),
        ("new_combo", "combo", "y"),
        ("count", "number", 5),
        ("seed", "number", 7),
        ("control_after_generate", "combo", "randomize"),
        ("cfg", "number", 8.0),
        ("flag", "toggle", True),
        ("text", "multiline", "hello"),
        ("line", "text", "one line"),
    ]
    assert widgets[0]["values"] == ["alpha", "beta", "gamma"] and widgets[1]["values"] == ["x", "y", "z"]
    assert widgets[4]["values"] == ["fixed", "increment", "decrement", "randomize"] and widgets[4]["serialize"] is False
    assert (widgets[6]["on"], widgets[6]["off"]) == ("yes", "no")
    node = spec_editor.serialize()["nodes"][0]
    assert node["widgets_values"] == ["alpha", "y", 5, 7, "randomize", 8.0, True, "hello", "one line"]
    assert [(s["name"], s["type"]) for s in node["inputs"]] == [
        ("image", "IMAGE"), ("either", "IMAGE,MASK"), ("anything", "*"), ("forced", "INT")]
    assert [(s["name"], s["type"], s.get("shape")) for s in node["outputs"]] == [
        ("IMAGE", "IMAGE", None), ("MASK", "MASK", 6)]
    prompt = spec_editor.js("() => window.sumi.graphToPrompt().output")[str(spec_node)]
    assert prompt["inputs"] == {"old_combo": "alpha", "new_combo": "y", "count": 5, "seed": 7, "cfg": 8.0,
                                "flag": True, "text": "hello", "line": "one line"}
    assert prompt["_meta"] == {"title": "Spec Test"}


def test_number_widgets_clamp_and_round(spec_editor, spec_node):
    def after(name, value):
        return spec_editor.js("""([id, name, value]) => {
            const widget = window.sumi.graph.getNodeById(id).widgets.find((w) => w.name === name);
            widget.value = value;
            widget.callback(value);
            return widget.value;
        }""", [spec_node, name, value])
    assert after("count", 99) == 10
    assert after("count", -3) == 1
    assert after("count", 4.6) == 5
    assert after("cfg", 7.456) == 7.46
    assert after("cfg", 250) == 100


def test_seed_control_modes(spec_editor, spec_node):
    def run(mode, start):
        return spec_editor.js("""async ([id, mode, start]) => {
            const node = window.sumi.graph.getNodeById(id);
            node.widgets.find((w) => w.name === "seed").value = start;
            node.widgets.find((w) => w.name === "control_after_generate").value = mode;
            const { applyControls } = await import("./js/seed_control.js");
            applyControls(window.sumi.graph);
            return node.widgets.find((w) => w.name === "seed").value;
        }""", [spec_node, mode, start])
    assert run("fixed", 40) == 40
    assert run("increment", 40) == 41
    assert run("decrement", 40) == 39
    assert run("decrement", 0) == 0
    randoms = {run("randomize", 40) for _ in range(5)}
    assert all(0 <= v <= 2 ** 50 and v == int(v) for v in randoms) and len(randoms) > 1


def test_link_validation_by_type(spec_editor, spec_node):
    """An IMAGE output links to IMAGE, "IMAGE,MASK" and "*" sockets, never to an INT socket."""
    source = spec_editor.add_node("EmptyImage", (-300, 100))
    results = spec_editor.js("""([a, b]) => {
        const graph = window.sumi.graph;
        const from = graph.getNodeById(a), to = graph.getNodeById(b);
        const slot = (name) => to.inputs.findIndex((s) => s.name === name);
        return Object.fromEntries(["image", "either", "anything", "forced"].map(
            (name) => [name, Boolean(from.connect(0, to, slot(name)))]));
    }""", [source, spec_node])
    assert results == {"image": True, "either": True, "anything": True, "forced": False}


def test_convert_widget_to_input_and_back(spec_editor, spec_node):
    menu = """([id, label]) => {
        const {graph, canvas} = window.sumi;
        const node = graph.getNodeById(id);
        canvas.getNodeMenuOptions(node).find((o) => o && o.content === label).callback();
        return node.inputs.map((s) => [s.name, s.type, s.widget ? s.widget.name : null]);
    }"""
    slots = spec_editor.js(menu, [spec_node, "Convert count to input"])
    assert slots[-1] == ["count", "INT", "count"]
    primitive = spec_editor.add_node("PrimitiveInt", (-300, 300))
    spec_editor.set_widget(primitive, "value", 3)
    spec_editor.connect(primitive, 0, spec_node, len(slots) - 1)
    assert spec_editor.js("(id) => window.sumi.graph.getNodeById(id).widgets[2].disabled", spec_node) is True
    prompt = spec_editor.js("() => window.sumi.graphToPrompt().output")
    assert prompt[str(spec_node)]["inputs"]["count"] == [str(primitive), 0]
    slots = spec_editor.js(menu, [spec_node, "Convert count to widget"])
    assert [s[0] for s in slots] == ["image", "either", "anything", "forced"]
    prompt = spec_editor.js("() => window.sumi.graphToPrompt().output")
    assert prompt[str(spec_node)]["inputs"]["count"] == 5


def test_palette_lists_categories_and_searches(spec_editor):
    page = spec_editor.page
    item = page.locator('.palette-item[data-type="SpecTest"]')
    assert item.text_content() == "Spec Test"
    assert "Every kind of widget." in item.get_attribute("title")
    assert page.locator("#palette-tree > details > summary:text-is('testing')").count() == 1
    page.fill("#palette-search", "spec test")
    assert item.is_visible()
    assert not page.locator('.palette-item[data-type="EmptyImage"]').is_visible()
    spec_editor.js("() => window.sumi.graph.clear()")
    item.click()
    assert spec_editor.js("() => window.sumi.graph._nodes.map((n) => n.type)") == ["SpecTest"]
    page.fill("#palette-search", "")


def test_reroute_and_primitive_nodes(spec_editor, spec_node):
    """Editor-only nodes: a reroute takes its source's type; a PrimitiveNode copies the widget it
    feeds; neither is sent, their values and links are resolved into the prompt."""
    source = spec_editor.add_node("EmptyImage", (-600, 100))
    reroute = spec_editor.add_node("Reroute", (-250, 150))
    spec_editor.connect(source, 0, reroute, 0)
    spec_editor.connect(reroute, 0, spec_node, 0)  # -> "image"
    assert spec_editor.js("(id) => window.sumi.graph.getNodeById(id).outputs[0].type", reroute) == "IMAGE"

    spec_editor.js("""(id) => {
        const {graph, canvas} = window.sumi;
        canvas.getNodeMenuOptions(graph.getNodeById(id)).find((o) => o && o.content === "Convert cfg to input").callback();
    }""", spec_node)
    spec_editor.set_widget(spec_node, "cfg", 3.5)
    primitive = spec_editor.add_node("PrimitiveNode", (-600, 400))
    cfg_slot = spec_editor.js("(id) => window.sumi.graph.getNodeById(id).inputs.findIndex((s) => s.name === 'cfg')", spec_node)
    spec_editor.connect(primitive, 0, spec_node, cfg_slot)
    adopted = spec_editor.js("""(id) => {
        const node = window.sumi.graph.getNodeById(id);
        return {title: node.title, output: node.outputs[0], widgets: node.widgets.map((w) => [w.name, w.value])};
    }""", primitive)
    assert adopted["title"] == "cfg"
    assert adopted["output"]["type"] == "FLOAT" and adopted["output"]["widget"] == {"name": "cfg"}
    assert adopted["widgets"] == [["cfg", 3.5]]
    spec_editor.set_widget(primitive, "cfg", 6.25)

    prompt = spec_editor.js("() => window.sumi.graphToPrompt().output")
    assert set(prompt) == {str(source), str(spec_node)}
    assert prompt[str(spec_node)]["inputs"]["image"] == [str(source), 0]
    assert prompt[str(spec_node)]["inputs"]["cfg"] == 6.25
    assert spec_editor.widget(spec_node, "cfg") == 6.25  # the primitive's value is shown where it goes
