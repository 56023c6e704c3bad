// Bypass (mode 4: the node passes its inputs through) and mute (mode 2: the node and what only it
// feeds are left out), from the node menu or Ctrl+B / Ctrl+M on the selection.

export const MUTED = 2;
export const BYPASS = 4;

/** Toggle `mode` on the given nodes: all get it, or all lose it when they all had it. */
export function toggleMode(nodes, mode) {
  if (!nodes.length) return;
  const next = nodes.every((node) => node.mode === mode) ? LiteGraph.ALWAYS : mode;
  for (const node of nodes) node.mode = next;
  nodes[0].graph?.setDirtyCanvas(true, true);
}

export function selectedOr(canvas, node) {
  const selected = Object.values(canvas.selected_nodes ?? {});
  return selected.includes(node) ? selected : [node];
}
