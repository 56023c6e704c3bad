"""Prompt validation with ComfyUI's error types and 400 body, iterative so depth is unlimited.

Constants are coerced by declared type and written back into the prompt (ComfyUI does the
same), so the executor later sees clean values.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from nodes.registry import NodeRegistry
from nodes.runtime import NodeRuntime
from nodes.schema import RUNTIME_KIND, ExecutionBlocker, InputSpec, NodeSchema

COMBO_LIST_LIMIT = 20


@dataclass
class ValidationResult:
    ok: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict = field(default_factory=dict)

    def body(self) -> dict:
        return {"error": self.error, "node_errors": self.node_errors}


def top_error(kind: str, message: str, details: str = "", extra: dict | None = None) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def types_compatible(received: Any, expected: Any) -> bool:
    """Link type rule: equal, '*', comma-set overlap; `!=` keeps str subclasses with custom __ne__ working."""
    if not (received != expected):
        return True
    if received == "*" or expected == "*" or "COMFY_MATCHTYPE_V3" in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def resolve_awaitable(value: Any) -> Any:
    """VALIDATE_INPUTS may be async; validation runs off the server loop, so a private loop is fine."""
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


_CONVERT: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


class _Validator:
    def __init__(self, prompt: dict, registry: NodeRegistry, hidden_value: Callable[[str, str], Any]) -> None:
        self.prompt = prompt
        self.registry = registry
        self.hidden_value = hidden_value
        self.specs: dict[str, InputSpec] = {}
        self.valid: dict[str, bool] = {}
        self.errors: dict[str, list[dict]] = {}

    def spec(self, schema: NodeSchema) -> InputSpec:
        spec = self.specs.get(schema.class_type)
        if spec is None:
            spec = self.specs[schema.class_type] = schema.input_spec()
        return spec

    def validate_output(self, output_id: str) -> bool:
        """Post-order walk over declared link inputs with an explicit stack."""
        if output_id in self.valid:
            return self.valid[output_id]
        state: dict[str, int] = {}
        stack: list[tuple[str, list[tuple[str, str]]]] = [(output_id, self.check_node(output_id, True))]
        state[output_id] = 1
        while stack:
            node_id, children = stack[-1]
            if children:
                input_name, child = children.pop()
                if child in self.valid:
                    continue
                if state.get(child) == 1:
                    self.add_error(node_id, "dependency_cycle", "Dependency cycle detected",
                                   f"{input_name} links back to node {child}, which depends on this node",
                                   {"input_name": input_name, "linked_node": [child]})
                    continue
                state[child] = 1
                stack.append((child, self.check_node(child, False)))
                continue
            stack.pop()
            state[node_id] = 2
            ok = not self.errors.get(node_id)
            if ok:
                for value in self.prompt[node_id]["inputs"].values():
                    if type(value) is list and len(value) == 2 and value[0] in self.prompt \
                            and not self.valid.get(value[0], True):
                        ok = False
                        break
            self.valid[node_id] = ok
        return self.valid[output_id]

    def add_error(self, node_id: str, kind: str, message: str, details: str, extra: dict) -> None:
        self.errors.setdefault(node_id, []).append(
            {"type": kind, "message": message, "details": details, "extra_info": extra})

    def check_node(self, node_id: str, is_output: bool) -> list[tuple[str, str]]:
        """Check one node's own inputs; return its (input name, linked node id) pairs to visit."""
        node = self.prompt[node_id]
        schema = self.registry.get(node["class_type"])
        inputs = node.setdefault("inputs", {})
        try:
            spec = self.spec(schema)
        except Exception as exc:  # noqa: BLE001 - a node's INPUT_TYPES may do I/O and fail
            self.add_error(node_id, "exception_during_validation", "Exception when validating node",
                           str(exc), {"exception_type": type(exc).__name__, "traceback": []})
            return []
        children: list[tuple[str, str]] = []
        received_types: dict[str, Any] = {}
        skip_checks = schema.validate_params is None
        for name, decl in spec.inputs.items():
            if name not in inputs:
                if decl.required:
                    self.add_error(node_id, "required_input_missing", "Required input is missing", name,
                                   {"input_name": name})
                continue
            value = inputs[name]
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
                continue
            if isinstance(value, list):
                if len(value) != 2:
                    self.add_error(node_id, "bad_linked_input",
                                   "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                                   {"input_name": name, "input_config": decl.config(), "received_value": value})
                    continue
                # Ids are strings and slots ints, exactly: anything else would not be a link at run time.
                source_id, slot = value
                source = self.prompt.get(source_id) if isinstance(source_id, str) else None
                if source is None or not isinstance(source, dict):
                    # ComfyUI's KeyError: caught at top level for an output, by the consumer for an inner node.
                    extra = {"exception_type": "KeyError", "traceback": []} if is_output else {
                        "input_name": name, "input_config": decl.config(),
                        "exception_message": f"linked node {source_id!r} does not exist",
                        "exception_type": "KeyError", "traceback": [], "linked_node": value}
                    kind, msg = (("exception_during_validation", "Exception when validating node") if is_output
                                 else ("exception_during_inner_validation", "Exception when validating inner node"))
                    self.add_error(node_id, kind, msg, repr(source_id), extra)
                    continue
                source_schema = self.registry.get(source["class_type"])
                try:
                    received = source_schema.output_types[slot]
                except (IndexError, TypeError):
                    self.add_error(node_id, "return_type_mismatch", "Return type mismatch between linked nodes",
                                   f"{name}, output slot {slot} does not exist on {source['class_type']}",
                                   {"input_name": name, "input_config": decl.config(), "received_type": None,
                                    "linked_node": value})
                    continue
                received_types[name] = received
                if not schema.validate_wants_types and not types_compatible(received, decl.type):
                    self.add_error(node_id, "return_type_mismatch", "Return type mismatch between linked nodes",
                                   f"{name}, received_type({received}) mismatch input_type({decl.type})",
                                   {"input_name": name, "input_config": decl.config(), "received_type": received,
                                    "linked_node": value})
                    continue
                children.append((name, source_id))
                continue
            convert = _CONVERT.get(decl.type) if isinstance(decl.type, str) else None
            if convert is not None:
                try:
                    value = inputs[name] = convert(value)
                except Exception as exc:  # noqa: BLE001 - report any conversion failure as ComfyUI does
                    self.add_error(node_id, "invalid_input_type",
                                   f"Failed to convert an input value to a {decl.type} value",
                                   f"{name}, {value}, {exc}",
                                   {"input_name": name, "input_config": decl.config(), "received_value": value,
                                    "exception_message": str(exc)})
                    continue
            if skip_checks or name in (schema.validate_params or ()):
                continue
            opts = decl.options
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if opts.get("min") is not None and value < opts["min"]:
                    self.add_error(node_id, "value_smaller_than_min", f"Value {value} smaller than min of "
                                   f"{opts['min']}", name, {"input_name": name, "input_config": decl.config(),
                                                            "received_value": value})
                    continue
                if opts.get("max") is not None and value > opts["max"]:
                    self.add_error(node_id, "value_bigger_than_max", f"Value {value} bigger than max of "
                                   f"{opts['max']}", name, {"input_name": name, "input_config": decl.config(),
                                                            "received_value": value})
                    continue
            choices = decl.combo_options
            if choices is not None and value not in choices:
                shown = f"(list of length {len(choices)})" if len(choices) > COMBO_LIST_LIMIT else str(choices)
                self.add_error(node_id, "value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                               {"input_name": name,
                                "input_config": None if len(choices) > COMBO_LIST_LIMIT else decl.config(),
                                "received_value": value})
        if schema.validate_inputs is not None:
            self.custom_validation(node_id, schema, spec, inputs, received_types)
        return children

    def custom_validation(self, node_id: str, schema: NodeSchema, spec: InputSpec, inputs: dict,
                          received_types: dict) -> None:
        params = schema.validate_params
        args: dict[str, Any] = {}
        for name in spec.inputs:
            if name in inputs and (params is None or name in params):
                args[name] = None if isinstance(inputs[name], list) and name in received_types else inputs[name]
        for name, kind in spec.hidden.items():
            if params is None or name in params:
                args[name] = self.hidden_value(kind, node_id)
        if schema.validate_wants_types:
            args["input_types"] = received_types
        try:
            result = resolve_awaitable(schema.validate_inputs(**args))
        except Exception as exc:  # noqa: BLE001 - user validation code may raise anything
            result = f"{type(exc).__name__}: {exc}"
        if result is True or isinstance(result, ExecutionBlocker):
            return
        names = [n for n in args if n != "input_types" and n not in spec.hidden] or ["(node)"]
        for name in names:
            details = f"{name} - {result}" if isinstance(result, str) else name
            self.add_error(node_id, "custom_validation_failed", "Custom validation failed for node", details,
                           {"input_name": name})


