"""Reading a pipeline config (TOML) and checking its shape and types before anything runs.

Every table's keys are keyword arguments of a stage function; the type each
key needs is read from that function's annotations, so a config is checked
against exactly what the stage accepts. Every problem is a BadInput naming the
config file, the table (``[extract lite0] size``) and what was expected
(the type checks live in :mod:`bpcr.pipeline.configtypes`).

Beyond the stage functions' own keys, tables refer to each other by name:
``[[search]] features = "<extract name>/<pooling>"``, ``input``/``inputs`` name
runs, ``[[extract]] weights = "train:<train name>"`` extracts with the weights
a ``[[train]]`` writes, and ``[report] runs``/``diff`` name runs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from bpcr.pipeline.configtypes import accepts, check_options, check_value, describe, shown  # noqa: F401 - accepts, describe: re-exported
from bpcr.errors import BadInput
from bpcr.io.ids import check_id

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Top-level keys: paths, single tables ([prepare]) and arrays of tables ([[extract]]).
PATH_KEYS = ("work", "submissions", "leaderboard")
TABLES = ("prepare", "index", "text_index", "score", "report")
ARRAYS = ("train", "extract", "search", "refine", "rerank", "ensemble")
# An [[extract]]'s weights = "train:<name>": the weights.pt of the [[train]] of that name.
TRAIN_REF = "train:"
# Parameters of bpcr.training.train.train that the pipeline passes itself: the database manifest only, never the queries.
TRAIN_RESERVED = {"manifest", "out", "queries", "ground_truth", "restart", "progress", "log", "on_epoch"}
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


def _without(entry: Mapping[str, Any], *keys: str) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


def entry_name(config_path: Path, table: str, entry: Mapping[str, Any]) -> str:
    """The ``name`` of an ``[[table]]`` entry: a safe ID, since stores and runs are files named after it."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise BadInput(config_path, None, f"every [[{table}]] needs a name")
    try:
        check_id(name)
    except BadInput as exc:
        raise BadInput(config_path, None, f"[[{table}]] name: {exc.reason}") from None
    return name


