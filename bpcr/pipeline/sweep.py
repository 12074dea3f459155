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
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bpcr.errors import BadInput
from bpcr.io.fileio import write_json_atomic, write_text_atomic
from bpcr.progress import Progress
from bpcr.evaluation.split import DEFAULT_PUBLIC_SHARE, DEFAULT_SEED

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


@dataclass
class SweepResult:
    target: str
    points: list[SweepPoint]
    chosen: int
    config_out: Path
    table: Path


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


def sweep(
    config_path: str | Path,
    grid: Sequence[str],
    target: str | None = None,
    config_out: str | Path | None = None,
    split_seed: int = DEFAULT_SEED,
    public_share: float = DEFAULT_PUBLIC_SHARE,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> SweepResult:
    """Run ``config_path`` at every grid point; choose the point whose run ``target`` is best on the public half.

    ``target``: the run the choice is made on (default: the config's last run).
    Writes ``WORK/sweep/sweep.md`` and ``sweep.json`` (every point's public,
    private and all-queries mAP@7 for every run) and the chosen config to
    ``config_out`` (default ``WORK/sweep/chosen.toml``).
    """
    import tomli_w

    from bpcr.pipeline.config import load_config
    from bpcr.pipeline.runner import Pipeline
    from bpcr.evaluation.score import score_runs

    config_path = Path(config_path)
    if not grid:
        raise BadInput(None, None, "give at least one --grid STAGE.KEY=V1,V2,...")
    axes = [parse_axis(g) for g in grid]
    base = load_config(config_path)
    work = Path(base.get("work", "work"))
    sweep_dir = work / "sweep"
    points: list[SweepPoint] = []
    for index, values in enumerate(itertools.product(*(a.values for a in axes))):
        config = apply_point(base, axes, values)
        folder = sweep_dir / _point_name(index)
        config["submissions"] = str(folder / "submissions")
        config["leaderboard"] = str(folder / "leaderboard.md")
        points.append(SweepPoint({a.label: v for a, v in zip(axes, values)}, folder))
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "config.toml", tomli_w.dumps(config))
    # Validate every point before any runs: a bad value should not cost the points before it.
    pipelines = [Pipeline(p.folder / "config.toml", log=log, progress=progress) for p in points]
    for pipeline in pipelines:
        pipeline.validate()
    for point, pipeline in zip(points, pipelines):
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
        for s in score_runs(result.runs, pipeline.gt, split_seed=split_seed, public_share=public_share):
            point.runs[s.name] = {"public": s.halves["public"].map7, "private": s.halves["private"].map7,
                                  "all": s.map7}
        point.public, point.private, point.all = (point.runs[target][h] for h in ("public", "private", "all"))
    if any(p.public is None for p in points):
        raise BadInput(None, None, "the public half holds no query: nothing to choose on")
    chosen = max(range(len(points)), key=lambda i: (points[i].public, -i))
    out = Path(config_out) if config_out is not None else sweep_dir / "chosen.toml"
    chosen_config = apply_point(base, axes, [points[chosen].settings[a.label] for a in axes])
    header = (f"# Chosen by `bpcr sweep` on the public half of the queries: run {target!r}, "
              + ", ".join(f"{k} = {v!r}" for k, v in points[chosen].settings.items()) + "\n")
    write_text_atomic(out, header + tomli_w.dumps(chosen_config))
    table = sweep_dir / "sweep.md"
    write_text_atomic(table, render_sweep(target, axes, points, chosen))
    write_json_atomic(sweep_dir / "sweep.json", {
        "target": target, "axes": [{"label": a.label, "values": list(a.values)} for a in axes],
        "split": {"seed": split_seed, "public_share": public_share}, "chosen": chosen,
        "chosen_by": "public mAP@7 of the target run; ties to the earlier point",
        "points": [{"settings": p.settings, "folder": str(p.folder), "public": p.public, "private": p.private,
                    "all": p.all, "runs": p.runs, "seconds": round(p.seconds, 2)} for p in points]})
    return SweepResult(target, points, chosen, out, table)


def render_sweep(target: str, axes: Sequence[Axis], points: Sequence[SweepPoint], chosen: int) -> str:
    """A Markdown table: one row per point, the target run's public (chosen on), private and all mAP@7."""
    lines = [f"Sweep of run `{target}`: chosen on the public half (marked), private half reported only.", "",
             "| point | " + " | ".join(a.label for a in axes) + " | public mAP@7 | private mAP@7 | all mAP@7 | |",
             "|---|" + "---:|" * len(axes) + "---:|---:|---:|---|"]
    for i, p in enumerate(points):
        cells = [p.folder.name, *(str(p.settings[a.label]) for a in axes),
                 *(f"{v:.4f}" if v is not None else "—" for v in (p.public, p.private, p.all)),
                 "chosen" if i == chosen else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
