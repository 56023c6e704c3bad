// What the canvas draws on top of each node: its images, bypass/mute tint, run state (executing,
// cached), the progress of the running node, and errors on the node and on the offending input.

import { drawImages } from "./node_images.js";

const MUTED = 2;
const BYPASS = 4;
const COLORS = { running: "#4c4", cached: "#68a", error: "#f33" };

function outline(node, ctx, color, dashed = false) {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const width = node.flags.collapsed ? node._collapsed_width ?? node.size[0] : node.size[0];
  const height = node.flags.collapsed ? 0 : node.size[1];
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 3;
  if (dashed) ctx.setLineDash([8, 5]);
  ctx.strokeRect(-5, -title - 5, width + 10, height + title + 10);
  ctx.restore();
}

function tint(node, ctx, color) {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  ctx.save();
  ctx.fillStyle = color;
  ctx.fillRect(0, -title, node.size[0], (node.flags.collapsed ? 0 : node.size[1]) + title);
  ctx.restore();
}

function badge(node, ctx, text, color) {
  ctx.save();
  ctx.font = "11px Arial";
  const width = ctx.measureText(text).width + 10;
  ctx.fillStyle = color;
  ctx.fillRect(node.size[0] - width - 4, -LiteGraph.NODE_TITLE_HEIGHT + 5, width, 16);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, node.size[0] - width + 1, -LiteGraph.NODE_TITLE_HEIGHT + 17);
  ctx.restore();
}

function markInput(node, ctx, name) {
  ctx.save();
  ctx.strokeStyle = COLORS.error;
  ctx.lineWidth = 2;
  const slot = (node.inputs ?? []).findIndex((input) => (input.widget?.name ?? input.name) === name);
  const widget = (node.widgets ?? []).find((w) => w.name === name);
  if (slot >= 0 && !(widget && node.inputs[slot].link == null)) {
    const pos = node.getConnectionPos(true, slot);
    ctx.beginPath();
    ctx.arc(pos[0] - node.pos[0], pos[1] - node.pos[1], 8, 0, Math.PI * 2);
    ctx.stroke();
  } else if (widget?.last_y !== undefined) {
    ctx.strokeRect(10, widget.last_y - 2, node.size[0] - 20, LiteGraph.NODE_WIDGET_HEIGHT + 4);
  }
  ctx.restore();
}

function drawErrors(node, ctx) {
  outline(node, ctx, COLORS.error);
  ctx.save();
  ctx.font = "13px Arial";
  ctx.fillStyle = COLORS.error;
  ctx.textAlign = "left";
  let y = (node.flags.collapsed ? 0 : node.size[1]) + 22;
  for (const error of node.sumiErrors) {
    if (error.input && !node.flags.collapsed) markInput(node, ctx, error.input);
    ctx.fillText(`${error.input ? `${error.input}: ` : ""}${error.message}`, 0, y);
    y += 16;
  }
  ctx.restore();
}

function drawProgress(node, ctx) {
  ctx.save();
  ctx.fillStyle = COLORS.running;
  ctx.fillRect(0, -LiteGraph.NODE_TITLE_HEIGHT, node.size[0] * node.sumiProgress, 4);
  ctx.restore();
}

function drawOverlay(node, ctx) {
  if (!node.flags.collapsed) drawImages(node, ctx);
  if (node.isMissing) {
    tint(node, ctx, "rgba(200, 30, 30, 0.45)");
    outline(node, ctx, COLORS.error);
  }
  if (node.mode === BYPASS) tint(node, ctx, "rgba(170, 60, 220, 0.35)");
  if (node.mode === MUTED) tint(node, ctx, "rgba(0, 0, 0, 0.45)");
  if (node.sumiRun === "running") outline(node, ctx, COLORS.running);
  if (node.sumiRun === "running" && node.sumiProgress) drawProgress(node, ctx);
  if (node.sumiRun === "cached") {
    outline(node, ctx, COLORS.cached, true);
    badge(node, ctx, "cached", COLORS.cached);
  }
  if (node.sumiErrors?.length) drawErrors(node, ctx);
}

export function installOverlay() {
  const drawNode = LGraphCanvas.prototype.drawNode;
  LGraphCanvas.prototype.drawNode = function (node, ctx) {
    drawNode.call(this, node, ctx);
    drawOverlay(node, ctx);
  };
}
