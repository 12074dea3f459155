"""One command in its own process, measured: wall seconds, CPU seconds, peak memory and disk written.

How each figure is taken, and its limits:

- wall: ``time.perf_counter`` around the process, start-up and imports included (on a shared machine it
  also counts other people's work; CPU seconds do not);
- CPU: ``ru_utime + ru_stime`` from ``os.wait4`` of the child, which includes every descendant it waited
  for (worker pools, data loaders): all cores summed, so CPU / wall is the parallelism reached;
- peak memory: the larger of (a) the child's ``ru_maxrss`` from ``os.wait4`` (exact, but the largest single
  process of the tree, not their sum) and (b) the sum of the proportional set size (PSS, shared pages split
  between the processes that map them) over the child's process tree, read from
  ``/proc/PID/smaps_rollup`` every ``POLL_SECONDS`` (catches worker pools; a spike shorter than the
  interval can be missed). Page cache is not counted: reading a 10 GB image folder raises no one's RSS;
- disk written: bytes of the files created or changed under the watched folder (compared by size and
  modification time before and after), i.e. what the step leaves on disk; temporary files it removed and
  rewrites of a file to the same size within the clock's resolution are not counted.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_SECONDS = 0.1


@dataclass
class Measured:
    wall: float
    cpu: float
    peak_bytes: int
    disk_bytes: int
    returncode: int

    def to_json(self) -> dict:
        return asdict(self)


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(task.path, "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def tree_pss(pid: int) -> int:
    """Sum of PSS over ``pid`` and its descendants, in bytes (0 for a process gone meanwhile)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += _children(p)
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError):
            pass
    return total


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: path -> (size, mtime in ns)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            files[path] = (st.st_size, st.st_mtime_ns)
    return files


def written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    return sum(size for path, (size, mtime) in after.items() if before.get(path) != (size, mtime))


def tree_bytes(paths: list[Path]) -> int:
    """Bytes of the files at ``paths`` (folders counted recursively); missing paths count 0."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(size for size, _ in snapshot(path).values())
    return total


def measure(argv: list[str], watch: Path, log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Measured:
    """Run ``argv`` to its end, its output into ``log``; what it cost (see the module docstring)."""
    before = snapshot(watch)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    peak_pss = 0
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_pss = max(peak_pss, tree_pss(child.pid))
            time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return Measured(wall=wall, cpu=usage.ru_utime + usage.ru_stime,
                    peak_bytes=max(usage.ru_maxrss * 1024, peak_pss),
                    disk_bytes=written(before, snapshot(watch)), returncode=child.returncode)
