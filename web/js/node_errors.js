// Errors shown where they happened: validation errors from a rejected POST /prompt (the 400 body's
// node_errors, spec comfy_api.md §3.5) and execution_error messages (§4.11) are attached to the
// offending node (drawn by overlay.js, input by input) and listed in the side panel.

export class NodeErrors {
  constructor(graph, canvas) {
    this.graph = graph;
    this.canvas = canvas;
    this.section = document.getElementById("errors");
    this.summary = document.getElementById("errors-summary");
    this.list = document.getElementById("error-list");
  }

  clear() {
    for (const node of this.graph._nodes) delete node.sumiErrors;
    this.section.hidden = true;
    this.list.replaceChildren();
    this.graph.setDirtyCanvas(true, false);
  }

  /** The body of a 400 from POST /prompt. */
  showValidation(body) {
    const top = body?.error ?? {};
    const byNode = Object.entries(body?.node_errors ?? {}).map(([id, entry]) => [
      id,
      (entry.errors ?? []).map((e) => ({ message: e.message, details: e.details, input: e.extra_info?.input_name ?? null })),
    ]);
    const summary = typeof top === "string" ? top : [top.message, byNode.length ? "" : top.details].filter(Boolean).join(": ");
    this.show(summary || "The server rejected the prompt", byNode);
  }

  /** The data of an execution_error message. */
  showExecutionError(data) {
    const message = String(data.exception_message ?? "").trim();
    this.show(`Error while running ${data.node_type} (#${data.node_id})`, [
      [String(data.node_id), [{ message, details: data.exception_type, input: null }]],
    ]);
  }

  /** `byNode`: [[node id, [{message, details, input}]]]. */
  show(summary, byNode) {
    this.clear();
    this.summary.textContent = summary;
    for (const [id, errors] of byNode) {
      const node = this.graph.getNodeById(id);
      if (node) node.sumiErrors = errors;
      for (const error of errors) this.list.append(this.item(id, node, error));
    }
    this.section.hidden = false;
    this.graph.setDirtyCanvas(true, false);
  }

  item(id, node, error) {
    const li = document.createElement("li");
    li.dataset.nodeId = id;
    if (error.input) li.dataset.input = error.input;
    const where = document.createElement("strong");
    where.textContent = `#${id} ${node ? node.getTitle() : "(not in the graph)"}${error.input ? ` · ${error.input}` : ""}`;
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = error.message;
    li.append(where, message);
    if (error.details && error.details !== error.message) {
      const details = document.createElement("small");
      details.textContent = error.details;
      li.append(details);
    }
    if (node) {
      li.addEventListener("click", () => {
        this.canvas.centerOnNode(node);
        this.canvas.selectNode(node);
      });
    }
    return li;
  }
}
