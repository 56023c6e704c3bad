"""UI workflow (litegraph JSON, as the editor saves it) -> API prompt (what the executor runs).

The browser normally does this conversion (`graphToPrompt`, spec comfy_api.md §2.4) before it
POSTs a prompt.  Sumi does it server-side so that saved workflows, PNGs and third-party files can
run without a browser.  The module is pure data transformation: everything it knows about node
classes comes from the `node_info` callback (an `/object_info` entry per class type).

Steps, mirroring the frontend:
1. Flatten the graph.  Subgraph instances (`definitions.subgraphs`) and legacy group nodes
   (`extra.groupNodes`) are opened, giving inner nodes the id `"<instance>:<inner>"`.
   Frontend-only nodes (Note, MarkdownNote, PrimitiveNode, Reroute), muted (mode 2) and bypassed
   (mode 4) nodes are not emitted.
2. Per emitted node, widget values become inputs (§2.3 ordering), then every linked input socket
   is resolved through reroutes, primitives, bypassed nodes and subgraph boundaries.
3. A link whose source is not emitted (a muted node, say) is deleted, as the frontend does.

Native reroutes (`extra.reroutes`, links' `parentId`) only change how a link is drawn: the link
itself still joins origin and target, so they need no handling.

All loops are iterative: reroute chains and subgraph nesting can be arbitrarily deep.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

from PIL import Image, UnidentifiedImageError

NodeInfo = Callable[[str], "dict | None"]

MODE_MUTED = 2
MODE_BYPASS = 4
SUBGRAPH_INPUT_NODE = "-10"
SUBGRAPH_OUTPUT_NODE = "-20"
# Nodes that exist only in the editor; the frontend resolves them away before sending a prompt.
VIRTUAL_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# The frontend gives these INT inputs a control_after_generate widget even when the node's info
# does not declare the flag (a legacy convention many custom nodes rely on).
SEED_INPUT_NAMES = frozenset({"seed", "noise_seed"})
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ConversionProblem:
    """One thing wrong with one node; `input` names the widget or socket when there is one."""

    node_id: str
    class_type: str
    message: str
    input: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input is not None:
            where += f" input {self.input!r}"
        return f"{where}: {self.message}"


class WorkflowConversionError(ValueError):
    """A workflow that cannot be converted; `problems` lists every node at fault, not just the first."""

    def __init__(self, message: str, problems: tuple[ConversionProblem, ...] = ()) -> None:
        self.problems = problems
        detail = "; ".join(str(p) for p in problems)
        super().__init__(f"{message}: {detail}" if detail else message)


class _Link(NamedTuple):
    origin: str
    origin_slot: int
    target: str
    target_slot: int


@dataclass(frozen=True)
class _Widget:
    """A widget-capable input and how many frontend-only values follow it in widgets_values."""

    name: str
    companions: int
    combo_control: bool  # a COMBO with a control widget may also carry a control_filter_list value
    default: Any


_NO_DEFAULT = object()
_MISSING = object()


@dataclass
class _Scope:
    """One graph level: the root workflow or one instance of a subgraph definition."""

    prefix: str  # "" at the root, "<instance>:" (nested: "<a>:<b>:") inside subgraphs
    nodes: dict[str, dict]
    links: dict[str, _Link]
    definition: dict | None = None
    parent: _Scope | None = None
    chain: tuple[str, ...] = ()  # definition ids from the root down, to refuse self-nesting
    promoted: dict[str, Any] = field(default_factory=dict)  # subgraph input name -> instance widget value
    outer_sockets: list[dict | None] = field(default_factory=list)  # the instance's socket per subgraph input
    output_links: dict[int, str] = field(default_factory=dict)  # subgraph output slot -> inner link id


class _Resolved(NamedTuple):
    """Where an input socket ends up: a link, a constant, nothing (keep the widget), or a dead source."""

    kind: Literal["link", "value", "none", "dangling"]
    value: Any = None


_NONE = _Resolved("none")
_DANGLING = _Resolved("dangling")


def ui_to_api(workflow: dict, node_info: NodeInfo) -> dict:
    """Convert a UI workflow to an API prompt; raises WorkflowConversionError listing every bad node."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise WorkflowConversionError("not a UI workflow (no 'nodes' list)")
    return _Converter(workflow, node_info).run()


