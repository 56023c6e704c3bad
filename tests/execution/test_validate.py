"""validate_prompt conformance (spec comfy_api.md §3, §10.3 validation rows, Appendix B.3-B.7, B.12)."""
from __future__ import annotations

import time

import pytest

from execution.validate import ValidationResult, types_compatible, validate_prompt
from nodes.registry import NodeRegistry

SIZE_CONFIG = ["INT", {"default": 8, "min": 1, "max": 4096}]


def stub(content: object = "WHITE", **inputs: object) -> dict:
    return {"class_type": "StubImage", "inputs": {"content": content, "height": 8, "width": 8, "batch_size": 1,
                                                  **inputs}}


def save(link: object) -> dict:
    return {"class_type": "TestSaveImage", "inputs": {"images": link}}


def node(class_type: str, **inputs: object) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def errors_of(result: ValidationResult, node_id: str) -> list[dict]:
    return result.node_errors[node_id]["errors"]


def only_error(result: ValidationResult, node_id: str) -> dict:
    (error,) = errors_of(result, node_id)
    return error


@pytest.fixture
def check(registry: NodeRegistry):
    def run(prompt: object, partial: list | None = None) -> ValidationResult:
        return validate_prompt(prompt, registry, partial)
    return run


# ------------------------------------------------------------------ top-level errors

def test_unknown_class_type(check) -> None:
    result = check({"1": stub(), "5": node("Nope"), "2": save(["1", 0])})
    assert result.body() == {"error": {"type": "invalid_prompt", "message":
                                       "Cannot execute because node Nope does not exist.",
                                       "details": "Node ID '#5'", "extra_info": {}}, "node_errors": {}}


def test_missing_class_type(check) -> None:
    result = check({"1": {"inputs": {}}, "2": node("Nope")})
    assert result.error == {"type": "invalid_prompt", "details": "Node ID '#1'", "extra_info": {},
                            "message": "Cannot execute because a node is missing the class_type property."}
    assert not result.ok and result.node_errors == {}


def test_prompt_without_outputs(check) -> None:
    result = check({"1": stub()})
    assert (result.ok, result.error["type"], result.error["message"]) == (False, "prompt_no_outputs",
                                                                          "Prompt has no outputs")


@pytest.mark.parametrize(("partial", "expected"), [(None, ["2", "3"]), (["3"], ["3"]), (["1", "3", "9"], ["3"]),
                                                   ([], None), (["1"], None)])
def test_partial_execution_targets(check, partial: list | None, expected: list | None) -> None:
    """Only listed outputs are kept; non-output and unknown ids are ignored; none left -> prompt_no_outputs."""
    result = check({"1": stub(), "2": save(["1", 0]), "3": node("TestRecord", value=["1", 0])}, partial)
    if expected is None:
        assert result.error["type"] == "prompt_no_outputs"
    else:
        assert result.ok and result.outputs == expected


# ------------------------------------------------------------------ per-input errors

def test_required_input_missing_and_silent_upstream_failure(check) -> None:
    prompt = {"1": stub(), "2": node("TestCustomIsChanged", image=["1", 0]), "3": save(["2", 0])}
    del prompt["1"]["inputs"]["width"]
    result = check(prompt)
    assert only_error(result, "1") == {"type": "required_input_missing", "message": "Required input is missing",
                                       "details": "width", "extra_info": {"input_name": "width"}}
    # nodes that are invalid only because of an ancestor are not listed; the output adds no details
    assert list(result.node_errors) == ["1"]
    assert result.node_errors["1"]["dependent_outputs"] == ["3"]
    assert result.node_errors["1"]["class_type"] == "StubImage"
    assert result.error == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                            "details": "", "extra_info": {}}


def test_bad_linked_input(check) -> None:
    result = check({"1": stub(), "2": save(["1"])})
    error = only_error(result, "2")
    assert error == {"type": "bad_linked_input",
                     "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                     "details": "images", "extra_info": {"input_name": "images", "input_config": ["IMAGE", {}],
                                                         "received_value": ["1"]}}
    assert result.error["details"] == f"{error['message']}: images"


