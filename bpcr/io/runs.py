"""Runs: the challenge submission CSV, the TREC deep run and the JSON provenance
(DESIGN.md, "Runs").

A run ``NAME`` is up to three files sharing a name: ``NAME.csv`` (7 IDs per
query, no header), ``NAME.trec`` (``qid Q0 docid rank score tag``, deep, with
scores) and ``NAME.json`` (provenance). Readers tolerate what participants send
(spaces after commas, BOM, CRLF, a trailing comma); fewer than 7 predictions and
repeated IDs are warnings, more than 7 is truncated with a warning. Under
``strict`` every tolerated problem is an error naming its line (see
:func:`read_submission`, :func:`read_trec`). Numbers are ASCII decimal, as
trec_eval reads them. Writers are deterministic: queries sorted, equal scores
broken by ID.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from bpcr import __version__
from bpcr.errors import BadInput
from bpcr.io.fileio import json_text, portable_path, recover_folder, sha256_file, write_group
from bpcr.io.folders import check_output_file, check_output_folder
from bpcr.io.ids import check_id, check_name
from bpcr.io.textio import LineReader, check_regular, exists_as_input, parse_float, parse_int, read_json

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
    files: dict[str, Path] = field(default_factory=dict)  # the files read, by suffix

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


def _refuse_strict(path: Path, line: int | None, problem: str) -> BadInput:
    return BadInput(path, line, f"{problem}; tolerated, but refused under --strict")


def _check_line_ends(path: Path, reader: LineReader) -> None:
    """Under strict: a BOM, CRLF or CR line ends are departures from the format too."""
    if reader.bom:
        raise _refuse_strict(path, 1, "UTF-8 byte order mark at the start of the file")
    if reader.first_crlf is not None:
        raise _refuse_strict(path, reader.first_crlf, "CRLF line end")
    if reader.first_cr is not None:
        raise _refuse_strict(path, reader.first_cr, "CR line end")


def read_submission(path: str | Path, strict: bool = False, warnings: list[str] | None = None,
                    exact_depth: bool = False) -> dict[str, list[str]]:
    """Read a challenge submission CSV into ``{query_id: [up to 7 IDs]}``.

    Tolerated, with a warning where it changes what is scored: spaces around
    commas, one trailing comma, blank lines, a BOM, CRLF line ends, lines not
    sorted by query ID, fewer than 7 predictions, repeated predictions (they
    count once) and more than 7 (truncated). Under ``strict`` each of them is
    an error naming its line, except fewer than 7, which is an error only with
    ``exact_depth`` too (the scorer's rule; a fusion input may be shorter).
    """
    path = Path(path)
    warnings = warnings if warnings is not None else []
    reader = LineReader(path, "submission")
    out: dict[str, list[str]] = {}
    short = dup = long = 0
    previous: str | None = None
    for number, line in reader:
        if strict:
            _check_line_ends(path, reader)
        if line.strip() == "":
            if strict:
                raise _refuse_strict(path, number, "blank line")
            continue
        raw_cells = line.split(",")
        cells = [c.strip() for c in raw_cells]
        if strict and cells != raw_cells:
            raise _refuse_strict(path, number, "spaces around commas")
        if len(cells) > 1 and cells[-1] == "":
            if strict:
                raise _refuse_strict(path, number, "trailing comma")
            cells.pop()  # one trailing comma
        query = check_id(cells[0], path, number)
        if query in out:
            raise BadInput(path, number, f"query {query!r} listed twice")
        if strict and previous is not None and query < previous:
            raise _refuse_strict(path, number, f"lines not sorted by query ID: {query!r} comes after {previous!r}")
        previous = query
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
            if strict and exact_depth:
                raise _refuse_strict(path, number, f"{len(predictions)} predictions for query {query!r}, "
                                                   f"the challenge wants exactly {SUBMISSION_DEPTH}")
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


# trec_eval splits on C's ASCII white space; str.split alone would also split on Unicode spaces.
_TREC_FIELDS = re.compile(r"[ \t]+")


def read_trec(path: str | Path, strict: bool = False) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Read a TREC run; each query's list is ordered by score (higher first), ties by ID.

    Ranks and scores are ASCII decimal numbers, as trec_eval reads them; the
    ranks in the file are checked (integers from 1) but the order is the
    scores', as in trec_eval. Under ``strict`` the file must also be what the
    kit writes: no blank lines, BOM or CR line ends, ``Q0`` in column 2, and
    each query's ranks 1, 2, 3, ... in file order with scores not increasing.
    """
    path = Path(path)
    rows: dict[str, list[tuple[float, str]]] = {}
    seen: dict[str, set[str]] = {}
    reader = LineReader(path, "trec")
    for number, line in reader:
        if strict:
            _check_line_ends(path, reader)
        stripped = line.strip(" \t")
        if stripped == "":
            if strict:
                raise _refuse_strict(path, number, "blank line")
            continue
        cells = stripped.split() if stripped.isascii() else _TREC_FIELDS.split(stripped)
        if len(cells) != 6:
            raise BadInput(path, number, f"expected 6 columns 'qid Q0 docid rank score tag', found {len(cells)}")
        query = check_id(cells[0], path, number)
        doc = check_id(cells[2], path, number)
        text = cells[3]
        rank = int(text) if text.isdigit() and text.isascii() and len(text) <= 18 else parse_int(text, "rank", path, number)
        if rank < 1:
            raise BadInput(path, number, f"rank {rank} is below 1")
        score = parse_float(cells[4], "score", path, number)
        if doc in seen.setdefault(query, set()):
            raise BadInput(path, number, f"document {doc!r} listed twice for query {query!r}")
        seen[query].add(doc)
        pairs = rows.setdefault(query, [])
        if strict:
            if cells[1] != "Q0":
                raise _refuse_strict(path, number, f"column 2 is {cells[1]!r}, not 'Q0'")
            if rank != len(pairs) + 1:
                raise _refuse_strict(path, number, f"rank {rank} where query {query!r} is at rank {len(pairs) + 1}")
            if pairs and score > pairs[-1][0]:
                raise _refuse_strict(path, number, f"score {cells[4]} is above the score at rank {rank - 1}")
        pairs.append((score, doc))
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


_RUN_FILE_KINDS = {".csv": "submission", ".trec": "trec", ".json": "json"}  # textio.LIMITS by suffix


def run_files(path: str | Path) -> dict[str, Path]:
    """The files of the run that ``path`` names (any of its files, or the stem).

    A run's file that is there but is not a regular file (a folder, a FIFO) is
    returned all the same, so that its reader refuses it rather than the run
    being read without it.
    """
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in RUN_SUFFIXES else path
    if path.suffix in RUN_SUFFIXES:
        check_regular(path, _RUN_FILE_KINDS[path.suffix])
    found = {s: stem.with_name(stem.name + s) for s in RUN_SUFFIXES if exists_as_input(stem.with_name(stem.name + s))}
    if ".csv" not in found and ".trec" not in found:
        raise BadInput(path, None, "no run here: expected NAME.csv or NAME.trec")
    return found


def load_run(path: str | Path, strict: bool = False, exact_depth: bool = False) -> Run:
    """Load a run from any of its files (or its stem); the name is the file name without suffix.

    ``strict`` and ``exact_depth`` as in :func:`read_submission`; under
    ``strict`` a ``.csv`` and ``.trec`` that answer different queries are an
    error too, and with ``exact_depth`` a run with only a ``.trec`` must rank
    at least 7 documents per query.
    """
    recover_folder(Path(path).parent)  # a run write cut short by a kill is completed first: old run or new
    files = run_files(path)
    any_file = next(iter(files.values()))
    name = any_file.stem
    warnings: list[str] = []
    submission = read_submission(files[".csv"], strict, warnings, exact_depth) if ".csv" in files else None
    ranking: dict[str, list[str]]
    scores = None
    if ".trec" in files:
        ranking, scores = read_trec(files[".trec"], strict)
        if submission is not None and set(submission) != set(ranking):
            if strict:
                odd = sorted(set(submission) ^ set(ranking))[0]
                raise _refuse_strict(files[".trec"], None, f"answers other queries than {files['.csv'].name} "
                                                           f"(e.g. {odd!r} is in only one of them)")
            warnings.append(f"{name}: the .csv and .trec files cover different queries; the .csv is scored")
        if submission is None and strict and exact_depth:
            short = sorted(q for q, ids in ranking.items() if len(ids) < SUBMISSION_DEPTH)
            if short:
                raise _refuse_strict(files[".trec"], None, f"query {short[0]!r} has {len(ranking[short[0]])} results, "
                                                           f"the challenge wants {SUBMISSION_DEPTH}")
    else:
        assert submission is not None
        ranking = submission
    provenance = read_provenance(files[".json"]) if ".json" in files else {}
    return Run(name=name, ranking=ranking, scores=scores, provenance=provenance, warnings=warnings,
               submission=submission, files=files)


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


def check_run_output(out: str | Path, name: str, option: str = "--out") -> Path:
    """Refuse, before any work, a run that cannot be written: a bad ``--name``, or ``out``
    or one of ``NAME.csv``/``NAME.trec``/``NAME.json`` that is not a writable folder / file."""
    check_name(name)
    folder = check_output_folder(out, option)
    for suffix in RUN_SUFFIXES:
        check_output_file(folder / f"{name}{suffix}", option)
    return folder


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
    the producer. The files are written as one group (:func:`bpcr.io.fileio.write_group`):
    a reader sees the old run or the new one, never a mix, and a ``.trec`` or
    ``.json`` left from an earlier run of this name that this one lacks is removed
    with it. Returns the written paths by suffix.
    """
    check_name(name)
    out_dir = Path(out_dir)
    files: dict[str, str | None] = {}
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
    files[".csv"] = "\n".join(csv_lines) + "\n"
    files[".trec"] = None
    if scores is not None:
        trec_lines = [
            f"{q} Q0 {doc} {rank} {_score_text(s)} {name}"
            for q, (ids, sc) in ordered.items()
            for rank, (doc, s) in enumerate(zip(ids, sc), start=1)
        ]
        files[".trec"] = "\n".join(trec_lines) + "\n"
    files[".json"] = None if provenance is None else json_text(dict(provenance))
    write_group({out_dir / f"{name}{suffix}": text for suffix, text in files.items()})
    return {suffix: out_dir / f"{name}{suffix}" for suffix, text in files.items() if text is not None}


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
        "inputs": [{"path": portable_path(p), "sha256": sha256_file(p)} for p in inputs if Path(p).is_file()],
        "command": " ".join(sys.argv),
        "bpcr_version": __version__,
        "seconds": {k: round(v, 3) for k, v in (stage_seconds or {}).items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