class _Converter:
    def __init__(self, workflow: dict, node_info: NodeInfo) -> None:
        self._node_info = node_info
        self._infos: dict[str, dict | None] = {}
        self._layouts: dict[str, tuple[_Widget, ...]] = {}
        self._problems: list[ConversionProblem] = []
        self._overrides: dict[str, dict[str, Any]] = {}  # exec id -> widget values set from outside
        self._scopes: dict[str, _Scope] = {}
        self._workflow = workflow
        self._definitions = _collect_subgraphs(workflow)
        self._definitions.update(self._group_node_definitions())

    # ---- driver -------------------------------------------------------------------------------

    def run(self) -> dict:
        root = _Scope("", _nodes_by_id(self._workflow), _links_by_id(self._workflow.get("links")))
        emitted: list[tuple[_Scope, dict, dict]] = []
        queue = [root]
        for scope in queue:  # the list grows while it is walked: breadth-first, no recursion
            for node_id, node in scope.nodes.items():
                class_type = str(node.get("type"))
                if class_type in VIRTUAL_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
                    continue
                if class_type in self._definitions:
                    child = self._child_scope(scope, node_id, node)
                    if child is not None:
                        queue.append(child)
                    continue
                info = self._info(class_type)
                if info is None:
                    self._problem(scope, node_id, class_type, "unknown node type")
                    continue
                emitted.append((scope, node, info))
        prompt = {scope.prefix + str(node["id"]): self._entry(scope, node, info) for scope, node, info in emitted}
        if self._problems:
            raise WorkflowConversionError("workflow cannot be converted", tuple(self._problems))
        return prompt

    def _problem(self, scope: _Scope, node_id: str, class_type: str, message: str,
                 input_name: str | None = None) -> None:
        self._problems.append(ConversionProblem(scope.prefix + node_id, class_type, message, input_name))

    def _info(self, class_type: str) -> dict | None:
        if class_type not in self._infos:
            self._infos[class_type] = self._node_info(class_type)
        return self._infos[class_type]

    # ---- one API entry ------------------------------------------------------------------------

    def _entry(self, scope: _Scope, node: dict, info: dict) -> dict:
        node_id, class_type = str(node["id"]), str(node["type"])
        inputs = self._widget_inputs(scope, node, info)
        for slot in node.get("inputs") or []:
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            name = _widget_name(slot)
            found = self._resolve(scope, str(slot["link"]), slot.get("type"), node_id, class_type, name)
            if found.kind == "link":
                inputs[name] = found.value
            elif found.kind == "value":
                inputs[name] = _api_value(found.value)
            elif found.kind == "dangling":
                inputs.pop(name, None)  # the frontend drops links to nodes that are not sent
        title = node.get("title") or info.get("display_name") or class_type
        return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    def _widget_inputs(self, scope: _Scope, node: dict, info: dict) -> dict:
        node_id, class_type = str(node["id"]), str(node["type"])
        layout = self._layout(class_type, info)
        values = node.get("widgets_values")
        found: dict[str, Any] = {}
        if isinstance(values, dict):
            found = {w.name: values[w.name] for w in layout if w.name in values}
        elif isinstance(values, list):
            found = {w.name: v for w, v in zip(layout, _positional_values(layout, values)) if v is not _MISSING}
        elif values is not None:
            self._problem(scope, node_id, class_type, "widgets_values must be a list or an object",
                          "widgets_values")
        overrides = self._overrides.get(scope.prefix + node_id, {})
        inputs: dict[str, Any] = {}
        for widget in layout:
            if widget.name in overrides:
                inputs[widget.name] = _api_value(overrides[widget.name])
            elif widget.name in found:
                inputs[widget.name] = _api_value(found[widget.name])
            elif widget.default is not _NO_DEFAULT:
                # The editor creates missing widgets with their default, so a workflow saved
                # before a node grew a widget still sends a value for it.
                inputs[widget.name] = _api_value(widget.default)
        return inputs

    def _layout(self, class_type: str, info: dict) -> tuple[_Widget, ...]:
        if class_type not in self._layouts:
            self._layouts[class_type] = _widget_layout(info)
        return self._layouts[class_type]

    # ---- socket resolution --------------------------------------------------------------------

    def _resolve(self, scope: _Scope, link_id: str, want_type: Any, node_id: str, class_type: str,
                 input_name: str) -> _Resolved:
        """Follow one input link to the node that really produces it (or to a constant)."""
        seen: set[tuple[str, str]] = set()
        while True:
            if (scope.prefix, link_id) in seen:
                self._problem(scope, node_id, class_type, "link cycle through reroute or bypassed nodes",
                              input_name)
                return _NONE
            seen.add((scope.prefix, link_id))
            link = scope.links.get(link_id)
            if link is None:
                return _NONE
            if link.origin == SUBGRAPH_INPUT_NODE and scope.parent is not None:
                step = self._leave_subgraph(scope, link.origin_slot)
                if isinstance(step, _Resolved):
                    return step
                scope, link_id = step
                continue
            origin = scope.nodes.get(link.origin)
            if origin is None:
                return _DANGLING
            origin_type = str(origin.get("type"))
            if origin_type == "Reroute":
                upstream = _input_link(origin, 0)
                if upstream is None:
                    return _NONE
                link_id = upstream
                continue
            if origin_type == "PrimitiveNode":
                values = origin.get("widgets_values")
                return _Resolved("value", values[0]) if isinstance(values, list) and values else _NONE
            if origin_type in VIRTUAL_TYPES or origin.get("mode") == MODE_MUTED:
                return _DANGLING
            if origin.get("mode") == MODE_BYPASS:
                upstream = _bypass_input_link(origin, link.origin_slot, want_type)
                if upstream is None:
                    return _NONE
                link_id = upstream
                continue
            if origin_type in self._definitions:
                child = self._child_scope(scope, link.origin, origin)
                inner = child.output_links.get(link.origin_slot) if child is not None else None
                if inner is None:
                    return _NONE
                scope, link_id = child, inner
                continue
            return _Resolved("link", [scope.prefix + link.origin, link.origin_slot])

    def _leave_subgraph(self, scope: _Scope, slot: int) -> tuple[_Scope, str] | _Resolved:
        """A subgraph input: continue from the instance's socket, or use its promoted widget value."""
        if not 0 <= slot < len(scope.outer_sockets):
            return _NONE
        socket = scope.outer_sockets[slot]
        if socket is not None and socket.get("link") is not None:
            return scope.parent, str(socket["link"])
        declared = ((scope.definition or {}).get("inputs") or [])[slot]
        name = declared.get("name") if isinstance(declared, dict) else None
        if name in scope.promoted:
            return _Resolved("value", scope.promoted[name])
        return _NONE

    # ---- subgraphs ----------------------------------------------------------------------------

    def _child_scope(self, scope: _Scope, node_id: str, node: dict) -> _Scope | None:
        prefix = f"{scope.prefix}{node_id}:"
        if prefix in self._scopes:
            return self._scopes[prefix]
        def_id = str(node.get("type"))
        if def_id in scope.chain:
            self._problem(scope, node_id, def_id, "subgraph contains an instance of itself")
            return None
        definition = self._definitions[def_id]
        child = _Scope(prefix, _nodes_by_id(definition), _links_by_id(definition.get("links")),
                       definition=definition, parent=scope, chain=scope.chain + (def_id,))
        for link_id, link in child.links.items():
            if link.target == SUBGRAPH_OUTPUT_NODE:
                child.output_links.setdefault(link.target_slot, link_id)
        child.outer_sockets = _outer_sockets(definition, node)
        child.promoted = self._promoted_values(child, node)
        self._scopes[prefix] = child
        return child

    def _promoted_values(self, child: _Scope, instance: dict) -> dict[str, Any]:
        """Values of the widgets shown on a subgraph instance, keyed by subgraph input name.

        Newer editors list them in properties.proxyWidgets as [inner node id, widget name]
        ("-1" = the subgraph's own input), parallel to widgets_values; entries naming an inner
        node override that node's widget directly.  Older ones mark promoted inputs with a
        `widget` field on the instance's input sockets.  When the lists do not line up nothing is
        applied: a positional guess would hand values to the wrong widgets, while the inner
        nodes' own values are a safe fallback.
        """
        values = instance.get("widgets_values")
        if isinstance(values, dict):
            return dict(values)
        if not isinstance(values, list) or not values:
            return {}
        group_widgets = (child.definition or {}).get("group_widgets")
        if group_widgets is not None:
            for (inner, widget), value in zip(group_widgets,
                                              _positional_values([w for _, w in group_widgets], values)):
                if value is not _MISSING:
                    self._overrides.setdefault(child.prefix + inner, {})[widget.name] = value
            return {}
        proxies = (instance.get("properties") or {}).get("proxyWidgets")
        if isinstance(proxies, list):
            if len(proxies) != len(values):
                return {}
            promoted: dict[str, Any] = {}
            for entry, value in zip(proxies, values):
                if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                    continue
                inner, name = str(entry[0]), str(entry[1])
                if inner == "-1":
                    promoted[name] = value
                else:
                    self._overrides.setdefault(child.prefix + inner, {})[name] = value
            return promoted
        names = [s.get("name") for s in instance.get("inputs") or [] if isinstance(s, dict) and s.get("widget")]
        return dict(zip(names, values)) if len(names) == len(values) else {}

    def _group_node_definitions(self) -> dict[str, dict]:
        """Legacy group nodes (extra.groupNodes), rewritten as subgraph definitions.

        A group keeps its inner nodes by index and its links as
        [origin index, origin slot, target index, target slot, ...].  Its instances expose, in
        inner-node order, every input socket not wired inside the group, every widget not wired
        inside (their values form the instance's widgets_values, companions included) and every
        output not wired inside or listed in `external`.  Inner ids become "<instance>:<index>",
        as the frontend sends them.
        """
        groups = (self._workflow.get("extra") or {}).get("groupNodes")
        if not isinstance(groups, dict):
            return {}
        definitions: dict[str, dict] = {}
        for name, group in groups.items():
            if isinstance(group, dict):
                definition = self._group_definition(str(name), group)
                for prefix in GROUP_NODE_PREFIXES:
                    definitions[prefix + str(name)] = definition
        return definitions

    def _group_definition(self, name: str, group: dict) -> dict:
        members = [n for n in group.get("nodes") or [] if isinstance(n, dict)]  # links address them by index
        nodes = [{**member, "id": index, "inputs": [dict(s) for s in member.get("inputs") or [] if isinstance(s, dict)]}
                 for index, member in enumerate(members)]
        links: list[dict] = []

        def connect(origin: int, origin_slot: int, target: int, target_slot: int) -> int:
            links.append({"id": len(links), "origin_id": origin, "origin_slot": origin_slot,
                          "target_id": target, "target_slot": target_slot})
            return len(links) - 1

        for node in nodes:
            for slot in node["inputs"]:
                slot["link"] = None
        wired_out: set[tuple[int, int]] = set()
        for entry in group.get("links") or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 4 and None not in entry[:4]:
                origin, origin_slot, target, target_slot = (int(v) for v in entry[:4])
                if 0 <= target < len(nodes) and 0 <= target_slot < len(nodes[target]["inputs"]):
                    nodes[target]["inputs"][target_slot]["link"] = connect(origin, origin_slot, target, target_slot)
                    wired_out.add((origin, origin_slot))
        external = {(int(e[0]), int(e[1])) for e in group.get("external") or []
                    if isinstance(e, (list, tuple)) and len(e) >= 2}
        sub_inputs: list[dict] = []
        sub_outputs: list[dict] = []
        widgets: list[tuple[str, _Widget]] = []
        for index, node in enumerate(nodes):
            info = self._info(str(node.get("type")))
            wired = {s.get("name") for s in node["inputs"] if s["link"] is not None}
            for slot_index, slot in enumerate(node["inputs"]):
                if slot["link"] is None and not slot.get("widget"):
                    slot["link"] = connect(int(SUBGRAPH_INPUT_NODE), len(sub_inputs), index, slot_index)
                    sub_inputs.append({"name": slot.get("name"), "group_socket": True})
            layout = self._layout(str(node["type"]), info) if info is not None else ()
            for widget in layout:
                if widget.name in wired:
                    continue
                widgets.append((str(index), widget))
                slot = next((s for s in node["inputs"] if s.get("widget") and _widget_name(s) == widget.name), None)
                if slot is None:
                    slot = {"name": widget.name, "widget": {"name": widget.name}}
                    node["inputs"].append(slot)
                slot["link"] = connect(int(SUBGRAPH_INPUT_NODE), len(sub_inputs), index, node["inputs"].index(slot))
                sub_inputs.append({"name": widget.name, "group_socket": False})
            for slot_index, _ in enumerate(node.get("outputs") or []):
                if (index, slot_index) not in wired_out or (index, slot_index) in external:
                    connect(index, slot_index, int(SUBGRAPH_OUTPUT_NODE), len(sub_outputs))
                    sub_outputs.append({"name": f"{index}.{slot_index}"})
        return {"id": f"group:{name}", "name": name, "nodes": nodes, "links": links,
                "inputs": sub_inputs, "outputs": sub_outputs, "group_widgets": widgets}


