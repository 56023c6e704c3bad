"""One normalized description of a node class, whatever protocol it was written in.

ComfyUI's classic protocol (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) is the wire format every
custom node speaks.  Built-in Sumi nodes use the typed declaration at the bottom of this module,
which *produces* that same protocol, so validation, scheduling and /object_info have exactly
one code path.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

HIDDEN_KINDS = frozenset({
    "PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID",
    "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG",
    "SUMI_RUNTIME",  # Sumi's explicit per-call runtime (folders, progress, models); never shown to clients
})
RUNTIME_KIND = "SUMI_RUNTIME"


class ExecutionBlocker:
    """Returned in place of a value to stop downstream nodes; a message makes the first consumer report it."""

    __slots__ = ("message",)

    def __init__(self, message: str | None = None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


@dataclass(frozen=True, slots=True)
class InputDef:
    """One declared input: name, io type (or old-style option list) and its options dict."""

    name: str
    type: Any
    options: dict
    required: bool

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, list) or self.type == "COMBO"

    @property
    def combo_options(self) -> list | None:
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy"))

    @property
    def raw_link(self) -> bool:
        return bool(self.options.get("rawLink"))

    def config(self) -> list:
        """The `input_config` pair used in ComfyUI error bodies."""
        return [self.type, self.options]


@dataclass(slots=True)
class InputSpec:
    """The parsed result of one INPUT_TYPES() call."""

    inputs: dict[str, InputDef]
    hidden: dict[str, str]
    order: dict[str, list[str]]
    raw: dict

    @property
    def lazy_names(self) -> frozenset[str]:
        return frozenset(n for n, d in self.inputs.items() if d.lazy)


def parse_input_types(raw: dict) -> InputSpec:
    inputs: dict[str, InputDef] = {}
    order: dict[str, list[str]] = {}
    for category in ("required", "optional"):
        section = raw.get(category) or {}
        order[category] = list(section)
        for name, spec in section.items():
            if isinstance(spec, (tuple, list)) and spec:
                io_type = spec[0]
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            else:
                io_type, opts = spec, {}
            inputs[name] = InputDef(name, io_type, opts, category == "required")
    hidden: dict[str, str] = {}
    for name, kind in (raw.get("hidden") or {}).items():
        # v3 emits 1-tuples; classic emits bare strings.
        hidden[name] = kind[0] if isinstance(kind, (tuple, list)) else kind
    if hidden:
        order["hidden"] = list(hidden)
    return InputSpec(inputs, hidden, order, raw)


def _overridden(cls: type, name: str) -> Any:
    return getattr(cls, name, None)


@dataclass(slots=True)
class NodeSchema:
    """Everything the engine needs to know about a node class, computed once at registration."""

    class_type: str
    cls: type
    display_name: str
    category: str
    description: str
    python_module: str
    output_types: tuple
    output_names: tuple
    output_is_list: tuple
    output_tooltips: tuple | None
    output_node: bool
    input_is_list: bool
    function: str
    not_idempotent: bool
    is_changed: Callable | None
    validate_inputs: Callable | None
    validate_params: frozenset[str] | None  # None: takes **kwargs (all inputs, no min/max checks)
    validate_wants_types: bool
    deprecated: bool
    experimental: bool
    api_node: bool
    input_types_fn: Callable[[], dict]
    is_async: bool = False

    def input_spec(self) -> InputSpec:
        return parse_input_types(self.input_types_fn() or {})

    def object_info(self) -> dict:
        """The /object_info entry, shaped exactly like ComfyUI's v1 serialization."""
        spec = self.input_spec()
        visible_hidden = {k: v for k, v in spec.hidden.items() if v != RUNTIME_KIND}
        raw_input: dict = {}
        order: dict = {}
        for category in ("required", "optional"):
            if category in spec.raw:
                raw_input[category] = {n: _jsonable(v) for n, v in spec.raw[category].items()}
                order[category] = spec.order[category]
        if visible_hidden:
            raw_input["hidden"] = visible_hidden
            order["hidden"] = list(visible_hidden)
        info = {
            "input": raw_input,
            "input_order": order,
            "output": list(self.output_types),
            "output_is_list": list(self.output_is_list),
            "output_name": list(self.output_names),
            "name": self.class_type,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips:
            info["output_tooltips"] = list(self.output_tooltips)
        for flag in ("deprecated", "experimental", "api_node"):
            if getattr(self, flag):
                info[flag] = True
        return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if not callable(v)}
    return value


