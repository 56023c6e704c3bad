// Exact round trips for every node class: a node loaded from a workflow serializes back to the
// same data (same keys, its own inputs/outputs/properties, widgets_values we have no widget for),
// while a node created in the editor serializes the way litegraph does.

const EMPTY_WHEN_ABSENT = ["inputs", "outputs", "properties"];

function isEmpty(value) {
  if (Array.isArray(value)) return value.length === 0;
  return value && typeof value === "object" && Object.keys(value).length === 0;
}

/** Call before LGraphNode.configure: the workflow's own slots and properties replace ours. */
export function beginConfigure(node, info) {
  if (info.inputs) node.inputs = [];
  if (info.outputs) node.outputs = [];
  if (info.properties) node.properties = {};
  if (info.size) node.size = [0, 0]; // a plain array: litegraph's Float32Array would round the size
  node.loadedInfo = {
    keys: new Set(Object.keys(info)),
    pos: Array.isArray(info.pos) ? [...info.pos] : null,
    widgetsValues: info.widgets_values,
  };
}

/** float32 storage (litegraph keeps pos in a Float32Array) must not alter an unmoved position. */
function plainPair(current, loaded) {
  const pair = [current[0], current[1]];
  if (loaded && loaded.length >= 2 && pair.every((v, i) => Math.fround(loaded[i]) === v)) return [loaded[0], loaded[1]];
  return pair;
}

/** Widget values saved as {name: value} (some tools write them so) fill widgets by name. */
export function applyNamedWidgetValues(node, info) {
  const values = info.widgets_values;
  if (!values || typeof values !== "object" || Array.isArray(values)) return;
  for (const widget of node.widgets ?? []) {
    if (widget.name in values) widget.value = values[widget.name];
  }
}

function mergedWidgetValues(node, ours, loaded) {
  if (loaded === undefined || loaded === null) return ours;
  if (!Array.isArray(loaded)) {
    const named = { ...loaded };
    for (const widget of node.widgets ?? []) if (widget.name in named) named[widget.name] = widget.value;
    return named;
  }
  const values = ours ?? [];
  return values.concat(loaded.slice(values.length));
}

/** Call from onSerialize(o). */
export function finishSerialize(node, o) {
  const loaded = node.loadedInfo;
  o.pos = plainPair(node.pos, loaded?.pos);
  o.size = [node.size[0], node.size[1]];
  if (!loaded) return;
  const values = mergedWidgetValues(node, o.widgets_values, loaded.widgetsValues);
  if (values !== undefined) o.widgets_values = values;
  for (const key of loaded.keys) {
    if (!(key in o) && node[key] !== undefined) o[key] = node[key];
  }
  for (const key of EMPTY_WHEN_ABSENT) {
    if (!loaded.keys.has(key) && isEmpty(o[key])) delete o[key];
  }
}
