"""Strict text reading shared by every reader: what it tolerates, and the file and line of what it refuses."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.io.textio import read_json, read_lines


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


# ---------------------------------------------------------------- streaming in blocks

import os  # noqa: E402

import numpy as np  # noqa: E402

from bpcr.io import textio  # noqa: E402
from bpcr.io.npyio import load_npy, read_npz  # noqa: E402
from bpcr.io.textio import LineReader, Limit, parse_float, parse_int  # noqa: E402


def _reference(data: bytes):
    """The lines or the (line, reason) of the first refusal, reading the whole file at once."""
    if b"\x00" in data:
        head = data[: data.index(b"\x00")]
        return ("error", head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1, "binary data")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        return ("error", head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1, "not valid UTF-8")
    text = text[1:] if text.startswith("\ufeff") else text
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbfab\r\ncd\ref\n\ngh",
    b"a\r\n\r\n\r\rb\r",
    b"one\ntwo\xc3\xa9\nthree\r\nfour\xe9\n",  # invalid UTF-8 on line 4
    b"x\r\ny\r\nz\x00\n",                     # NUL on line 3
    "\u00e9\u2028\u00e9\r\n\u0661\u0662".encode(),
    b"",
    b"\xef\xbb\xbf",
])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 1 << 20])
def test_blocks_never_change_the_lines(tmp_path, monkeypatch, data, block):
    monkeypatch.setattr(textio, "_BLOCK", block)
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    expected = _reference(data)
    if isinstance(expected, tuple):
        with pytest.raises(BadInput) as info:
            read_lines(path)
        assert (info.value.line, info.value.reason.startswith(expected[2])) == (expected[1], True)
    else:
        assert read_lines(path) == expected


def test_bom_and_line_ends_are_reported(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfa\nb\r\nc\rd\n")
    reader = LineReader(path)
    assert [line for _, line in reader] == ["a", "b", "c", "d"]
    assert (reader.bom, reader.first_crlf, reader.first_cr) == (True, 2, 3)


def test_size_and_line_limits(tmp_path, monkeypatch):
    monkeypatch.setitem(textio.LIMITS, "tiny", Limit("a tiny file", 64, 8))
    monkeypatch.setattr(textio, "_BLOCK", 4)
    path = tmp_path / "a.txt"
    path.write_bytes(b"short\n" + b"x" * 20 + b"\n")
    with pytest.raises(BadInput) as info:
        read_lines(path, "tiny")
    assert info.value.line == 2 and "longer than 8 bytes, the most a tiny file allows" in info.value.reason
    path.write_bytes(b"ab\n" * 30)
    with pytest.raises(BadInput, match="file is 90 bytes; a tiny file is at most 64 bytes"):
        read_lines(path, "tiny")


@pytest.mark.parametrize("make,reason", [
    (lambda p: os.mkfifo(p), "is a named pipe (FIFO), not a regular file"),
    (lambda p: p.mkdir(), "is a folder, expected a file"),
])
def test_special_files_are_refused_without_blocking(tmp_path, make, reason):
    path = tmp_path / "special"
    make(path)
    for read in (read_lines, read_json, load_npy):
        with pytest.raises(BadInput) as info:
            read(path)
        assert info.value.file == str(path) and info.value.reason == reason


@pytest.mark.parametrize("text,line,reason", [
    ('{"a": 1,\n "b": NaN}', 2, "invalid JSON: NaN is not a JSON value"),
    ('{"a": "NaN Infinity",\n\n "b": -Infinity}', 3, "invalid JSON: -Infinity is not a JSON value"),
    ('{"a":\n 1e999}', 2, "invalid JSON: number 1e999 is out of range"),
    ('{"a": ' + "9" * 5000 + "}", 1, "invalid JSON: integer of 5000 digits is out of range"),
    ("[" * 100_000 + "]" * 100_000, None, "invalid JSON: nested too deeply"),
])
def test_json_is_strict(tmp_path, text, line, reason):
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        read_json(path)
    assert (info.value.line, info.value.reason) == (line, reason)


@pytest.mark.parametrize("text,value", [("7", 7), ("+7", 7), ("-0", 0), ("007", 7)])
def test_parse_int_accepts_ascii_decimal(text, value):
    assert parse_int(text, "rank") == value


@pytest.mark.parametrize("text", ["", " 7", "7 ", "1_000", "\uff17", "\u0667", "7.0", "0x7", "1e3", "9" * 19, "+-1"])
def test_parse_int_refuses_the_rest(text):
    with pytest.raises(BadInput) as info:
        parse_int(text, "rank", "f.trec", 3)
    assert info.value.reason.startswith("rank ") and "is not an integer" in info.value.reason


@pytest.mark.parametrize("text,value", [("0.5", 0.5), ("-1", -1.0), (".5", 0.5), ("5.", 5.0), ("1e-3", 1e-3),
                                        ("+2.5E+2", 250.0)])
def test_parse_float_accepts_ascii_decimal(text, value):
    assert parse_float(text, "score") == value


@pytest.mark.parametrize("text,reason", [
    ("1_000", "is not a number"), ("\u0661\u0662", "is not a number"), ("\uff10.5", "is not a number"),
    ("0x10", "is not a number"), (" 1", "is not a number"), ("1,5", "is not a number"), ("", "is not a number"),
    ("nan", "is not finite"), ("-inf", "is not finite"), ("Infinity", "is not finite"), ("1e999", "is not finite"),
])
def test_parse_float_refuses_the_rest(text, reason):
    with pytest.raises(BadInput) as info:
        parse_float(text, "score", "f.trec", 3)
    assert (info.value.file, info.value.line) == ("f.trec", 3) and reason in info.value.reason


# ---------------------------------------------------------------- binary arrays


def test_load_npy_maps_the_file_and_checks_its_length(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    array = load_npy(path)
    assert isinstance(array, np.memmap) and array.filename == str(path) and array[2, 3] == 11
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(BadInput, match="shorter than its header says"):
        load_npy(path)
    np.save(path, np.asfortranarray(np.arange(6, dtype=np.float16).reshape(2, 3)))
    assert load_npy(path)[1, 2] == 5
    np.save(path, np.zeros((0, 4), np.float16))
    assert load_npy(path).shape == (0, 4)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="holds Python objects"):
        load_npy(path)


def test_read_npz_names_what_is_wrong(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(3), b=np.ones((2, 2)))
    arrays = read_npz(path, ("a", "b"), "an example")
    assert arrays["a"].tolist() == [0, 1, 2] and arrays["b"].shape == (2, 2)
    with pytest.raises(BadInput, match="not an example: no array 'c'"):
        read_npz(path, ("c",), "an example")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(BadInput, match="not an example: "):
        read_npz(path, ("a",), "an example")
    np.save(tmp_path / "b.npy", np.arange(3))
    with pytest.raises(BadInput, match="a single .npy array, not a .npz archive"):
        read_npz(tmp_path / "b.npy", ("a",), "an example")
