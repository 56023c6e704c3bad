"""Sumi's conformance node pack, written as a third-party ComfyUI custom node pack (classic v1 protocol).

It mirrors the behaviour groups of the upstream execution test pack (spec comfy_api.md §10.2):
stub sources, lazy inputs, undeclared inputs, IS_CHANGED, custom validation, expansion and loops,
ExecutionBlocker, lists, async nodes, errors, a slow node and output nodes that report pixel values.
Load it through a `custom_nodes:` root (e.g. extra_model_paths.yaml) or NodeRegistry.load_custom_nodes.
"""
from .async_nodes import NODE_CLASS_MAPPINGS as _ASYNC
from .checks import NODE_CLASS_MAPPINGS as _CHECKS
from .flow import NODE_CLASS_MAPPINGS as _FLOW
from .lists import NODE_CLASS_MAPPINGS as _LISTS
from .stubs import NODE_CLASS_MAPPINGS as _STUBS

NODE_CLASS_MAPPINGS = {**_STUBS, **_FLOW, **_LISTS, **_CHECKS, **_ASYNC}
NODE_DISPLAY_NAME_MAPPINGS = {name: f"Testing: {name}" for name in NODE_CLASS_MAPPINGS}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
