"""Writing files so that nothing half-written, mixed or misplaced is ever left.

Two tools, used by every stage that writes (the folders they write into are
checked, locked and swapped by :mod:`bpcr.io.folders`):

- **Single files** (:func:`atomic_path`, :func:`write_text_atomic`): written to
  a temporary name and renamed; a symbolic link to a regular file is written
  through (the link stays, its target is replaced).
- **Groups** (:func:`write_group`): files that belong together (a run's
  ``NAME.csv``, ``NAME.trec`` and ``NAME.json``; a leaderboard's ``.md`` and
  ``.svg``) are written all-or-nothing. Each member goes to a temporary file in
  its folder (fsynced); then a journal listing every (temporary -> final) pair
  is renamed into place; then the members are renamed; then the journal is
  removed. The journal binds itself to its group: a random group name that every
  temporary's name carries, and the size and SHA-256 of every temporary and of
  every file it removes, recorded when written. A reader completes only such a
  journal, and only while every file it names still holds those bytes; any
  other ``.bpcr-journal.json`` (hand-written, foreign, stale) is refused with
  one line and nothing in the folder is touched. A lock on the folder (``flock`` on the folder itself, so no lock
  file is left) serialises writers. Whoever finds a journal first, writer or
  reader (:func:`recover_folder`), completes it, since every temporary it names
  is complete: a reader sees the old group or the new one. Temporaries of a
  killed writer are removed by the next write into the folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from bpcr.errors import BadInput
from bpcr.io.folders import describe_mode, folder_lock, follow_link, fsync_dir, lstat_mode

TMP_PREFIX, TMP_SUFFIX = ".bpcr-", ".tmp"
JOURNAL = ".bpcr-journal.json"
JOURNAL_FORMAT = "bpcr-journal/2"
_GROUP_TMP = re.compile(r"\.bpcr-[A-Za-z0-9_-]+\.tmp")
_GROUP_NAME = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LEGACY_TMP = r"\.{name}\.[A-Za-z0-9_]{{8}}\.tmp"  # what atomic_path named a member's temporary before groups


# ---------------------------------------------------------------- single files


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_target(path: Path) -> Path:
    """The file a write to ``path`` replaces: ``path`` or its link's target; BadInput for anything not a file."""
    target = follow_link(path, str(path))
    mode = lstat_mode(target)
    if mode is not None and not stat.S_ISREG(mode):
        what = "is a folder; a file is expected here" if stat.S_ISDIR(mode) else \
            f"is {describe_mode(mode)}, not a regular file; refusing to write to it"
        raise BadInput(path, None, what)
    return target


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A symbolic link at ``path`` is written through; a folder or special file
    there is refused (BadInput).
    """
    target = _write_target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates owner-only files; give the final file the usual umask-based mode.
    os.chmod(tmp_path, _file_mode())
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def json_text(obj: object) -> str:
    """JSON with sorted keys and a final newline, so equal objects give equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json_atomic(path: str | Path, obj: object) -> None:
    write_text_atomic(path, json_text(obj))


# ---------------------------------------------------------------- groups


def write_group(members: Mapping[str | Path, bytes | str | None]) -> dict[Path, Path]:
    """Write files that belong together all-or-nothing (see the module doc).

    ``members``: final path -> content (``str`` is written as UTF-8 as is); a
    member whose content is None is removed as part of the group. Files in
    different folders form one group per folder. Returns each path -> the
    file written (its link's target for a symbolic link). Raises BadInput
    for a member that is a folder or a special file, before anything is written.
    """
    by_folder: dict[Path, list[tuple[str, bytes | None]]] = {}
    written: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for raw, content in members.items():
        path = Path(raw)
        target = path if content is None else _write_target(path)
        real = Path(os.path.realpath(target.parent)) / target.name
        if real in seen:
            raise BadInput(path, None, f"is the same file as {seen[real]}; each output needs its own file")
        seen[real] = path
        data = content.encode("utf-8") if isinstance(content, str) else content
        by_folder.setdefault(real.parent, []).append((real.name, data))
        if content is not None:
            written[path] = target
    for folder in sorted(by_folder):
        _write_folder_group(folder, by_folder[folder])
    return written


def _write_folder_group(folder: Path, entries: list[tuple[str, bytes | None]]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(folder, None, f"cannot create the folder ({exc.strerror})") from None
    with folder_lock(folder):
        _recover_locked(folder)
        _remove_stale(folder, [name for name, _ in entries])
        group = secrets.token_hex(8)
        moves: list[dict] = []
        try:
            removes = [_removal(folder, name) for name, data in entries if data is None and os.path.lexists(folder / name)]
            for name, data in entries:
                if data is not None:
                    moves.append({"tmp": _write_temp(folder, data, name, group), "final": name, **_seal(data)})
            journal = _write_temp(folder, json_text({"format": JOURNAL_FORMAT, "group": group, "moves": moves,
                                                     "remove": removes}).encode("utf-8"), JOURNAL, group)
            os.replace(folder / journal, folder / JOURNAL)
        except BaseException:
            for move in moves:
                _unlink(folder / move["tmp"])
            raise
        fsync_dir(folder)
        _finish(folder, moves, removes)


def _seal(data: bytes) -> dict:
    """What a journal records of a file's bytes, to recognise them later."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _sealed(path: Path) -> dict | None:
    """:func:`_seal` of the regular file at ``path`` (not followed if a link); None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        digest, size = hashlib.sha256(), 0
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"size": size, "sha256": digest.hexdigest()}


