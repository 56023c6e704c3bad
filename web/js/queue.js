// Queue Prompt: builds the API prompt in the browser (prompt.js) and POSTs it with the workflow in
// extra_data.extra_pnginfo (spec comfy_api.md §2.6), once per batch item, applying the
// control_after_generate widgets after each successful queueing. A 400 shows its node_errors.
// Workflows with subgraph or group-node instances (shown as placeholders) are converted by the
// server instead, from {"workflow": ...}.

import { api } from "./api.js";
import { graphToPrompt } from "./prompt.js";
import { serializeWorkflow } from "./workflow.js";
import { activeMissingNodes } from "./placeholder.js";
import { applyControls } from "./seed_control.js";
import { notify } from "./notice.js";

function subgraphIds(graph) {
  const found = new Set();
  const pending = [graph];
  while (pending.length) {
    for (const definition of pending.pop().definitions?.subgraphs ?? []) {
      if (definition?.id && !found.has(definition.id)) {
        found.add(definition.id);
        pending.push(definition);
      }
    }
  }
  return found;
}

function convertedByServer(graph, node) {
  return subgraphIds(graph).has(node.type) || /^workflow[>/]/.test(node.type);
}

function payload(graph, clientId) {
  const missing = activeMissingNodes(graph);
  if (missing.length && missing.every((node) => convertedByServer(graph, node))) {
    const workflow = serializeWorkflow(graph);
    return { client_id: clientId, workflow, extra_data: { extra_pnginfo: { workflow } } };
  }
  const { workflow, output } = graphToPrompt(graph);
  return { client_id: clientId, prompt: output, extra_data: { extra_pnginfo: { workflow } } };
}

function missingNodeErrors(graph) {
  const missing = activeMissingNodes(graph).filter((node) => !convertedByServer(graph, node));
  return missing.map((node) => [String(node.id), [{
    message: `Node type "${node.type}" is not available on this server`,
    details: "Install or enable the node pack that provides it, or bypass/mute this node.",
    input: null,
  }]]);
}

/** Queue the graph `count` times; returns the number of prompts the server accepted. */
export async function queueGraph({ graph, socket, errors, count }) {
  const missing = missingNodeErrors(graph);
  if (missing.length) {
    errors.show("The workflow uses node types this server does not have", missing);
    return 0;
  }
  let queued = 0;
  for (let i = 0; i < count; i++) {
    const response = await api.queuePrompt(payload(graph, socket.clientId));
    if (!response.ok) {
      errors.showValidation(response.body);
      return queued;
    }
    errors.clear();
    if (Object.keys(response.body?.node_errors ?? {}).length) {
      errors.showValidation({ error: { message: "Queued, but outputs with errors were skipped" }, node_errors: response.body.node_errors });
    }
    applyControls(graph);
    queued += 1;
  }
  notify(queued === 1 ? "Prompt queued" : `${queued} prompts queued`);
  return queued;
}
