"""`bpcr.io.fileio`: output targets are checked before any work, groups are written
all-or-nothing, folder swaps are undone after a kill, links are written through."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

from bpcr.errors import BadInput
from bpcr.io.folders import OWN
from bpcr.io.fileio import JOURNAL, atomic_path, recover_folder, write_group, write_text_atomic
from bpcr.io.folders import FEATURE_STORE, INDEX, PREPARED, TEXT_INDEX, check_output_file, check_output_folder, folder_lock, recover_dir, replace_dir
from bpcr.io.ids import MAX_NAME_LENGTH, check_name
from bpcr.io.store import open_store, write_store


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- file targets


def test_a_plain_new_or_existing_file_is_accepted(tmp_path):
    assert check_output_file(tmp_path / "new.json", "--json") == tmp_path / "new.json"
    (tmp_path / "old.json").write_text("{}")
    assert check_output_file(tmp_path / "old.json", "--json") == tmp_path / "old.json"
    assert check_output_file(tmp_path / "sub" / "deeper" / "x.md", "--leaderboard") == tmp_path / "sub/deeper/x.md"
    assert _listing(tmp_path) == ["old.json"]  # checking writes nothing


def _refused(call, *args, match: str):
    with pytest.raises(BadInput, match=match) as info:
        call(*args)
    return str(info.value)


def test_file_targets_that_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "plain").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "folder", tmp_path / "to-folder")
    os.symlink(tmp_path / "fifo", tmp_path / "to-fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        cases = [
            ("folder", "is a folder; a file is expected here"),
            ("fifo", "is a FIFO .named pipe., not a regular file"),
            ("sock", "is a socket, not a regular file"),
            ("dangling", "symbolic link to .*which does not exist"),
            ("loop", "symbolic link that cannot be followed"),
            ("to-folder", "is a folder"),
            ("to-fifo", "is a FIFO"),
            ("plain/x.json", "plain is a file, not a folder"),
            ("a" * 300 + ".json", "is 305 bytes long; this file system allows at most 255"),
            ("/".join(["d" * 200] * 25) + "/x.json", "path is .* bytes long"),
        ]
        before = {p.name: os.lstat(p) for p in tmp_path.iterdir()}
        for name, match in cases:
            message = _refused(check_output_file, tmp_path / name, "--json", match=match)
            assert message.startswith("--json ")
        assert {p.name: os.lstat(p) for p in tmp_path.iterdir()} == before


def test_pseudo_file_systems_are_refused(tmp_path):
    _refused(check_output_file, "/proc/bpcr-out.json", "--json", match=r"cannot create files in /proc")
    _refused(check_output_file, "/proc/self/comm", "--json", match=r"cannot create files in /proc/self")
    _refused(check_output_folder, "/proc/bpcr-out", "--out", match=r"cannot create files in /proc")
    _refused(check_output_folder, "/proc/self/fd/new", "--out", match=r"cannot create files in /proc/self/fd")


def test_character_devices_are_refused_and_untouched():
    for device in ("/dev/null", "/dev/full"):
        before = os.stat(device)
        _refused(check_output_file, device, "--json", match="is a character device, not a regular file")
        with pytest.raises(BadInput, match="character device"):
            write_group({device: "x"})
        with pytest.raises(BadInput, match="character device"):
            write_text_atomic(device, "x")
        after = os.stat(device)
        assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_a_link_to_a_file_is_checked_as_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "scores.json").write_text("{}")
    os.symlink(tmp_path / "real" / "scores.json", tmp_path / "link.json")
    assert check_output_file(tmp_path / "link.json", "--json") == tmp_path / "real" / "scores.json"


# ---------------------------------------------------------------- folder targets


def test_folder_targets(tmp_path):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    _refused(check_output_folder, tmp_path / "file", "--out", match="is a file; a folder is expected here")
    _refused(check_output_folder, tmp_path / "fifo", "--out", match="is a FIFO")
    _refused(check_output_folder, tmp_path / "file" / "sub", "--out", match="file is a file, not a folder")
    _refused(check_output_folder, tmp_path / ("o" * 256), "--out", match="bytes long")
    # a replaced folder needs room for its hidden siblings (.NAME.writing)
    _refused(check_output_folder, tmp_path / ("o" * 250), "--out", FEATURE_STORE, match="bytes long")
    assert check_output_folder(tmp_path / ("o" * 250), "--out") == tmp_path / ("o" * 250)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert check_output_folder(tmp_path / "link", "--out") == tmp_path / "real"


def test_only_the_kits_own_folders_are_replaced(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    for kind, label in ((FEATURE_STORE, "bpcr feature store"), (INDEX, "bpcr index folder"),
                        (TEXT_INDEX, "text index")):
        _refused(check_output_folder, user, "--out", kind, match=f"exists and is not a {label}; refusing to replace")
    _refused(check_output_folder, user, "--out", PREPARED, match="not a bpcr prepare output folder; refusing to write into")
    assert _listing(user) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", "--out", FEATURE_STORE) == tmp_path / "empty"
    write_store(tmp_path / "store", ["a"], np.ones((1, 2), np.float32), {})
    assert check_output_folder(tmp_path / "store", "--out", FEATURE_STORE) == tmp_path / "store"
    _refused(check_output_folder, tmp_path / "store", "--out", INDEX, match="not a bpcr index folder")
    (tmp_path / "ti").mkdir()
    (tmp_path / "ti" / "meta.json").write_text(json.dumps({"format": "something-else/1"}))
    _refused(check_output_folder, tmp_path / "ti", "--out", TEXT_INDEX, match="not a text index")
    (tmp_path / "ti" / "meta.json").write_text(json.dumps({"format": "bpcr-text-index/1"}))
    check_output_folder(tmp_path / "ti", "--out", TEXT_INDEX)
    (user / "summary.json").write_text("{}")  # a prepare output folder may hold the user's files too
    check_output_folder(user, "--out", PREPARED)


def test_run_names_are_bounded():
    assert check_name("a" * MAX_NAME_LENGTH) == "a" * MAX_NAME_LENGTH
    with pytest.raises(BadInput, match=r"^--name: the run name is 300 characters long; at most 250 .*NAME.trec"):
        check_name("a" * 300)
    with pytest.raises(BadInput, match=r"^--name: ID '../x' looks like a path"):
        check_name("../x")


# ---------------------------------------------------------------- groups


def test_group_bytes_and_modes(tmp_path):
    old = os.umask(0o027)
    try:
        written = write_group({tmp_path / "a.csv": "v1,n1\n", tmp_path / "a.json": b"{}\n"})
    finally:
        os.umask(old)
    assert written == {tmp_path / "a.csv": tmp_path / "a.csv", tmp_path / "a.json": tmp_path / "a.json"}
    assert (tmp_path / "a.csv").read_bytes() == b"v1,n1\n" and (tmp_path / "a.json").read_bytes() == b"{}\n"
    assert stat.S_IMODE(os.stat(tmp_path / "a.csv").st_mode) == 0o640
    write_group({tmp_path / "a.csv": "v2,n2\n"})
    assert stat.S_IMODE(os.stat(tmp_path / "a.csv").st_mode) == 0o666 & ~old
    assert _listing(tmp_path) == ["a.csv", "a.json"]


def test_group_removes_members_it_no_longer_has(tmp_path):
    write_group({tmp_path / "r.csv": "1\n", tmp_path / "r.trec": "1\n"})
    write_group({tmp_path / "r.csv": "2\n", tmp_path / "r.trec": None})
    assert _listing(tmp_path) == ["r.csv"]


def test_group_writes_through_links_and_keeps_them(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "board.md").write_text("old")
    os.symlink(tmp_path / "elsewhere" / "board.md", tmp_path / "leaderboard.md")
    written = write_group({tmp_path / "leaderboard.md": "new", tmp_path / "leaderboard.svg": "<svg/>"})
    assert written[tmp_path / "leaderboard.md"] == tmp_path / "elsewhere" / "board.md"
    assert os.path.islink(tmp_path / "leaderboard.md")
    assert (tmp_path / "elsewhere" / "board.md").read_text() == "new"
    with atomic_path(tmp_path / "leaderboard.md") as tmp:
        tmp.write_text("newer")
    assert os.path.islink(tmp_path / "leaderboard.md") and (tmp_path / "elsewhere" / "board.md").read_text() == "newer"
    assert _listing(tmp_path / "elsewhere") == ["board.md"]


def test_group_refuses_special_members_before_writing_any(tmp_path):
    (tmp_path / "r.csv").write_text("old")
    os.mkfifo(tmp_path / "r.trec")
    with pytest.raises(BadInput, match="r.trec: is a FIFO"):
        write_group({tmp_path / "r.csv": "new", tmp_path / "r.trec": "new"})
    assert (tmp_path / "r.csv").read_text() == "old" and _listing(tmp_path) == ["r.csv", "r.trec"]
    os.symlink(tmp_path / "r.csv", tmp_path / "alias.csv")
    with pytest.raises(BadInput, match="is the same file as"):
        write_group({tmp_path / "r.csv": "a", tmp_path / "alias.csv": "b"})
    assert (tmp_path / "r.csv").read_text() == "old"


GROUP = "0123456789abcdef"


def _seal(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _pending(folder: Path, moves: dict[str, str], removes=()) -> None:
    """What a writer killed right after renaming its journal into place leaves."""
    entries = []
    for number, (final, text) in enumerate(sorted(moves.items())):
        tmp = f".bpcr-{GROUP}-killed{number}.tmp"
        (folder / tmp).write_text(text)
        entries.append({"tmp": tmp, "final": final, **_seal(text.encode())})
    removals = [{"final": name, **_seal((folder / name).read_bytes())} for name in removes]
    (folder / JOURNAL).write_text(json.dumps({"format": "bpcr-journal/2", "group": GROUP, "moves": entries,
                                              "remove": removals}))


def test_a_reader_completes_a_pending_journal(tmp_path):
    (tmp_path / "r.csv").write_text("old csv")
    (tmp_path / "r.trec").write_text("old trec")
    _pending(tmp_path, {"r.csv": "new csv", "r.json": "new json"}, removes=["r.trec"])
    recover_folder(tmp_path)
    assert _listing(tmp_path) == ["r.csv", "r.json"]
    assert (tmp_path / "r.csv").read_text() == "new csv" and (tmp_path / "r.json").read_text() == "new json"
    recover_folder(tmp_path)  # nothing to do: a no-op
    recover_folder(tmp_path / "absent")


def test_the_next_write_completes_a_journal_and_removes_stale_temporaries(tmp_path):
    _pending(tmp_path, {"a.csv": "a"})
    (tmp_path / ".bpcr-dead1234.tmp").write_text("half")       # a killed group writer's
    (tmp_path / ".b.csv.k2j4l5m6.tmp").write_text("half")      # a killed single-file writer's, of a member
    (tmp_path / ".other.csv.k2j4l5m6.tmp").write_text("kept")  # not a member: not ours to judge
    (tmp_path / "notes.tmp").write_text("kept")
    write_group({tmp_path / "b.csv": "b"})
    assert _listing(tmp_path) == [".other.csv.k2j4l5m6.tmp", "a.csv", "b.csv", "notes.tmp"]
    assert (tmp_path / "a.csv").read_text() == "a"


def test_a_journal_that_is_not_ours_moves_nothing(tmp_path):
    (tmp_path / ".bpcr-x.tmp").write_text("payload")
    (tmp_path / JOURNAL).write_text(json.dumps({"format": "bpcr-journal/1", "moves": [[".bpcr-x.tmp", "../escape"]],
                                                "remove": []}))
    with pytest.raises(BadInput, match="not a bpcr write journal"):
        recover_folder(tmp_path)
    with pytest.raises(BadInput, match="not a bpcr write journal"):
        write_group({tmp_path / "r.csv": "x"})
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "r.csv").exists()


def test_folder_lock_serialises_processes_and_is_reentrant(tmp_path):
    import fcntl

    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # re-entrant in one process
            pass
        pid = os.fork()
        if pid == 0:  # another process cannot take it
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os._exit(0)
            except BlockingIOError:
                os._exit(7)
        assert os.waitpid(pid, 0)[1] >> 8 == 7
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    os.close(fd)


def test_atomic_path_refuses_and_leaves_nothing(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInput, match="FIFO"):
        write_text_atomic(tmp_path / "fifo", "x")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert _listing(tmp_path) == ["fifo"]


# ---------------------------------------------------------------- folder swaps


def _store(path: Path, value: float) -> None:
    write_store(path, ["a", "b"], np.full((2, 3), value, np.float32), {"value": value})


def test_replace_dir_refuses_another_kind_of_folder(tmp_path):
    (tmp_path / "gem").mkdir()
    (tmp_path / "gem" / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="exists and is not a bpcr feature store; refusing to replace it"):
        _store(tmp_path / "gem", 1.0)
    assert _listing(tmp_path / "gem") == ["notes.txt"] and _listing(tmp_path) == ["gem"]
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{}")
    _store(tmp_path / "new", 1.0)
    (tmp_path / "tmp").mkdir()
    for name in ("meta.json", "ids.txt", "features.npy"):
        (tmp_path / "tmp" / name).write_bytes((tmp_path / "new" / name).read_bytes())
    with pytest.raises(BadInput, match="not a bpcr feature store"):
        replace_dir(tmp_path / "tmp", tmp_path / "index")
    assert _listing(tmp_path / "index") == ["index.json"]


def test_a_swap_cut_between_its_renames_is_rolled_back(tmp_path):
    _store(tmp_path / "gem", 1.0)
    (tmp_path / "gem" / OWN).write_bytes(b"")  # marked as the kit's own, then moved aside ...
    os.replace(tmp_path / "gem", tmp_path / ".gem.old")  # ... and killed after that first rename
    store = open_store(tmp_path / "gem")  # the next open restores the old store
    assert store.meta["value"] == 1.0 and _listing(tmp_path) == ["gem"]
    _store(tmp_path / "gem", 2.0)
    (tmp_path / ".gem.old").mkdir()  # killed while removing the old (marked) copy
    (tmp_path / ".gem.old" / "ids.txt").write_text("a\n")
    (tmp_path / ".gem.old" / OWN).write_bytes(b"")
    assert recover_dir(tmp_path / "gem") == tmp_path / "gem"
    assert _listing(tmp_path) == ["gem"] and open_store(tmp_path / "gem").meta["value"] == 2.0
    (tmp_path / "gem" / OWN).write_bytes(b"")
    os.replace(tmp_path / "gem", tmp_path / ".gem.old")
    _store(tmp_path / "gem", 3.0)  # the next write restores, then replaces
    assert _listing(tmp_path) == ["gem"] and open_store(tmp_path / "gem").meta["value"] == 3.0


def test_a_file_in_the_way_of_a_swap_is_refused(tmp_path):
    _store(tmp_path / "gem", 1.0)
    (tmp_path / ".gem.old").write_text("not a folder")
    with pytest.raises(BadInput, match=r"\.gem\.old is a file in the way of writing it"):
        _store(tmp_path / "gem", 2.0)
    assert open_store(tmp_path / "gem").meta["value"] == 1.0


def test_chart_bytes_are_those_of_a_file(tmp_path):
    from dataclasses import dataclass

    import matplotlib

    matplotlib.use("Agg")
    from bpcr.evaluation.chart import chart_svg, write_chart

    @dataclass
    class Score:
        name: str
        map7: float
        ci95: tuple

    scores = [Score("b", 0.5, (0.4, 0.6)), Score("a", 0.25, (0.1, 0.3))]
    write_chart(scores, tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_bytes() == chart_svg(scores)
    assert chart_svg(scores).startswith(b"<?xml")


@pytest.mark.parametrize("journal", [
    {"format": "bpcr-journal/1", "moves": [], "remove": ["precious.txt"]},  # hand-written, old shape
    {"format": "bpcr-journal/2", "group": GROUP, "moves": [], "remove": [{"final": "precious.txt"}]},  # no seal
    {"format": "bpcr-journal/2", "group": GROUP, "moves": [],
     "remove": [{"final": "precious.txt", **_seal(b"what it held once")}]},  # the file changed since
    {"format": "bpcr-journal/2", "group": GROUP, "moves": [
        {"tmp": ".bpcr-fedcba9876543210-x.tmp", "final": "precious.txt", **_seal(b"evil")}], "remove": []},  # another group's
    {"format": "bpcr-journal/2", "group": GROUP, "moves": [
        {"tmp": f".bpcr-{GROUP}-x.tmp", "final": "precious.txt", **_seal(b"not what the temporary holds")}],
     "remove": []},
])
def test_a_journal_the_kit_did_not_write_touches_nothing(tmp_path, journal):
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / f".bpcr-{GROUP}-x.tmp").write_text("evil")
    (tmp_path / ".bpcr-fedcba9876543210-x.tmp").write_text("evil")
    (tmp_path / JOURNAL).write_text(json.dumps(journal))
    before = sorted(os.listdir(tmp_path))
    for attempt in (lambda: recover_folder(tmp_path), lambda: write_group({tmp_path / "r.csv": "x"})):
        with pytest.raises(BadInput) as err:
            attempt()
        assert "\n" not in str(err.value) and "nothing touched" in str(err.value)
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("side", ["remove", "move"])
def test_a_journal_naming_a_folder_is_one_line_and_touches_nothing(tmp_path, side):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.txt").write_text("kept")
    tmp = f".bpcr-{GROUP}-y.tmp"
    (tmp_path / tmp).write_text("new")
    entry = {"final": "folder", **_seal(b"new")}
    journal = {"format": "bpcr-journal/2", "group": GROUP, "moves": [{"tmp": tmp, **entry}] if side == "move" else [],
               "remove": [entry] if side == "remove" else []}
    (tmp_path / JOURNAL).write_text(json.dumps(journal))
    with pytest.raises(BadInput, match="names 'folder', a folder"):
        recover_folder(tmp_path)
    assert (tmp_path / "folder" / "inside.txt").read_text() == "kept" and (tmp_path / tmp).exists()


def test_removing_a_member_that_is_a_folder_is_refused_before_writing(tmp_path):
    (tmp_path / "r.trec").mkdir()
    with pytest.raises(BadInput, match="r.trec: is a folder, not a file bpcr wrote"):
        write_group({tmp_path / "r.csv": "new", tmp_path / "r.trec": None})
    assert sorted(os.listdir(tmp_path)) == ["r.trec"]


def test_a_killed_writers_journal_records_its_group_and_seals(tmp_path, monkeypatch):
    """The journal a real write leaves, caught just before its members move: names bound to one group."""
    from bpcr.io import fileio

    (tmp_path / "r.trec").write_text("old trec")
    seen = {}

    def stop(folder, moves, removes):
        seen.update(json.loads((folder / JOURNAL).read_text()))
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "_finish", stop)
    with pytest.raises(KeyboardInterrupt):
        write_group({tmp_path / "r.csv": "new csv", tmp_path / "r.trec": None})
    assert seen["format"] == "bpcr-journal/2" and len(seen["group"]) == 16
    [move] = seen["moves"]
    assert move["tmp"].startswith(f".bpcr-{seen['group']}-") and move["final"] == "r.csv"
    assert {k: move[k] for k in ("size", "sha256")} == _seal(b"new csv")
    assert seen["remove"] == [{"final": "r.trec", **_seal(b"old trec")}]
    monkeypatch.undo()
    recover_folder(tmp_path)  # a reader completes it
    assert sorted(os.listdir(tmp_path)) == ["r.csv"] and (tmp_path / "r.csv").read_text() == "new csv"