def schema_from_class(class_type: str, cls: type, display_name: str | None, python_module: str,
                      input_types_fn: Callable[[], dict] | None = None) -> NodeSchema:
    """Normalize a classic (v1) node class; raises TypeError naming what is missing."""
    if not hasattr(cls, "INPUT_TYPES"):
        raise TypeError(f"node class {class_type!r} has no INPUT_TYPES")
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not hasattr(cls, function):
        raise TypeError(f"node class {class_type!r}: FUNCTION {function!r} is not a method of the class")
    output_types = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    output_names = tuple(getattr(cls, "RETURN_NAMES", None) or output_types)
    output_is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * len(output_types))
    validate = _overridden(cls, "VALIDATE_INPUTS")
    params: frozenset[str] | None = frozenset()
    wants_types = False
    if validate is not None:
        sig = inspect.signature(validate)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            params = None
        else:
            params = frozenset(sig.parameters)
        wants_types = "input_types" in sig.parameters
    hidden_values = set()
    try:
        hidden_values = {v if isinstance(v, str) else v[0]
                         for v in ((cls.INPUT_TYPES() or {}).get("hidden") or {}).values()}
    except Exception:  # noqa: BLE001 - a broken INPUT_TYPES is reported at /object_info and validation time
        pass
    return NodeSchema(
        class_type=class_type,
        cls=cls,
        display_name=display_name or getattr(cls, "DISPLAY_NAME", None) or class_type,
        category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", "") or "",
        python_module=python_module,
        output_types=output_types,
        output_names=output_names,
        output_is_list=output_is_list,
        output_tooltips=tuple(getattr(cls, "OUTPUT_TOOLTIPS", ()) or ()) or None,
        output_node=getattr(cls, "OUTPUT_NODE", False) is True,
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        function=function,
        # A v1 UNIQUE_ID hidden input puts the node id into the cache key, as in ComfyUI.
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)) or "UNIQUE_ID" in hidden_values,
        is_changed=_overridden(cls, "IS_CHANGED"),
        validate_inputs=validate,
        validate_params=params,
        validate_wants_types=wants_types,
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        api_node=bool(getattr(cls, "API_NODE", False)),
        input_types_fn=input_types_fn or cls.INPUT_TYPES,
        is_async=inspect.iscoroutinefunction(getattr(cls, function)),
    )


# --------------------------------------------------------------------------------------------
# Typed declaration for built-in nodes.
#
#     class ImageInvert(Node):
#         CATEGORY = "image"
#         INPUTS = (Image("image"),)
#         OUTPUTS = (Out("IMAGE"),)
#         def execute(self, image): return (1.0 - image,)
#
# Options whose value is a callable (e.g. a file list) are resolved with the app's NodeServices
# (bound by the registry) every time the inputs are asked for, so dropdowns reflect the folders
# as they are now.
# Declare a parameter named `rt` in `execute` to receive the per-call NodeRuntime.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class In:
    """A declared input. `type` is an io type string, "COMBO", or a callable returning options."""

    name: str
    type: Any
    optional: bool = False
    options: dict = field(default_factory=dict)

    def resolve(self, services: Any) -> tuple[Any, dict]:
        opts = dict(self.options)
        io_type = self.type
        if "options" in opts and callable(opts["options"]):
            opts["options"] = list(opts["options"](services))
        if callable(io_type):
            io_type = list(io_type(services))
        return io_type, opts


def _input(io_type: Any, name: str, optional: bool, **options: Any) -> In:
    return In(name, io_type, optional, {k: v for k, v in options.items() if v is not None})


def Int(name: str, default: int | None = 0, *, min: int | None = -0xFFFFFFFFFFFFFFFF, max: int | None = 0xFFFFFFFFFFFFFFFF,
        step: int | None = 1, optional: bool = False, **options: Any) -> In:
    return _input("INT", name, optional, default=default, min=min, max=max, step=step, **options)


def Float(name: str, default: float = 0.0, *, min: float | None = None, max: float | None = None,
          step: float | None = 0.01, optional: bool = False, **options: Any) -> In:
    return _input("FLOAT", name, optional, default=default, min=min, max=max, step=step, **options)


def String(name: str, default: str | None = "", *, multiline: bool | None = False, optional: bool = False,
           **options: Any) -> In:
    """Pass None for default/multiline to leave the key out, matching nodes that declare neither."""
    return _input("STRING", name, optional, default=default, multiline=multiline, **options)


def Boolean(name: str, default: bool | None = False, *, optional: bool = False, **options: Any) -> In:
    return _input("BOOLEAN", name, optional, default=default, **options)


def Combo(name: str, options: Iterable | Callable, *, default: Any = None, optional: bool = False,
          **extra: Any) -> In:
    """Old-style combo (a list as the type), which every ComfyUI client understands."""
    io_type = options if callable(options) else list(options)
    return _input(io_type, name, optional, default=default, **extra)


def Socket(io_type: str, name: str, *, optional: bool = False, **options: Any) -> In:
    return _input(io_type, name, optional, **options)


@dataclass(frozen=True)
class Out:
    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None


class Node:
    """Base for built-in nodes: INPUTS/OUTPUTS declarations produce the classic protocol."""

    INPUTS: tuple[In, ...] = ()
    OUTPUTS: tuple[Out, ...] = ()
    HIDDEN: dict[str, str] = {}
    FUNCTION = "execute"
    CATEGORY = "sd"
    DESCRIPTION = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.RETURN_TYPES = tuple(o.type for o in cls.OUTPUTS)
        cls.RETURN_NAMES = tuple(o.name or o.type for o in cls.OUTPUTS)
        cls.OUTPUT_IS_LIST = tuple(o.is_list for o in cls.OUTPUTS)
        tooltips = tuple(o.tooltip or "" for o in cls.OUTPUTS)
        if any(tooltips):
            cls.OUTPUT_TOOLTIPS = tooltips
        execute = getattr(cls, cls.FUNCTION, None)
        hidden = dict(cls.HIDDEN)
        if execute is not None and "rt" in inspect.signature(execute).parameters:
            hidden["rt"] = RUNTIME_KIND
        cls._hidden = hidden

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 - protocol name
        """Classic entry point; file lists come out empty without the app's services."""
        return cls.input_types(None)

    @classmethod
    def input_types(cls, services: Any) -> dict:
        result: dict = {"required": {}}
        for decl in cls.INPUTS:
            io_type, opts = decl.resolve(services)
            section = result.setdefault("optional" if decl.optional else "required", {})
            section[decl.name] = (io_type, opts) if opts else (io_type,)
        if cls._hidden:
            result["hidden"] = dict(cls._hidden)
        return result
