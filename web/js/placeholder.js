// Nodes whose type the server does not know (not installed, or not implemented yet) load as red
// placeholders. They keep everything they were loaded with (slots, links, widgets_values,
// properties, unknown keys) and serialize it back unchanged, so no workflow ever loses a node.

import { beginConfigure, finishSerialize } from "./node_serialization.js";

class MissingNode extends LGraphNode {
  constructor(title) {
    super(title);
    this.isMissing = true; // overlay.js paints such nodes red
  }

  getTitle() {
    return this.title || this.type;
  }

  configure(info) {
    beginConfigure(this, info);
    super.configure(info);
  }

  onSerialize(o) {
    finishSerialize(this, o);
  }

  onDrawForeground(ctx) {
    if (this.flags.collapsed) return;
    const rows = Math.max(this.inputs?.length ?? 0, this.outputs?.length ?? 0);
    let y = rows * LiteGraph.NODE_SLOT_HEIGHT + 16;
    ctx.save();
    ctx.font = "12px Arial";
    ctx.textAlign = "left";
    ctx.fillStyle = "#fdd";
    ctx.fillText(`Missing node type: ${this.type}`, 8, y);
    const values = this.loadedInfo?.widgetsValues;
    for (const value of Array.isArray(values) ? values : []) {
      y += 15;
      if (y > this.size[1] - 4) break;
      ctx.fillStyle = "#ecc";
      ctx.fillText(String(typeof value === "object" ? JSON.stringify(value) : value).slice(0, 40), 8, y);
    }
    ctx.restore();
  }
}

/** Make LiteGraph.createNode fall back to a placeholder instead of returning null. */
export function installPlaceholderFallback() {
  const create = LiteGraph.createNode.bind(LiteGraph);
  LiteGraph.createNode = (type, title, options) => {
    const node = create(type, title, options);
    if (node || !type) return node;
    const missing = new MissingNode(title);
    missing.type = type;
    Object.assign(missing, options ?? {});
    return missing;
  };
}

/** Placeholder nodes in the graph that would take part in a prompt. */
export function activeMissingNodes(graph) {
  return graph._nodes.filter((node) => node.isMissing && node.mode !== LiteGraph.NEVER && node.mode !== 4);
}
