"""The condition records' folder channel (steerlab.vllm.records): only names the server could have made are
written, a record is read whole and taken once, and an absent one reads as None."""

from __future__ import annotations

import uuid

import pytest

from steerlab.vllm.records import RECORD_KEY, record_name, take_record, write_record


def test_only_a_name_of_32_hex_digits_is_a_record_name() -> None:
    good = uuid.uuid4().hex
    assert record_name({RECORD_KEY: good, "steering": "x"}) == good
    for bad in ["../../etc/passwd", good[:-1], good + "0", good.upper(), f"{good[:31]}/", 42, None, ["a"], ""]:
        assert record_name({RECORD_KEY: bad}) is None, bad
    assert record_name(None) is None and record_name({}) is None
    with pytest.raises(ValueError, match="not a record name"):
        write_record("/tmp", "../escape", [])


def test_a_record_is_taken_once_and_whole(tmp_path) -> None:
    name = uuid.uuid4().hex
    assert take_record(tmp_path, name) is None
    conditions = [{"name": "c", "key": "k" * 16, "score": 0.25, "holds": True}]
    write_record(tmp_path, name, conditions)
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.json"]  # no partial file left behind
    assert take_record(tmp_path, name) == conditions
    assert take_record(tmp_path, name) is None and not list(tmp_path.iterdir())
