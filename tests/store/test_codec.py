import numpy as np
import orjson
import pytest

from batchery.errors import Cancelled
from batchery.store.codec import (
    decode, dumps, encode_error, encode_output, frame, read_frames, result_line, result_record,
)


def test_float_vectors_stay_binary_and_come_back_exact():
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    raw = encode_output(vector)
    assert len(raw) == 1 + 384 * 4
    kind, value = decode(raw)
    assert kind == "output" and np.array_equal(value, vector)
    assert np.allclose(np.array(__import__("json").loads(dumps(value)), dtype=np.float32), vector, rtol=0, atol=0)


def test_half_vectors_and_json_values_round_trip():
    half = np.array([0.5, -1.25], dtype=np.float16)
    assert np.array_equal(decode(encode_output(half))[1], half)
    assert decode(encode_output({"a": [1, "b", None]})) == ("output", {"a": [1, "b", None]})


def test_errors_are_tagged():
    assert result_record(7, encode_error(Cancelled())) == {"index": 7, "error": Cancelled().as_dict()}


def test_frames_hold_stored_values_byte_for_byte():
    values = [encode_output(np.arange(3, dtype=np.float32)), encode_error(Cancelled()), encode_output("x")]
    body = b"".join(frame(index, raw) for index, raw in zip([4, 9, 70_000], values))
    assert list(read_frames(body)) == list(zip([4, 9, 70_000], values))
    with pytest.raises(ValueError, match="cut short"):
        list(read_frames(body[:-1]))


LINE_VALUES = [
    "plain text",
    'quotes " and \\ backslashes, \n newlines, \u2028 and emoji 🙂',
    "",
    0,
    -(2**63),
    2**64 - 1,
    1.5e300,
    0.1,
    -0.0,
    True,
    None,
    [1, [2, [3, {"deep": [None, 1.25]}]]],
    {"z": 1, "a": {"b": "c"}, "ü": []},
]


@pytest.mark.parametrize("value", LINE_VALUES)
def test_a_result_line_spliced_from_the_stored_bytes_is_the_record_written_as_json(value):
    raw = encode_output(value)
    line = result_line(3, raw)
    assert line == dumps(result_record(3, raw)) + b"\n"
    assert orjson.loads(line) == {"index": 3, "output": value}


def test_result_lines_of_errors_and_vectors_are_the_records_written_as_json():
    for raw in (encode_error(Cancelled()), encode_output(np.array([0.1, -2.5, 3e-8], dtype=np.float32)),
                encode_output(np.array([0.5, -1.25], dtype=np.float16))):
        assert result_line(70_000, raw) == dumps(result_record(70_000, raw)) + b"\n"
