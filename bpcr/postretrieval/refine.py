"""`bpcr refine`: rank a run again after the first search, by one of the methods of :data:`METHODS`.

Every method takes a run and writes a run (DESIGN.md "Runs"), ranking with
the input run's own similarity: the feature sets, distances, weights and
fusion of the search behind it (:mod:`bpcr.postretrieval.similarity`), unless stores are
given. Methods are looked up by name, so ``--method kreciprocal`` and a
config's ``method = "kreciprocal"`` reach the same code:

| name | what | module |
| --- | --- | --- |
| ``text`` | two-stage search in textual neighbours (paper 001 Algorithm 1) | :mod:`bpcr.postretrieval.textrefine` |
| ``aqe`` | average query expansion, search again | :mod:`bpcr.postretrieval.qe` |
| ``alpha-qe`` | alpha-weighted query expansion, search again | :mod:`bpcr.postretrieval.qe` |
| ``qe-2020`` | the 2020 winner's expansion q + 2/3 top1 + 1/3 top2 | :mod:`bpcr.postretrieval.qe` |
| ``kreciprocal`` | k-reciprocal re-ranking (the authors' joint graph, or each shortlist) | :mod:`bpcr.postretrieval.kreciprocal` |
| ``diffusion`` | diffusion on the database's k-NN graph, truncated | :mod:`bpcr.postretrieval.diffusion` |
| ``dupgroup`` | the top hits expanded with their near-duplicate groups | :mod:`bpcr.postretrieval.dupgroup` |

Database-side augmentation is not a refinement of a run but a new feature
store: ``bpcr dba`` (:mod:`bpcr.postretrieval.dba`).

Each method's options, with their defaults, ranges and papers, are declared once
in :mod:`bpcr.postretrieval.options` (:data:`~bpcr.postretrieval.options.METHOD_OPTIONS`);
:class:`~bpcr.postretrieval.options.RefineOptions` carries them flat, as the
command line and a config's ``[[refine]]`` give them. An option of another
method is refused, and every value is checked before any file is read. The
written JSON names the method (``"refine"`` for text, ``"refine:<name>"``
otherwise), every parameter, the input run (``input_run``: files and sha256),
the similarity, the k-NN graphs used and counts of what changed.

A team's own method, registered in the entry-point group ``bpcr.refine_methods``
(:func:`get_method`, docs/plugins.md), is named as these are; its run's JSON adds
``plugin`` (distribution, version, entry point).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bpcr import plugins
from bpcr.errors import BadInput
from bpcr.io.folders import check_cache_folder
from bpcr.io.fileio import sha256_file
from bpcr.io.runs import SUBMISSION_DEPTH, Run, RunResult, check_run_output, load_run, provenance, run_files, write_run
from bpcr.io.store import FeatureStore
from bpcr.options import defaults, fields_of
from bpcr.postretrieval import dupgroup as _dupgroup
from bpcr.postretrieval import kreciprocal as _kreciprocal
from bpcr.postretrieval import qe as _qe
from bpcr.postretrieval.context import Context, Refinement
from bpcr.postretrieval.diffusion import diffusion
from bpcr.postretrieval.options import (METHOD_OPTIONS, RefineOptions, check_method, check_refine_options,
                                       plugin_method, resolve_method_options)
from bpcr.postretrieval.similarity import Similarity, load_similarity, similarity_order  # noqa: F401  (the refine API)
from bpcr.postretrieval.textrefine import MODES, QueryRefinement, refine_query, text_refinement  # noqa: F401
from bpcr.text.index import TextIndex, load_text_index


@dataclass(frozen=True)
class RefineMethod:
    """A refinement method: where it comes from, its function, and a preset passed with its options.

    ``apply(context, **options, **preset)`` returns a :class:`bpcr.postretrieval.context.Refinement`;
    ``text_index``: "required", "optional" (some options use it) or "unused". Its options are declared in
    :data:`bpcr.postretrieval.options.METHOD_OPTIONS` under the same name (:attr:`options`: name -> field), a
    plugin's in its ``options_class`` (a dataclass built with :func:`bpcr.options.option`).
    """

    name: str
    reference: str
    apply: Callable[..., Refinement]
    preset: Mapping[str, Any] = field(default_factory=dict)
    text_index: str = "unused"
    options_class: type | None = None  # a plugin's options; None: METHOD_OPTIONS[name]

    @property
    def options(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in fields_of(self.options_class or METHOD_OPTIONS[self.name])}

    @property
    def defaults(self) -> dict[str, Any]:
        return defaults(self.options_class or METHOD_OPTIONS[self.name])


METHODS: dict[str, RefineMethod] = {
    "text": RefineMethod("text", "paper 001 Algorithm 1", text_refinement, text_index="required"),
    "aqe": RefineMethod("aqe", "Chum et al. 2007, average query expansion", _qe.query_expansion,
                        preset={"qe_alpha": 0.0}),
    "alpha-qe": RefineMethod("alpha-qe", "Radenovic et al. 2018 eq 4", _qe.query_expansion),
    "qe-2020": RefineMethod("qe-2020", "the 2020 winner's q + 2/3 top1 + 1/3 top2", _qe.query_expansion,
                            preset={"preset": "winner-2020"}),
    "kreciprocal": RefineMethod("kreciprocal", "Zhong et al. 2017", _kreciprocal.kreciprocal),
    "diffusion": RefineMethod("diffusion", "Iscen et al. 2017, truncated", diffusion),
    "dupgroup": RefineMethod("dupgroup", "the 2020 NTU team's duplicate groups", _dupgroup.dupgroup,
                             text_index="optional"),
}
assert tuple(METHODS) == tuple(METHOD_OPTIONS)


TEXT_INDEX_USES = ("required", "optional", "unused")


def get_method(name: str) -> RefineMethod:
    """Refinement method ``name``: a built-in of :data:`METHODS` or a plugin of the entry-point group
    ``bpcr.refine_methods`` (:mod:`bpcr.plugins`), which is a :class:`RefineMethod` or a function
    ``f(context, **options) -> Refinement`` with optional attributes ``options_class``, ``reference``,
    ``text_index`` and ``preset`` (as this class's fields). BadInput for neither, or for a plugin named as a built-in.
    """
    options_class = check_method(name)  # refuses an unknown name, a plugin named as a built-in, a bad options_class
    if name in METHODS:
        return METHODS[name]
    obj = plugin_method(name)
    where = plugins.provenance(plugins.REFINE_METHODS, name)
    if isinstance(obj, RefineMethod):
        method = dataclasses.replace(obj, name=name, options_class=options_class)
    elif callable(obj):
        method = RefineMethod(name, str(getattr(obj, "reference", f"plugin {where['plugin']} {where['version']}")),
                              obj, dict(getattr(obj, "preset", {}) or {}), str(getattr(obj, "text_index", "unused")),
                              options_class)
    else:
        raise BadInput(None, None, f"refine method plugin {name!r} of {where['plugin']} ({where['entry_point']}) is "
                                   "neither a RefineMethod nor a function f(context, **options)")
    if method.text_index not in TEXT_INDEX_USES:
        raise BadInput(None, None, f"refine method plugin {name!r} of {where['plugin']}: text_index must be one of "
                                   f"{', '.join(TEXT_INDEX_USES)}, got {method.text_index!r}")
    return method


def method_options(method: RefineMethod, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The method's options, given or default, checked; and the names left at their default.

    ``given``: option name -> value, None meaning "not given". An option of another
    method is refused, naming the methods it belongs to.
    """
    resolved, defaulted = resolve_method_options(method.name, given)
    return dataclasses.asdict(resolved), defaulted


def refine(
    run_path: str | Path,
    text_index: str | Path | TextIndex | None,
    db_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    query_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    name: str,
    out: str | Path = "submissions",
    options: RefineOptions = RefineOptions(),
    method_options: Mapping[str, Any] | None = None,
    *,
    graph_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Refine every query of the run at ``run_path`` by ``options.method`` and write run ``name`` into ``out``.

    ``text_index``: the textual index (needed by ``text``, used by ``dupgroup``);
    ``db_store``/``query_store`` None rank with the input run's own similarity
    (feature sets, distances, weights and fusion from its provenance); given (one
    store or a list per side), they are compared by cosine, fused by ``options.fusion``
    (default sum) with ``options.weights`` (default all 1). ``options``: the method and
    its options, declared in :mod:`bpcr.postretrieval.options` (:class:`RefineOptions`);
    ``method_options``: a plugin method's own options (name -> value; :mod:`bpcr.plugins`);
    ``graph_dir``: where k-NN graphs are kept and reused (None: built, not kept).
    Returns what was written.
    """
    started = time.perf_counter()
    check_run_output(out, name)  # before any work: the run's files are named after it
    check_cache_folder(graph_dir, "--graph-dir")
    method, params, defaulted = _plan(options, text_index, method_options)
    run, files = _input_run(run_path, out, name)
    index = _text_index(method, text_index)
    similarity = load_similarity(run, files, db_store, query_store, options.weights, options.fusion)
    loaded = time.perf_counter()

    context = Context(run, similarity, index, None if graph_dir is None else Path(graph_dir), log)
    result = method.apply(context, **dataclasses.asdict(params), **method.preset)
    refined = time.perf_counter()

    seconds = {"load": loaded - started, "refine": refined - loaded}
    prov = _provenance(name, method, run, files, similarity, result, seconds,
                       {n: getattr(params, n) for n in defaulted})
    depth = result.params.get("depth") or SUBMISSION_DEPTH
    written = write_run(out, name, result.ranking, result.scores, prov, depth=depth)
    return RunResult(name, written, prov)


def _plan(options: RefineOptions, text_index: object, method_options: Mapping[str, Any] | None = None
          ) -> tuple[RefineMethod, Any, list[str]]:
    """The method, its options resolved and checked, the names left at their default; before any file is read."""
    params, defaulted = check_refine_options(options, method_options)
    method = get_method(options.method)
    if method.text_index == "required" and text_index is None:
        raise BadInput(None, None, f"--method {method.name} needs --text-index")
    return method, params, defaulted


def _input_run(run_path: str | Path, out: str | Path, name: str) -> tuple[Run, dict[str, Path]]:
    """The input run and its files, refusing an output run that would overwrite them."""
    files = run_files(run_path)
    any_file = next(iter(files.values()))
    if any_file.stem == name and any_file.parent.resolve() == Path(out).resolve():
        raise BadInput(any_file, None, f"output run {name!r} would overwrite its input; choose another --name")
    return load_run(run_path), files


def _text_index(method: RefineMethod, text_index: str | Path | TextIndex | None) -> TextIndex | None:
    """The textual index, loaded when the method reads one."""
    if text_index is None or method.text_index == "unused":
        return None
    return load_text_index(text_index) if isinstance(text_index, (str, Path)) else text_index


def _provenance(name: str, method: RefineMethod, run: Run, files: dict[str, Path], similarity: Similarity,
                result: Refinement, seconds: dict[str, float], defaulted: dict[str, Any]) -> dict:
    """The run's JSON: the method's parameters, inputs, input run, similarity, counts, defaults left as they are."""
    inputs = [*files.values(), *result.inputs]
    inputs += [s.path / n for s in (*similarity.db, *similarity.queries) for n in ("ids.txt", "meta.json")]
    json_method = "refine" if method.name == "text" else f"refine:{method.name}"
    prov = provenance(name, json_method, result.params, inputs, seconds, result.summary)
    prov["input_run"] = {"name": run.name, "files": [{"path": str(p), "sha256": sha256_file(p)} for p in files.values()]}
    prov.update(result.extra)
    prov["similarity"] = similarity.describe()
    prov["counts"] = result.counts
    plugin = method.name not in METHODS  # a plugin's method (bpcr.plugins): its distribution and version
    if plugin:
        prov["plugin"] = plugins.provenance(plugins.REFINE_METHODS, method.name)
    if method.name != "text":
        prov["defaults"] = {"options": defaulted, "reference": method.reference,
                            "chosen_on": "see the plugin's own documentation" if plugin else
                                         "see the method's module docstring (the demo's public half, or the "
                                         "published value)"}
    return prov
