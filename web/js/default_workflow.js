// The workflow shown on first open and by the Default button: the repository's workflows/default.json
// (text to image with the bundled tiny model, so it runs on a fresh clone with nothing downloaded).
import { api } from "./api.js";

export const DEFAULT_WORKFLOW = "default.json";

/** The shipped default workflow, or an empty graph (with the reason) if the server cannot serve it. */
export async function defaultWorkflow() {
  try {
    return { workflow: await api.shippedWorkflow(DEFAULT_WORKFLOW), error: null };
  } catch (error) {
    return { workflow: { nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4 }, error };
  }
}
