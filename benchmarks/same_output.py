"""Show that two versions of the kit produce the same demo results.

Runs `bpcr run CONFIG` from scratch with each version in its own folder, then
compares what a user keeps: every run's `.csv` and `.trec` byte for byte, every
run's `.json` with its volatile fields removed (timestamps, timings, the
command line, and the hashes of input files that themselves hold timestamps),
`leaderboard.md`, `leaderboard.svg`, the per-query APs and the scores JSON.

    python benchmarks/same_output.py --before HEAD~3 --after .

A version is a git revision (checked out with `git archive`) or `.`, the
working tree as it is now (tracked and untracked files that git does not
ignore). A side whose folder already holds a finished run of the same
revision is reused (`--out` keeps them; `.` is always run again). Exit code 0
when everything matches, 1 otherwise, with one line per difference.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"created", "seconds", "command"}


def _rev_hash(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def _checkout(rev: str, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if rev == ".":
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def run_side(rev: str, dest: Path, config: str) -> float:
    """Check ``rev`` out into ``dest`` and run the config there from scratch; returns seconds."""
    stamp = dest / ".same-output-done"
    key = rev if rev == "." else _rev_hash(rev)
    if rev != "." and stamp.is_file() and stamp.read_text() == key:
        print(f"{rev}: reusing {dest}")
        return 0.0
    _checkout(rev, dest)
    for generated in ("submissions", "work"):
        shutil.rmtree(dest / generated, ignore_errors=True)
    for name in ("leaderboard.md", "leaderboard.svg"):
        (dest / name).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(dest))
    started = time.perf_counter()
    print(f"{rev}: bpcr run {config} in {dest}", flush=True)
    subprocess.run([sys.executable, "-m", "bpcr", "run", config], cwd=dest, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    stamp.write_text(key)
    return seconds


def _stable_json(obj, root: str):
    """Drop timestamps, timings and the hashes of JSON inputs (which hold timestamps); ``root``, the side's
    own folder, becomes ROOT in absolute paths."""
    if isinstance(obj, dict):
        path = obj.get("path")
        return {k: _stable_json(v, root) for k, v in obj.items()
                if k not in VOLATILE and not (k == "sha256" and isinstance(path, str) and path.endswith(".json"))}
    if isinstance(obj, list):
        return [_stable_json(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "ROOT")
    return obj


def compare(a: Path, b: Path) -> list[str]:
    """Differences between two finished sides, one line each."""
    problems = []
    names = sorted({p.name for side in (a, b) for p in (side / "submissions").glob("*") if p.is_file()})
    for name in names:
        fa, fb = a / "submissions" / name, b / "submissions" / name
        if not (fa.is_file() and fb.is_file()):
            problems.append(f"submissions/{name}: only in {'before' if fa.is_file() else 'after'}")
        elif name.endswith(".json"):
            ja, jb = _stable_json(json.loads(fa.read_text()), str(a)), _stable_json(json.loads(fb.read_text()), str(b))
            if ja != jb:
                keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
                problems.append(f"submissions/{name}: provenance differs beyond timestamps and timings in "
                                f"{', '.join(keys)}")
        elif fa.read_bytes() != fb.read_bytes():
            problems.append(f"submissions/{name}: bytes differ")
    for name in ("leaderboard.md", "leaderboard.svg", "work/demo/per_query.csv", "work/demo/scores.json"):
        fa, fb = a / name, b / name
        if fa.is_file() != fb.is_file():
            problems.append(f"{name}: only in {'before' if fa.is_file() else 'after'}")
        elif fa.is_file() and fa.read_bytes() != fb.read_bytes():
            problems.append(f"{name}: bytes differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision, or . for the working tree")
    parser.add_argument("--after", default=".", help="git revision, or . for the working tree (default)")
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bpcr-same-output"))
    args = parser.parse_args()
    sides = {}
    for label, rev in (("before", args.before), ("after", args.after)):
        dest = args.out / label
        seconds = run_side(rev, dest, args.config)
        sides[label] = dest
        if seconds:
            print(f"{label} ({rev}): {seconds:.0f} s")
    problems = compare(sides["before"], sides["after"])
    n_runs = len(list((sides["after"] / "submissions").glob("*.csv")))
    for line in problems:
        print(line)
    print(f"{n_runs} runs, leaderboard and chart: " + ("identical" if not problems else f"{len(problems)} differences"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