def test_return_type_mismatch(check) -> None:
    result = check({"1": node("StubInt", value=1), "2": save(["1", 0])})
    assert only_error(result, "2") == {
        "type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
        "details": "images, received_type(INT) mismatch input_type(IMAGE)",
        "extra_info": {"input_name": "images", "input_config": ["IMAGE", {}], "received_type": "INT",
                       "linked_node": ["1", 0]}}


@pytest.mark.parametrize("link", [["1", 1], ["1", "0"], ["1", 0.0]])
def test_links_need_an_existing_integer_slot(check, link: list) -> None:
    result = check({"1": stub(), "2": save(link)})
    assert only_error(result, "2")["type"] == "return_type_mismatch"


@pytest.mark.parametrize("missing", ["99", 1])
def test_link_to_a_missing_node_from_an_output(check, missing: object) -> None:
    result = check({"1": stub(), "2": save([missing, 0]), "3": save(["1", 0])})
    assert result.ok and result.outputs == ["3"]  # the valid output still runs (200 with node_errors)
    assert only_error(result, "2") == {"type": "exception_during_validation",
                                       "message": "Exception when validating node", "details": repr(missing),
                                       "extra_info": {"exception_type": "KeyError", "traceback": []}}


def test_link_to_a_missing_node_from_an_inner_node(check) -> None:
    result = check({"2": node("TestCustomIsChanged", image=["99", 0]), "3": save(["2", 0])})
    error = only_error(result, "2")
    assert (error["type"], error["message"], error["details"]) == (
        "exception_during_inner_validation", "Exception when validating inner node", "'99'")
    assert set(error["extra_info"]) == {"input_name", "input_config", "exception_message", "exception_type",
                                        "traceback", "linked_node"}
    assert error["extra_info"]["exception_type"] == "KeyError"


def test_invalid_input_type(check) -> None:
    result = check({"1": stub(height="abc"), "2": save(["1", 0])})
    assert only_error(result, "1") == {
        "type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
        "details": "height, abc, invalid literal for int() with base 10: 'abc'",
        "extra_info": {"input_name": "height", "input_config": SIZE_CONFIG, "received_value": "abc",
                       "exception_message": "invalid literal for int() with base 10: 'abc'"}}


def test_min_and_max(check) -> None:
    result = check({"1": stub(height=0, width=5000), "2": save(["1", 0])})
    assert errors_of(result, "1") == [
        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "height",
         "extra_info": {"input_name": "height", "input_config": SIZE_CONFIG, "received_value": 0}},
        {"type": "value_bigger_than_max", "message": "Value 5000 bigger than max of 4096", "details": "width",
         "extra_info": {"input_name": "width", "input_config": SIZE_CONFIG, "received_value": 5000}}]


@pytest.mark.parametrize("value", ["PINK", 1])
def test_value_not_in_short_list(check, value: object) -> None:
    """COMBO values are compared exactly, never converted."""
    result = check({"1": stub(content=value), "2": save(["1", 0])})
    choices = ["WHITE", "BLACK", "NOISE"]
    assert only_error(result, "1") == {
        "type": "value_not_in_list", "message": "Value not in list", "details": f"content: '{value}' not in {choices}",
        "extra_info": {"input_name": "content", "input_config": [choices, {}], "received_value": value}}


def test_value_not_in_long_list(check) -> None:
    result = check({"1": node("TestLongCombo", choice="nope"), "2": node("TestRecord", value=["1", 0])})
    assert only_error(result, "1") == {
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "choice: 'nope' not in (list of length 25)", "extra_info": {"input_name": "choice", "input_config": None, "received_value": "nope"}}


# ------------------------------------------------------------------ conversion and undeclared inputs

def test_constants_are_converted_and_written_back(check) -> None:
    prompt = {"1": stub(height="64", width=7.9),
              "2": node("TestCustomIsChanged", image=["1", 0], should_change="false"),
              "3": node("StubConstantImage", value="0.5", height=8, width=8, batch_size=1),
              "4": node("PrimitiveString", value=5), "5": save(["2", 0]), "6": save(["3", 0]),
              "7": node("TestRecord", value=["4", 0]), "8": node("TestRecord", value={"__value__": [1, 2]})}
    assert check(prompt).ok
    assert (prompt["1"]["inputs"]["height"], prompt["1"]["inputs"]["width"]) == (64, 7)
    assert type(prompt["1"]["inputs"]["height"]) is int
    assert prompt["2"]["inputs"]["should_change"] is True  # bool("false"): ComfyUI's quirk
    assert prompt["3"]["inputs"]["value"] == 0.5 and prompt["4"]["inputs"]["value"] == "5"
    assert prompt["8"]["inputs"]["value"] == [1, 2]


