"""The descriptions CSV: what a well-formed file holds, and malformed files as BadInput."""
from __future__ import annotations

import pytest

from bpcr.errors import BadInput
from bpcr.dataset.manifest import read_manifest
from tests.helpers.messy_dataset import make_dataset, run


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path)


def test_description_findings(dataset):
    d = run(dataset).descriptions
    assert (d.rows, d.used, d.empty, d.non_ascii) == (7, 4, 1, 2)
    assert (d.invalid_id, d.invalid_id_first_line) == (1, 7)
    assert (d.duplicates, d.duplicates_first_line) == (1, 6)
    assert (d.unquoted_commas, d.unquoted_commas_first_line) == (1, 8)
    assert (d.without_image, d.without_image_examples) == (1, ["n99"])
    assert (d.images_without_description, d.images_without_description_examples) == (3, ["n5", "n6", "n7"])
    assert d.bad_columns == 0


@pytest.mark.parametrize("text, line, reason", [
    (b"id,description\nn1,ok\nn2,caf\xe9\n", 3, "not valid UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 3, "binary data"),
    (b"", None, "empty file"),
    (b"id;description\nn1;red\n", 1, "header has 1 column"),
    (b"n1,red lipstick\nn2,blue\n", 1, "missing header row"),
    (b"id,\nn1,red\n", 1, "garbled header"),
    (b'id,description\nn1,"red lipstick\nn2,blue\nn3,green\n', 2, "never closed"),
    (b"id,description\nbad id,x\nalso bad,y\nn1,z\n", 2, "not an ID,description CSV"),
    (b"id,description,brand\nn1,a,b,c\nn2,a,b,c\n", 2, "2 of 2 rows are malformed"),
])
def test_bad_descriptions_are_bad_input(dataset, text, line, reason):
    dataset["descriptions"].write_bytes(text)
    with pytest.raises(BadInput) as caught:
        run(dataset)
    assert (caught.value.file, caught.value.line) == (str(dataset["descriptions"]), line)
    assert reason in caught.value.reason
    assert not dataset["out"].exists()  # nothing decoded, nothing written


def test_crlf_bom_and_multiline_description(dataset):
    text = 'id,description\r\nn1,"two\r\nlines"\r\nn2,  spaced   out  \r\n'
    dataset["descriptions"].write_bytes(b"\xef\xbb\xbf" + text.encode())
    d = run(dataset).descriptions
    manifest = read_manifest(dataset["out"] / "database.csv")
    assert manifest.descriptions[:2] == ["two lines", "spaced out"]
    assert d.rows == 2
