// control_after_generate (spec comfy_api.md §2.3, §2.5): a combo widget right after an INT or
// COMBO widget that changes it after every queued prompt. It is saved in widgets_values but never
// sent to the server (options.serialize = false).

const NUMBER_MODES = ["fixed", "increment", "decrement", "randomize"];
const COMBO_MODES = [...NUMBER_MODES, "increment-wrap"];
const RANDOM_LIMIT = 2 ** 50; // 1125899906842624

export function addControlWidget(node, target, name) {
  const values = target.type === "combo" ? COMBO_MODES : NUMBER_MODES;
  const control = node.addWidget("combo", name, "randomize", () => {}, { values, serialize: false });
  control.controls = target;
  return control;
}

function nextNumber(target, mode) {
  const { min = 0, max = RANDOM_LIMIT, step2 = 1 } = target.options;
  const value = Number(target.value);
  if (mode === "increment") return Math.min(value + step2, max);
  if (mode === "decrement") return Math.max(value - step2, min);
  const low = Math.max(min, -RANDOM_LIMIT);
  const high = Math.min(max, RANDOM_LIMIT);
  return Math.floor((Math.random() * (high - low)) / step2) * step2 + low;
}

function nextOption(target, mode) {
  const values = target.options.values ?? [];
  if (!values.length) return target.value;
  const index = values.indexOf(target.value);
  if (mode === "increment") return values[Math.min(index + 1, values.length - 1)];
  if (mode === "increment-wrap") return values[(index + 1) % values.length];
  if (mode === "decrement") return values[Math.max(index - 1, 0)];
  return values[Math.floor(Math.random() * values.length)];
}

/** Apply every control widget in the graph once (after a prompt was queued). */
export function applyControls(graph) {
  for (const node of graph._nodes) {
    for (const control of node.widgets ?? []) {
      const target = control.controls;
      const mode = control.value;
      if (!target || typeof mode !== "string" || mode === "fixed" || !control.options.values.includes(mode)) continue;
      target.value = target.type === "combo" ? nextOption(target, mode) : nextNumber(target, mode);
      target.callback?.(target.value);
    }
  }
  graph.setDirtyCanvas(true, false);
}
