// A multiline STRING widget drawn on the canvas: shows the wrapped text, and opens litegraph's
// multiline prompt dialog when clicked.

const LINE_HEIGHT = 14;
const VISIBLE_LINES = 5;
const MARGIN = 15;

function wrap(ctx, text, width) {
  const lines = [];
  for (const paragraph of String(text ?? "").split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(candidate).width > width) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

export function createMultilineWidget(name, value, options = {}) {
  return {
    type: "multiline",
    name,
    value,
    options: { multiline: true, ...options },
    callback: null,

    computeSize(width) {
      return [width, VISIBLE_LINES * LINE_HEIGHT + 10];
    },

    draw(ctx, node, width, y) {
      // The last widget grows with the node, like a text area.
      const isLast = node.widgets[node.widgets.length - 1] === this;
      const height = Math.max(this.computeSize(width)[1], isLast ? node.size[1] - y - 8 : 0);
      const lineCount = Math.floor((height - 10) / LINE_HEIGHT);
      ctx.save();
      ctx.fillStyle = LiteGraph.WIDGET_BGCOLOR;
      ctx.strokeStyle = LiteGraph.WIDGET_OUTLINE_COLOR;
      ctx.beginPath();
      ctx.roundRect(MARGIN, y, width - MARGIN * 2, height, [6]);
      ctx.fill();
      ctx.stroke();
      ctx.clip();
      ctx.font = "12px Arial";
      ctx.textAlign = "left";
      const text = String(this.value ?? "");
      ctx.fillStyle = text ? LiteGraph.WIDGET_TEXT_COLOR : LiteGraph.WIDGET_SECONDARY_TEXT_COLOR;
      const lines = text ? wrap(ctx, text, width - MARGIN * 2 - 12) : [this.options.placeholder || this.name];
      lines.slice(0, lineCount).forEach((line, i) => {
        ctx.fillText(line, MARGIN + 6, y + 15 + i * LINE_HEIGHT);
      });
      ctx.restore();
    },

    mouse(event, pos, node) {
      if (event.type !== `${LiteGraph.pointerevents_method}down`) return false;
      const canvas = LGraphCanvas.active_canvas;
      canvas.prompt(this.name, this.value ?? "", (text) => {
        this.value = text;
        this.callback?.(text, canvas, node, pos, event);
        node.graph?.change?.();
        canvas.setDirty(true, true);
      }, event, true);
      return true;
    },
  };
}
