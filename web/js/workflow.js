// UI workflow JSON in and out (spec comfy_api.md §2.2, version 0.4, links as 6-tuples), and the
// autosave that lets the workflow in progress survive a page reload.

import { fitView } from "./view.js";

const STORAGE_KEY = "sumi.workflow";

function isUiWorkflow(data) {
  return Boolean(data && typeof data === "object" && Array.isArray(data.nodes));
}

/** The graph as a plain UI workflow object, top-level keys we do not use included. */
export function serializeWorkflow(graph) {
  const data = graph.serialize();
  for (const key of graph.sumiTopKeys ?? []) {
    if (!(key in data) && graph[key] !== undefined) data[key] = graph[key];
  }
  const canvas = graph.list_of_graphcanvas?.[0];
  if (canvas) data.extra = { ...data.extra, ds: { scale: canvas.ds.scale, offset: [...canvas.ds.offset] } };
  return JSON.parse(JSON.stringify(data)); // detach from the live slot arrays
}

/** Replace the graph with a UI workflow; returns the node types that loaded as placeholders. */
export function loadWorkflow(graph, data) {
  if (!isUiWorkflow(data)) throw new Error("This is not a UI workflow (it has no \"nodes\" list).");
  const copy = JSON.parse(JSON.stringify(data)); // configure() rewrites what it is given
  graph.sumiLoading = true;
  try {
    graph.configure(copy);
    for (const node of graph._nodes) node.afterGraphLoaded?.();
  } finally {
    graph.sumiLoading = false;
  }
  graph.sumiTopKeys = Object.keys(data);
  const canvas = graph.list_of_graphcanvas?.[0];
  const ds = data.extra?.ds;
  if (canvas && ds && Array.isArray(ds.offset)) {
    canvas.ds.scale = Number(ds.scale) || 1;
    canvas.ds.offset = [Number(ds.offset[0]) || 0, Number(ds.offset[1]) || 0];
  } else if (canvas) {
    fitView(canvas);
  }
  graph.setDirtyCanvas(true, true);
  return [...new Set(graph._nodes.filter((node) => node.isMissing).map((node) => node.type))];
}

export function storedWorkflow() {
  try {
    const data = JSON.parse(localStorage.getItem(STORAGE_KEY));
    return isUiWorkflow(data) ? data : null;
  } catch {
    return null;
  }
}

/** Save the graph to localStorage whenever it changed (checked every second and on leaving). */
export function startAutosave(graph) {
  let last = localStorage.getItem(STORAGE_KEY);
  const save = () => {
    const text = JSON.stringify(serializeWorkflow(graph));
    if (text === last) return;
    try {
      localStorage.setItem(STORAGE_KEY, text);
      last = text;
    } catch (error) {
      console.warn("The workflow is too large to keep in localStorage", error);
    }
  };
  setInterval(save, 1000);
  addEventListener("pagehide", save);
  document.addEventListener("visibilitychange", save);
  return save;
}
