"""Reading a pipeline config (TOML) and checking its shape and types before anything runs.

Every table's keys are the options its stage declares (the stage's options class); the type each key
needs is read from their annotations and the range from their declaration, so a config is checked against
exactly what the stage accepts. Every problem is a BadInput naming the config file, the table
(``[extract lite0] size``) and what was expected (the type checks live in :mod:`bpcr.pipeline.configtypes`,
the tables that make runs are checked in :mod:`bpcr.pipeline.runconfig`).

Beyond the stage functions' own keys, tables refer to each other by name:
``[[search]] features = "<extract name>/<pooling>"``, ``input``/``inputs`` name
runs, ``[[extract]] weights = "train:<train name>"`` extracts with the weights
a ``[[train]]`` writes, a ``[[whiten]]`` whitens ``features = "<extract name>/<pooling>"``
and is named in later ``features`` as an extraction is (``"<whiten name>/<pooling>"``),
a ``[[combine]]`` joins ``features = ["<extract or whiten name>/<pooling>", ...]`` and is named
``"<combine name>/combined"``, and ``[report] runs``/``diff`` name runs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from bpcr.pipeline.configtypes import (QUERY_SIDE, QUERY_SIDE_OPTIONS, check_features, check_options, check_value,
                                       entry_name, feature_sources, labelled, shown, train_name, without)
from bpcr.pipeline.runconfig import RUN_TABLES, check_run
from bpcr.errors import BadInput

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Top-level keys: paths, single tables ([prepare]) and arrays of tables ([[extract]]).
PATH_KEYS = ("work", "submissions", "leaderboard")
TABLES = ("prepare", "index", "text_index", "score", "report", "offline")  # offline: bpcr.pipeline.standin
ARRAYS = ("train", "extract", "whiten", "combine", "search", "refine", "rerank", "ensemble")
KNOWN = (*PATH_KEYS, *TABLES, *ARRAYS)

# A config is a few kilobytes; anything far larger is not one, and is not read into memory.
MAX_BYTES = 1 << 20

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def load_config(path: str | Path) -> dict:
    """The config at ``path`` as a dict whose top-level keys are known and of the right shape."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(path, None, "is a folder, not a TOML config file")
    if not path.exists():
        raise BadInput(path, None, "config file not found")
    if not path.is_file():
        raise BadInput(path, None, "not a regular file; a config is a TOML file")
    if path.stat().st_size > MAX_BYTES:
        raise BadInput(path, None, f"{path.stat().st_size:,} bytes: too large for a config (at most {MAX_BYTES:,})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(path, None, "config is not valid UTF-8") from None
    except OSError as exc:
        raise BadInput(path, None, f"cannot read the config: {exc.strerror}") from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib gives lineno only from Python 3.14; before, the place is in the message.
        message = str(exc)
        found = _AT.search(message)
        line = getattr(exc, "lineno", None) or (int(found.group(1)) if found else None)
        column = getattr(exc, "colno", None) or (int(found.group(2)) if found else None)
        reason = _AT.sub("", message)
        raise BadInput(path, line, f"invalid TOML: {reason}" + (f" (column {column})" if column else "")) from None
    unknown = sorted(set(config) - set(KNOWN))
    if unknown:
        raise BadInput(path, None, f"unknown top-level key {unknown[0]!r}; known: {', '.join(sorted(KNOWN))}")
    for key in PATH_KEYS:
        if key in config and (not isinstance(config[key], str) or not config[key]):
            raise BadInput(path, None, f"{key} must be a string (a path), got {shown(config[key])}")
    for key in TABLES:
        if key in config and not isinstance(config[key], dict):
            written = f"[[{key}]]" if _is_array_of_tables(config[key]) else shown(config[key])
            raise BadInput(path, None, f"{key} must be one table, written [{key}]; got {written}")
    for key in ARRAYS:
        if key in config and not _is_array_of_tables(config[key]):
            written = f"one table [{key}]" if isinstance(config[key], dict) else shown(config[key])
            raise BadInput(path, None, f"{key} must be an array of tables, one [[{key}]] per entry; got {written}")
    return config


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


# ---------------------------------------------------------------- the whole config


def validate_config(config_path: Path, config: Mapping[str, Any]) -> None:
    """Check a loaded config whole before any stage runs: option names and types, names, references.

    ``config`` comes from :func:`load_config` (its top-level shape is checked there), or from
    :func:`bpcr.pipeline.standin.apply_stand_in` when ``bpcr run --stand-in`` replaced its backbones.
    """
    path = config_path
    from bpcr.pipeline.standin import check_offline

    has_gt = _check_prepare(path, config)
    check_offline(path, config)
    _check_indexes(path, config)
    trains = _check_trains(path, config)
    _check_whitens(path, config, _check_extracts(path, config, trains))
    extracts = _check_combines(path, config)
    runs: set[str] = set()
    for table in RUN_TABLES:
        for entry in config.get(table, []):
            runs.add(check_run(path, table, entry, extracts, runs, config, has_gt))
    _check_score(path, config.get("score", {}), runs, has_gt)
    if "report" in config:
        _check_report(path, config["report"], runs, has_gt)
        _check_report_out(path, config)


def _check_prepare(path: Path, config: Mapping[str, Any]) -> bool:
    """[prepare]: the demo's options (:class:`bpcr.dataset.options.DemoOptions`) or a dataset's inputs (db, queries,
    descriptions, gt) and options (:class:`~bpcr.dataset.options.PrepareOptions`), within their ranges; returns
    whether the config has ground truth."""
    from bpcr.dataset.options import PRESIZE_FIELDS, DemoOptions, PrepareOptions, PresizeOptions, check_prepare_options
    from bpcr.dataset.prepare import PREPARE_INPUTS, prepare
    from bpcr.options import fields_of

    prep = config.get("prepare", {})
    demo = prep.get("demo", False)
    check_value(path, "prepare", "demo", demo, bool)
    options = without(prep, "demo")
    if demo:
        cls = DemoOptions
    else:
        for required in ("db", "queries"):
            if required not in prep:
                raise BadInput(path, None, f"[prepare] needs {required!r} (or demo = true)")
        cls, inputs = PrepareOptions, {k: v for k, v in options.items() if k in PREPARE_INPUTS}
        options = without(options, *PREPARE_INPUTS)
        accepted = sorted([*PREPARE_INPUTS, *(f.name for f in fields_of(PrepareOptions)), *PRESIZE_FIELDS])
        unknown = next((k for k in options if k not in accepted), None)
        if unknown is not None:
            raise BadInput(path, None, f"[prepare] unknown option {unknown!r}; accepted: {', '.join(accepted)}")
        check_options(path, "prepare", prepare, inputs, {"out", "options", "presize", "progress"})
        # The pre-sized image cache's keys (bpcr.dataset.options.PresizeOptions), checked as the command line's.
        presize = {k: v for k, v in options.items() if k in PRESIZE_FIELDS}
        options = without(options, *PRESIZE_FIELDS)
        check_options(path, "prepare", PresizeOptions, presize, set())
        for key in presize:
            labelled(path, "prepare", lambda: check_prepare_options(PresizeOptions(**{key: presize[key]})), key)
        lone = next((k for k in presize if k != "presize" and not presize.get("presize")), None)
        if lone is not None:
            raise BadInput(path, None, f"[prepare] {lone} needs presize = [SIZE, ...]")
    check_options(path, "prepare", cls, options, set())
    for key in options:  # one at a time, so the message names the key
        labelled(path, "prepare", lambda: check_prepare_options(cls(**{key: options[key]})), key)
    return bool(demo) or "gt" in prep or "gt" in config.get("score", {})


def _check_indexes(path: Path, config: Mapping[str, Any]) -> None:
    """[index] and [text_index]: options of :class:`bpcr.retrieval.options.IndexOptions` and
    :class:`bpcr.text.options.TextIndexOptions` within their ranges."""
    from bpcr.options import check
    from bpcr.retrieval.options import DISTANCES, IndexOptions, check_index_options
    from bpcr.text.options import TextIndexOptions

    index = config.get("index", {})
    check_options(path, "index", IndexOptions, index, set())
    if "metric" in index and index["metric"] not in DISTANCES:  # it names the index folders
        raise BadInput(path, None, f"[index] metric {index['metric']!r} is not one of {', '.join(DISTANCES)}")
    labelled(path, "index", lambda: check_index_options(IndexOptions(**index)))
    text_index = config.get("text_index", {})
    check_options(path, "text_index", TextIndexOptions, text_index, set())
    labelled(path, "text_index", lambda: check(TextIndexOptions(**text_index)))


def _check_trains(path: Path, config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every [[train]]: a name, options of :class:`bpcr.training.options.TrainOptions` within their ranges."""
    from bpcr.training.options import TrainOptions, check_train_options

    trains: dict[str, Mapping[str, Any]] = {}
    for entry in config.get("train", []):
        name = entry_name(path, "train", entry)
        label = f"train {name}"
        if name in trains:
            raise BadInput(path, None, f"two [[train]] are named {name!r}")
        options = without(entry, "name")
        check_options(path, label, TrainOptions, options, set())
        if train_name(options.get("weights")) is not None:
            raise BadInput(path, None, f"[{label}] weights {options['weights']!r}: training starts from bundled, "
                                       "hub, none or a weights file, not from another [[train]]")
        labelled(path, label, lambda: check_train_options(TrainOptions(**options)))
        trains[name] = entry
    return trains


def _check_extracts(path: Path, config: Mapping[str, Any], trains: Mapping[str, Mapping[str, Any]]
                    ) -> dict[str, Mapping[str, Any]]:
    """Every [[extract]]: a name, backbone and poolings, options of :class:`bpcr.features.options.ExtractOptions`
    within their ranges, and the pipeline's own keys (``database_parts``, ``restart``, and ``queries``: the
    query side's own options, :func:`_check_query_side`)."""
    from bpcr.features.options import ExtractOptions, check_extract_options
    from bpcr.features.pooling import pooling_names

    extracts: dict[str, Mapping[str, Any]] = {}
    for entry in config.get("extract", []):
        name = entry_name(path, "extract", entry)
        label = f"extract {name}"
        if name in extracts:
            raise BadInput(path, None, f"two [[extract]] are named {name!r}")
        if "poolings" not in entry or "backbone" not in entry:
            raise BadInput(path, None, f"[{label}] needs backbone and poolings")
        check_value(path, label, "database_parts", entry.get("database_parts", []), list[str])
        check_value(path, label, "restart", entry.get("restart", False), bool)
        options = without(entry, "name", "database_parts", "restart", QUERY_SIDE)
        check_options(path, label, ExtractOptions, options, set())
        for pooling in entry["poolings"]:  # each names a store folder (a built-in's or a plugin's, bpcr.plugins)
            known = labelled(path, label, pooling_names)
            if pooling not in known:
                raise BadInput(path, None, f"[{label}] poolings: unknown pooling {pooling!r}; "
                                           f"choose from {', '.join(known)}")
        labelled(path, label, lambda: check_extract_options(ExtractOptions(**options)))
        if QUERY_SIDE in entry:
            _check_query_side(path, label, options, entry[QUERY_SIDE])
        if train_name(entry.get("weights")) is not None:
            _check_trained_extract(path, name, entry, trains)
        extracts[name] = entry
    return extracts


def _check_query_side(path: Path, label: str, options: Mapping[str, Any], queries: Any) -> None:
    """An [[extract]]'s ``queries = { crop = "salient" }``: a table of extract options that two stores need not share
    (:data:`bpcr.pipeline.configtypes.QUERY_SIDE_OPTIONS`), of the right types, and within their ranges once merged
    over the entry's own options (as the query side extracts with them)."""
    from bpcr.features.options import EXTRACT_FIELDS, ExtractOptions, check_extract_options

    check_value(path, label, QUERY_SIDE, queries, dict)
    table, allowed = f"{label} {QUERY_SIDE}", ", ".join(QUERY_SIDE_OPTIONS)
    for key in queries:
        if key not in EXTRACT_FIELDS:
            raise BadInput(path, None, f"[{table}] unknown option {key!r}; accepted: {allowed}")
        if key not in QUERY_SIDE_OPTIONS:
            raise BadInput(path, None, f"[{table}] {key} must be the same for the database and the queries; set "
                                       f"it in [{label}] itself (a query-side table takes only {allowed})")
    check_options(path, table, ExtractOptions, queries, set())
    labelled(path, table, lambda: check_extract_options(ExtractOptions(**{**options, **queries})))


def _store_table_name(path: Path, table: str, entry: Mapping[str, Any], names: set[str], taken: Mapping[str, str],
                      features: str) -> tuple[str, str]:
    """The name and label of a table that writes stores of its own ([[whiten]], [[combine]]): refused when two
    tables share it, when ``taken`` (name -> the table that has it) has it, since their stores would share
    ``features/<name>/``, or without ``features`` (``features``: what the key looks like)."""
    name = entry_name(path, table, entry)
    label = f"{table} {name}"
    if name in names:
        raise BadInput(path, None, f"two [[{table}]] are named {name!r}")
    if name in taken:
        raise BadInput(path, None, f"[{label}] is named as an [[{taken[name]}]]; their stores would share "
                                   f"features/{name}/: give it a name of its own")
    if "features" not in entry:
        raise BadInput(path, None, f"[{label}] needs features = {features}")
    return name, label


def _check_whitens(path: Path, config: Mapping[str, Any], extracts: dict[str, Mapping[str, Any]]
                   ) -> dict[str, Mapping[str, Any]]:
    """Every [[whiten]]: a name no [[extract]] has, ``features = "<extract name>/<pooling>"`` (the pipeline's own
    key) and options of :class:`bpcr.training.whiten_options.WhitenOptions` within their ranges; returns what
    later ``features`` may name (:func:`bpcr.pipeline.configtypes.feature_sources`)."""
    from bpcr.training.whiten_options import WhitenOptions, check_whiten_options

    names: set[str] = set()
    for entry in config.get("whiten", []):
        name, label = _store_table_name(path, "whiten", entry, names, {n: "extract" for n in extracts},
                                        "'<extract name>/<pooling>'")
        check_value(path, label, "features", entry["features"], str)
        check_features(path, label, entry["features"], extracts)
        options = without(entry, "name", "features")
        check_options(path, label, WhitenOptions, options, set())
        labelled(path, label, lambda: check_whiten_options(WhitenOptions(**options)))
        names.add(name)
    return feature_sources(config) if names else extracts


def _check_combines(path: Path, config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every [[combine]]: a name no [[extract]] or [[whiten]] has, ``features = ["<extract or whiten
    name>/<pooling>", ...]`` (the pipeline's own key: one feature set at least, each once, none a combination) and
    options of :class:`bpcr.features.combine_options.CombineOptions` within their ranges, one weight per feature
    set; returns what later ``features`` may name (:func:`bpcr.pipeline.configtypes.feature_sources`)."""
    from bpcr.features.combine_options import CombineOptions, check_combine_options

    sources = feature_sources(config, combines=False)  # a combination of a combination: no
    taken = {n: "whiten" if "whitens" in sources[n] else "extract" for n in sources}
    names: set[str] = set()
    for entry in config.get("combine", []):
        name, label = _store_table_name(path, "combine", entry, names, taken, "['<extract name>/<pooling>', ...]")
        check_value(path, label, "features", entry["features"], str | list[str])
        specs = [entry["features"]] if isinstance(entry["features"], str) else entry["features"]
        if not specs:
            raise BadInput(path, None, f"[{label}] features is empty; name the stores to combine")
        for spec in specs:
            check_features(path, label, spec, sources)
        if len(set(specs)) != len(specs):
            twice = next(s for s in specs if specs.count(s) > 1)
            raise BadInput(path, None, f"[{label}] features names {twice!r} twice; combine each store once and "
                                       "weight it")
        options = without(entry, "name", "features")
        check_options(path, label, CombineOptions, options, set())
        labelled(path, label, lambda: check_combine_options(CombineOptions(**options), len(specs)))
        names.add(name)
    return feature_sources(config) if names else sources


def _check_trained_extract(path: Path, name: str, entry: Mapping[str, Any], trains: Mapping[str, Mapping[str, Any]]
                           ) -> None:
    """An [[extract]] with ``weights = "train:<name>"`` names a [[train]] of the same backbone."""
    from bpcr.features.backbones import resolve_name
    from bpcr.training.options import TrainOptions

    source = train_name(entry["weights"])
    if source not in trains:
        known = f"[[train]] names: {', '.join(sorted(trains))}" if trains else "the config has no [[train]]"
        raise BadInput(path, None, f"[extract {name}] weights {entry['weights']!r} names no [[train]] of this "
                                   f"config; {known}")
    trained = trains[source].get("backbone", TrainOptions.backbone)
    same = labelled(path, f"extract {name}", lambda: resolve_name(entry["backbone"]) == resolve_name(trained))
    if not same:
        raise BadInput(path, None, f"[extract {name}] backbone {entry['backbone']!r} cannot load the weights of "
                                   f"[train {source}], which trains {trained!r}")


def _check_score(path: Path, score: Mapping[str, Any], runs: set[str], has_gt: bool) -> None:
    """[score]: options of :class:`bpcr.evaluation.options.ScoreOptions` within their ranges (scoring comes last:
    its values are refused before the first stage), and the pipeline's own ``gt``, ``baseline`` (a run's path, or
    a table of run name -> baseline run name, both runs of this config: :func:`bpcr.evaluation.options.check_twins`)
    and ``chosen_on`` (what ``bpcr sweep`` chose on: :func:`bpcr.evaluation.chosen.check_chosen_on`)."""
    from bpcr.evaluation.chosen import check_chosen_on
    from bpcr.evaluation.options import ScoreOptions, check_score_options, check_twins

    own = {"gt": str, "baseline": str | dict[str, str], "chosen_on": list[dict]}
    for key, expected in own.items():
        if key in score:
            check_value(path, "score", key, score[key], expected)
    if isinstance(score.get("baseline"), dict):
        labelled(path, "score", lambda: check_twins(score["baseline"], runs, "a run of this config"))
    options = without(score, *own)
    check_options(path, "score", ScoreOptions, options, set())
    if "chosen_on" in score:
        check_chosen_on(score["chosen_on"], path)
    given = without(score, "gt")
    if given and not has_gt:
        raise BadInput(path, None, f"[score] {next(iter(given))} is set, but nothing is scored without ground truth: "
                                   "give [prepare] gt or [score] gt (or demo = true)")
    for key in options:  # one at a time, so the message names the key
        labelled(path, "score", lambda: check_score_options(ScoreOptions(**{key: options[key]})), key)


def _check_report(path: Path, report: Mapping[str, Any], runs: set[str], has_gt: bool) -> None:
    """[report]: options of :class:`bpcr.evaluation.options.ReportOptions` within their ranges (the halves are
    [score]'s), and the pipeline's own ``runs``/``best`` (which runs) and ``out`` (default: beside the leaderboard)."""
    from bpcr.options import check
    from bpcr.evaluation.options import ReportOptions
    from bpcr.ranges import REPORT_LIMIT_MAX, check_range

    own = {"runs": list[str], "best": int, "out": str}
    for key, expected in own.items():
        if key in report:
            check_value(path, "report", key, report[key], expected)
    options = without(report, *own)
    check_options(path, "report", ReportOptions, options, {"split_seed", "public_share"})
    if not has_gt:
        raise BadInput(path, None, "[report] needs ground truth: give [prepare] gt or [score] gt (or demo = true)")
    try:
        check_range("best", report.get("best"), 1, REPORT_LIMIT_MAX, integer=True, optional=True)
        check(ReportOptions(**options), spell=lambda f: f.name)
    except BadInput as exc:
        raise BadInput(path, None, f"[report] {exc.reason}") from None
    for key in ("runs", "diff"):
        for name in report.get(key, []):
            if name not in runs:
                raise BadInput(path, None, f"[report] {key}: {name!r} is not a run of this config")
    diff = report.get("diff")
    if diff is not None and diff[0] == diff[1]:
        raise BadInput(path, None, f"[report] diff needs two different runs, got {diff[0]!r} twice")
    if report.get("runs") == []:
        raise BadInput(path, None, "[report] runs is empty; leave it out to report the best runs")


def _check_report_out(path: Path, config: Mapping[str, Any]) -> None:
    """[report] out is a folder of its own: not the work or runs folder, nor one holding them (its swap would
    replace them whole)."""
    out = config["report"].get("out")
    if out is None:
        return
    target = Path(out).resolve()
    for key, default in (("work", "work"), ("submissions", "submissions")):
        folder = Path(config.get(key, default)).resolve()
        if target == folder or target in folder.parents:
            raise BadInput(path, None, f"[report] out {out!r} is {'the' if target == folder else 'above the'} "
                                       f"{key} folder; give the report a folder of its own")


