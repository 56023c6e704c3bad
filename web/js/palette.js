// The node palette: every registered node type by category (from /object_info, plus the editor's
// own nodes), with search; descriptions are the tooltips. Click adds a node at the centre of the
// view, dragging drops it where it is released.

const DRAG_TYPE = "application/x-sumi-node-type";

function nodeTypes() {
  return Object.entries(LiteGraph.registered_node_types).map(([type, NodeClass]) => ({
    type,
    title: NodeClass.title || type,
    category: NodeClass.category || "uncategorized",
    description: NodeClass.desc || "",
  }));
}

function categoryTree(types) {
  const root = { children: new Map(), items: [] };
  for (const entry of types) {
    let branch = root;
    for (const part of entry.category.split("/")) {
      if (!branch.children.has(part)) branch.children.set(part, { children: new Map(), items: [] });
      branch = branch.children.get(part);
    }
    branch.items.push(entry);
  }
  return root;
}

function renderBranch(branch, onPick) {
  const fragment = document.createDocumentFragment();
  for (const [name, child] of [...branch.children].sort(([a], [b]) => a.localeCompare(b))) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = name;
    details.append(summary, renderBranch(child, onPick));
    fragment.append(details);
  }
  for (const entry of branch.items.sort((a, b) => a.title.localeCompare(b.title))) {
    const item = document.createElement("div");
    item.className = "palette-item";
    item.textContent = entry.title;
    item.title = entry.description ? `${entry.type}\n\n${entry.description}` : entry.type;
    item.dataset.type = entry.type;
    item.dataset.search = `${entry.title} ${entry.type} ${entry.category}`.toLowerCase();
    item.draggable = true;
    item.addEventListener("click", () => onPick(entry.type));
    item.addEventListener("dragstart", (event) => event.dataTransfer.setData(DRAG_TYPE, entry.type));
    fragment.append(item);
  }
  return fragment;
}

function filter(tree, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  for (const item of tree.querySelectorAll(".palette-item")) {
    item.hidden = !words.every((word) => item.dataset.search.includes(word));
  }
  for (const details of [...tree.querySelectorAll("details")].reverse()) {
    const visible = details.querySelector(".palette-item:not([hidden])");
    details.hidden = !visible;
    details.open = Boolean(words.length && visible);
  }
}

function addNode(canvas, type, pos) {
  const node = LiteGraph.createNode(type);
  node.pos = pos;
  canvas.graph.add(node);
  canvas.selectNode(node);
  canvas.setDirty(true, true);
}

export function setupPalette(canvas) {
  const tree = document.getElementById("palette-tree");
  const search = document.getElementById("palette-search");
  const centre = () => {
    const [x, y, w, h] = canvas.visible_area;
    return [x + w / 2 - 100, y + h / 2 - 50];
  };
  tree.replaceChildren(renderBranch(categoryTree(nodeTypes()), (type) => addNode(canvas, type, centre())));
  search.addEventListener("input", () => filter(tree, search.value));
  canvas.canvas.addEventListener("dragover", (event) => {
    if (event.dataTransfer.types.includes(DRAG_TYPE)) event.preventDefault();
  });
  canvas.canvas.addEventListener("drop", (event) => {
    const type = event.dataTransfer.getData(DRAG_TYPE);
    if (!type) return;
    const [x, y] = canvas.convertEventToCanvasOffset(event);
    addNode(canvas, type, [x, y]);
  });
}
