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
| ``kreciprocal`` | k-reciprocal re-ranking of the shortlist | :mod:`bpcr.postretrieval.kreciprocal` |
| ``diffusion`` | diffusion on the database's k-NN graph, truncated | :mod:`bpcr.postretrieval.diffusion` |
| ``dupgroup`` | the top hits expanded with their near-duplicate groups | :mod:`bpcr.postretrieval.dupgroup` |

Database-side augmentation is not a refinement of a run but a new feature
store: ``bpcr dba`` (:mod:`bpcr.postretrieval.dba`).

Each method's options, with their defaults and accepted values, are in its
entry (:class:`RefineMethod`); an option of another method is refused, and
every value is checked before any file is read. The written JSON names the
method (``"refine"`` for text, ``"refine:<name>"`` otherwise), every parameter,
the input run (``input_run``: files and sha256), the similarity, the k-NN
graphs used and counts of what changed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bpcr.postretrieval import dupgroup as _dupgroup
from bpcr.postretrieval import kreciprocal as _kreciprocal
from bpcr.postretrieval import qe as _qe
from bpcr.postretrieval.diffusion import OPTIONS as DIFFUSION_OPTIONS, diffusion
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.postretrieval.context import Context, Option, Refinement
from bpcr.io.runs import SUBMISSION_DEPTH, RunResult, check_run_output, load_run, provenance, run_files, write_run
from bpcr.postretrieval.similarity import Similarity, load_similarity, similarity_order  # noqa: F401  (the refine API)
from bpcr.io.store import FeatureStore
from bpcr.text.index import TextIndex, load_text_index
from bpcr.postretrieval.textrefine import MODES, OPTIONS as TEXT_OPTIONS, QueryRefinement, refine_query, text_refinement  # noqa: F401


@dataclass(frozen=True)
class RefineMethod:
    """A refinement method: where it comes from, its options (name -> :class:`Option`) and its function.

    ``apply(context, **options, **preset)`` returns a :class:`bpcr.postretrieval.context.Refinement`;
    ``text_index``: "required", "optional" (some options use it) or "unused".
    """

    name: str
    reference: str
    apply: Callable[..., Refinement]
    options: Mapping[str, Option]
    preset: Mapping[str, Any] = field(default_factory=dict)
    text_index: str = "unused"

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: option.default for name, option in self.options.items()}


METHODS: dict[str, RefineMethod] = {
    "text": RefineMethod("text", "paper 001 Algorithm 1", text_refinement, TEXT_OPTIONS, text_index="required"),
    "aqe": RefineMethod("aqe", "Chum et al. 2007, average query expansion", _qe.query_expansion, _qe.AQE_OPTIONS,
                        preset={"qe_alpha": 0.0}),
    "alpha-qe": RefineMethod("alpha-qe", "Radenovic et al. 2018 eq 4", _qe.query_expansion, _qe.ALPHA_QE_OPTIONS),
    "qe-2020": RefineMethod("qe-2020", "the 2020 winner's q + 2/3 top1 + 1/3 top2", _qe.query_expansion, {},
                            preset={"preset": "winner-2020"}),
    "kreciprocal": RefineMethod("kreciprocal", "Zhong et al. 2017", _kreciprocal.kreciprocal, _kreciprocal.OPTIONS),
    "diffusion": RefineMethod("diffusion", "Iscen et al. 2017, truncated", diffusion, DIFFUSION_OPTIONS),
    "dupgroup": RefineMethod("dupgroup", "the 2020 NTU team's duplicate groups", _dupgroup.dupgroup,
                             _dupgroup.OPTIONS, text_index="optional"),
}


