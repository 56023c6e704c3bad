// Follows a run over the WebSocket (spec comfy_api.md §5.4-5.5): queue size, the executing node's
// highlight and progress, cached nodes, output images on their node, errors and interrupts.

import { showImages, showPreview } from "./node_images.js";
import { notify } from "./notice.js";

export function trackExecution({ socket, graph, errors, onJobsChanged }) {
  const progressBar = document.getElementById("progress-bar");
  const queueSize = document.getElementById("queue-size");
  const connection = document.getElementById("connection");
  let executing = null;

  const node = (id) => (id == null ? null : graph.getNodeById(id));
  const redraw = () => graph.setDirtyCanvas(true, false);
  const setProgress = (fraction) => { progressBar.style.width = `${Math.round(fraction * 100)}%`; };

  function finishNode() {
    const current = node(executing);
    if (current?.sumiRun === "running") current.sumiRun = "done";
    if (current) delete current.sumiProgress;
    executing = null;
  }

  const handlers = {
    connection({ online }) {
      connection.textContent = online ? "connected" : "offline";
      connection.className = online ? "online" : "offline";
    },
    status(data) {
      queueSize.textContent = `Queue: ${data?.status?.exec_info?.queue_remaining ?? 0}`;
      onJobsChanged();
    },
    execution_start() {
      for (const each of graph._nodes) delete each.sumiRun;
      setProgress(0);
      redraw();
    },
    execution_cached(data) {
      for (const id of data.nodes ?? []) {
        const cached = node(id);
        if (cached) cached.sumiRun = "cached";
      }
      redraw();
    },
    executing(data) {
      finishNode();
      setProgress(0);
      const id = data.display_node ?? data.node;
      if (id == null) {
        onJobsChanged();
      } else {
        executing = id;
        const running = node(id);
        if (running) running.sumiRun = "running";
      }
      redraw();
    },
    progress(data) {
      const fraction = data.max ? data.value / data.max : 0;
      setProgress(fraction);
      const running = node(data.node ?? executing);
      if (running) running.sumiProgress = fraction;
      redraw();
    },
    executed(data) {
      const target = node(data.display_node ?? data.node);
      const images = data.output?.images;
      if (target && Array.isArray(images)) showImages(target, images);
      onJobsChanged();
    },
    execution_error(data) {
      errors.showExecutionError(data);
      notify(`Error in ${data.node_type}: ${String(data.exception_message ?? "").trim()}`, "error");
    },
    execution_interrupted() {
      notify("Interrupted");
    },
    b_preview({ blob, nodeId }) {
      const target = node(nodeId ?? executing);
      if (target) showPreview(target, blob);
    },
  };

  for (const [type, handle] of Object.entries(handlers)) {
    socket.addEventListener(type, (event) => handle(event.detail ?? {}));
  }
}