def test_undeclared_inputs_are_not_validated(check) -> None:
    prompt = {"1": stub(), "2": node("TestVariadicAverage", input1=["1", 0], input2=["1", 0], input9="anything"),
              "3": save(["2", 0])}
    assert check(prompt).ok


def test_any_type_matches_both_ways(check) -> None:
    prompt = {"1": node("TestSlow", value=["2", 0], seconds=0.0), "2": stub(), "3": save(["1", 0]),
              "4": node("TestRecord", value=["2", 0])}
    assert check(prompt).ok


# ------------------------------------------------------------------ link type rules

@pytest.mark.parametrize(("received", "expected", "ok"), [
    ("IMAGE", "IMAGE", True), ("INT", "FLOAT", False), ("INT,STRING", "STRING,INT", True),
    (" INT , FLOAT", "FLOAT", True), ("", "", True), ("STRING", "", False), ("*", "IMAGE", True),
    ("IMAGE", "*", True), ("INT,*", "MASK", True), (["a", "b"], "COMBO", True), (["a"], "STRING", False),
    (1, "INT", False), ("IMAGE", "COMFY_MATCHTYPE_V3", True)])
def test_types_compatible(received: object, expected: object, ok: bool) -> None:
    assert types_compatible(received, expected) is ok


@pytest.mark.parametrize(("class_type", "source", "ok"), [
    ("TestCustomValidation1", "StubFloat", True), ("TestCustomValidation1", "StubImage", True),
    ("TestCustomValidation1", "StubInt", False), ("TestCustomValidation1", "StubMask", False),
    ("TestCustomValidation2", "StubFloat", True), ("TestCustomValidation2", "StubInt", False),
    ("TestCustomValidation3", "StubFloat", True), ("TestCustomValidation3", "StubInt", False),
    ("TestCustomValidation4", "StubFloat", True), ("TestCustomValidation4", "StubInt", False)])
def test_validation_edges(check, class_type: str, source: str, ok: bool) -> None:
    """Spec §10.3 edge1..4: multi-type sets, input_types-aware VALIDATE_INPUTS, a str-subclass type, FLOAT."""
    sources = {"StubFloat": node("StubFloat", value=0.5), "StubInt": node("StubInt", value=1),
               "StubImage": stub(), "StubMask": node("StubMask", value=0.5, height=8, width=8, batch_size=1)}
    result = check({"1": sources[source], "2": node(class_type, input1=["1", 0], input2=0.5), "3": save(["2", 0])})
    assert result.ok is ok
    if not ok:  # VALIDATE_INPUTS failing yields one error per input it was given
        expected = ["custom_validation_failed"] * 2 if class_type == "TestCustomValidation2" else \
            ["return_type_mismatch"]
        assert [e["type"] for e in errors_of(result, "2")] == expected


# ------------------------------------------------------------------ VALIDATE_INPUTS

@pytest.mark.parametrize(("value", "ok"), [(5, False), ("foo", False), (5.0, True)])
def test_custom_validation_of_literals(check, value: object, ok: bool) -> None:
    result = check({"1": node("TestCustomValidation1", input1=value, input2=0.5), "2": save(["1", 0])})
    assert result.ok is ok
    if not ok:
        shown = type(value).__name__
        assert errors_of(result, "1") == [
            {"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": f"{name} - Invalid type of input: {shown}", "extra_info": {"input_name": name}}
            for name in ("input1", "input2")]


def test_validate_inputs_sees_links_as_none(check) -> None:
    result = check({"1": node("StubFloat", value=3.0), "2": node("TestCustomValidation1", input1=["1", 0],
                                                                 input2=0.25), "3": save(["2", 0])})
    assert result.ok


def test_named_validate_inputs_skips_only_its_own_bounds(check) -> None:
    ok = check({"1": node("TestCustomValidation4", input1=5.0, input2=0.5), "2": save(["1", 0])})
    assert ok.ok
    bad = check({"1": node("TestCustomValidation4", input1=0.5, input2=5.0), "2": save(["1", 0])})
    assert [e["type"] for e in errors_of(bad, "1")] == ["value_bigger_than_max"]


