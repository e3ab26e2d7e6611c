import numpy as np

from batchery.errors import Cancelled
import pytest

from batchery.store.codec import decode, dumps, encode_error, encode_output, frame, read_frames, result_record


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
