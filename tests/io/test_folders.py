"""bpcr.io.folders: folder swaps remove or restore only the folders the kit marked as its own."""
from __future__ import annotations

import os

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.folders import OWN, is_own, recover_dir, replace_dir, writing_dir
from bpcr.io.store import open_store, write_store


def _store(path, value: float) -> None:
    write_store(path, ["a", "b"], np.full((2, 3), value, dtype=np.float32), meta={"value": value})


def test_a_users_folder_named_like_a_swap_leftover_is_never_removed(tmp_path):
    _store(tmp_path / "gem", 1.0)
    user = tmp_path / ".gem.old"
    user.mkdir()
    (user / "precious.txt").write_text("mine")
    assert open_store(tmp_path / "gem").path == tmp_path / "gem"  # a reader leaves it alone
    with pytest.raises(BadInput, match=r"\.gem\.old: is in the way of replacing .* not made by bpcr; move it away"):
        _store(tmp_path / "gem", 2.0)
    assert (user / "precious.txt").read_text() == "mine"
    assert float(np.asarray(open_store(tmp_path / "gem").features)[0, 0]) == 1.0


def test_a_users_writing_folder_is_refused_not_removed(tmp_path):
    user = tmp_path / ".gem.writing"
    user.mkdir()
    (user / "precious.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"\.gem\.writing: is in the way of writing .* not made by bpcr"):
        _store(tmp_path / "gem", 1.0)
    assert (user / "precious.txt").read_text() == "mine"


def test_the_kits_own_leftovers_are_cleaned_and_no_marker_stays(tmp_path):
    tmp = writing_dir(tmp_path / "gem")  # as a killed writer leaves it
    (tmp / "half.npy").write_bytes(b"x")
    assert is_own(tmp)
    _store(tmp_path / "gem", 1.0)
    _store(tmp_path / "gem", 2.0)  # replaces the first through a marked .gem.old
    assert sorted(os.listdir(tmp_path)) == ["gem"]
    assert OWN not in os.listdir(tmp_path / "gem")


def test_a_swap_cut_short_is_rolled_back_from_the_marked_old_copy(tmp_path):
    _store(tmp_path / "gem", 1.0)
    first = sorted(os.listdir(tmp_path / "gem"))
    (tmp_path / "gem" / OWN).write_bytes(b"")
    os.replace(tmp_path / "gem", tmp_path / ".gem.old")  # killed between the two renames
    assert recover_dir(tmp_path / "gem") == tmp_path / "gem"
    assert sorted(os.listdir(tmp_path / "gem")) == first and not (tmp_path / ".gem.old").exists()


def test_replace_dir_marks_nothing_it_leaves_behind(tmp_path):
    _store(tmp_path / "src", 1.0)
    tmp = writing_dir(tmp_path / "dst")
    for name in os.listdir(tmp_path / "src"):
        os.replace(tmp_path / "src" / name, tmp / name)
    replace_dir(tmp, tmp_path / "dst")
    assert OWN not in os.listdir(tmp_path / "dst") and not is_own(tmp_path / "dst")
