// Extra entries in every node's context menu: bypass, mute, and widget <-> input conversion.

import { BYPASS, MUTED, selectedOr, toggleMode } from "./node_modes.js";
import { conversionMenuOptions } from "./widget_inputs.js";

export function installNodeMenu() {
  const menuOptions = LGraphCanvas.prototype.getNodeMenuOptions;
  LGraphCanvas.prototype.getNodeMenuOptions = function (node) {
    const nodes = selectedOr(this, node);
    const ours = [
      { content: node.mode === BYPASS ? "Remove bypass (Ctrl+B)" : "Bypass (Ctrl+B)", callback: () => toggleMode(nodes, BYPASS) },
      { content: node.mode === MUTED ? "Unmute (Ctrl+M)" : "Mute (Ctrl+M)", callback: () => toggleMode(nodes, MUTED) },
    ];
    const conversions = conversionMenuOptions(node);
    return [...ours, ...(conversions.length ? [null, ...conversions] : []), null, ...menuOptions.call(this, node)];
  };
}