def test_kwargs_validate_inputs_skips_all_bounds(check) -> None:
    assert check({"1": node("TestCustomValidation5", input1=0.5, input2=5.0), "2": save(["1", 0])}).ok
    result = check({"1": node("TestCustomValidation5", input1=7.0, input2=5.0), "2": save(["1", 0])})
    assert [(e["type"], e["details"]) for e in errors_of(result, "1")] == [
        ("custom_validation_failed", "input1 - the value 7 is forbidden"),
        ("custom_validation_failed", "input2 - the value 7 is forbidden")]


def test_async_validate_inputs(check) -> None:
    assert check({"1": node("TestAsyncValidation", value=0.5, threshold=1.0), "2": node("TestRecord",
                                                                                        value=["1", 0])}).ok
    result = check({"1": node("TestAsyncValidation", value=2.0, threshold=1.0), "2": node("TestRecord",
                                                                                          value=["1", 0])})
    assert [e["details"] for e in errors_of(result, "1")] == [
        "value - value 2.0 exceeds threshold 1.0", "threshold - value 2.0 exceeds threshold 1.0"]


def test_validate_inputs_returning_false(check, registry: NodeRegistry) -> None:
    class Refuses:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT",)}, "hidden": {"prompt": "PROMPT"}}

        @classmethod
        def VALIDATE_INPUTS(cls, value: int, prompt: dict) -> bool:
            return prompt == {} and value > 0  # PROMPT is {} during validation

        def run(self, value: int, prompt: dict) -> dict:
            return {}

    registry.register("XRefuses", Refuses)
    assert check({"1": node("XRefuses", value=1)}).ok
    result = check({"1": node("XRefuses", value=0)})
    assert errors_of(result, "1") == [{"type": "custom_validation_failed", "message": "Custom validation failed "
                                       "for node", "details": "value", "extra_info": {"input_name": "value"}}]
    assert result.error["details"] == "Custom validation failed for node: value"


# ------------------------------------------------------------------ several outputs

def test_partially_valid_prompt_runs_the_good_outputs(check) -> None:
    result = check({"1": stub(), "2": save(["1", 0]), "3": stub(content="PINK"), "4": save(["3", 0])})
    assert result.ok and result.outputs == ["2"]
    assert list(result.node_errors) == ["3"] and result.error is None


def test_dependent_outputs_over_reports(check) -> None:
    """Spec §3.5 quirk: a later failing output is appended to every node that already has errors."""
    result = check({"1": stub(content="PINK"), "2": save(["1", 0]), "3": save(["9", 0])})
    assert result.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert result.node_errors["3"]["dependent_outputs"] == ["3"]
    assert result.error["details"] == "Exception when validating node: '9'"


# ------------------------------------------------------------------ graph shape

def test_deep_chain_validates_iteratively(check) -> None:
    depth = 2000
    prompt: dict[str, dict] = {"0": stub()}
    for i in range(1, depth + 1):
        prompt[str(i)] = node("TestCustomIsChanged", image=[str(i - 1), 0])
    prompt["out"] = save([str(depth), 0])
    started = time.perf_counter()
    assert check(prompt).ok
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("shape", ["two nodes", "self loop"])
def test_static_cycle_is_reported(check, shape: str) -> None:
    prompt = {"a": node("TestCustomIsChanged", image=["b", 0]), "b": node("TestCustomIsChanged", image=["a", 0]),
              "out": save(["a", 0])}
    if shape == "self loop":
        prompt["a"]["inputs"]["image"] = ["a", 0]
    result = check(prompt)
    assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"
    cycle_errors = [e for entry in result.node_errors.values() for e in entry["errors"]]
    assert [e["type"] for e in cycle_errors] == ["dependency_cycle"]
    assert cycle_errors[0]["message"] == "Dependency cycle detected"


def test_would_be_cycle_with_a_missing_input(check) -> None:
    prompt = {"a": node("TestVariadicAverage", input2=["b", 0]), "b": node("TestVariadicAverage", input1=["a", 0]),
              "out": save(["b", 0])}
    result = check(prompt)
    assert not result.ok
    assert only_error(result, "a")["type"] == "required_input_missing"
