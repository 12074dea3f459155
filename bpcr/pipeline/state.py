"""What every stage method of a pipeline reads and keeps: the config, the work folder, the stage keys and stamps.

:class:`PipelineState` owns the bookkeeping; :class:`bpcr.pipeline.stages.StageRunners` adds the stage methods
from ``train`` to ``ensemble`` on top of it, and :class:`bpcr.pipeline.runner.Pipeline` the rest (prepare,
score, report, the order of the stages, freezing for ``bpcr predict``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from bpcr.errors import BadInput
from bpcr.io.fileio import write_json_atomic
from bpcr.pipeline.config import load_config
from bpcr.pipeline.configtypes import check_features, entry_name, feature_sources
from bpcr.pipeline.runconfig import RUN_TABLES
from bpcr.pipeline.standin import StandIn, apply_stand_in
from bpcr.progress import Progress


@dataclass
class StageTime:
    stage: str
    name: str
    seconds: float
    skipped: bool


@dataclass
class Frozen:
    """Where a frozen pipeline (:meth:`bpcr.pipeline.runner.Pipeline.freeze`) reads its queries and writes their outputs."""

    queries: Path  # the new queries' manifest
    folder: Path  # query stores under folder/features, runs under folder/submissions
    runs: Path  # the config's own runs folder, whose tuned ensemble weights are reused
    checking: bool = False  # in Pipeline.check_frozen: no step runs


@dataclass
class PipelineResult:
    runs: list[Path] = field(default_factory=list)
    times: list[StageTime] = field(default_factory=list)
    leaderboard: Path | None = None


class PipelineState:
    """A config being run: its tables, folders and the keys of the stages run so far."""

    def __init__(self, config_path: str | Path, force: bool = False, log: Callable[[str], None] = print,
                 progress: Progress | None = None, stand_in: bool = False) -> None:
        self.config_path = Path(config_path)
        self.config = load_config(self.config_path)
        # --stand-in: the config's [offline] networks in place of the backbones they map (bpcr.pipeline.standin).
        self.stand_in: StandIn | None = None
        if stand_in:
            self.config, self.stand_in = apply_stand_in(self.config_path, self.config)
        # Relative paths in a config are relative to the current folder, like the CLI's.
        self.work = Path(self.config.get("work", "work"))
        self.submissions = Path(self.config.get("submissions", "submissions"))
        self.leaderboard = Path(self.config.get("leaderboard", "leaderboard.md"))
        self.force = force
        self.log = log
        self.progress = progress
        self.keys: dict[str, str] = {}
        self.result = PipelineResult()
        self.gt: Path | None = None
        self.frozen: Frozen | None = None
        self.scores: list | None = None  # bpcr.evaluation.score.RunScore per run, once scored
        self.scored_gt: Path | None = None

    # ------------------------------------------------------------ bookkeeping

    def _stamp(self, stage: str, name: str) -> Path:
        return self.work / ".stamps" / stage / f"{name}.json"

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    def _step(self, stage: str, name: str, key: str, outputs: list[Path], action: Callable[[], Any],
              database: bool = False) -> None:
        """Run ``action`` unless its stamp matches ``key`` and every output exists.

        Frozen (:meth:`bpcr.pipeline.runner.Pipeline.freeze`), a ``database`` artefact is reused when up to
        date and refused otherwise, and a query-side step always runs and is
        not stamped (the stamps describe the config's own queries).
        """
        stamp = self._stamp(stage, name)
        up_to_date = (not self.force or self.frozen is not None) and stamp.is_file() and \
            all(p.exists() for p in outputs) and _stamped(stamp, key, outputs)
        if self.frozen is not None and database and not up_to_date:
            missing = next((p for p in outputs if not p.exists()), None)
            why = f"{missing} is missing" if missing is not None else "made with other options or data"
            raise BadInput(self.config_path, None, f"[{stage}] {name}: {why}; run `bpcr run {self.config_path}` first")
        if self.frozen is not None and (database or self.frozen.checking):
            if not self.frozen.checking:
                self.log(f"[{stage}] {name}: reused")
                self.result.times.append(StageTime(stage, name, 0.0, True))
            return
        if self.frozen is None and up_to_date:
            self.log(f"[{stage}] {name}: up to date, skipped")
            self.result.times.append(StageTime(stage, name, 0.0, True))
            return
        self.log(f"[{stage}] {name}: running")
        start = time.perf_counter()
        action()
        if self.stand_in is not None and stage in RUN_TABLES:
            self.stand_in.mark_run(name, self.run_path(name))  # before any later stage reads the run
        seconds = time.perf_counter() - start
        if self.frozen is None:
            write_json_atomic(stamp, {"key": key, "seconds": round(seconds, 2), "outputs": [str(p) for p in outputs]})
        self.result.times.append(StageTime(stage, name, seconds, False))
        self.log(f"[{stage}] {name}: done in {seconds:.1f} s")

    def _run_name(self, table: str, entry: Mapping[str, Any]) -> str:
        return entry_name(self.config_path, table, entry)

    def _features(self, table: str, spec: str) -> tuple[str, str]:
        """``"<extract name>/<pooling>"`` -> (extract name, pooling), checked against the config."""
        check_features(self.config_path, table, spec, feature_sources(self.config))
        extract_name, _, pooling = spec.partition("/")
        return extract_name, pooling

    def features_dir(self, extract_name: str, which: str) -> Path:
        """An [[extract]]'s (or a [[whiten]]'s, a [[combine]]'s) stores of one set (frozen, the query stores are the new queries')."""
        root = self.frozen.folder if self.frozen is not None and which == "queries" else self.work
        return root / "features" / extract_name / which

    def store(self, extract_name: str, which: str, pooling: str) -> Path:
        return self.features_dir(extract_name, which) / pooling

    def run_path(self, name: str) -> Path:
        return self.submissions / f"{name}.csv"


def _stamped(stamp: Path, key: str, outputs: list[Path]) -> bool:
    """Whether ``stamp`` says these ``outputs`` were made with ``key``: two configs sharing a work folder may run
    a stage of one name into different folders (``submissions`` and ``submissions-train``), and one's stamp
    must not vouch for the other's files."""
    record = json.loads(stamp.read_text())
    return record.get("key") == key and record.get("outputs", [str(p) for p in outputs]) == [str(p) for p in outputs]
