// One-click loading: the user's saved workflows (GET /api/userdata?dir=workflows, from
// user/default/workflows) and the repository's shipped workflows/ folder (GET /api/sumi/workflows).

import { api } from "./api.js";
import { notify } from "./notice.js";

function entry(label, onClick, className = "") {
  const li = document.createElement("li");
  li.className = className;
  if (!onClick) {
    li.textContent = label;
    return li;
  }
  const button = document.createElement("button");
  button.textContent = label;
  button.addEventListener("click", onClick);
  li.append(button);
  return li;
}

function heading(text) {
  return entry(text, null, "list-heading");
}

export function createWorkflowList({ load, serialize }) {
  const list = document.getElementById("workflow-list");

  async function open(fetcher, name) {
    try {
      load(await fetcher(name), name);
    } catch (error) {
      notify(`Could not open ${name}: ${error.message}`, "error");
    }
  }

  async function saveAs() {
    const name = prompt("Save the workflow on the server as:", "my_workflow");
    if (!name) return;
    const file = name.endsWith(".json") ? name : `${name}.json`;
    try {
      await api.saveUserWorkflow(file, serialize());
      notify(`Saved as ${file}`);
      refresh();
    } catch (error) {
      notify(`Could not save: ${error.message}`, "error");
    }
  }

  async function refresh() {
    const items = [entry("Save to server…", saveAs, "save-entry"), heading("Saved")];
    try {
      const saved = (await api.userWorkflows()).filter((path) => path.endsWith(".json"));
      items.push(...(saved.length ? saved.map((p) => entry(p, () => open(api.userWorkflow, p))) : [entry("none yet", null, "muted")]));
    } catch (error) {
      items.push(entry(`unavailable: ${error.message}`, null, "muted"));
    }
    items.push(heading("Examples"));
    try {
      const shipped = await api.shippedWorkflows();
      if (shipped === null) items.push(entry("not offered by this server", null, "muted"));
      else items.push(...shipped.map((name) => entry(name, () => open(api.shippedWorkflow, name))));
    } catch (error) {
      items.push(entry(`unavailable: ${error.message}`, null, "muted"));
    }
    list.replaceChildren(...items);
  }

  return { refresh };
}
