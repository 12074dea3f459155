"""Folders a stage writes: checking targets before any work, kinds of kit folders, locks and swaps.

- **Output targets** (:func:`check_output_file`, :func:`check_output_folder`):
  called at the start of every stage that writes, before any work, they refuse
  with one :class:`BadInput` line a folder where a file is expected or the
  reverse, a character device, FIFO or socket, a name too long for the file
  system, a folder where files cannot be created (``/proc``, a read-only
  mount), or an existing folder that is not the kind of folder the kit writes
  there (each kind is recognised by its marker files, :class:`FolderKind`). A
  symbolic link to a regular file is written through: the link stays, its
  target is replaced.
- **Locks** (:func:`folder_lock`): ``flock`` on the folder itself, so no lock
  file is left; writers of one folder take turns.
- **Folder swaps** (:func:`replace_dir`): a finished folder replaces a folder of
  the same kind in two renames under the parent's lock; a kill between them is
  rolled back by the next write or open (:func:`recover_dir`).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from bpcr.errors import BadInput

TMP_PREFIX, TMP_SUFFIX = ".bpcr-", ".tmp"
JOURNAL = ".bpcr-journal.json"
JOURNAL_FORMAT = "bpcr-journal/1"
_GROUP_TMP = re.compile(r"\.bpcr-[A-Za-z0-9_]+\.tmp")
_LEGACY_TMP = r"\.{name}\.[A-Za-z0-9_]{{8}}\.tmp"  # what atomic_path named a member's temporary before groups


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder the kit writes, told by its marker files.

    ``markers``: files a folder of this kind holds (all of them, or any one with
    ``any_marker``); ``format_prefix``: the ``"format"`` that the first marker,
    a JSON file, must start with. ``replaced``: the kit replaces the whole
    folder (written beside it, then renamed); otherwise it writes into it.
    An empty folder may always be used.
    """

    label: str
    markers: tuple[str, ...]
    any_marker: bool = False
    format_prefix: str | None = None
    replaced: bool = True

    def holds(self, folder: Path) -> bool:
        present = [(folder / m).is_file() for m in self.markers]
        if not (any(present) if self.any_marker else all(present)):
            return False
        if self.format_prefix is None:
            return True
        try:
            with open(folder / self.markers[0], "rb") as handle:
                meta = json.loads(handle.read(1 << 20))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and str(meta.get("format", "")).startswith(self.format_prefix)


FEATURE_STORE = FolderKind("bpcr feature store", ("meta.json", "ids.txt", "features.npy"))
INDEX = FolderKind("bpcr index folder", ("index.json",))
TEXT_INDEX = FolderKind("text index", ("meta.json",), format_prefix="bpcr-text-index/")
PREPARED = FolderKind("bpcr prepare output folder",
                      ("summary.json", "database.csv", "queries.csv", "rejected.csv", ".check_cache.json"),
                      any_marker=True, replaced=False)
UNFINISHED_EXTRACTION = FolderKind("unfinished bpcr extraction", ("plan.json",), replaced=False)
REPORT = FolderKind("bpcr report folder", ("report.json", "index.html"), format_prefix="bpcr-report/")
# the kinds a finished folder handed to replace_dir can be (a text index is told by its format first)
REPLACED_KINDS = (INDEX, TEXT_INDEX, FEATURE_STORE, REPORT)


