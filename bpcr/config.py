"""Reading a pipeline config (TOML) and checking its shape and types before anything runs.

Every table's keys are keyword arguments of a stage function; the type each
key needs is read from that function's annotations, so a config is checked
against exactly what the stage accepts. Every problem is a BadInput naming the
config file, the table (``[extract lite0] size``) and what was expected.
"""
from __future__ import annotations

import collections.abc
import inspect
import os
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping

from .errors import BadInput
from .ids import check_id

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Top-level keys: paths, single tables ([prepare]) and arrays of tables ([[extract]]).
PATH_KEYS = ("work", "submissions", "leaderboard")
TABLES = ("prepare", "index", "text_index", "score")
ARRAYS = ("extract", "search", "refine", "rerank", "ensemble")
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
            raise BadInput(path, None, f"{key} must be a string (a path), got {_shown(config[key])}")
    for key in TABLES:
        if key in config and not isinstance(config[key], dict):
            written = f"[[{key}]]" if _is_array_of_tables(config[key]) else _shown(config[key])
            raise BadInput(path, None, f"{key} must be one table, written [{key}]; got {written}")
    for key in ARRAYS:
        if key in config and not _is_array_of_tables(config[key]):
            written = f"one table [{key}]" if isinstance(config[key], dict) else _shown(config[key])
            raise BadInput(path, None, f"{key} must be an array of tables, one [[{key}]] per entry; got {written}")
    return config


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


# ---------------------------------------------------------------- options against a stage function


def check_options(config_path: Path, table: str, func: Callable, options: Mapping[str, Any], reserved: set[str],
                  required: bool = True) -> None:
    """Refuse options ``func`` does not take or of the wrong type, and (``required``) missing ones.

    ``reserved``: parameters the pipeline itself passes, which a config may not set.
    """
    params = {name: p for name, p in inspect.signature(func).parameters.items()
              if name not in reserved and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    hints = _type_hints(func)
    for key, value in options.items():
        if key not in params:
            raise BadInput(config_path, None, f"[{table}] unknown option {key!r}; accepted: {', '.join(sorted(params))}")
        expected = hints.get(key, Any)
        if not accepts(expected, value):
            raise BadInput(config_path, None, f"[{table}] {key} must be {describe(expected)}, got {_shown(value)}")
    for key, param in params.items():
        if required and param.default is param.empty and key not in options and not accepts(hints.get(key, Any), None):
            raise BadInput(config_path, None, f"[{table}] needs {key!r}")


def check_value(config_path: Path, table: str, key: str, value: Any, expected: Any) -> None:
    """Refuse ``value`` of ``[table] key`` unless it has the type ``expected``."""
    if not accepts(expected, value):
        raise BadInput(config_path, None, f"[{table}] {key} must be {describe(expected)}, got {_shown(value)}")


def _type_hints(func: Callable) -> dict[str, Any]:
    """Each parameter's annotation as a type; one that cannot be resolved here accepts anything."""
    unresolved = (NameError, AttributeError, TypeError, SyntaxError)
    try:
        return typing.get_type_hints(func)
    except unresolved:  # an annotation naming something imported only for type checkers
        hints = {}
        namespace = {**vars(typing), **getattr(func, "__globals__", {})}
        for name, annotation in getattr(func, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
            except unresolved:
                hints[name] = Any
        return hints


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)


def _is_path(tp: Any) -> bool:
    return (isinstance(tp, type) and issubclass(tp, PurePath)) or tp is os.PathLike or typing.get_origin(tp) is os.PathLike


def accepts(tp: Any, value: Any) -> bool:
    """Whether a TOML ``value`` can be passed where ``tp`` is annotated (a path is a string in TOML)."""
    if tp is Any:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if _is_path(tp):
        return isinstance(value, str)
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if not isinstance(value, list):  # a string is a sequence in Python, never in a config
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(accepts(a, v) for a, v in zip(args, value))
        item = args[0] if args else Any
        return all(accepts(item, v) for v in value)
    if origin in _MAPPINGS or tp in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return all(accepts(key_type, k) and accepts(value_type, v) for k, v in value.items())
    if origin is collections.abc.Callable or tp is collections.abc.Callable:
        return False  # a function: never written in a config
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a form this check does not know: the stage itself decides


def describe(tp: Any) -> str:
    """``tp`` in a config's words: "an integer", "a string", "an array of numbers", "true or false"."""
    words = _words(tp)
    return " or ".join(words) if words else "a value the stage accepts"


def _words(tp: Any, plural: bool = False) -> list[str]:
    """Names of the TOML values ``tp`` accepts (None and Python-only objects left out)."""
    if tp is Any:
        return ["values" if plural else "any value"]
    if tp is type(None) or tp is None:
        return []
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        out: list[str] = []
        for arg in args:
            for word in _words(arg, plural):
                if word not in out:
                    out.append(word)
        # str | Path: a path is a string in TOML
        path_word = "paths" if plural else "a path (a string)"
        string_word = "strings" if plural else "a string"
        if path_word in out and string_word in out:
            out.remove(path_word)
        return out
    if origin is typing.Literal:
        return [" or ".join(repr(a) for a in args)]
    simple = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
              float: ("a number", "numbers"), str: ("a string", "strings")}
    if tp in simple:
        return [simple[tp][plural]]
    if _is_path(tp):
        return ["paths" if plural else "a path (a string)"]
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = " or ".join(_words(args[0], True)) or "values"
            return [f"arrays of {len(args)} {items}" if plural else f"an array of {len(args)} {items}"]
        items = " or ".join(_words(args[0], True)) if args else "values"
        return [f"arrays of {items or 'values'}" if plural else f"an array of {items or 'values'}"]
    if origin in _MAPPINGS or tp in _MAPPINGS:
        return ["tables" if plural else "a table"]
    return []


def _shown(value: Any) -> str:
    """A config value and its TOML kind, for messages: ``'224' (a string)``."""
    kinds = [(bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"),
             (dict, "a table")]
    kind = next((name for t, name in kinds if isinstance(value, t)), "a date or time")
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


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
    from .dba import check_dba_options, dba
    from .demo import prepare_demo
    from .distances import DISTANCES
    from .ensemble import ensemble
    from .extract import extract
    from .index import build_index
    from .pooling import POOLINGS
    from .prepare import prepare
    from .refine import refine
    from .rerank import rerank
    from .score import check_score_options, score_runs
    from .search import search
    from .textindex import build_text_index

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


def check_refine_method(config_path: Path, label: str, options: Mapping[str, Any]) -> None:
    """A [[refine]]'s method is known, and its options are that method's and within their ranges."""
    from .refine import METHODS, method_options

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