def _removal(folder: Path, name: str) -> dict:
    """A member to remove, as the journal records it; BadInput for a folder or anything but a file."""
    path = folder / name
    if os.path.islink(path):
        return {"final": name, "link": os.readlink(path)}
    sealed = _sealed(path)
    if sealed is None:
        mode = lstat_mode(path)
        what = "is a folder" if mode is not None and stat.S_ISDIR(mode) else f"is {describe_mode(mode or 0)}"
        raise BadInput(path, None, f"{what}, not a file bpcr wrote; refusing to remove it")
    return {"final": name, **sealed}


def _write_temp(folder: Path, data: bytes, final: str, group: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{group}-", suffix=TMP_SUFFIX, dir=folder)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        _unlink(Path(tmp))
        raise BadInput(folder / final, None, f"cannot write ({exc.strerror or exc})") from None
    except BaseException:
        _unlink(Path(tmp))
        raise
    return os.path.basename(tmp)


def _finish(folder: Path, moves: list[dict], removes: list[dict]) -> None:
    """Rename the journal's members into place, remove what it removes, then the journal itself."""
    for move in moves:
        if os.path.lexists(folder / move["tmp"]):
            os.replace(folder / move["tmp"], folder / move["final"])
    for removal in removes:
        _unlink(folder / removal["final"])
    fsync_dir(folder)
    os.unlink(folder / JOURNAL)
    fsync_dir(folder)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _refuse(folder: Path, why: str) -> BadInput:
    return BadInput(folder / JOURNAL, None, f"{why}; not completed and nothing touched: move the journal away "
                                            "if it is not bpcr's")


def _read_journal(folder: Path) -> tuple[list[dict], list[dict]]:
    """The journal's moves and removals, each checked to be this group's own and to hold what it recorded."""
    path = folder / JOURNAL
    try:
        with open(path, "rb") as handle:
            body = json.loads(handle.read(1 << 20))
        group, moves, removes = body["group"], body["moves"], body["remove"]
        ok = body.get("format") == JOURNAL_FORMAT and isinstance(group, str) and _GROUP_NAME.fullmatch(group) \
            and all(isinstance(e, dict) and isinstance(e.get("final"), str) for e in [*moves, *removes])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise _refuse(folder, "not a bpcr write journal")
    own_tmp = re.compile(re.escape(f"{TMP_PREFIX}{group}-") + r"[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX))
    for entry in [*moves, *removes]:
        name = entry["final"]
        if name in ("", ".", "..", JOURNAL) or "/" in name or "\0" in name:
            raise _refuse(folder, f"names {name!r}, which is not a file of this folder")
        if lstat_mode(folder / name) is not None and stat.S_ISDIR(lstat_mode(folder / name)):
            raise _refuse(folder, f"names {name!r}, a folder")
    for move in moves:
        if not (isinstance(move.get("tmp"), str) and own_tmp.fullmatch(move["tmp"]) and _sealed_ok(move)):
            raise _refuse(folder, f"moves {move.get('tmp')!r}, which is not a temporary of its own group")
        if os.path.lexists(folder / move["tmp"]) and _sealed(folder / move["tmp"]) != _seal_of(move):
            raise _refuse(folder, f"{move['tmp']} no longer holds what the journal recorded")
    for removal in removes:
        path = folder / removal["final"]
        if "link" in removal:
            if os.path.islink(path) and os.readlink(path) != removal["link"]:
                raise _refuse(folder, f"{removal['final']} is not the link the journal recorded")
        elif not _sealed_ok(removal):
            raise _refuse(folder, f"removes {removal['final']!r} without recording what it holds")
        elif os.path.lexists(path) and _sealed(path) != _seal_of(removal):
            raise _refuse(folder, f"{removal['final']} no longer holds what the journal recorded")
    return moves, removes


def _sealed_ok(entry: dict) -> bool:
    size, digest = entry.get("size"), entry.get("sha256")
    return isinstance(size, int) and not isinstance(size, bool) and size >= 0 and isinstance(digest, str) \
        and _SHA256.fullmatch(digest) is not None


def _seal_of(entry: dict) -> dict:
    return {"size": entry["size"], "sha256": entry["sha256"]}


def _recover_locked(folder: Path) -> None:
    if os.path.lexists(folder / JOURNAL):
        moves, removes = _read_journal(folder)
        _finish(folder, moves, removes)


def _remove_stale(folder: Path, members: list[str]) -> None:
    """Temporaries of killed writers: ours (``.bpcr-*.tmp``) and members' older ``.NAME.XXXXXXXX.tmp``."""
    legacy = re.compile("|".join(_LEGACY_TMP.format(name=re.escape(m)) for m in members)) if members else None
    with os.scandir(folder) as entries:
        stale = [e.name for e in entries
                 if (_GROUP_TMP.fullmatch(e.name) or (legacy is not None and legacy.fullmatch(e.name)))
                 and e.is_file(follow_symlinks=False)]
    for name in stale:
        _unlink(folder / name)


def recover_folder(folder: str | Path) -> None:
    """Complete a group write that a killed writer left half-done in ``folder`` (readers call this first).

    Costs one ``lstat`` when there is nothing to do; a folder this process may
    not write is read as it is.
    """
    folder = Path(folder)
    if not os.path.lexists(folder / JOURNAL) or not os.access(folder, os.W_OK):
        return
    try:
        with folder_lock(folder):
            _recover_locked(folder)
    except PermissionError:
        pass


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_path(path: str | Path) -> str:
    """``path`` as a run's provenance records it: relative to the current folder when it lies inside it.

    A run made in a clone then names the same files on every machine; a path outside
    the current folder stays as given (absolute when it was).
    """
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return str(p)
