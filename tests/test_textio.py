"""Strict text reading shared by every reader: what it tolerates, and the file and line of what it refuses."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.textio import read_json, read_lines


def test_bom_crlf_and_cr_line_ends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_lines(path) == ["one", "two", "three"]


def test_only_line_breaks_split(tmp_path):
    # a form feed or U+2028 inside a description is text, not a line end
    path = tmp_path / "a.txt"
    path.write_bytes("a\x0cb\nc\u2028d\n".encode())
    assert read_lines(path) == ["a\x0cb", "c\u2028d"]


def test_blank_last_line_kept_only_when_written(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"a\n\n")
    assert read_lines(path) == ["a", ""]
    path.write_bytes(b"")
    assert read_lines(path) == []


@pytest.mark.parametrize("data,line,reason", [
    (b"a\nb\nc\x00d\n", 3, "binary data (NUL byte)"),
    (b"a\nb\xe9\n", 2, "not valid UTF-8 (byte 0xe9)"),
    (b"\xff\xfea\x00", 1, "binary data (NUL byte)"),  # UTF-16 is binary to a UTF-8 reader
])
def test_refusals_name_the_line(tmp_path, data, line, reason):
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    with pytest.raises(BadInput) as info:
        read_lines(path)
    assert (info.value.file, info.value.line, info.value.reason.split(";")[0]) == (str(path), line, reason)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInput, match="file not found"):
        read_lines(tmp_path / "absent.txt")
    with pytest.raises(BadInput, match="is a folder"):
        read_lines(tmp_path)


def test_json_object_with_bom_and_its_errors(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'\xef\xbb\xbf{"b": 1,\r\n "a": [2]}\r\n')
    assert read_json(path, "meta") == {"a": [2], "b": 1}
    path.write_text('{"a": 1,\n\n  "b" 2}\n')
    with pytest.raises(BadInput) as info:
        read_json(path)
    assert info.value.line == 3 and info.value.reason.startswith("invalid JSON")
    path.write_text("[1]\n")
    assert read_json(path) == [1]
    with pytest.raises(BadInput, match="meta must be a JSON object"):
        read_json(path, "meta")
