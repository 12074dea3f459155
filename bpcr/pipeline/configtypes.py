"""What every check of a config's tables uses: a TOML value against an annotation (whether it fits, and the
words for what was expected), an entry's name, a reference to features or to trained weights, and a check's
refusal labelled with its table.

A table is checked against exactly the options its stage declares (:mod:`bpcr.pipeline.config`,
:mod:`bpcr.pipeline.runconfig`). Every problem is a BadInput naming the config file, the table
(``[extract lite0] size``) and what was expected, in TOML's words.
"""
from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping

from bpcr.errors import BadInput
from bpcr.features.combine_options import COMBINED_POOLING
from bpcr.io.ids import check_id


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
            raise BadInput(config_path, None, f"[{table}] {key} must be {describe(expected)}, got {shown(value)}")
    for key, param in params.items():
        if required and param.default is param.empty and key not in options and not accepts(hints.get(key, Any), None):
            raise BadInput(config_path, None, f"[{table}] needs {key!r}")


def check_value(config_path: Path, table: str, key: str, value: Any, expected: Any) -> None:
    """Refuse ``value`` of ``[table] key`` unless it has the type ``expected``."""
    if not accepts(expected, value):
        raise BadInput(config_path, None, f"[{table}] {key} must be {describe(expected)}, got {shown(value)}")


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


def shown(value: Any) -> str:
    """A config value and its TOML kind, for messages: ``'224' (a string)``."""
    kinds = [(bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"),
             (dict, "a table")]
    kind = next((name for t, name in kinds if isinstance(value, t)), "a date or time")
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def without(entry: Mapping[str, Any], *keys: str) -> dict:
    """``entry`` less ``keys``."""
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


# An [[extract]]'s weights = "train:<name>": the weights.pt of the [[train]] of that name.
TRAIN_REF = "train:"

# An [[extract]]'s ``queries = { crop = "salient" }`` (the pipeline's own key): extract options for its query store
# alone, merged over the entry's own. It may set only what two stores need not share: settings the feature stores'
# compatibility check (bpcr.io.store.check_same_extraction) leaves out of EXTRACTION_FIELDS, so `bpcr search` still
# pairs the stores and the database extraction stays the one every query side is searched in. Today the salient
# crop alone (the comment on EXTRACTION_FIELDS: the 2020 runner-up cut the query photos to their salient object,
# never the catalogue's images); the rest of what that check leaves out (dtype, batch size, devices, shards) says
# how a store is computed, not what the queries are, and stays the entry's. tests/pipeline/
# test_extract_queries_only.py holds every name here out of EXTRACTION_FIELDS.
QUERY_SIDE = "queries"
QUERY_SIDE_OPTIONS = ("crop",)


def query_side(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An [[extract]] entry's query-side options (its ``queries`` table; empty without one)."""
    return dict(entry.get(QUERY_SIDE) or {})


def train_name(weights: Any) -> str | None:
    """The [[train]] name of an [[extract]]'s ``weights = "train:<name>"``; None for weights of another kind."""
    return weights[len(TRAIN_REF):] if isinstance(weights, str) and weights.startswith(TRAIN_REF) else None


def check_features(config_path: Path, label: str, spec: str, extracts: Mapping[str, Mapping[str, Any]]) -> None:
    """``"<extract name>/<pooling>"`` must name an ``[[extract]]`` of the config and one of its poolings (or a
    ``[[whiten]]`` and the pooling it whitens: ``extracts`` is then :func:`feature_sources`)."""
    extract_name, _, pooling = spec.partition("/")
    if extract_name not in extracts or not pooling:
        raise BadInput(config_path, None, f"[{label}] features {spec!r} must be '<extract name>/<pooling>' "
                                          f"with an extract name from: {', '.join(sorted(extracts))}")
    poolings = extracts[extract_name]["poolings"]
    if pooling not in poolings:
        table, verb = next(((t, v) for t, v, k in (("whiten", "whitens", "whitens"),
                                                    ("combine", "combines its features into", "combines"))
                            if k in extracts[extract_name]), ("extract", "extracts"))
        raise BadInput(config_path, None, f"[{label}] features {spec!r}: [{table} {extract_name}] has no pooling "
                                          f"{pooling!r}; it {verb} {', '.join(poolings)}")


def feature_sources(config: Mapping[str, Any], combines: bool = True) -> dict[str, Mapping[str, Any]]:
    """What ``features = "<name>/<pooling>"`` may name: every [[extract]] (its poolings), every [[whiten]] (the
    one pooling it whitens, under its own name: ``WORK/features/<whiten name>/``) and every [[combine]] (its one
    store, ``"<combine name>/combined"``; left out with ``combines`` False). Read from a config whose tables
    :func:`bpcr.pipeline.config.validate_config` has checked (before [[combine]], its [[extract]] and [[whiten]]
    tables)."""
    sources: dict[str, Mapping[str, Any]] = {e["name"]: e for e in config.get("extract", [])}
    for entry in config.get("whiten", []):
        sources[entry["name"]] = {"poolings": [str(entry.get("features", "")).partition("/")[2]],
                                  "whitens": entry.get("features")}
    for entry in config.get("combine", []) if combines else []:
        sources[entry["name"]] = {"poolings": [COMBINED_POOLING], "combines": entry.get("features")}
    return sources


def labelled(path: Path, label: str, check: Callable[[], Any], key: str | None = None) -> Any:
    """``check()``'s value; its refusal (BadInput) names the config file and the table ``[label]`` (and the
    ``key`` checked, when one is given)."""
    try:
        return check()
    except BadInput as exc:
        raise BadInput(path, None, f"[{label}] {key + ': ' if key else ''}{exc.reason}") from None
