// Reading /object_info input specs (spec comfy_api.md §1.3, §1.6): which inputs become widgets,
// and both COMBO spellings, `[[options], {...}]` and `["COMBO", {"options": [...]}]`.

const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
// The frontend convention: these INT inputs get a control_after_generate widget even undeclared.
const SEED_INPUT_NAMES = new Set(["seed", "noise_seed"]);

/** {type, options, values} for one input spec; `values` is the option list of a COMBO. */
export function parseInputSpec(spec) {
  const [raw, options = {}] = Array.isArray(spec) ? spec : [spec, {}];
  const opts = options && typeof options === "object" ? options : {};
  if (Array.isArray(raw)) return { type: "COMBO", options: opts, values: raw };
  if (raw === "COMBO") return { type: "COMBO", options: opts, values: opts.options ?? [] };
  return { type: String(raw), options: opts, values: null };
}

/** The widget kind an input gets (INT, FLOAT, STRING, BOOLEAN, COMBO), or null for a socket. */
export function widgetKind(name, parsed) {
  const { type, options } = parsed;
  if (options.forceInput || options.defaultInput) return null;
  if (WIDGET_TYPES.has(type)) return type;
  if (!options.widgetType) return null;
  return WIDGET_TYPES.has(options.widgetType) ? options.widgetType : "STRING";
}

/** The name of the control_after_generate companion widget, or null when there is none. */
export function controlWidgetName(name, kind, options) {
  const control = options.control_after_generate ?? (kind === "INT" && SEED_INPUT_NAMES.has(name));
  if (!control || (kind !== "INT" && kind !== "COMBO")) return null;
  return typeof control === "string" ? control : "control_after_generate";
}

/** Inputs of a node definition in widget-creation order: required, then optional (input_order). */
export function orderedInputs(def) {
  const found = [];
  for (const category of ["required", "optional"]) {
    const section = def.input?.[category] ?? {};
    const order = def.input_order?.[category] ?? Object.keys(section);
    for (const name of order) {
      if (name in section) found.push({ name, optional: category === "optional", spec: section[name] });
    }
  }
  return found;
}
