"""The checks every input passes at the door, whatever its model: depth and integer width."""

from __future__ import annotations

import json

import pytest

from batchery.errors import InvalidInput, PayloadTooLarge
from batchery.models.inputs import INT_MAX, INT_MIN, WRITABLE_DEPTH, check_inputs, json_problem
from batchery.models.registry import ModelSpec


def nested(depth: int) -> object:
    return json.loads("[" * depth + "1" + "]" * depth)


def test_depth_counts_lists_and_objects_up_to_the_limit():
    assert json_problem(nested(32), 32) is None
    assert json_problem({"a": nested(31)}, 32) is None
    assert "32 levels" in json_problem(nested(33), 32)
    assert "32 levels" in json_problem({"a": {"b": nested(31)}}, 32)
    assert json_problem("x" * 100, 0) is None and json_problem([], 1) is None


def test_no_setting_lifts_the_depth_past_what_can_be_written():
    assert json_problem(nested(WRITABLE_DEPTH), 10_000) is None
    assert f"{WRITABLE_DEPTH} levels" in json_problem(nested(WRITABLE_DEPTH + 1), 10_000)
    assert json_problem(nested(900), 10_000), "a value deeper than Python's own stack allows is refused, not raised on"


@pytest.mark.parametrize("wide", [INT_MAX + 1, INT_MIN - 1, 10**40])
def test_integers_beyond_64_bits_are_named(wide):
    assert "64 bits" in json_problem(wide, 32)
    assert "64 bits" in json_problem({"n": [1, {"m": wide}]}, 32)
    assert json_problem([INT_MAX, INT_MIN, 1.5e300, True], 32) is None


@pytest.mark.parametrize("kind", ["json", "tensor", "text"])
def test_every_input_kind_is_checked_by_index(kind):
    spec = ModelSpec(name="m", runtime="echo", input=kind)
    with pytest.raises(InvalidInput, match=r"inputs\[1\]"):
        check_inputs(spec, [[1.0] if kind == "tensor" else ("a" if kind == "text" else 1), nested(40)], 100, 32)


@pytest.mark.parametrize(
    "value, error, fragment",
    [
        ("a text", InvalidInput, "takes a pair of texts [query, passage], got str"),
        (["only one"], InvalidInput, "got a list of 1"),
        (["a", "b", "c"], InvalidInput, "got a list of 3"),
        (["a", None], InvalidInput, "pair of texts"),
        (["a", "x" * 101], PayloadTooLarge, "inputs[1][1]: 101 characters, over the limit of 100"),
    ],
)
def test_pairs_are_two_texts_each_within_the_limit(value, error, fragment):
    spec = ModelSpec(name="rerank", runtime="onnx", input="pair")
    check_inputs(spec, [["query", "passage"]], 100, 32)
    with pytest.raises(error) as raised:
        check_inputs(spec, [["query", "passage"], value], 100, 32)
    assert fragment in raised.value.message and "inputs[1]" in raised.value.message
