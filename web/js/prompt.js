// The API prompt, built in the browser like ComfyUI's graphToPrompt (spec comfy_api.md §2.4):
// virtual, muted and bypassed nodes are left out; links are resolved through reroutes, primitives
// and bypassed nodes; links to nodes that are not sent are dropped; `_meta.title` is the title.

import { serializeWorkflow } from "./workflow.js";

const MUTED = 2; // LiteGraph.NEVER
const BYPASS = 4;

function isSent(node) {
  return !node.isVirtualNode && !node.isMissing && node.mode !== MUTED && node.mode !== BYPASS;
}

/** Lists are links in an API prompt, so list-valued constants travel wrapped. */
function apiValue(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

function typesCompatible(a, b) {
  if (!a || !b || a === "*" || b === "*") return true;
  const left = new Set(String(a).split(",").map((t) => t.trim().toUpperCase()));
  return String(b).split(",").some((t) => left.has(t.trim().toUpperCase()));
}

/** The input link a bypassed node passes through for its output `slot`. */
function bypassInputLink(node, slot, wantType) {
  const inputs = node.inputs ?? [];
  if (!inputs.length) return null;
  let chosen;
  if (!wantType || wantType === "*") {
    chosen = slot < inputs.length ? slot : 0;
  } else if (slot < inputs.length && typesCompatible(inputs[slot].type, wantType)) {
    chosen = slot;
  } else {
    chosen = inputs.findIndex((input) => input.type === wantType);
    if (chosen < 0) chosen = inputs.findIndex((input) => typesCompatible(input.type, wantType));
    if (chosen < 0) return null;
  }
  return inputs[chosen].link ?? null;
}

/** Follow a link to the node that really produces its value: {link}, {value}, {none} or {dangling}. */
function resolveLink(graph, linkId, wantType) {
  const seen = new Set();
  while (!seen.has(linkId)) {
    seen.add(linkId);
    const link = graph.links[linkId];
    if (!link) return { none: true };
    const origin = graph.getNodeById(link.origin_id);
    if (!origin) return { dangling: true };
    if (origin.resolveOutput) {
      const step = origin.resolveOutput(link.origin_slot);
      if (step.follow === undefined) return step;
      linkId = step.follow;
    } else if (origin.mode === BYPASS) {
      linkId = bypassInputLink(origin, link.origin_slot, wantType);
      if (linkId == null) return { none: true };
    } else if (!isSent(origin)) {
      return { dangling: true };
    } else {
      return { link: [String(origin.id), Number(link.origin_slot)] };
    }
  }
  return { none: true }; // a cycle through reroutes or bypassed nodes
}

function nodeInputs(graph, node) {
  const inputs = {};
  for (const widget of node.widgets ?? []) {
    if (widget.name && widget.options?.serialize !== false) inputs[widget.name] = apiValue(widget.value);
  }
  for (const slot of node.inputs ?? []) {
    if (slot.link == null) continue;
    const name = slot.widget?.name ?? slot.name;
    const found = resolveLink(graph, slot.link, slot.type);
    if (found.link) inputs[name] = found.link;
    else if (found.value !== undefined) inputs[name] = apiValue(found.value);
    else if (found.dangling) delete inputs[name];
  }
  return inputs;
}

/** {workflow, output}: the UI workflow and the API prompt for the current graph. */
export function graphToPrompt(graph) {
  for (const node of graph._nodes) node.applyToGraph?.();
  const workflow = serializeWorkflow(graph);
  const output = {};
  for (const node of graph.computeExecutionOrder(false)) {
    if (!isSent(node)) continue;
    output[String(node.id)] = { inputs: nodeInputs(graph, node), class_type: node.type, _meta: { title: node.getTitle() } };
  }
  for (const entry of Object.values(output)) {
    for (const [name, value] of Object.entries(entry.inputs)) {
      if (Array.isArray(value) && !(value[0] in output)) delete entry.inputs[name];
    }
  }
  return { workflow, output };
}
