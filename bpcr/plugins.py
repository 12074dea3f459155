"""A team's own pooling, run fusion, refine method or metric variant, registered as a plugin (docs/plugins.md).

A distribution declares entry points in one of four groups (:data:`GROUPS`)::

    [bpcr.poolings]        NAME = module:function     # f(x: B x C x H x W, **params) -> B x C
    [bpcr.fusions]         NAME = module:object       # a RunFusion, or f(table, weights, **params) -> W x C
    [bpcr.refine_methods]  NAME = module:object       # a RefineMethod, or f(context, **options) -> Refinement
    [bpcr.metric_variants] NAME = module:function     # f(ranked, relevant, k) -> float

and NAME is then used as a built-in's name is: on the command line, in a config, in ``--help``'s choices,
and in the provenance of what it made (:func:`provenance`). Each registry (``bpcr.features.pooling``,
``bpcr.retrieval.fusion``, ``bpcr.postretrieval.refine``, ``bpcr.evaluation.metrics``) asks here for the names
and the objects and turns them into its own kind.

Two steps, so that ``bpcr --help`` stays fast: :func:`names` reads the names from the installed distributions'
metadata (``importlib.metadata``) without importing any plugin code; :func:`load`
and :func:`get` import them, once per process. A plugin named as a built-in is refused (:func:`check`), in
one line naming its distribution, as soon as its group is used, and so are two distributions naming one
plugin alike: a name means one thing.

Nothing heavy is imported here (this module is on the ground floor).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Iterable

from bpcr.errors import BadInput

POOLINGS = "bpcr.poolings"
FUSIONS = "bpcr.fusions"
REFINE_METHODS = "bpcr.refine_methods"
METRIC_VARIANTS = "bpcr.metric_variants"
# group -> what its plugins are, in messages
GROUPS = {POOLINGS: "pooling", FUSIONS: "run fusion", REFINE_METHODS: "refine method",
          METRIC_VARIANTS: "metric variant"}


@dataclass(frozen=True)
class EntryPoint:
    """One declared plugin: its group and name, ``module:attr`` and the distribution that declares it."""

    group: str
    name: str
    value: str
    dist: str
    version: str


_SCANS: dict[tuple[str, ...], tuple[EntryPoint, ...]] = {}


def _scan() -> tuple[EntryPoint, ...]:
    """Every entry point of our groups that the installed distributions declare (``importlib.metadata``: the
    first distribution of a name on ``sys.path`` wins), read once per ``sys.path``; no plugin code is imported."""
    key = tuple(sys.path)
    if key not in _SCANS:
        from importlib.metadata import entry_points as declared

        found = []
        for group in GROUPS:
            for ep in declared(group=group):
                dist = getattr(ep, "dist", None)
                name = (dist.metadata["Name"] if dist is not None else None) or ep.value.partition(":")[0]
                version = (dist.version if dist is not None else None) or ""
                found.append(EntryPoint(group, ep.name, ep.value.split("[")[0].strip(), name, version))
        _SCANS[key] = tuple(found)
    return _SCANS[key]


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points declared in ``group``, by name (metadata only: no plugin code is imported)."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; one of {', '.join(GROUPS)}")
    return sorted((e for e in _scan() if e.group == group), key=lambda e: (e.name, e.dist))


def names(group: str) -> tuple[str, ...]:
    """The plugin names of ``group``, sorted, from metadata alone (fast: ``--help`` lists them)."""
    return tuple(dict.fromkeys(e.name for e in entry_points(group)))


def choices(group: str, builtins: Iterable[str]) -> tuple[str, ...]:
    """The built-in names, then the plugins' (one named as a built-in left out: using it is refused): what
    ``--help`` offers. Never raises, so a bad plugin cannot break ``--help``."""
    builtins = tuple(builtins)
    return builtins + tuple(n for n in names(group) if n not in builtins)


def check(group: str, builtins: Iterable[str]) -> None:
    """Refuse (BadInput, one line naming the distribution) a plugin named as a built-in of ``group``, or a name
    two distributions declare."""
    builtins = set(builtins)
    kind = GROUPS[group]
    by_name: dict[str, list[EntryPoint]] = {}
    for e in entry_points(group):
        if e.name in builtins:
            raise BadInput(None, None, f"plugin {e.name!r} of distribution {e.dist} {e.version} ({group}) has the "
                                       f"name of a built-in {kind}; rename it or uninstall {e.dist}")
        by_name.setdefault(e.name, []).append(e)
    for name, entries in by_name.items():
        if len(entries) > 1:
            raise BadInput(None, None, f"{kind} plugin {name!r} is declared by {len(entries)} distributions "
                                       f"({', '.join(e.dist for e in entries)}); uninstall all but one")


def known(group: str, builtins: Iterable[str]) -> tuple[str, ...]:
    """:func:`choices`, after :func:`check`: the names a stage accepts."""
    builtins = tuple(builtins)
    check(group, builtins)
    return choices(group, builtins)


def entry_point(group: str, name: str) -> EntryPoint | None:
    return next((e for e in entry_points(group) if e.name == name), None)


_LOADED: dict[tuple[str, str, str], Any] = {}


def _import(e: EntryPoint) -> Any:
    key = (e.group, e.name, e.value)
    if key not in _LOADED:
        module, _, attr = e.value.partition(":")
        try:
            obj = importlib.import_module(module.strip())
            for part in filter(None, attr.strip().split(".")):
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin's code is its own, told in one line
            raise BadInput(None, None, f"{GROUPS[e.group]} plugin {e.name!r} of distribution {e.dist} {e.version} "
                                       f"({e.value}) cannot be loaded: {type(exc).__name__}: {exc}") from None
        _LOADED[key] = obj
    return _LOADED[key]


def get(group: str, name: str, builtins: Iterable[str] = ()) -> Any | None:
    """The object plugin ``name`` of ``group`` names, imported (once); None when no plugin has that name.

    Refuses first, as :func:`check` does, a plugin named as one of ``builtins``.
    """
    check(group, builtins)
    e = entry_point(group, name)
    return None if e is None else _import(e)


def load(group: str, builtins: Iterable[str] = ()) -> dict[str, Any]:
    """Every plugin of ``group``, imported (once): name -> object. Refuses what :func:`check` refuses."""
    check(group, builtins)
    return {e.name: _import(e) for e in entry_points(group)}


def provenance(group: str, name: str) -> dict[str, str]:
    """What a run's JSON or a store's meta.json records of plugin ``name``: ``{"plugin": distribution,
    "version": ..., "entry_point": "module:attr"}``."""
    e = entry_point(group, name)
    if e is None:
        raise KeyError(f"no {GROUPS[group]} plugin {name!r}")
    return {"plugin": e.dist, "version": e.version, "entry_point": e.value}