def validate_config(config_path: Path, config: Mapping[str, Any]) -> None:
    """Check a loaded config whole before any stage runs: option names and types, names, references.

    ``config`` comes from :func:`load_config` (its top-level shape is checked there).
    """
    from bpcr.postretrieval.dba import check_dba_options, dba
    from bpcr.demo import prepare_demo
    from bpcr.retrieval.distances import DISTANCES
    from bpcr.evaluation.ensemble import ensemble
    from bpcr.features.extract import extract
    from bpcr.retrieval.index import build_index
    from bpcr.features.pooling import POOLINGS
    from bpcr.dataset.prepare import prepare
    from bpcr.postretrieval.refine import refine
    from bpcr.reranking.rerank import rerank
    from bpcr.evaluation.score import check_score_options, score_runs
    from bpcr.retrieval.search import search
    from bpcr.text.index import build_text_index

    path = config_path
    prep = config.get("prepare", {})
    demo = prep.get("demo", False)
    check_value(path, "prepare", "demo", demo, bool)
    if demo:
        check_options(path, "prepare", prepare_demo, _without(prep, "demo"), {"out", "progress"})
    else:
        for required in ("db", "queries"):
            if required not in prep:
                raise BadInput(path, None, f"[prepare] needs {required!r} (or demo = true)")
        check_options(path, "prepare", prepare, _without(prep, "demo"), {"out", "progress"})
    has_gt = bool(demo) or "gt" in prep or "gt" in config.get("score", {})

    index = config.get("index", {})
    check_options(path, "index", build_index, index, {"store", "out", "log"})
    if "metric" in index and index["metric"] not in DISTANCES:  # it names the index folders
        raise BadInput(path, None, f"[index] metric {index['metric']!r} is not one of {', '.join(DISTANCES)}")
    check_options(path, "text_index", build_text_index, config.get("text_index", {}), {"manifest", "out", "force"})

    trains = _check_trains(path, config)
    extracts: dict[str, Mapping[str, Any]] = {}
    for entry in config.get("extract", []):
        name = entry_name(path, "extract", entry)
        if name in extracts:
            raise BadInput(path, None, f"two [[extract]] are named {name!r}")
        if "poolings" not in entry or "backbone" not in entry:
            raise BadInput(path, None, f"[extract {name}] needs backbone and poolings")
        check_value(path, f"extract {name}", "database_parts", entry.get("database_parts", []), list[str])
        check_options(path, f"extract {name}", extract, _without(entry, "name", "database_parts"),
                      {"manifest", "out", "progress", "on_chunk"})
        for pooling in entry["poolings"]:  # each names a store folder
            if pooling not in POOLINGS:
                raise BadInput(path, None, f"[extract {name}] poolings: unknown pooling {pooling!r}; "
                                           f"choose from {', '.join(POOLINGS)}")
        if train_name(entry.get("weights")) is not None:
            _check_trained_extract(path, name, entry, trains)
        extracts[name] = entry

    # table: (stage function, parameters the pipeline passes itself, the pipeline's own keys and their types)
    tables = {
        "search": (search, {"indexes", "queries", "name", "out", "log"}, {"features": str | list[str], "dba": dict}),
        "refine": (refine, {"run_path", "text_index", "db_store", "query_store", "name", "out", "graph_dir", "log"},
                   {"input": str, "features": str | list[str]}),
        "rerank": (rerank, {"run_path", "db_manifest", "query_manifest", "name", "out", "cache_dir", "progress"},
                   {"input": str}),
        "ensemble": (ensemble, {"run_paths", "name", "out", "tune_on"}, {"inputs": list[str], "tune": bool}),
    }
    runs: set[str] = set()
    for table, (func, reserved, own) in tables.items():
        for entry in config.get(table, []):
            name = entry_name(path, table, entry)
            label = f"{table} {name}"
            for key, expected in own.items():
                if key in entry:
                    check_value(path, label, key, entry[key], expected)
            check_options(path, label, func, _without(entry, "name", *own), reserved)
            if table == "refine":
                check_refine_method(path, label, _without(entry, "name", *own))
            if table == "search" and "dba" in entry:
                check_options(path, f"{label} dba", dba, entry["dba"], {"store", "out", "index", "graph_dir", "log"})
                try:
                    check_dba_options(**entry["dba"])
                except BadInput as exc:
                    raise BadInput(path, None, f"[{label} dba] {exc.reason}") from None
            if "features" in own:
                specs = entry.get("features") or []
                specs = [specs] if isinstance(specs, str) else specs
                if not specs and table == "search":  # refine without features ranks as its input run did
                    raise BadInput(path, None, f"[{label}] needs features = ['<extract name>/<pooling>', ...]")
                for spec in specs:
                    check_features(path, label, spec, extracts)
            if table == "ensemble":
                sources = entry.get("inputs", [])
                if len(sources) < 2:
                    raise BadInput(path, None, f"[{label}] inputs must name at least two runs made earlier in this config")
                if entry.get("tune") and not has_gt:
                    raise BadInput(path, None, f"[{label}] tune = true needs ground truth: "
                                               "give [prepare] gt (or demo = true)")
            elif table != "search":
                if "input" not in entry:
                    raise BadInput(path, None, f"[{label}] needs input = '<name of a run made earlier in this config>'")
                sources = [entry["input"]]
            else:
                sources = []
            for source in sources:
                if source not in runs:
                    raise BadInput(path, None, f"[{label}] input {source!r} is not a run made earlier in this config")
            if name in runs:
                raise BadInput(path, None, f"two runs are named {name!r}")
            runs.add(name)

    score = config.get("score", {})
    if "gt" in score:
        check_value(path, "score", "gt", score["gt"], str)
    options = _without(score, "gt")
    check_options(path, "score", score_runs, options, {"run_paths", "gt_path"})
    if options and not has_gt:
        raise BadInput(path, None, f"[score] {next(iter(options))} is set, but nothing is scored without ground truth: "
                                   "give [prepare] gt or [score] gt (or demo = true)")
    for key in ("seed", "n_resamples", "variant"):  # scoring comes last: refuse its values before the first stage
        if key in options:
            try:
                check_score_options(**{key: options[key]})
            except BadInput as exc:
                raise BadInput(path, None, f"[score] {key}: {exc.reason}") from None
    if "report" in config:
        _check_report(path, config["report"], runs, has_gt)


