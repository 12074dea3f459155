"""Runs: the challenge submission CSV, the TREC deep run and the JSON provenance
(DESIGN.md, "Runs").

A run ``NAME`` is up to three files sharing a name: ``NAME.csv`` (7 IDs per
query, no header), ``NAME.trec`` (``qid Q0 docid rank score tag``, deep, with
scores) and ``NAME.json`` (provenance). Readers tolerate what participants send
(spaces after commas, BOM, CRLF, a trailing comma); fewer than 7 predictions and
repeated IDs are warnings, more than 7 is truncated with a warning (errors under
``strict``). Writers are deterministic: queries sorted, equal scores broken by ID.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from . import __version__
from .errors import BadInput
from .fileio import sha256_file, write_json_atomic, write_text_atomic
from .ids import check_id
from .textio import read_json, read_lines

SUBMISSION_DEPTH = 7
RUN_SUFFIXES = (".csv", ".trec", ".json")


@dataclass
class Run:
    """One method's answer for every query.

    ``ranking`` holds each query's list best first (as deep as the run is);
    ``scores`` is parallel to it when the run came with scores (TREC), else None.
    ``submission`` is the 7-ID list that is scored as the challenge's mAP@7.
    """

    name: str
    ranking: dict[str, list[str]]
    scores: dict[str, list[float]] | None = None
    provenance: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    submission: dict[str, list[str]] | None = None

    def top(self, k: int = SUBMISSION_DEPTH) -> dict[str, list[str]]:
        if k <= SUBMISSION_DEPTH and self.submission is not None:
            return {q: ids[:k] for q, ids in self.submission.items()}
        return {q: ids[:k] for q, ids in self.ranking.items()}

    @property
    def depth(self) -> int:
        return max((len(ids) for ids in self.ranking.values()), default=0)


@dataclass
class RunResult:
    """What every stage that writes a run returns (search, refine, rerank, ensemble).

    ``written``: the files by suffix (``.csv``, ``.trec``, ``.json``); ``provenance``:
    the JSON written, with the stage's counts and parameters, so a caller shows
    them without reading the file back; ``warnings``: what the caller should show.
    """

    name: str
    written: dict[str, Path]
    provenance: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def csv(self) -> Path:
        return self.written[".csv"]


# ---------------------------------------------------------------- reading


def read_submission(path: str | Path, strict: bool = False, warnings: list[str] | None = None) -> dict[str, list[str]]:
    """Read a challenge submission CSV into ``{query_id: [up to 7 IDs]}``."""
    path = Path(path)
    warnings = warnings if warnings is not None else []
    lines = read_lines(path)
    out: dict[str, list[str]] = {}
    short = dup = long = 0
    for number, line in enumerate(lines, start=1):
        if line.strip() == "":
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) > 1 and cells[-1] == "":
            cells.pop()  # one trailing comma
        query = check_id(cells[0], path, number)
        if query in out:
            raise BadInput(path, number, f"query {query!r} listed twice")
        predictions = cells[1:]
        if not predictions:
            raise BadInput(path, number, f"query {query!r} has no predictions")
        for cell in predictions:
            if cell == "":
                raise BadInput(path, number, "empty cell between predictions")
            check_id(cell, path, number)
        if len(set(predictions)) < len(predictions):
            dup += 1
            if strict:
                raise BadInput(path, number, f"query {query!r} repeats a prediction")
        if len(predictions) > SUBMISSION_DEPTH:
            long += 1
            if strict:
                raise BadInput(path, number, f"{len(predictions)} predictions, at most {SUBMISSION_DEPTH} allowed")
            predictions = predictions[:SUBMISSION_DEPTH]
        elif len(predictions) < SUBMISSION_DEPTH:
            short += 1
        out[query] = predictions
    if not out:
        raise BadInput(path, None, "empty submission: no query lines")
    if short:
        warnings.append(f"{path}: {short} queries have fewer than {SUBMISSION_DEPTH} predictions")
    if dup:
        warnings.append(f"{path}: {dup} queries repeat a prediction; repeats count once")
    if long:
        warnings.append(f"{path}: {long} queries have more than {SUBMISSION_DEPTH} predictions; truncated to {SUBMISSION_DEPTH}")
    return out


def read_trec(path: str | Path) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Read a TREC run; each query's list is ordered by score (higher first), ties by ID."""
    path = Path(path)
    rows: dict[str, list[tuple[float, str]]] = {}
    seen: dict[str, set[str]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip() == "":
            continue
        cells = line.split()
        if len(cells) != 6:
            raise BadInput(path, number, f"expected 6 columns 'qid Q0 docid rank score tag', found {len(cells)}")
        query = check_id(cells[0], path, number)
        doc = check_id(cells[2], path, number)
        try:
            rank = int(cells[3])
        except ValueError:
            raise BadInput(path, number, f"rank {cells[3]!r} is not an integer") from None
        if rank < 1:
            raise BadInput(path, number, f"rank {rank} is below 1")
        try:
            score = float(cells[4])
        except ValueError:
            raise BadInput(path, number, f"score {cells[4]!r} is not a number") from None
        if not math.isfinite(score):
            raise BadInput(path, number, f"score {cells[4]!r} is not finite")
        if doc in seen.setdefault(query, set()):
            raise BadInput(path, number, f"document {doc!r} listed twice for query {query!r}")
        seen[query].add(doc)
        rows.setdefault(query, []).append((score, doc))
    if not rows:
        raise BadInput(path, None, "empty TREC run: no result lines")
    ranking: dict[str, list[str]] = {}
    scores: dict[str, list[float]] = {}
    for query, pairs in rows.items():
        pairs.sort(key=lambda p: (-p[0], p[1]))
        ranking[query] = [doc for _, doc in pairs]
        scores[query] = [score for score, _ in pairs]
    return ranking, scores


def read_provenance(path: str | Path) -> dict:
    return read_json(path, "run provenance")


def run_files(path: str | Path) -> dict[str, Path]:
    """The files of the run that ``path`` names (any of its files, or the stem)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in RUN_SUFFIXES else path
    found = {s: stem.with_name(stem.name + s) for s in RUN_SUFFIXES if stem.with_name(stem.name + s).is_file()}
    if path.suffix in RUN_SUFFIXES and not path.is_file():
        raise BadInput(path, None, "file not found")
    if ".csv" not in found and ".trec" not in found:
        raise BadInput(path, None, "no run here: expected NAME.csv or NAME.trec")
    return found


def load_run(path: str | Path, strict: bool = False) -> Run:
    """Load a run from any of its files (or its stem); the name is the file name without suffix."""
    files = run_files(path)
    any_file = next(iter(files.values()))
    name = any_file.stem
    warnings: list[str] = []
    submission = read_submission(files[".csv"], strict, warnings) if ".csv" in files else None
    ranking: dict[str, list[str]]
    scores = None
    if ".trec" in files:
        ranking, scores = read_trec(files[".trec"])
        if submission is not None and set(submission) != set(ranking):
            warnings.append(f"{name}: the .csv and .trec files cover different queries; the .csv is scored")
    else:
        assert submission is not None
        ranking = submission
    provenance = read_provenance(files[".json"]) if ".json" in files else {}
    return Run(name=name, ranking=ranking, scores=scores, provenance=provenance, warnings=warnings, submission=submission)


def expand_run_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files and folders to the run stems they hold (a folder gives every run in it), sorted, unique."""
    stems: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".trec") and not p.name.startswith("."))
            if not members:
                raise BadInput(path, None, "folder holds no run (.csv or .trec)")
            for member in members:
                stems.setdefault(str(member.with_suffix("")), member.with_suffix(""))
        else:
            run_files(path)  # raises when there is no run
            stem = path.with_suffix("") if path.suffix in RUN_SUFFIXES else path
            stems.setdefault(str(stem), stem)
    return [stems[k] for k in sorted(stems)]


