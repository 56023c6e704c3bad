// Widget <-> input conversion. A widget may also have an input socket `{name, type, link,
// widget: {name}}` (how ComfyUI saves it); while that socket is linked the widget is disabled and
// the link's value is sent instead.

function widgetSocketIndex(node, widget) {
  return (node.inputs ?? []).findIndex((slot) => slot.widget?.name === widget.name);
}

/** Disable exactly the widgets whose socket is linked. */
export function syncWidgetSockets(node) {
  for (const widget of node.widgets ?? []) {
    if (!widget.inputSpec) continue;
    const index = widgetSocketIndex(node, widget);
    widget.disabled = index >= 0 && node.inputs[index].link != null;
  }
}

function convertToInput(node, widget) {
  if (widgetSocketIndex(node, widget) >= 0) return;
  node.addInput(widget.name, widget.inputSpec.kind, { widget: { name: widget.name } });
  node.setSize([Math.max(node.size[0], node.computeSize()[0]), Math.max(node.size[1], node.computeSize()[1])]);
}

function convertToWidget(node, widget) {
  const index = widgetSocketIndex(node, widget);
  if (index < 0) return;
  if (node.inputs[index].link != null) node.disconnectInput(index);
  node.removeInput(index);
  syncWidgetSockets(node);
}

/** Context-menu entries for a node's convertible widgets. */
export function conversionMenuOptions(node) {
  return (node.widgets ?? []).filter((widget) => widget.inputSpec).map((widget) => {
    const converted = widgetSocketIndex(node, widget) >= 0;
    return {
      content: converted ? `Convert ${widget.name} to widget` : `Convert ${widget.name} to input`,
      callback: () => {
        (converted ? convertToWidget : convertToInput)(node, widget);
        node.setDirtyCanvas(true, true);
      },
    };
  });
}
