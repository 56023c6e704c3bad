// Widgets for widget-typed inputs (spec comfy_api.md §1.3, §2.3): INT/FLOAT with min/max/step/round,
// STRING (single line or multiline), BOOLEAN, COMBO, plus their companions (control_after_generate,
// the image upload button) in the order the frontend creates them, which is widgets_values order.

import { controlWidgetName } from "./input_spec.js";
import { createMultilineWidget } from "./multiline_widget.js";
import { addControlWidget } from "./seed_control.js";
import { addUploadWidget } from "./image_upload.js";

function decimals(x) {
  const text = String(x);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return (text.split(".")[1] ?? "").length;
}

function numberOptions(kind, options) {
  const step = options.step ?? (kind === "INT" ? 1 : 0.01);
  const precision = kind === "INT" ? 0 : Math.min(decimals(options.round || step), 10);
  const round = kind === "INT" ? 1 : options.round === false ? null : options.round ?? 10 ** -precision;
  // litegraph moves a number widget by step/10 per click: hand it ten steps (step2 = the real one).
  return { min: options.min, max: options.max, step: step * 10, step2: step, precision, round };
}

function normalizeNumber(value, { min, max, round, precision }) {
  let number = Number(value);
  if (!Number.isFinite(number)) return min ?? 0;
  if (round) number = Number((Math.round(number / round) * round).toFixed(precision));
  if (min !== undefined && number < min) number = min;
  if (max !== undefined && number > max) number = max;
  return number;
}

function defaultValue(kind, parsed) {
  const { options, values } = parsed;
  if (options.default !== undefined) return options.default;
  if (kind === "COMBO") return values?.[0] ?? "";
  if (kind === "BOOLEAN") return false;
  if (kind === "STRING") return "";
  return Math.min(Math.max(0, options.min ?? 0), options.max ?? 0);
}

function addValueWidget(node, name, kind, parsed) {
  const { options } = parsed;
  const value = defaultValue(kind, parsed);
  if (kind === "INT" || kind === "FLOAT") {
    const widget = node.addWidget("number", name, value, (v) => {
      widget.value = normalizeNumber(v, widget.options);
    }, numberOptions(kind, options));
    return widget;
  }
  if (kind === "BOOLEAN") {
    return node.addWidget("toggle", name, value, () => {}, { on: options.label_on, off: options.label_off });
  }
  if (kind === "COMBO") {
    return node.addWidget("combo", name, value, () => {}, { values: [...(parsed.values ?? [])] });
  }
  if (options.multiline) {
    const widget = node.addCustomWidget(createMultilineWidget(name, value, { placeholder: options.placeholder }));
    node.setSize(node.computeSize());
    return widget;
  }
  return node.addWidget("text", name, value, () => {}, { placeholder: options.placeholder });
}

/** A node width at which widget labels and values do not overlap (litegraph never truncates). */
export function widthForWidgets(node) {
  const CHAR = 6.5;
  const widths = (node.widgets ?? []).filter((w) => w.type !== "multiline").map((w) =>
    (String(w.label ?? w.name).length + String(w.value ?? "").length) * CHAR + 80);
  return Math.min(Math.max(node.size[0], ...widths), 420);
}

/** Create the widget for one input (and its companions); returns the value widget. */
export function addInputWidget(node, name, kind, parsed) {
  const widget = addValueWidget(node, name, kind, parsed);
  widget.inputSpec = { kind, ...parsed };
  const control = controlWidgetName(name, kind, parsed.options);
  if (control) addControlWidget(node, widget, control);
  if (parsed.options.image_upload) addUploadWidget(node, widget);
  return widget;
}
