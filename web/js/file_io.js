// Workflow files in and out: open (.json, or a .png with an embedded `workflow` text chunk), save
// as JSON, drag-and-drop onto the canvas (an image dropped on an image-upload node is uploaded to
// it instead), and pasting an image (into the selected LoadImage node, or a new one).

import { readPngText } from "./png_metadata.js";
import { uploadImageTo } from "./image_upload.js";
import { notify } from "./notice.js";

async function workflowFromFile(file) {
  if (file.type === "image/png" || file.name.toLowerCase().endsWith(".png")) {
    const text = readPngText(await file.arrayBuffer());
    if (text.workflow) return JSON.parse(text.workflow);
    throw new Error(text.prompt ? "this PNG holds only an API prompt, not an editable workflow" : "this PNG holds no workflow");
  }
  return JSON.parse(await file.text());
}

export function setupFileIO({ canvas, load, serialize }) {
  const input = document.getElementById("file-input");
  const graph = canvas.graph;

  async function openFile(file) {
    try {
      load(await workflowFromFile(file), file.name);
    } catch (error) {
      notify(`Could not open ${file.name}: ${error.message}`, "error");
    }
  }

  function save() {
    const name = prompt("Save the workflow as:", "workflow.json");
    if (!name) return;
    const blob = new Blob([JSON.stringify(serialize(), null, 2)], { type: "application/json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name.endsWith(".json") ? name : `${name}.json`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  input.addEventListener("change", () => {
    if (input.files.length) openFile(input.files[0]);
    input.value = "";
  });

  canvas.canvas.addEventListener("dragover", (event) => {
    if (event.dataTransfer.types.includes("Files")) event.preventDefault();
  });
  canvas.canvas.addEventListener("drop", (event) => {
    const file = event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    const [x, y] = canvas.convertEventToCanvasOffset(event);
    const node = graph.getNodeOnPos(x, y);
    if (node?.imageCombo && file.type.startsWith("image/")) uploadImageTo(node, file);
    else openFile(file);
  });

  document.addEventListener("paste", (event) => {
    if (event.target.closest?.("input, textarea")) return;
    const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (!file) return;
    event.preventDefault();
    let node = Object.values(canvas.selected_nodes ?? {}).find((n) => n.imageCombo);
    if (!node) {
      if (!LiteGraph.registered_node_types.LoadImage) return;
      node = LiteGraph.createNode("LoadImage");
      const [x, y, w, h] = canvas.visible_area;
      node.pos = [x + w / 2 - 150, y + h / 2 - 150];
      graph.add(node);
    }
    uploadImageTo(node, file);
  });

  return { open: () => input.click(), save, openFile };
}