def _validation_hidden(registry: NodeRegistry) -> Callable[[str, str], Any]:
    """Hidden values seen by VALIDATE_INPUTS: PROMPT is {} (as in ComfyUI), rt is an idle runtime."""
    def value(kind: str, node_id: str) -> Any:
        if kind == "PROMPT":
            return {}
        if kind == "UNIQUE_ID":
            return node_id
        if kind == RUNTIME_KIND:
            return NodeRuntime(registry.services, "", node_id, node_id, lambda *a: None, lambda: False,
                               lambda text: None)
        return None
    return value


def validate_prompt(prompt: Any, registry: NodeRegistry, partial_targets: list | None = None,
                    hidden_value: Callable[[str, str], Any] | None = None) -> ValidationResult:
    """Validate an API prompt; returns the outputs to execute and ComfyUI-shaped errors."""
    if not isinstance(prompt, dict):
        return ValidationResult(False, top_error("invalid_prompt", "Prompt must be a JSON object of nodes"), [])
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return ValidationResult(False, top_error(
                "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'"), [])
        if node["class_type"] not in registry:
            return ValidationResult(False, top_error(
                "invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                f"Node ID '#{node_id}'"), [])
        if not isinstance(node.get("inputs", {}), dict):
            return ValidationResult(False, top_error("invalid_prompt", "Node inputs must be an object",
                                                     f"Node ID '#{node_id}'"), [])
    outputs = [nid for nid, node in prompt.items() if registry.get(node["class_type"]).output_node]
    if partial_targets is not None:
        wanted = {str(t) for t in partial_targets}
        outputs = [nid for nid in outputs if nid in wanted]
    if not outputs:
        return ValidationResult(False, top_error("prompt_no_outputs", "Prompt has no outputs"), [])

    validator = _Validator(prompt, registry, hidden_value or _validation_hidden(registry))
    good: list[str] = []
    failed_details: list[str] = []
    dependents: dict[str, list[str]] = {}
    for output_id in outputs:
        if validator.validate_output(output_id):
            good.append(output_id)
            continue
        for node_id in validator.errors:
            dependents.setdefault(node_id, []).append(output_id)
        for err in validator.errors.get(output_id, []):
            failed_details.append(f"{err['message']}: {err['details']}")
    node_errors = {
        nid: {"errors": errs, "dependent_outputs": dependents.get(nid, []), "class_type": prompt[nid]["class_type"]}
        for nid, errs in validator.errors.items() if errs
    }
    if not good:
        return ValidationResult(False, top_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                                 "\n".join(failed_details)), [], node_errors)
    return ValidationResult(True, None, good, node_errors)
