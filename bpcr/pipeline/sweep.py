"""`bpcr sweep CONFIG --grid STAGE.KEY=V1,V2,...`: choose a setting on the public half.

Runs a pipeline config at every point of a grid of options and picks the point
whose target run scores best on the *public* half of the queries; the private
half is reported beside it, never used to choose (``bpcr.evaluation.split``). Every point
writes its runs into its own folder under ``WORK/sweep/``, and the pipeline's
stage skipping reuses what the points share (features, indexes, caches), so a
sweep over a late stage costs only that stage. The chosen config is written
as TOML.

A grid axis is ``STAGE.KEY=V1,V2`` (every entry of that stage, e.g.
``rerank.max_keypoints=250,500,1000``) or ``STAGE.NAME.KEY=...`` (the entry
named NAME of an array of stages); values are read as TOML scalars (``250``,
``0.5``, ``true``, ``"text"``) or else as text. Several axes make their
cartesian product. Ties on the public score go to the earlier point, so list
the current default first.

One split everywhere: the public half is that of the config's ``[score]``
``split_seed`` / ``public_share`` (the split its leaderboard and its tuned
ensembles use), or of the ``split_seed`` / ``public_share`` given here, which
are then written into every point's and the chosen config's ``[score]``; a
given split that differs from one the config sets is refused.

The choice is recorded where the leaderboard reads it: the chosen config's
``[score] chosen_on`` lists the public queries the point was chosen on, the
split, and the runs the swept settings reach (those whose stage key differs
between points), so ``bpcr run`` of the chosen config stars their public and
all-queries figures (:mod:`bpcr.evaluation.chosen`); ``sweep.json`` holds the
same record, and ``sweep.md`` stars the chosen point's public and all figures.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bpcr.errors import BadInput
from bpcr.io.fileio import write_json_atomic, write_text_atomic
from bpcr.io.folders import check_output_file
from bpcr.progress import Progress
from bpcr.pipeline.options import SweepOptions, check_sweep_options
from bpcr.evaluation.split import DEFAULT_PUBLIC_SHARE, DEFAULT_SEED, QuerySplit

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class Axis:
    """One grid axis: where in the config (stage, entry name or None, key) and the values to try."""

    stage: str
    entry: str | None
    key: str
    values: tuple

    @property
    def label(self) -> str:
        return ".".join(p for p in (self.stage, self.entry, self.key) if p)


@dataclass
class SweepPoint:
    settings: dict[str, Any]
    folder: Path
    public: float | None = None
    private: float | None = None
    all: float | None = None
    runs: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    keys: dict[str, str] = field(default_factory=dict)  # each run's stage key: which runs the settings reach


@dataclass
class SweepResult:
    target: str
    points: list[SweepPoint]
    chosen: int
    config_out: Path
    table: Path
    split: QuerySplit = field(default_factory=QuerySplit)
    chosen_on: dict | None = None  # the record written to the chosen config's [score] chosen_on


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_axis(spec: str) -> Axis:
    """``"rerank.max_keypoints=250,500"`` -> Axis("rerank", None, "max_keypoints", (250, 500))."""
    where, sep, values = spec.partition("=")
    parts = where.strip().split(".")
    if not sep or len(parts) not in (2, 3) or not all(parts) or not values.strip():
        raise BadInput(None, None, f"--grid {spec!r}: expected STAGE.KEY=V1,V2,... or STAGE.NAME.KEY=V1,V2,...")
    parsed = tuple(_value(v.strip()) for v in values.split(","))
    if len(set(map(json.dumps, parsed))) != len(parsed):
        raise BadInput(None, None, f"--grid {spec!r}: a value is listed twice")
    stage, key = parts[0], parts[-1]
    return Axis(stage, parts[1] if len(parts) == 3 else None, key, parsed)


def apply_point(config: dict, axes: Sequence[Axis], values: Sequence[Any]) -> dict:
    """A copy of ``config`` with each axis set to its value; BadInput when an axis names nothing."""
    config = json.loads(json.dumps(config))
    for axis, value in zip(axes, values):
        table = config.get(axis.stage)
        if isinstance(table, dict) and axis.entry is None:
            table[axis.key] = value
            continue
        if not isinstance(table, list):
            raise BadInput(None, None, f"--grid {axis.label}: the config has no [{axis.stage}] or [[{axis.stage}]]")
        targets = [e for e in table if axis.entry is None or e.get("name") == axis.entry]
        if not targets:
            raise BadInput(None, None, f"--grid {axis.label}: no [[{axis.stage}]] named {axis.entry!r}")
        for entry in targets:
            entry[axis.key] = value
    return config


def _point_name(index: int) -> str:
    return f"point-{index:03d}"


MAX_POINTS = SweepOptions.max_points  # grid points a sweep runs unless told otherwise: each is a whole pipeline run


def sweep(
    config_path: str | Path,
    grid: Sequence[str],
    options: SweepOptions = SweepOptions(),
    *,
    config_out: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> SweepResult:
    """Run ``config_path`` at every point of ``grid`` (its axes); choose the point whose run ``options.target`` is
    best on the public half.

    ``options`` (:class:`bpcr.pipeline.options.SweepOptions`, where each is declared): ``target``, the run the
    choice is made on (default: the config's last run); ``split_seed`` / ``public_share``, the split (default: the
    config's ``[score]``, as the module docstring says); a grid of more than ``max_points`` points is refused.
    Writes ``WORK/sweep/sweep.md`` and ``sweep.json`` (every point's public,
    private and all-queries mAP@7 for every run) and the chosen config to
    ``config_out`` (default ``WORK/sweep/chosen.toml``) with what it was chosen on in its ``[score] chosen_on``.
    Before anything is written or run, ``config_out`` is
    checked and every point's whole config is validated: a bad point leaves no ``point-*`` folder.
    """
    config_path = Path(config_path)
    check_sweep_options(options)
    target = options.target
    axes, base, split = _grid(config_path, grid, options.split_seed, options.public_share, options.max_points)
    sweep_dir = Path(base.get("work", "work")) / "sweep"
    out = check_output_file(Path(config_out) if config_out is not None else sweep_dir / "chosen.toml", "--out")
    points, configs = _points(config_path, base, axes, sweep_dir)
    target, gt_path = _run_points(config_path, points, configs, target, split, log, progress)
    if any(p.public is None for p in points):
        raise BadInput(None, None, "the public half holds no query: nothing to choose on")
    chosen = max(range(len(points)), key=lambda i: (points[i].public, -i))
    record = _write_chosen(out, base, axes, grid, target, points, chosen, split, gt_path)
    table = sweep_dir / "sweep.md"
    write_text_atomic(table, render_sweep(target, axes, points, chosen, split))
    write_json_atomic(sweep_dir / "sweep.json", {
        "target": target, "axes": [{"label": a.label, "values": list(a.values)} for a in axes],
        "split": {"seed": split.seed, "public_share": split.public_share}, "chosen": chosen,
        "chosen_by": "public mAP@7 of the target run; ties to the earlier point",
        "chosen_on": record,
        "in_sample": "the chosen point's public and all-queries figures of the runs in chosen_on.runs",
        "points": [{"settings": p.settings, "folder": str(p.folder), "public": p.public, "private": p.private,
                    "all": p.all, "runs": p.runs, "seconds": round(p.seconds, 2)} for p in points]})
    return SweepResult(target, points, chosen, out, table, split, record)


def _grid(config_path: Path, grid: Sequence[str], split_seed: int | None, public_share: float | None,
          max_points: int) -> tuple[list[Axis], dict, QuerySplit]:
    """The axes (their product at most ``max_points`` points, counted before any is made), the config, the split."""
    from bpcr.pipeline.config import load_config

    if not grid:
        raise BadInput(None, None, "give at least one --grid STAGE.KEY=V1,V2,...")
    axes = [parse_axis(g) for g in grid]
    count = math.prod(len(a.values) for a in axes)
    if count > max_points:
        raise BadInput(None, None, f"the grid has {count:,} points, more than --max-points {max_points}: each point "
                                   "is a whole pipeline run; narrow the grid or raise --max-points")
    base, split = _one_split(config_path, load_config(config_path), split_seed, public_share)
    return axes, base, split


def _points(config_path: Path, base: dict, axes: Sequence[Axis], sweep_dir: Path
            ) -> tuple[list[SweepPoint], list[dict]]:
    """Every point's settings, folder and whole config, each validated as ``bpcr run`` would; nothing is written."""
    from bpcr.pipeline.config import validate_config

    points, configs = [], []
    for index, values in enumerate(itertools.product(*(a.values for a in axes))):
        config = apply_point(base, axes, values)
        folder = sweep_dir / _point_name(index)
        config["submissions"] = str(folder / "submissions")
        config["leaderboard"] = str(folder / "leaderboard.md")
        validate_config(folder / "config.toml", config)
        points.append(SweepPoint({a.label: v for a, v in zip(axes, values)}, folder))
        configs.append(config)
    return points, configs


def _run_points(config_path: Path, points: list[SweepPoint], configs: list[dict], target: str | None,
                split: QuerySplit, log: Callable[[str], None], progress: Progress | None) -> tuple[str, Any]:
    """Write each point's config and run it; score its runs on the split. Returns the target run's name and
    the ground truth scored against."""
    import tomli_w

    gt_path: Any = None
    created: list[Path] = []  # the point folders this call made: removed again if the sweep fails
    try:
        for point, config in zip(points, configs):
            if not point.folder.exists():
                created.append(point.folder)
            point.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(point.folder / "config.toml", tomli_w.dumps(config))
            target, gt_path = _run_point(config_path, point, target, split, log, progress)
    except BaseException:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return target, gt_path


def _run_point(config_path: Path, point: SweepPoint, target: str | None, split: QuerySplit,
               log: Callable[[str], None], progress: Progress | None) -> tuple[str, Any]:
    """Run one point's config and score its runs on the split; the target run's name and the ground truth."""
    from bpcr.evaluation.options import ScoreOptions
    from bpcr.evaluation.score import score_runs
    from bpcr.pipeline.runner import Pipeline

    pipeline = Pipeline(point.folder / "config.toml", log=log, progress=progress)
    log(f"[sweep] {point.folder.name}: " + ", ".join(f"{k}={v!r}" for k, v in point.settings.items()))
    started = time.perf_counter()
    result = pipeline.run()
    point.seconds = time.perf_counter() - started
    if pipeline.gt is None or not result.runs:
        raise BadInput(config_path, None, "a sweep needs ground truth and at least one run in the config")
    names = [r.stem for r in result.runs]
    target = target or names[-1]
    if target not in names:
        raise BadInput(None, None, f"--run {target!r} is not a run of this config; runs: {', '.join(names)}")
    options = ScoreOptions(split_seed=split.seed, public_share=split.public_share)
    for s in score_runs(result.runs, pipeline.gt, options):
        point.runs[s.name] = {"public": s.halves["public"].map7, "private": s.halves["private"].map7,
                              "all": s.map7}
    point.public, point.private, point.all = (point.runs[target][h] for h in ("public", "private", "all"))
    point.keys = {name: pipeline.keys[f"run:{name}"] for name in names}
    gt_path = pipeline.gt
    return target, gt_path


def _write_chosen(out: Path, base: dict, axes: Sequence[Axis], grid: Sequence[str], target: str,
                  points: Sequence[SweepPoint], chosen: int, split: QuerySplit, gt_path: Any) -> dict | None:
    """The chosen config, with the record of what it was chosen on in its [score] chosen_on; returns the record."""
    import tomli_w

    from bpcr.dataset.gt import read_ground_truth

    chosen_config = apply_point(base, axes, [points[chosen].settings[a.label] for a in axes])
    record = _chosen_on(grid, target, points, chosen, split, gt_path, read_ground_truth(gt_path))
    if record is not None:
        score = chosen_config.setdefault("score", {})
        score["chosen_on"] = [*score.get("chosen_on", []), record]
    header = (f"# Chosen by `bpcr sweep` on the public half of the queries: run {target!r}, "
              + ", ".join(f"{k} = {v!r}" for k, v in points[chosen].settings.items()) + "\n")
    write_text_atomic(out, header + tomli_w.dumps(chosen_config))
    return record


def _one_split(config_path: Path, config: dict, split_seed: int | None, public_share: float | None
               ) -> tuple[dict, QuerySplit]:
    """The split to choose on: the config's [score] one, or the one given, which is then written into the
    config's [score] (so the points' leaderboards and tuned ensembles use it too); a given split that differs
    from one the config sets is refused."""
    score = config.get("score", {})
    given = {"split_seed": split_seed, "public_share": public_share}
    defaults = {"split_seed": DEFAULT_SEED, "public_share": DEFAULT_PUBLIC_SHARE}
    chosen = {}
    for key, value in given.items():
        if value is not None and key in score and score[key] != value:
            raise BadInput(config_path, None, f"--{key.replace('_', '-')} {value} differs from the config's [score] "
                                              f"{key} = {score[key]!r}: the sweep would choose on queries its "
                                              "leaderboard reports as private; give one split")
        chosen[key] = score.get(key, defaults[key]) if value is None else value
    split = QuerySplit(chosen["split_seed"], chosen["public_share"])
    written = {k: v for k, v in chosen.items() if given[k] is not None and v != score.get(k, defaults[k])}
    if written:
        config = json.loads(json.dumps(config))
        config["score"] = {**config.get("score", {}), **written}
    return config, split


def _chosen_on(grid: Sequence[str], target: str, points: Sequence[SweepPoint], chosen: int, split: QuerySplit,
               gt_path: Any, gt: Any) -> dict | None:
    """The ``[score] chosen_on`` record of the choice: the public queries it was made on, the split, and the runs
    whose stage key differs between points (those the swept settings reach); None when no run differs (a single
    point, or settings no run depends on): nothing was chosen."""
    names = list(points[chosen].keys)
    reached = [n for n in names if len({p.keys.get(n) for p in points}) > 1]
    if not reached:
        return None
    settings = ", ".join(f"{k} = {v!r}" for k, v in points[chosen].settings.items())
    return {"what": f"{settings}, chosen by bpcr sweep on run {target!r}'s public mAP@7",
            "by": "bpcr sweep " + " ".join(f"--grid {g}" for g in grid), "ground_truth": str(gt_path),
            "split": split.describe(), "half": "public", "runs": reached, "query_ids": split.half(gt, "public")}


def render_sweep(target: str, axes: Sequence[Axis], points: Sequence[SweepPoint], chosen: int,
                 split: QuerySplit | None = None) -> str:
    """A Markdown table: one row per point, the target run's public (chosen on), private and all mAP@7; the chosen
    point's public and all figures starred (in-sample: the point was chosen on those queries)."""
    split = split or QuerySplit()
    lines = [f"Sweep of run `{target}`: chosen on the public half (marked) of split seed {split.seed} (public share "
             f"{split.public_share}), private half reported only. `*`: in-sample, the chosen point's figures on the "
             "queries it was chosen on.", "",
             "| point | " + " | ".join(a.label for a in axes) + " | public mAP@7 | private mAP@7 | all mAP@7 | |",
             "|---|" + "---:|" * len(axes) + "---:|---:|---:|---|"]
    for i, p in enumerate(points):
        star = " *" if i == chosen else ""
        cells = [p.folder.name, *(str(p.settings[a.label]) for a in axes),
                 *(f"{v:.4f}{mark}" if v is not None else "—"
                   for v, mark in ((p.public, star), (p.private, ""), (p.all, star))),
                 "chosen" if i == chosen else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
