"""The node registry: built-in node modules plus custom node packs, normalized to NodeSchema."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from nodes.runtime import NodeServices
from nodes.schema import Node, NodeSchema, schema_from_class

log = logging.getLogger("sumi.nodes")

BUILTIN_MODULES = (
    "nodes.primitives",
    "nodes.image",
    "nodes.mask",
    "nodes.loaders",
    "nodes.conditioning",
    "nodes.latent",
    "nodes.sampling",
    "nodes.lora",
    "nodes.merge",
    "nodes.save",
)


class NodeRegistry:
    """class_type -> NodeSchema for one app instance, plus custom-node web directories."""

    def __init__(self, services: NodeServices) -> None:
        self.services = services
        self.schemas: dict[str, NodeSchema] = {}
        self.web_dirs: dict[str, Path] = {}
        self.import_failures: dict[str, str] = {}
        self.import_times: dict[str, float] = {}

    def get(self, class_type: str) -> NodeSchema | None:
        return self.schemas.get(class_type)

    def __contains__(self, class_type: str) -> bool:
        return class_type in self.schemas

    def register(self, class_type: str, cls: type, *, display_name: str | None = None,
                 python_module: str = "nodes", replace: bool = True) -> NodeSchema | None:
        if not replace and class_type in self.schemas:
            return None
        input_types_fn = None
        if isinstance(cls, type) and issubclass(cls, Node):
            services = self.services
            input_types_fn = lambda cls=cls: cls.input_types(services)  # noqa: E731
        schema = schema_from_class(class_type, cls, display_name, python_module, input_types_fn)
        self.schemas[class_type] = schema
        return schema

    def register_module(self, module: ModuleType, python_module: str, *, replace: bool = True) -> int:
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if not isinstance(mappings, dict):
            raise TypeError(f"{python_module} has no NODE_CLASS_MAPPINGS dict")
        names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {}
        count = 0
        for class_type, cls in mappings.items():
            try:
                if self.register(class_type, cls, display_name=names.get(class_type),
                                 python_module=python_module, replace=replace):
                    count += 1
            except TypeError as exc:
                log.warning("skipping node %s from %s: %s", class_type, python_module, exc)
        return count

    def load_builtins(self, modules: tuple[str, ...] = BUILTIN_MODULES) -> None:
        for name in modules:
            self.register_module(importlib.import_module(name), "nodes")

    def load_custom_nodes(self, roots: list[Path], *, disabled: bool = False,
                          whitelist: tuple[str, ...] = ()) -> None:
        """Import every pack under the custom_nodes roots; a failing pack is logged and skipped."""
        builtin = set(self.schemas)
        for root in roots:
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                name = entry.name
                if name.startswith((".", "__")) or name.endswith(".disabled"):
                    continue
                if entry.is_file() and entry.suffix != ".py":
                    continue
                if entry.is_dir() and not (entry / "__init__.py").exists():
                    continue
                if disabled and name not in whitelist:
                    continue
                self._load_pack(entry, builtin)

    def _load_pack(self, path: Path, builtin: set[str]) -> None:
        pack = path.stem if path.is_file() else path.name
        module_name = f"custom_nodes.{pack}".replace("-", "_")
        started = time.perf_counter()
        try:
            if path.is_dir():
                spec = importlib.util.spec_from_file_location(
                    module_name, path / "__init__.py", submodule_search_locations=[str(path)])
            else:
                spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            if not hasattr(module, "NODE_CLASS_MAPPINGS"):
                log.warning("custom node pack %s has no NODE_CLASS_MAPPINGS; skipped", pack)
                return
            # Built-ins win name clashes; between packs, the later one wins.
            mappings = {k: v for k, v in module.NODE_CLASS_MAPPINGS.items() if k not in builtin}
            shadow = ModuleType(module_name)
            shadow.NODE_CLASS_MAPPINGS = mappings
            shadow.NODE_DISPLAY_NAME_MAPPINGS = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {})
            self.register_module(shadow, f"custom_nodes.{pack}")
            web = getattr(module, "WEB_DIRECTORY", None)
            if web:
                web_dir = (path if path.is_dir() else path.parent) / web
                if web_dir.is_dir():
                    self.web_dirs[pack] = web_dir.resolve()
        except Exception:  # noqa: BLE001 - a broken pack must never stop the server
            self.import_failures[pack] = traceback.format_exc()
            sys.modules.pop(module_name, None)
            log.error("IMPORT FAILED: custom node pack %s\n%s", pack, self.import_failures[pack])
        finally:
            self.import_times[pack] = time.perf_counter() - started

    def object_info(self) -> dict:
        info = {}
        for class_type, schema in self.schemas.items():
            try:
                info[class_type] = schema.object_info()
            except Exception:  # noqa: BLE001 - one broken node must not hide the others
                log.exception("object_info failed for %s", class_type)
        return info