# ---------------------------------------------------------------- writing


def _score_text(score: float) -> str:
    return f"{score:.8g}"


def order_by_score(ids: Sequence[str], scores: Sequence[float]) -> tuple[list[str], list[float]]:
    """Sort best first by the score as written (8 significant digits), equal scores by ID."""
    rounded = [float(_score_text(float(s))) for s in scores]
    pairs = sorted(zip(rounded, ids), key=lambda p: (-p[0], p[1]))
    return [d for _, d in pairs], [s for s, _ in pairs]


def write_run(
    out_dir: str | Path,
    name: str,
    ranking: Mapping[str, Sequence[str]],
    scores: Mapping[str, Sequence[float]] | None = None,
    provenance: Mapping | None = None,
    depth: int = 100,
) -> dict[str, Path]:
    """Write ``NAME.csv`` (top 7), ``NAME.trec`` (top ``depth``, when scores are given) and ``NAME.json``.

    With scores, each list is re-sorted by (score desc, ID) so ties never depend on
    the producer. Returns the written paths by suffix.
    """
    check_id(name)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    ordered: dict[str, tuple[list[str], list[float] | None]] = {}
    for query in sorted(ranking):
        ids = list(ranking[query])
        if len(set(ids)) != len(ids):
            raise ValueError(f"run {name}: query {query} repeats an ID")
        if scores is not None:
            ids, sc = order_by_score(ids, scores[query])
            ordered[query] = (ids[:depth], sc[:depth])
        else:
            ordered[query] = (ids, None)
    csv_lines = [",".join([q, *ids[:SUBMISSION_DEPTH]]) for q, (ids, _) in ordered.items()]
    written[".csv"] = out_dir / f"{name}.csv"
    write_text_atomic(written[".csv"], "\n".join(csv_lines) + "\n")
    if scores is not None:
        trec_lines = [
            f"{q} Q0 {doc} {rank} {_score_text(s)} {name}"
            for q, (ids, sc) in ordered.items()
            for rank, (doc, s) in enumerate(zip(ids, sc), start=1)
        ]
        written[".trec"] = out_dir / f"{name}.trec"
        write_text_atomic(written[".trec"], "\n".join(trec_lines) + "\n")
    if provenance is not None:
        written[".json"] = out_dir / f"{name}.json"
        write_json_atomic(written[".json"], dict(provenance))
    return written


def provenance(
    name: str,
    method: str,
    params: Mapping,
    inputs: Sequence[str | Path] = (),
    stage_seconds: Mapping[str, float] | None = None,
    summary: str | None = None,
) -> dict:
    """The JSON provenance of a run (DESIGN.md "Runs"): inputs are hashed here."""
    return {
        "run": name,
        "method": method,
        "summary": summary or method,
        "params": dict(params),
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs if Path(p).is_file()],
        "command": " ".join(sys.argv),
        "bpcr_version": __version__,
        "seconds": {k: round(v, 3) for k, v in (stage_seconds or {}).items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