def get_method(name: str) -> RefineMethod:
    if name not in METHODS:
        raise BadInput(None, None, f"unknown refine method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_options(method: RefineMethod, given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The method's options, given or default, checked; and the names left at their default.

    ``given``: option name -> value, None meaning "not given". An option of another
    method is refused, naming the methods it belongs to.
    """
    for name, value in given.items():
        if value is not None and name not in method.options:
            owners = [m.name for m in METHODS.values() if name in m.options]
            option = "--" + name.replace("_", "-")
            raise BadInput(None, None, f"{option} is an option of --method {' / '.join(owners)}, not of --method "
                                       f"{method.name}")
    resolved, defaulted = {}, []
    for name, option in method.options.items():
        value = given.get(name)
        if value is None:
            value = option.default
            defaulted.append(name)
        option.check(name, value)
        resolved[name] = value
    return resolved, defaulted


def refine(
    run_path: str | Path,
    text_index: str | Path | TextIndex | None,
    db_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    query_store: str | Path | FeatureStore | Sequence[str | Path | FeatureStore] | None,
    name: str,
    out: str | Path = "submissions",
    k_keep: int | None = None,
    mode: str | None = None,
    weights: Sequence[float] | None = None,
    fusion: str | None = None,
    method: str = "text",
    qe_n: int | None = None,
    qe_alpha: float | None = None,
    k1: int | None = None,
    k2: int | None = None,
    kr_lambda: float | None = None,
    kq: int | None = None,
    kd: int | None = None,
    gamma: float | None = None,
    diffusion_alpha: float | None = None,
    iterations: int | None = None,
    dup_cosine: float | None = None,
    dup_tau: float | None = None,
    dup_by: str | None = None,
    dup_expand: int | None = None,
    dup_k: int | None = None,
    shortlist: int | None = None,
    graph_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Refine every query of the run at ``run_path`` with ``method`` and write run ``name`` into ``out``.

    ``text_index``: the textual index (needed by ``text``, used by ``dupgroup``);
    ``db_store``/``query_store`` None rank with the input run's own similarity
    (feature sets, distances, weights and fusion from its provenance); given (one
    store or a list per side), they are compared by cosine, fused by ``fusion``
    (default sum) with ``weights`` (default all 1). The other keywords are the
    methods' options (None: the method's default; see :data:`METHODS`);
    ``graph_dir``: where k-NN graphs are kept and reused (None: built, not kept).
    Returns what was written.
    """
    started = time.perf_counter()
    check_run_output(out, name)  # before any work: the run's files are named after it
    chosen = get_method(method)
    given = {"k_keep": k_keep, "mode": mode, "qe_n": qe_n, "qe_alpha": qe_alpha, "k1": k1, "k2": k2,
             "kr_lambda": kr_lambda, "kq": kq, "kd": kd, "gamma": gamma, "diffusion_alpha": diffusion_alpha,
             "iterations": iterations, "dup_cosine": dup_cosine, "dup_tau": dup_tau, "dup_by": dup_by,
             "dup_expand": dup_expand, "dup_k": dup_k, "shortlist": shortlist}
    options, defaulted = method_options(chosen, given)
    if chosen.text_index == "required" and text_index is None:
        raise BadInput(None, None, f"--method {method} needs --text-index")
    files = run_files(run_path)
    out = Path(out)
    any_file = next(iter(files.values()))
    if any_file.stem == name and any_file.parent.resolve() == out.resolve():
        raise BadInput(any_file, None, f"output run {name!r} would overwrite its input; choose another --name")
    run = load_run(run_path)
    index = None
    if text_index is not None and chosen.text_index != "unused":
        index = load_text_index(text_index) if isinstance(text_index, (str, Path)) else text_index
    similarity = load_similarity(run, files, db_store, query_store, weights, fusion)
    loaded = time.perf_counter()

    context = Context(run, similarity, index, None if graph_dir is None else Path(graph_dir), log)
    result = chosen.apply(context, **options, **chosen.preset)
    refined = time.perf_counter()

    inputs = [*files.values(), *result.inputs]
    inputs += [s.path / n for s in (*similarity.db, *similarity.queries) for n in ("ids.txt", "meta.json")]
    json_method = "refine" if method == "text" else f"refine:{method}"
    prov = provenance(name, json_method, result.params, inputs,
                      {"load": loaded - started, "refine": refined - loaded}, result.summary)
    prov["input_run"] = {"name": run.name, "files": [{"path": str(p), "sha256": sha256_file(p)} for p in files.values()]}
    prov.update(result.extra)
    prov["similarity"] = similarity.describe()
    prov["counts"] = result.counts
    if method != "text":
        prov["defaults"] = {"options": {n: options[n] for n in defaulted}, "reference": chosen.reference,
                            "chosen_on": "see the method's module docstring (the demo's public half, or the "
                                         "published value)"}
    depth = result.params.get("depth") or SUBMISSION_DEPTH
    written = write_run(out, name, result.ranking, result.scores, prov, depth=depth)
    return RunResult(name, written, prov)
