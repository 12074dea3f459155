"""IDs (DESIGN.md "IDs"): [A-Za-z0-9][A-Za-z0-9_.-]*, never a path, compared as exact strings."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.io.ids import check_id, is_valid_id


@pytest.mark.parametrize("value", ["n0292431", "v000101", "A", "0", "n1.jpg", "a_b-c.d", "N1"])
def test_valid(value):
    assert is_valid_id(value) and check_id(value) == value


@pytest.mark.parametrize("value,reason", [
    ("", "empty ID"),
    ("../n1", "looks like a path"),
    ("db/n1", "looks like a path"),
    ("db\\n1", "looks like a path"),
    (".hidden", "looks like a path"),
    ("/etc/passwd", "looks like a path"),
    ("n 1", "invalid ID"),
    (" n1", "invalid ID"),
    ("n1\n", "invalid ID"),
    ("_n1", "invalid ID"),
    ("-n1", "invalid ID"),
    ("n1;n2", "invalid ID"),
    ("n\u00e9", "invalid ID"),  # letters outside ASCII
])
def test_invalid_names_file_and_line(value, reason):
    assert not is_valid_id(value)
    with pytest.raises(BadInput) as info:
        check_id(value, "run.csv", 4)
    assert (info.value.file, info.value.line) == ("run.csv", 4)
    assert reason in info.value.reason


def test_long_value_is_shortened_in_the_message():
    with pytest.raises(BadInput) as info:
        check_id("x" * 70 + " y")
    assert "'" + "x" * 57 + "...'" in info.value.reason

