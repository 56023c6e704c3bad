"""Files in and out of the editor: LoadImage uploads by button, drag-and-drop and paste; opening
and saving workflow JSON; a dropped PNG with an embedded workflow; the workflow lists."""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
INVERT = REPO / "workflows" / "invert_image.json"

WIDGET_POINT = """([id, name]) => {
    const {graph, canvas} = window.sumi;
    const node = graph.getNodeById(id);
    const widget = node.widgets.find((w) => w.name === name);
    const rect = canvas.canvas.getBoundingClientRect();
    const [x, y] = canvas.convertOffsetToCanvas(
        [node.pos[0] + node.size[0] / 2, node.pos[1] + widget.last_y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
    return [rect.left + x, rect.top + y];
}"""

MAKE_TRANSFER = """(files) => {
    const transfer = new DataTransfer();
    for (const [b64, name] of files) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type: "image/png"}));
    }
    return transfer;
}"""

DROP = """([id, files]) => {
    const {graph, canvas} = window.sumi;
    const transfer = (%s)(files);
    const node = id === null ? null : graph.getNodeById(id);
    const [x, y] = node ? canvas.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + node.size[1] / 2])
                        : [30, 30];
    const rect = canvas.canvas.getBoundingClientRect();
    const init = {dataTransfer: transfer, clientX: rect.left + x, clientY: rect.top + y, bubbles: true, cancelable: true};
    canvas.canvas.dispatchEvent(new DragEvent("dragover", init));
    canvas.canvas.dispatchEvent(new DragEvent("drop", init));
}""" % MAKE_TRANSFER

PASTE = """(files) => {
    const transfer = (%s)(files);
    document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
}""" % MAKE_TRANSFER


def png(color=(10, 200, 30), text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_load_image(editor) -> int:
    editor.js("() => { window.sumi.graph.clear(); window.sumi.canvas.ds.offset = [0, 0]; window.sumi.canvas.ds.scale = 1; }")
    node = editor.add_node("LoadImage", (100, 100))
    editor.page.wait_for_timeout(100)  # one frame, so the widgets have their positions
    return node


def wait_for_image_value(editor, node: int, name: str) -> None:
    editor.page.wait_for_function("([id, name]) => window.sumi.graph.getNodeById(id).widgets[0].value === name",
                                  arg=[node, name])
    assert (editor.server.base / "input" / name).is_file()
    editor.page.wait_for_function("""(id) => {
        const image = window.sumi.graph.getNodeById(id).sumiImages?.[0];
        return Boolean(image && image.complete && image.naturalWidth === 8 && image.src.includes("type=input"));
    }""", arg=node)


def test_upload_button(editor, tmp_path):
    editor.open()
    node = new_load_image(editor)
    path = tmp_path / "button_upload.png"
    path.write_bytes(png())
    x, y = editor.js(WIDGET_POINT, [node, "upload"])
    with editor.page.expect_file_chooser() as chooser:
        editor.page.mouse.click(x, y)
    chooser.value.set_files(str(path))
    wait_for_image_value(editor, node, "button_upload.png")
    prompt = editor.js("() => window.sumi.graphToPrompt().output")
    assert prompt[str(node)]["inputs"] == {"image": "button_upload.png"}
    assert editor.errors == []


def test_drop_image_on_load_image_node(editor):
    editor.open()
    node = new_load_image(editor)
    editor.js(DROP, [node, [[b64(png((1, 2, 3))), "dropped.png"]]])
    wait_for_image_value(editor, node, "dropped.png")


def test_paste_image(editor):
    editor.open()
    node = new_load_image(editor)
    editor.js("(id) => window.sumi.canvas.selectNode(window.sumi.graph.getNodeById(id))", node)
    editor.js(PASTE, [[b64(png((4, 5, 6))), "pasted.png"]])
    wait_for_image_value(editor, node, "pasted.png")

    # With no LoadImage selected, pasting creates one.
    editor.js("() => window.sumi.canvas.deselectAllNodes()")
    editor.js(PASTE, [[b64(png((7, 8, 9))), "pasted_new.png"]])
    editor.page.wait_for_function("""() => window.sumi.graph._nodes.some(
        (n) => n.type === "LoadImage" && n.widgets[0].value === "pasted_new.png")""")


def test_drop_png_with_embedded_workflow(editor):
    workflow = json.loads(INVERT.read_text())
    editor.open()
    editor.js("() => window.sumi.graph.clear()")
    editor.js(DROP, [None, [[b64(png(text={"workflow": json.dumps(workflow), "prompt": "{}"})), "made.png"]]])
    editor.page.wait_for_function("() => window.sumi.graph._nodes.length === 3")
    types = editor.js("() => window.sumi.graph._nodes.map((n) => n.type)")
    assert types == [n["type"] for n in workflow["nodes"]]
    assert editor.errors == []


def test_open_and_save_workflow_files(editor):
    editor.open()
    editor.page.set_input_files("#file-input", str(INVERT))
    editor.page.wait_for_function("() => window.sumi.graph._nodes.map((n) => n.type).join() === 'EmptyImage,ImageInvert,SaveImage'")
    editor.page.once("dialog", lambda dialog: dialog.accept("saved_by_test"))
    with editor.page.expect_download() as download:
        editor.page.click("#save-button")
    assert download.value.suggested_filename == "saved_by_test.json"
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved == editor.serialize()
    assert saved["version"] == 0.4 and all(len(link) == 6 for link in saved["links"])


def test_workflow_lists(editor):
    editor.open()
    editor.load(json.loads(INVERT.read_text()))
    editor.page.once("dialog", lambda dialog: dialog.accept("mine"))
    editor.page.click("#workflow-list .save-entry button")
    saved = editor.page.wait_for_selector("#workflow-list button:text-is('mine.json')")
    editor.js("() => window.sumi.graph.clear()")
    saved.click()
    editor.page.wait_for_function("() => window.sumi.graph._nodes.length === 3")

    try:
        with urllib.request.urlopen(editor.server.url + "/api/sumi/workflows", timeout=10) as response:
            shipped = json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.code == 404
        shipped = None
    if shipped is None:
        editor.page.wait_for_selector("#workflow-list li:text('not offered by this server')")
    else:
        editor.js("() => window.sumi.graph.clear()")
        editor.page.click(f"#workflow-list button:text-is('{INVERT.name}')")
        editor.page.wait_for_function("() => window.sumi.graph._nodes.length === 3")
    assert editor.errors == []