def check_output_file(path: str | Path, option: str | None = None, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse (BadInput naming ``option`` and ``path``) a file target that cannot be written safely, or that
    is one of the command's ``inputs`` (the same file, under any name or link).

    Returns the file that will be replaced: ``path``, or the regular file a
    symbolic link at ``path`` points to (written through, the link kept).
    """
    path = Path(path)
    where = _where(path, option)
    _check_lengths(path, where)
    target = follow_link(path, where)
    mode = lstat_mode(target)
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise BadInput(where, None, "is a folder; a file is expected here")
        if not stat.S_ISREG(mode):
            raise BadInput(where, None, f"is {describe_mode(mode)}, not a regular file; refusing to write to it")
        same = next((i for i in inputs if os.path.exists(i) and os.path.samefile(target, i)), None)
        if same is not None:
            raise BadInput(where, None, f"is {same}, an input of this command; write the output elsewhere")
    _check_writable(target.parent, where)
    return target


def check_cache_folder(path: str | Path | None, option: str) -> Path | None:
    """Refuse (BadInput naming ``option``) a cache folder that is a file or a special file, before any work."""
    if path is None:
        return None
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        mode = lstat_mode(path)
        raise BadInput(_where(path, option), None, f"is {describe_mode(mode or 0)}; a folder is expected here")
    return path


def check_output_folder(path: str | Path, option: str | None = None, kind: FolderKind | None = None) -> Path:
    """Refuse (BadInput naming ``option`` and ``path``) a folder target that cannot be written safely.

    Without ``kind`` the stage writes files into the folder; with one, the
    folder must be absent, empty or of that kind (``kind.replaced``: replaced
    whole; else written into). Returns the folder to write: ``path``, or the
    folder a symbolic link at ``path`` points to.
    """
    path = Path(path)
    where = _where(path, option)
    extra = (f".{path.name}.writing", f".{path.name}.old") if kind is not None and kind.replaced else ()
    _check_lengths(path, where, extra)
    target = follow_link(path, where)
    if kind is not None and kind.replaced:
        for sibling in (target.with_name(f".{target.name}.writing"), _old(target)):
            mode = lstat_mode(sibling)
            if mode is not None and not stat.S_ISDIR(mode):
                raise BadInput(where, None, f"{sibling} is {describe_mode(mode)} in the way of writing it; move it away")
        recover_dir(target)
    mode = lstat_mode(target)
    if mode is not None:
        if not stat.S_ISDIR(mode):
            raise BadInput(where, None, f"is {describe_mode(mode)}; a folder is expected here")
        if kind is not None and not is_empty(target) and not kind.holds(target):
            verb = "replace" if kind.replaced else "write into"
            raise BadInput(where, None, f"exists and is not a {kind.label}; refusing to {verb} it")
        _check_writable(target.parent if kind is not None and kind.replaced else target, where)
    else:
        _check_writable(target.parent, where)
    return target


def _where(path: Path, option: str | None) -> str:
    shown = str(path) if len(str(path)) <= 160 else f"{str(path)[:100]}...{str(path)[-40:]}"
    return f"{option} {shown}" if option else shown


def describe_mode(mode: int) -> str:
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "a special file"


def lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # absent (below a file: refused as such later)
        return None


def _existing_ancestor(path: Path) -> Path:
    current = Path(os.path.abspath(path))
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError):
        return default


def _check_lengths(path: Path, where: str, extra_names: tuple[str, ...] = ()) -> None:
    """Refuse a name or path the file system cannot hold (one ENAMETOOLONG after hours of work otherwise)."""
    absolute = os.path.abspath(path)
    ancestor = _existing_ancestor(Path(os.path.dirname(absolute)) if absolute != "/" else Path("/"))
    if not ancestor.is_dir():
        ancestor = ancestor.parent
    name_max = _limit(ancestor, "PC_NAME_MAX", 255)
    path_max = _limit(ancestor, "PC_PATH_MAX", 4096)
    for part in (*Path(absolute).parts[1:], *extra_names):
        size = len(os.fsencode(part))
        if size > name_max:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise BadInput(where, None, f"file name {shown!r} is {size} bytes long; this file system allows at most "
                                        f"{name_max}")
    size = len(os.fsencode(absolute)) + max((len(os.fsencode(n)) + 1 for n in extra_names), default=0)
    if size >= path_max:
        raise BadInput(where, None, f"path is {size} bytes long; this system allows less than {path_max}")


def follow_link(path: Path, where: str) -> Path:
    """``path``, or what the symbolic link at ``path`` points to (which must exist)."""
    if not os.path.islink(path):
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        raise BadInput(where, None, f"is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                                    "refusing to follow it") from None
    except OSError as exc:
        raise BadInput(where, None, f"is a symbolic link that cannot be followed ({exc.strerror})") from None


def _check_writable(folder: Path, where: str) -> None:
    """The folder (or, if absent, the folder that would hold it) must be one where files can be created.

    Checked without writing anything (a probe file would change the folder's
    times): permissions, a read-only mount, and a virtual file system such as
    /proc or /sys, which reports no blocks (root may "write" there, and
    os.access says yes to root).
    """
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        raise BadInput(where, None, f"{existing} is {describe_mode(os.stat(existing).st_mode)}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(where, None, f"cannot create files in {existing} (permission denied)")
    try:
        info = os.statvfs(existing)
    except OSError:
        return
    if info.f_flag & os.ST_RDONLY:
        raise BadInput(where, None, f"cannot create files in {existing} (a read-only file system)")
    if info.f_blocks == 0:
        raise BadInput(where, None, f"cannot create files in {existing} (a virtual file system, such as /proc, "
                                    "that holds no files)")


def is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


# ---------------------------------------------------------------- locks


_held: dict[tuple[int, int], list] = {}
_held_guard = threading.Lock()


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``flock`` on the folder itself; re-entrant in a process)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        info = os.fstat(fd)
        with _held_guard:
            entry = _held.setdefault((info.st_dev, info.st_ino), [threading.RLock(), None, 0])
        entry[0].acquire()
    except BaseException:
        os.close(fd)
        raise
    try:
        if entry[2] == 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entry[1], fd = fd, -1
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                os.close(entry[1])  # closing releases the lock
                entry[1] = None
    finally:
        entry[0].release()
        if fd != -1:
            os.close(fd)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- folder swaps


# The marker file inside every folder the kit moves aside (``.NAME.old``) or fills before a swap
# (``.NAME.writing``): only a folder that holds it is ever removed or moved back, never one by its name alone.
OWN = ".bpcr-own"


def _old(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _mark(folder: Path) -> None:
    fd = os.open(folder / OWN, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.close(fd)


def is_own(folder: Path) -> bool:
    """Whether ``folder`` is a real folder (not a link) that the kit marked as its own to remove."""
    mode, marker = lstat_mode(folder), lstat_mode(folder / OWN)
    return mode is not None and stat.S_ISDIR(mode) and marker is not None and stat.S_ISREG(marker)


def writing_dir(out: str | Path) -> Path:
    """A new, empty, marked folder ``.NAME.writing`` beside ``out`` to fill before :func:`replace_dir`.

    One left there by a killed writer (marked) is removed first; anything else by that name is refused
    (BadInput) and left alone.
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.writing")
    if os.path.lexists(tmp):
        if not is_own(tmp):
            raise BadInput(tmp, None, f"is in the way of writing {out} and was not made by bpcr; move it away")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _mark(tmp)
    return tmp


def replace_dir(tmp: str | Path, out: str | Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing a folder of the same kind there.

    ``out`` must be absent, empty, or of the kind ``tmp`` is (:data:`REPLACED_KINDS`);
    anything else is refused (BadInput). The old folder is marked and moved aside, the new
    one renamed into place, the old one removed, all under the parent's lock; a
    kill between the renames is rolled back by the next call or open (:func:`recover_dir`).
    """
    tmp, out = Path(tmp), Path(out)
    kind = next((k for k in REPLACED_KINDS if k.holds(tmp)), None)
    if kind is None:
        raise ValueError(f"{tmp} holds no finished bpcr folder")
    if os.path.islink(out):
        out = follow_link(out, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out.parent):
        _recover_swap(out)
        mode = lstat_mode(out)
        if mode is None:
            os.replace(tmp, out)
        elif not stat.S_ISDIR(mode) or not (is_empty(out) or kind.holds(out)):
            raise BadInput(out, None, f"exists and is not a {kind.label}; refusing to replace it")
        else:
            old = _old(out)
            _mark(out)
            os.replace(out, old)
            os.replace(tmp, out)
            fsync_dir(out.parent)
            _unmark(out)
            shutil.rmtree(old)
            return
        _unmark(out)
        fsync_dir(out.parent)


def _unmark(folder: Path) -> None:
    try:
        os.unlink(folder / OWN)
    except FileNotFoundError:
        pass


def _recover_swap(out: Path) -> None:
    old = _old(out)
    mode = lstat_mode(old)
    if mode is None:
        return
    if not is_own(old):
        raise BadInput(old, None, f"is in the way of replacing {out} and was not made by bpcr; move it away")
    if os.path.lexists(out):
        shutil.rmtree(old)  # the swap finished; only the old copy's removal was cut short
    else:
        os.replace(old, out)  # the new folder never arrived: the old one comes back
        _unmark(out)


def recover_dir(path: str | Path) -> Path:
    """Undo a folder swap a kill cut short at ``path``; returns the folder to read.

    Costs one ``lstat`` when there is nothing to do. Where the parent cannot be
    written, nothing is changed and the surviving old copy is returned to read.
    """
    path = Path(path)
    old = _old(path)
    if not is_own(old):  # nothing of the kit's to undo (anything else there is refused by a write, never removed)
        return path
    try:
        with folder_lock(path.parent):
            _recover_swap(path)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        if not os.path.lexists(path) and old.is_dir():
            return old
    return path
