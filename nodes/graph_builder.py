"""Build API-prompt fragments, for node expansion (loops, macros) and for tests.

Ids are "<prefix><n>"; during expansion the executor sets the prefix to
"<node_id>.<call_index>.<graph_index>." so expanded ids are unique and traceable, as in ComfyUI.
"""
from __future__ import annotations

import contextvars
from typing import Any

from nodes.schema import ExecutionBlocker  # noqa: F401 - re-exported for node authors

class ExpansionPrefix:
    """Which node call is running; the executor updates it in place before every call (cheap)."""

    __slots__ = ("node_id", "call_index", "graphs")

    def __init__(self) -> None:
        self.node_id: str | None = None
        self.call_index = 0
        self.graphs = 0

    def enter(self, node_id: str, call_index: int) -> None:
        self.node_id, self.call_index, self.graphs = node_id, call_index, 0

    def next_prefix(self) -> str | None:
        if self.node_id is None:
            return None
        prefix = f"{self.node_id}.{self.call_index}.{self.graphs}."
        self.graphs += 1
        return prefix


current_call: contextvars.ContextVar[ExpansionPrefix | None] = contextvars.ContextVar("expansion", default=None)


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], (int, float))


class GraphNode:
    def __init__(self, node_id: str, class_type: str, inputs: dict) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, display_id: str) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict:
        data = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            data["override_display_id"] = self.override_display_id
        return data


class GraphBuilder:
    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            state = current_call.get()
            prefix = (state.next_prefix() if state is not None else None) or ""
        self.prefix = prefix
        self.nodes: dict[str, GraphNode] = {}
        self._next = 1

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> GraphNode:  # noqa: A002
        if id is None:
            id = str(self._next)
            self._next += 1
        full = self.prefix + id
        if full in self.nodes:
            return self.nodes[full]
        node = GraphNode(full, class_type, inputs)
        self.nodes[full] = node
        return node

    def lookup_node(self, id: str) -> GraphNode | None:  # noqa: A002
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:  # noqa: A002
        self.nodes.pop(self.prefix + id, None)

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        full = self.prefix + node_id
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == full and value[1] == index:
                    node.set_input(key, new_value)

    def finalize(self) -> dict:
        return {nid: node.serialize() for nid, node in self.nodes.items()}
