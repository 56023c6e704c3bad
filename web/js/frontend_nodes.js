// Editor-only ("virtual") nodes, never sent to the server (spec comfy_api.md §2.4): Note and
// MarkdownNote, Reroute (passes a link through) and PrimitiveNode (one value feeding widget inputs).
// `resolveOutput()` tells prompt.js what a link from such a node stands for.

import { beginConfigure, finishSerialize } from "./node_serialization.js";
import { addInputWidget } from "./widgets.js";
import { createMultilineWidget } from "./multiline_widget.js";

class FrontendNode extends LGraphNode {
  constructor(title) {
    super(title);
    this.isVirtualNode = true;
    this.serialize_widgets = true;
  }

  configure(info) {
    beginConfigure(this, info);
    super.configure(info);
  }

  onSerialize(o) {
    finishSerialize(this, o);
  }

  get loading() {
    return Boolean(this.graph?.sumiLoading);
  }
}

class NoteNode extends FrontendNode {
  constructor(title) {
    super(title);
    this.properties = { text: "" };
    this.addCustomWidget(createMultilineWidget("text", ""));
    this.size = [320, 120];
  }
}
NoteNode.color = "#432";
NoteNode.bgcolor = "#653";

class RerouteNode extends FrontendNode {
  constructor(title) {
    super(title);
    this.addInput("", "*");
    this.addOutput("", "*");
    this.properties = { showOutputText: false, horizontal: false };
    this.size = [75, 26];
  }

  resolveOutput() {
    const link = this.inputs[0]?.link;
    return link == null ? { none: true } : { follow: link };
  }

  onConnectionsChange() {
    if (!this.loading) retypeReroutes(this);
  }
}
RerouteNode.title_mode = LiteGraph.NO_TITLE;
RerouteNode.collapsable = false;

/** Give a chain of reroutes the type of what feeds it ("*" when nothing does). */
function retypeReroutes(start) {
  let first = start;
  while (first.inputs[0].link != null) {
    const upstream = first.graph.getNodeById(first.graph.links[first.inputs[0].link]?.origin_id);
    if (!(upstream instanceof RerouteNode) || upstream === start) break;
    first = upstream;
  }
  const feed = first.graph.links[first.inputs[0].link];
  const type = feed ? first.graph.getNodeById(feed.origin_id)?.outputs[feed.origin_slot]?.type ?? "*" : "*";
  const pending = [first];
  const seen = new Set();
  while (pending.length) {
    const node = pending.pop();
    if (seen.has(node)) continue;
    seen.add(node);
    node.outputs[0].type = type;
    for (const linkId of node.outputs[0].links ?? []) {
      const link = node.graph.links[linkId];
      if (!link) continue;
      link.type = type;
      const target = node.graph.getNodeById(link.target_id);
      if (target instanceof RerouteNode) pending.push(target);
    }
  }
}

class PrimitiveNode extends FrontendNode {
  constructor(title) {
    super(title);
    this.addOutput("connect to widget input", "*");
  }

  /** The widget of the first node this primitive feeds. */
  targetWidget() {
    for (const linkId of this.outputs[0]?.links ?? []) {
      const link = this.graph.links[linkId];
      const node = link && this.graph.getNodeById(link.target_id);
      const name = node?.inputs?.[link.target_slot]?.widget?.name;
      const widget = node?.widgets?.find((w) => w.name === name && w.inputSpec);
      if (widget) return widget;
    }
    return null;
  }

  /** Build our widget from the target's spec; `values` are saved widgets_values to restore. */
  adoptTarget(values) {
    const target = this.targetWidget();
    if (this.widgets?.length || !target) return;
    const { kind } = target.inputSpec;
    const loadedSize = [...this.size]; // adding widgets resizes the node
    addInputWidget(this, target.name, kind, { ...target.inputSpec, options: { ...target.inputSpec.options, control_after_generate: true, image_upload: false } });
    for (const widget of this.widgets) if (widget.controls) widget.value = "fixed";
    this.widgets[0].value = target.value;
    (Array.isArray(values) ? values : []).forEach((value, i) => { if (this.widgets[i]) this.widgets[i].value = value; });
    if (!this.loading) {
      Object.assign(this.outputs[0], { name: kind, type: kind, widget: { name: target.name } });
      this.title = target.name;
      this.setSize(this.computeSize());
    } else {
      this.size = loadedSize;
    }
  }

  afterGraphLoaded() {
    this.adoptTarget(this.loadedInfo?.widgetsValues);
  }

  onConnectionsChange(side) {
    if (this.loading || side !== LiteGraph.OUTPUT) return;
    if (this.outputs[0].links?.length) {
      this.adoptTarget();
    } else {
      this.widgets = [];
      Object.assign(this.outputs[0], { name: "connect to widget input", type: "*" });
      delete this.outputs[0].widget;
    }
  }

  resolveOutput() {
    const value = this.widgets?.length ? this.widgets[0].value : this.loadedInfo?.widgetsValues?.[0];
    return value === undefined ? { none: true } : { value };
  }

  /** Show our value in the widgets we feed (what the prompt will use). */
  applyToGraph() {
    const { value } = this.resolveOutput();
    if (value === undefined) return;
    for (const linkId of this.outputs[0]?.links ?? []) {
      const link = this.graph.links[linkId];
      const node = link && this.graph.getNodeById(link.target_id);
      const name = node?.inputs?.[link.target_slot]?.widget?.name;
      const widget = node?.widgets?.find((w) => w.name === name);
      if (widget) widget.value = value;
    }
  }
}

export function registerFrontendNodes() {
  const types = {
    Note: NoteNode,
    MarkdownNote: class extends NoteNode {},
    Reroute: RerouteNode,
    PrimitiveNode,
  };
  for (const [type, NodeClass] of Object.entries(types)) {
    NodeClass.title = type;
    LiteGraph.registerNodeType(type, NodeClass);
    NodeClass.category = "utils";
  }
}
