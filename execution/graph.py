"""The prompt as a graph that can grow while it runs (node expansion adds ephemeral nodes)."""
from __future__ import annotations

from typing import Any


def is_link(value: Any) -> bool:
    """ComfyUI's run-time link test: [source_id: str, slot: int|float]."""
    return (type(value) is list and len(value) == 2 and type(value[0]) is str
            and type(value[1]) in (int, float))


class DynamicPrompt:
    """Original API prompt plus ephemeral nodes created by expansion, with parent/display ids."""

    def __init__(self, prompt: dict[str, dict]) -> None:
        self.original = prompt
        self.ephemeral: dict[str, dict] = {}
        self.parents: dict[str, str] = {}
        self.displays: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict:
        node = self.ephemeral.get(node_id) or self.original.get(node_id)
        if node is None:
            raise KeyError(node_id)
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original or node_id in self.ephemeral

    def add_ephemeral_node(self, node_id: str, node: dict, parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = node
        self.parents[node_id] = parent_id
        self.displays[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        seen = 0
        while node_id in self.displays and self.displays[node_id] != node_id and seen < 10_000:
            node_id = self.displays[node_id]
            seen += 1
        return node_id

    def all_node_ids(self) -> set[str]:
        return set(self.original) | set(self.ephemeral)

    def get_original_prompt(self) -> dict:
        return self.original