def train_name(weights: Any) -> str | None:
    """The [[train]] name of an [[extract]]'s ``weights = "train:<name>"``; None for weights of another kind."""
    return weights[len(TRAIN_REF):] if isinstance(weights, str) and weights.startswith(TRAIN_REF) else None


def _check_trains(path: Path, config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every [[train]]: a name, options of :class:`bpcr.training.options.TrainOptions` within their ranges."""
    from bpcr.training.options import TrainOptions, check_train_options

    trains: dict[str, Mapping[str, Any]] = {}
    for entry in config.get("train", []):
        name = entry_name(path, "train", entry)
        label = f"train {name}"
        if name in trains:
            raise BadInput(path, None, f"two [[train]] are named {name!r}")
        options = _without(entry, "name")
        check_options(path, label, TrainOptions, options, set())
        if train_name(options.get("weights")) is not None:
            raise BadInput(path, None, f"[{label}] weights {options['weights']!r}: training starts from bundled, "
                                       "hub, none or a weights file, not from another [[train]]")
        try:
            check_train_options(TrainOptions(**options))
        except BadInput as exc:
            raise BadInput(path, None, f"[{label}] {exc.reason}") from None
        trains[name] = entry
    return trains


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
    try:
        same = resolve_name(entry["backbone"]) == resolve_name(trained)
    except BadInput as exc:
        raise BadInput(path, None, f"[extract {name}] {exc.reason}") from None
    if not same:
        raise BadInput(path, None, f"[extract {name}] backbone {entry['backbone']!r} cannot load the weights of "
                                   f"[train {source}], which trains {trained!r}")


def _check_report(path: Path, report: Mapping[str, Any], runs: set[str], has_gt: bool) -> None:
    """[report]: :func:`bpcr.evaluation.report.write_report`'s options, ``runs``/``diff`` naming runs of the config."""
    from bpcr.ranges import REPORT_LIMIT_MAX, THUMB_MAX, THUMB_MIN, check_range
    from bpcr.evaluation.report import write_report

    own = {"runs": list[str], "best": int}
    for key, expected in own.items():
        if key in report:
            check_value(path, "report", key, report[key], expected)
    # out has a default here: beside the leaderboard. The halves are [score]'s.
    check_options(path, "report", write_report, _without(report, *own),
                  {"run_paths", "gt_path", "db_manifest", "query_manifest", "split_seed", "public_share", "progress"},
                  required=False)
    if not has_gt:
        raise BadInput(path, None, "[report] needs ground truth: give [prepare] gt or [score] gt (or demo = true)")
    for key, low, high in (("best", 1, REPORT_LIMIT_MAX), ("limit", 1, REPORT_LIMIT_MAX),
                           ("thumb", THUMB_MIN, THUMB_MAX)):
        try:
            check_range(key, report.get(key), low, high, integer=True, optional=True)
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


def check_refine_method(config_path: Path, label: str, options: Mapping[str, Any]) -> None:
    """A [[refine]]'s method is known, and its options are that method's and within their ranges."""
    from bpcr.postretrieval.refine import METHODS, method_options

    method = options.get("method", "text")
    if method not in METHODS:
        raise BadInput(config_path, None, f"[{label}] method {method!r} is not one of {', '.join(METHODS)}")
    given = {k: v for k, v in options.items() if k not in ("method", "weights", "fusion")}
    try:
        method_options(METHODS[method], given)
    except BadInput as exc:
        raise BadInput(config_path, None, f"[{label}] {exc.reason}") from None


def check_features(config_path: Path, label: str, spec: str, extracts: Mapping[str, Mapping[str, Any]]) -> None:
    """``"<extract name>/<pooling>"`` must name an ``[[extract]]`` of the config and one of its poolings."""
    extract_name, _, pooling = spec.partition("/")
    if extract_name not in extracts or not pooling:
        raise BadInput(config_path, None, f"[{label}] features {spec!r} must be '<extract name>/<pooling>' "
                                          f"with an extract name from: {', '.join(sorted(extracts))}")
    poolings = extracts[extract_name]["poolings"]
    if pooling not in poolings:
        raise BadInput(config_path, None, f"[{label}] features {spec!r}: [extract {extract_name}] has no pooling "
                                          f"{pooling!r}; it extracts {', '.join(poolings)}")
