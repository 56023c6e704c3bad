// Node classes generated from /object_info (spec comfy_api.md §1.6): one litegraph type per entry,
// with sockets for socket-typed inputs, widgets for widget-typed ones, typed outputs, the category
// and display name for the palette, and the description as tooltip.

import { orderedInputs, parseInputSpec, widgetKind } from "./input_spec.js";
import { addInputWidget, widthForWidgets } from "./widgets.js";
import { applyNamedWidgetValues, beginConfigure, finishSerialize } from "./node_serialization.js";
import { syncWidgetSockets } from "./widget_inputs.js";
import { previewSelectedImage } from "./image_upload.js";

function outputType(type) {
  return Array.isArray(type) ? "COMBO" : String(type);
}

class ComfyNode extends LGraphNode {
  constructor(title) {
    super(title);
    const def = this.constructor.nodeDef;
    this.serialize_widgets = true;
    this.properties["Node name for S&R"] = def.name;
    for (const { name, spec } of orderedInputs(def)) {
      const parsed = parseInputSpec(spec);
      const kind = widgetKind(name, parsed);
      if (kind) addInputWidget(this, name, kind, parsed);
      else this.addInput(name, parsed.type);
    }
    (def.output ?? []).forEach((type, i) => {
      const extra = def.output_is_list?.[i] ? { shape: LiteGraph.GRID_SHAPE } : undefined;
      this.addOutput(def.output_name?.[i] ?? outputType(type), outputType(type), extra);
    });
    const size = this.computeSize();
    this.setSize([widthForWidgets({ widgets: this.widgets, size }), size[1]]);
    previewSelectedImage(this);
  }

  configure(info) {
    beginConfigure(this, info);
    super.configure(info);
    applyNamedWidgetValues(this, info);
    syncWidgetSockets(this);
    previewSelectedImage(this);
  }

  onSerialize(o) {
    finishSerialize(this, o);
  }

  onConnectionsChange() {
    syncWidgetSockets(this);
  }
}

/** Register (or replace) one litegraph node type per /object_info entry. */
export function registerNodeDefs(defs) {
  for (const def of Object.values(defs)) {
    const NodeClass = class extends ComfyNode {};
    NodeClass.nodeDef = def;
    NodeClass.title = def.display_name || def.name;
    NodeClass.desc = def.description || "";
    LiteGraph.registerNodeType(def.name, NodeClass);
    NodeClass.category = def.category || "uncategorized";
  }
}
