"""The config tables that make runs, in pipeline order: ``[[search]]``, ``[[refine]]``, ``[[rerank]]`` and
``[[ensemble]]``. Each is checked against its stage's options class, and against the features and earlier runs
it names (:func:`check_run`, which :func:`bpcr.pipeline.config.validate_config` calls for every entry).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bpcr.errors import BadInput
from bpcr.pipeline.configtypes import check_features, check_options, check_value, entry_name, labelled, without


# The tables that make runs, in pipeline order: the pipeline's own keys of each, and their types.
RUN_TABLES = {
    "search": {"features": str | list[str], "dba": dict},
    "refine": {"input": str, "features": str | list[str]},
    "rerank": {"input": str},
    "ensemble": {"inputs": list[str], "tune": bool},
}


def check_run(path: Path, table: str, entry: Mapping[str, Any], extracts: Mapping[str, Mapping[str, Any]],
               runs: set[str], config: Mapping[str, Any], has_gt: bool) -> str:
    """One [[search]], [[refine]], [[rerank]] or [[ensemble]]: its keys, their types and ranges, the features
    and the earlier runs it names; returns its run name."""
    own = RUN_TABLES[table]
    name = entry_name(path, table, entry)
    label = f"{table} {name}"
    for key, expected in own.items():
        if key in entry:
            check_value(path, label, key, entry[key], expected)
    given = without(entry, "name", *own)
    method_options = refine_plugin_options(path, label, given) if table == "refine" else {}
    check_options(path, label, _options_class(table), without(given, *method_options), set())
    _check_run_ranges(path, label, table, entry, given, method_options)
    if "features" in own:
        specs = entry.get("features") or []
        specs = [specs] if isinstance(specs, str) else specs
        if not specs and table == "search":  # refine without features ranks as its input run did
            raise BadInput(path, None, f"[{label}] needs features = ['<extract name>/<pooling>', ...]")
        for spec in specs:
            check_features(path, label, spec, extracts)
    for source in _run_sources(path, label, table, entry, config, has_gt):
        if source not in runs:
            raise BadInput(path, None, f"[{label}] input {source!r} is not a run made earlier in this config")
    if name in runs:
        raise BadInput(path, None, f"two runs are named {name!r}")
    return name


def _options_class(table: str) -> type:
    from bpcr.evaluation.options import EnsembleOptions
    from bpcr.postretrieval.options import RefineOptions
    from bpcr.reranking.options import RerankOptions
    from bpcr.retrieval.options import SearchOptions

    return {"search": SearchOptions, "refine": RefineOptions, "rerank": RerankOptions,
            "ensemble": EnsembleOptions}[table]


def _check_run_ranges(path: Path, label: str, table: str, entry: Mapping[str, Any], given: Mapping[str, Any],
                      method_options: Mapping[str, Any]) -> None:
    """A run table's values within the ranges its options class declares (a DBA table's too)."""
    from bpcr.evaluation.options import EnsembleOptions, check_ensemble_options
    from bpcr.options import check
    from bpcr.postretrieval.options import DbaOptions, check_dba_options
    from bpcr.reranking.options import RerankOptions
    from bpcr.retrieval.options import SearchOptions, check_search_options

    if table == "refine":
        check_refine_method(path, label, without(given, *method_options), method_options)
        return
    checks = {"rerank": lambda: check(RerankOptions(**given), spell=lambda f: f.name),
              "search": lambda: check_search_options(SearchOptions(**given)),
              "ensemble": lambda: check_ensemble_options(EnsembleOptions(**given))}
    labelled(path, label, checks[table])
    if table == "search" and "dba" in entry:
        check_options(path, f"{label} dba", DbaOptions, entry["dba"], set())
        labelled(path, f"{label} dba", lambda: check_dba_options(DbaOptions(**entry["dba"])))


def _run_sources(path: Path, label: str, table: str, entry: Mapping[str, Any], config: Mapping[str, Any],
                 has_gt: bool) -> list[str]:
    """The earlier runs a table reads: an ensemble's inputs (two at least), a refine's or rerank's input."""
    if table == "ensemble":
        sources = entry.get("inputs", [])
        if len(sources) < 2:
            raise BadInput(path, None, f"[{label}] inputs must name at least two runs made earlier in this config")
        if entry.get("tune") and not has_gt:
            raise BadInput(path, None, f"[{label}] tune = true needs ground truth: "
                                       "give [prepare] gt (or demo = true)")
        if entry.get("tune"):
            _check_one_split(path, label, entry, config.get("score", {}))
        return sources
    if table == "search":
        return []
    if "input" not in entry:
        raise BadInput(path, None, f"[{label}] needs input = '<name of a run made earlier in this config>'")
    return [entry["input"]]


def _check_one_split(path: Path, label: str, entry: Mapping[str, Any], score: Mapping[str, Any]) -> None:
    """An [[ensemble]] tunes on the public half of [score]'s split (the pipeline passes it): a split of its own
    that differs would tune on queries the leaderboard reports as private, and is refused."""
    from bpcr.evaluation.options import ScoreOptions

    for key in ("split_seed", "public_share"):
        if key in entry and entry[key] != score.get(key, getattr(ScoreOptions, key)):
            raise BadInput(path, None, f"[{label}] {key} = {entry[key]!r} differs from [score] {key} = "
                                       f"{score.get(key, getattr(ScoreOptions, key))!r}: tuning would choose on "
                                       "queries the leaderboard reports as private; set the split once, in [score]")


def check_refine_method(config_path: Path, label: str, options: Mapping[str, Any],
                        method_options: Mapping[str, Any] | None = None) -> None:
    """A [[refine]]'s method is known (a built-in or a plugin, :mod:`bpcr.plugins`), and its options (of
    :class:`bpcr.postretrieval.options.RefineOptions`, their types already checked; ``method_options``: a plugin's
    own, from :func:`refine_plugin_options`) are that method's and within their ranges."""
    from bpcr import plugins
    from bpcr.postretrieval.options import METHOD_FIELDS, METHOD_OPTIONS, RefineOptions, resolve_method_options

    method = options.get("method", RefineOptions.method)
    names = labelled(config_path, label, lambda: plugins.known(plugins.REFINE_METHODS, METHOD_OPTIONS))
    if method not in names:
        raise BadInput(config_path, None, f"[{label}] method {method!r} is not one of {', '.join(names)}")
    labelled(config_path, label, lambda: resolve_method_options(
        method, {k: v for k, v in options.items() if k in METHOD_FIELDS}, method_options))


def refine_plugin_options(config_path: Path, label: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a [[refine]] that are a plugin method's own options (beside RefineOptions'), their types checked
    against its options class; empty for a built-in method (whose table takes RefineOptions' keys only)."""
    from bpcr.options import fields_of
    from bpcr.postretrieval.options import METHOD_OPTIONS, RefineOptions, check_method, plugin_method

    method = options.get("method", RefineOptions.method)
    if not isinstance(method, str) or method in METHOD_OPTIONS:
        return {}
    try:
        if plugin_method(method) is None:
            return {}  # an unknown method: check_refine_method names it
        cls = check_method(method)
    except BadInput as exc:
        raise BadInput(config_path, None, f"[{label}] {exc.reason}") from None
    known = {f.name for f in fields_of(RefineOptions)}
    own = {k: v for k, v in options.items() if k not in known}
    check_options(config_path, label, cls, own, set(), required=False)
    return own
