// Fitting the view to the graph (the "." key, and workflows saved without a view position).

export function fitView(canvas) {
  const nodes = canvas.graph._nodes;
  if (!nodes.length) return;
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const left = Math.min(...nodes.map((n) => n.pos[0]));
  const top = Math.min(...nodes.map((n) => n.pos[1] - title));
  const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
  const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  const margin = 60;
  const { width, height } = canvas.canvas;
  const scale = Math.min(width / (right - left + 2 * margin), height / (bottom - top + 2 * margin), 1.2);
  canvas.ds.scale = scale;
  canvas.ds.offset = [width / (2 * scale) - (left + right) / 2, height / (2 * scale) - (top + bottom) / 2];
  canvas.setDirty(true, true);
}