# ---- widget layout (spec §2.3) ----------------------------------------------------------------

def _widget_layout(info: dict) -> tuple[_Widget, ...]:
    """The widgets the frontend creates for a node, in widgets_values order."""
    declared = info.get("input") or {}
    order = info.get("input_order") or {}
    layout: list[_Widget] = []
    for category in ("required", "optional"):
        section = declared.get(category) or {}
        for name in order.get(category) or list(section):
            if name not in section:
                continue
            io_type, options = _split_spec(section[name])
            if not _has_widget(io_type, options):
                continue
            kind = "COMBO" if isinstance(io_type, list) else io_type
            control = options.get("control_after_generate")
            if control is None and kind == "INT" and name in SEED_INPUT_NAMES:
                control = True
            has_control = bool(control) and kind in ("INT", "COMBO")
            companions = int(has_control) + int(bool(options.get("image_upload")))
            layout.append(_Widget(name, companions, has_control and kind == "COMBO", _default(io_type, options)))
    return tuple(layout)


def _split_spec(spec: Any) -> tuple[Any, dict]:
    if isinstance(spec, (list, tuple)) and spec:
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], options
    return spec, {}


def _has_widget(io_type: Any, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(io_type, list) or bool(options.get("widgetType")) or io_type in WIDGET_TYPES


def _default(io_type: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    choices = io_type if isinstance(io_type, list) else options.get("options") if io_type == "COMBO" else None
    return choices[0] if choices else _NO_DEFAULT


def _positional_values(layout: list[_Widget] | tuple[_Widget, ...], values: list) -> list[Any]:
    """widgets_values aligned with `layout` (_MISSING past the end), companion values skipped.

    A COMBO with a control widget may also carry a control_filter_list value; the value count
    tells whether this workflow has them.
    """
    combo_controls = sum(w.combo_control for w in layout)
    base = sum(1 + w.companions for w in layout)
    filter_lists = combo_controls > 0 and len(values) >= base + combo_controls
    aligned: list[Any] = []
    position = 0
    for widget in layout:
        aligned.append(values[position] if position < len(values) else _MISSING)
        position += 1 + widget.companions + int(filter_lists and widget.combo_control)
    return aligned


def _api_value(value: Any) -> Any:
    """Lists in the API prompt mean links, so list-valued constants travel wrapped."""
    return {"__value__": value} if isinstance(value, list) else value


# ---- graph plumbing ---------------------------------------------------------------------------

def _nodes_by_id(graph: dict) -> dict[str, dict]:
    return {str(n["id"]): n for n in graph.get("nodes") or [] if isinstance(n, dict) and "id" in n}


def _links_by_id(links: Any) -> dict[str, _Link]:
    """Links as 0.4 six-tuples or version-1 objects, keyed by str(link id)."""
    found: dict[str, _Link] = {}
    for entry in links or []:
        if isinstance(entry, (list, tuple)) and len(entry) >= 5:
            link_id, origin, origin_slot, target, target_slot = entry[:5]
        elif isinstance(entry, dict) and "id" in entry:
            link_id, origin, origin_slot = entry["id"], entry.get("origin_id"), entry.get("origin_slot")
            target, target_slot = entry.get("target_id"), entry.get("target_slot")
        else:
            continue
        if origin is None or origin_slot is None:
            continue
        found[str(link_id)] = _Link(str(origin), int(origin_slot), str(target), int(target_slot or 0))
    return found


def _collect_subgraphs(workflow: dict) -> dict[str, dict]:
    """Every subgraph definition by id, including ones nested inside other definitions."""
    found: dict[str, dict] = {}
    pending = [workflow]
    while pending:
        subgraphs = (pending.pop().get("definitions") or {}).get("subgraphs") or []
        # Normally a list of definitions carrying their id; some tools write {id: definition}.
        entries = subgraphs.items() if isinstance(subgraphs, dict) else (
            (d.get("id"), d) for d in subgraphs if isinstance(d, dict))
        for def_id, definition in entries:
            if isinstance(definition, dict) and def_id is not None and str(def_id) not in found:
                found[str(def_id)] = definition
                pending.append(definition)
    return found


def _outer_sockets(definition: dict, instance: dict) -> list[dict | None]:
    """The instance's input socket for each declared subgraph input.

    Subgraph instances name their sockets after the subgraph inputs (unconnected widget sockets
    may be left out of the file, so names beat positions).  Legacy group nodes rename sockets
    on clashes, so their plain sockets go by position and their widget sockets by widget name.
    """
    declared = [d if isinstance(d, dict) else {} for d in definition.get("inputs") or []]
    outer = [s for s in instance.get("inputs") or [] if isinstance(s, dict)]
    if "group_widgets" not in definition:
        by_name = {s.get("name"): s for s in reversed(outer)}
        if len(outer) == len(declared):
            return [by_name.get(d.get("name"), s) for d, s in zip(declared, outer)]
        return [by_name.get(d.get("name")) for d in declared]
    plain = iter([s for s in outer if not s.get("widget")])
    widget_sockets = {i: str(_widget_name(s)) for i, s in enumerate(outer) if s.get("widget")}
    found: list[dict | None] = []
    for entry in declared:
        if entry.get("group_socket"):
            found.append(next(plain, None))
            continue
        name = str(entry.get("name"))
        match = next((i for i, w in widget_sockets.items() if w == name or w.endswith(" " + name)), None)
        if match is not None:
            del widget_sockets[match]
        found.append(outer[match] if match is not None else None)
    return found


def _widget_name(slot: dict) -> Any:
    """The input name a socket feeds: a converted widget's own name, else the socket name."""
    widget = slot.get("widget")
    return (widget.get("name") if isinstance(widget, dict) else None) or slot.get("name")


def _input_link(node: dict, index: int) -> str | None:
    inputs = node.get("inputs") or []
    if 0 <= index < len(inputs) and isinstance(inputs[index], dict) and inputs[index].get("link") is not None:
        return str(inputs[index]["link"])
    return None


def _types_compatible(a: Any, b: Any) -> bool:
    """Litegraph's rule: empty or "*" matches anything; comma lists match on any overlap."""
    if not a or not b or a == "*" or b == "*":
        return True
    return bool({t.strip().upper() for t in str(a).split(",")} & {t.strip().upper() for t in str(b).split(",")})


def _bypass_input_link(node: dict, slot: int, want_type: Any) -> str | None:
    """The input a bypassed node passes through for output `slot` (spec §2.4 bypass rules)."""
    inputs = [s if isinstance(s, dict) else {} for s in node.get("inputs") or []]
    if not inputs:
        return None
    if not want_type or want_type == "*":
        chosen = slot if slot < len(inputs) else 0
    elif slot < len(inputs) and _types_compatible(inputs[slot].get("type"), want_type):
        chosen = slot
    else:
        exact = [i for i, s in enumerate(inputs) if s.get("type") == want_type]
        loose = [i for i, s in enumerate(inputs) if _types_compatible(s.get("type"), want_type)]
        if not (exact or loose):
            return None
        chosen = (exact or loose)[0]
    return _input_link(node, chosen)


# ---- files ------------------------------------------------------------------------------------

def read_png_metadata(source: bytes | str | os.PathLike) -> dict[str, Any]:
    """The `prompt` and `workflow` JSON that ComfyUI writes into a PNG's text chunks."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            text = dict(getattr(image, "text", None) or image.info)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise WorkflowConversionError(f"cannot read PNG metadata: {exc}") from exc
    found: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if isinstance(text.get(key), str):
            try:
                found[key] = json.loads(text[key])
            except json.JSONDecodeError as exc:
                raise WorkflowConversionError(f"PNG text chunk {key!r} is not valid JSON: {exc}") from exc
    return found


def load_any(source: bytes | str | os.PathLike) -> tuple[Literal["ui", "api"], dict]:
    """Load a workflow file, JSON bytes or PNG and say which format it is.

    A PNG's API prompt is preferred over its UI workflow: it is exactly what ran, seeds included.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data.startswith(PNG_SIGNATURE):
        meta = read_png_metadata(data)
        if isinstance(meta.get("prompt"), dict):
            return "api", meta["prompt"]
        if isinstance(meta.get("workflow"), dict):
            return "ui", meta["workflow"]
        raise WorkflowConversionError("PNG has no 'prompt' or 'workflow' text chunk")
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowConversionError(f"not JSON or PNG: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        return "ui", document
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        document = document["prompt"]  # a saved POST /prompt body
    if isinstance(document, dict) and document and all(
            isinstance(v, dict) and "class_type" in v for v in document.values()):
        return "api", document
    raise WorkflowConversionError("neither a UI workflow nor an API prompt")
