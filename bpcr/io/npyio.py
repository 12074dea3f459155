"""Reading numpy files a user may hand in: ``.npy`` arrays and ``.npz`` archives, never unpickled.

Both go through :func:`bpcr.io.textio.open_input` (regular files only, size
limits per kind), refuse object arrays, and check each array's header against
the bytes actually there before trusting it, so a truncated or forged file is
one :class:`BadInput` line, not a crash or a huge allocation.
"""
from __future__ import annotations

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from bpcr.errors import BadInput
from bpcr.io.textio import LIMITS, open_input, size_text

_NPY_MAGIC = b"\x93NUMPY"


def _npy_header(handle: BinaryIO, path: Path, what: str) -> tuple[tuple[int, ...], bool, Any]:
    """Read a .npy header from ``handle``: (shape, fortran_order, dtype); refuses object arrays."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise BadInput(path, None, f"not {what}: {_one_line(exc)}") from None
    if dtype.hasobject:
        raise BadInput(path, None, f"not {what}: it holds Python objects, which are never unpickled")
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_npy(path: str | Path, what: str = "a plain .npy array"):
    """Memory-map a ``.npy`` file read-only (never unpickled); BadInput "not <what>: ..." otherwise."""
    import numpy as np

    path = Path(path)
    with open_input(path, "npy") as handle:
        shape, fortran, dtype = _npy_header(handle, path, what)
        offset = handle.tell()
        size = os.fstat(handle.fileno()).st_size
        nbytes = math.prod(shape) * dtype.itemsize
        if size < offset + nbytes:
            raise BadInput(path, None, f"not {what}: the file is shorter than its header says "
                                       f"({size - offset} bytes of data for shape {shape})")
        if nbytes == 0:
            return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        try:
            return np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        except (ValueError, OSError) as exc:
            raise BadInput(path, None, f"not {what}: {_one_line(exc)}") from None


def read_npz(path: str | Path, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """The arrays ``names`` of a ``.npz`` archive (never unpickled), checked against the bytes present.

    Anything else (not a zip, a truncated one, a ``.npy``, a missing array, an
    object array) raises BadInput "not <what>: ...", naming the file.
    """
    import numpy as np

    path = Path(path)
    limit = LIMITS["npz"]
    with open_input(path, "npz") as handle:
        head = handle.read(6)
        if head == _NPY_MAGIC:
            raise BadInput(path, None, f"not {what}: a single .npy array, not a .npz archive")
        if not head.startswith(b"PK"):
            raise BadInput(path, None, f"not {what}: not a .npz (zip) archive")
        handle.seek(0)
        out: dict[str, Any] = {}
        try:
            with zipfile.ZipFile(handle) as archive:
                for name in names:
                    try:
                        info = archive.getinfo(f"{name}.npy")
                    except KeyError:
                        raise BadInput(path, None, f"not {what}: no array {name!r}") from None
                    if info.file_size > limit.max_bytes:
                        raise BadInput(path, None, f"array {name!r} is {size_text(info.file_size)}; "
                                                   f"{limit.what} may hold at most {size_text(limit.max_bytes)}")
                    with archive.open(info) as member:
                        shape, fortran, dtype = _npy_header(member, path, what)
                        nbytes = math.prod(shape) * dtype.itemsize
                        if nbytes > info.file_size:
                            raise BadInput(path, None, f"not {what}: array {name!r} is shorter than its header says")
                        data = member.read(nbytes)
                    if len(data) != nbytes:
                        raise BadInput(path, None, f"not {what}: array {name!r} is shorter than its header says")
                    array = np.frombuffer(data, dtype=dtype)
                    out[name] = array.reshape(shape, order="F" if fortran else "C")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError) as exc:
            raise BadInput(path, None, f"not {what}: {_one_line(exc)}") from None
    return out


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An ``.npz`` of ``arrays`` (what ``np.savez`` writes, never pickled) with fixed timestamps: equal arrays,
    equal bytes."""
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buf.getvalue()
