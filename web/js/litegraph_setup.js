// One-time litegraph.js configuration: behaviour flags, socket/link colours by type, exact group
// round trips, and our hooks (placeholders, overlays, node menu).

import { installPlaceholderFallback } from "./placeholder.js";
import { installOverlay } from "./overlay.js";
import { installNodeMenu } from "./node_menu.js";

const TYPE_COLORS = {
  MODEL: "#b39ddb", CLIP: "#ffd500", VAE: "#ff6e6e", CONDITIONING: "#ffa931", LATENT: "#ff9cf9",
  IMAGE: "#64b5f6", MASK: "#81c784", CONTROL_NET: "#00d78d", INT: "#29699c", FLOAT: "#aaee88",
  STRING: "#77ff77", BOOLEAN: "#c7b3ff", CLIP_VISION: "#a8dadc", CLIP_VISION_OUTPUT: "#ad7452",
};

/** Groups keep the keys they were loaded with (id, flags, …) and unrounded bounds. */
function patchGroups() {
  const { configure, serialize } = LGraphGroup.prototype;
  LGraphGroup.prototype.configure = function (o) {
    configure.call(this, o);
    this.font_size ??= LiteGraph.DEFAULT_GROUP_FONT;
    this.loaded = JSON.parse(JSON.stringify(o));
  };
  LGraphGroup.prototype.serialize = function () {
    const fresh = serialize.call(this);
    if (!this.loaded) return fresh;
    const data = { ...this.loaded, title: this.title, color: this.color };
    const bounds = Array.from(this._bounding);
    const loadedBounds = this.loaded.bounding;
    const unmoved = Array.isArray(loadedBounds) && bounds.every((v, i) => Math.fround(loadedBounds[i]) === v);
    data.bounding = unmoved ? loadedBounds : bounds;
    if ("font_size" in this.loaded || this.font_size !== LiteGraph.DEFAULT_GROUP_FONT) data.font_size = this.font_size;
    if (data.color === undefined) delete data.color;
    return data;
  };
}

export function setupLiteGraph() {
  LiteGraph.release_link_on_empty_shows_menu = true;
  LiteGraph.middle_click_slot_add_default_node = true;
  Object.assign(LGraphCanvas.link_type_colors, TYPE_COLORS);
  patchGroups();
  installPlaceholderFallback();
  installOverlay();
  installNodeMenu();
}

/** Socket colours on a canvas instance. */
export function colorSockets(canvas) {
  Object.assign(canvas.default_connection_color_byType, TYPE_COLORS);
}
