// The editor: registers node types from /object_info, opens the last workflow (or the default
// one), and connects the toolbar, panels, WebSocket and autosave. `window.sumi` exposes the pieces
// for tests and for the browser console.

import { api } from "./api.js";
import { ServerSocket } from "./socket.js";
import { setupLiteGraph, colorSockets } from "./litegraph_setup.js";
import { registerNodeDefs } from "./node_defs.js";
import { registerFrontendNodes } from "./frontend_nodes.js";
import { defaultWorkflow } from "./default_workflow.js";
import { loadWorkflow, serializeWorkflow, startAutosave, storedWorkflow } from "./workflow.js";
import { graphToPrompt } from "./prompt.js";
import { queueGraph } from "./queue.js";
import { NodeErrors } from "./node_errors.js";
import { trackExecution } from "./execution.js";
import { createQueuePanel } from "./queue_panel.js";
import { createWorkflowList } from "./workflow_list.js";
import { setupPalette } from "./palette.js";
import { setupFileIO } from "./file_io.js";
import { BYPASS, MUTED, toggleMode } from "./node_modes.js";
import { notify } from "./notice.js";
import { fitView } from "./view.js";

function createCanvas(graph) {
  const element = document.getElementById("graph-canvas");
  const canvas = new LGraphCanvas(element, graph);
  canvas.show_info = false;
  canvas.render_canvas_border = false;
  colorSockets(canvas);
  const fit = () => {
    const { clientWidth, clientHeight } = element.parentElement;
    canvas.resize(clientWidth, clientHeight);
    canvas.setDirty(true, true);
  };
  new ResizeObserver(fit).observe(element.parentElement);
  fit();
  return canvas;
}

function bindToolbar({ canvas, queue, files, loadDefault }) {
  const button = (id, action) => document.getElementById(id).addEventListener("click", action);
  const report = (promise, done) => promise.then(() => done && notify(done)).catch((e) => notify(e.message, "error"));
  button("queue-button", queue);
  button("interrupt-button", () => report(api.interrupt()));
  button("clear-queue-button", () => report(api.clearQueue(), "Pending prompts removed"));
  button("free-button", () => report(api.freeMemory(), "Models unloaded and memory freed"));
  button("load-button", files.open);
  button("save-button", files.save);
  button("default-button", loadDefault);

  document.addEventListener("keydown", (event) => {
    if (event.target.closest?.("input, textarea, .graphdialog")) return;
    const ctrl = event.ctrlKey || event.metaKey;
    const selected = Object.values(canvas.selected_nodes ?? {});
    const shortcuts = {
      Enter: queue,
      s: files.save,
      o: files.open,
      b: () => toggleMode(selected, BYPASS),
      m: () => toggleMode(selected, MUTED),
    };
    const action = ctrl ? shortcuts[event.key] : event.key === "." && (() => fitView(canvas));
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

export async function start() {
  setupLiteGraph();
  const defs = await api.objectInfo();
  registerNodeDefs(defs);
  registerFrontendNodes();

  const graph = new LGraph();
  const canvas = createCanvas(graph);
  const errors = new NodeErrors(graph, canvas);
  const socket = new ServerSocket();
  const jobs = createQueuePanel();

  function load(data, name = "workflow") {
    errors.clear();
    const missing = loadWorkflow(graph, data);
    if (missing.length) notify(`${name}: not available on this server, shown in red: ${missing.join(", ")}`, "warning");
    return missing;
  }
  const serialize = () => serializeWorkflow(graph);
  const loadDefault = async () => {
    const { workflow, error } = await defaultWorkflow();
    if (error) notify(`The default workflow could not be fetched: ${error.message}`, "error");
    load(workflow, "Default workflow");
  };
  const replaceWithDefault = () => {
    if (!graph._nodes.length || confirm("Replace the current graph with the default workflow?")) return loadDefault();
  };

  const stored = storedWorkflow();
  try {
    if (stored) load(stored, "Restored workflow");
    else await loadDefault();
  } catch (error) {
    console.warn("The saved workflow could not be restored", error);
    await loadDefault();
  }

  const save = startAutosave(graph);
  const files = setupFileIO({ canvas, load, serialize });
  const workflows = createWorkflowList({ load, serialize });
  let queueing = false;
  const queue = async () => {
    if (queueing) return;
    queueing = true;
    try {
      const count = Math.max(1, Number(document.getElementById("batch-count").value) || 1);
      await queueGraph({ graph, socket, errors, count });
      save();
    } catch (error) {
      notify(`Could not queue: ${error.message}`, "error");
    } finally {
      queueing = false;
    }
  };

  bindToolbar({ canvas, queue, files, loadDefault: replaceWithDefault });
  setupPalette(canvas);
  trackExecution({ socket, graph, errors, onJobsChanged: jobs.refresh });
  socket.connect();
  jobs.refresh();
  workflows.refresh();

  window.sumi = {
    graph, canvas, defs, socket, errors, load, serialize, save, queue,
    graphToPrompt: () => graphToPrompt(graph),
    fitView: () => fitView(canvas),
  };
  document.body.dataset.ready = "true";
}
