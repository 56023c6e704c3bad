// Images shown inside a node: outputs from `executed` messages, live sampler previews, and the
// selected file of an image-upload combo. They are drawn by overlay.js below the node's widgets.

import { viewUrl } from "./api.js";

const MIN_IMAGE_AREA = 220;

/** y (node-local) where free space starts: below the slots and the last widget. */
function contentTop(node) {
  const rows = Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0, 1);
  let top = rows * LiteGraph.NODE_SLOT_HEIGHT + 6;
  for (const widget of node.widgets ?? []) {
    if (widget.last_y === undefined) continue;
    const height = widget.computeSize ? widget.computeSize(node.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT;
    top = Math.max(top, widget.last_y + height + 4);
  }
  return top;
}

function makeRoom(node) {
  const needed = contentTop(node) + MIN_IMAGE_AREA;
  if (node.size[1] < needed || node.size[0] < 240) {
    node.setSize([Math.max(node.size[0], 240), Math.max(node.size[1], needed)]);
  }
}

function load(node, src) {
  const image = new Image();
  image.addEventListener("load", () => {
    makeRoom(node);
    node.setDirtyCanvas(true, false);
  });
  image.src = src;
  return image;
}

/** Show output items `{filename, subfolder, type}` (served by /view) on the node. */
export function showImages(node, items) {
  clearPreview(node);
  node.sumiImages = items.map((item) => load(node, viewUrl(item)));
}

/** Show a live preview frame (a Blob) on the node until its outputs arrive. */
export function showPreview(node, blob) {
  clearPreview(node);
  node.sumiPreviewUrl = URL.createObjectURL(blob);
  node.sumiImages = [load(node, node.sumiPreviewUrl)];
}

function clearPreview(node) {
  if (node.sumiPreviewUrl) URL.revokeObjectURL(node.sumiPreviewUrl);
  node.sumiPreviewUrl = null;
}

/** Draw the node's images in a grid filling the space below the widgets. */
export function drawImages(node, ctx) {
  const images = (node.sumiImages ?? []).filter((image) => image.complete && image.naturalWidth);
  if (!images.length || node.flags.collapsed) return;
  const top = contentTop(node);
  const width = node.size[0] - 10;
  const height = node.size[1] - top - 5;
  if (height < 20) return;
  const cols = Math.ceil(Math.sqrt(images.length));
  const rows = Math.ceil(images.length / cols);
  const cellW = width / cols;
  const cellH = height / rows;
  images.forEach((image, i) => {
    const scale = Math.min(cellW / image.naturalWidth, cellH / image.naturalHeight);
    const w = image.naturalWidth * scale;
    const h = image.naturalHeight * scale;
    const x = 5 + (i % cols) * cellW + (cellW - w) / 2;
    const y = top + Math.floor(i / cols) * cellH + (cellH - h) / 2;
    ctx.drawImage(image, x, y, w, h);
  });
}
