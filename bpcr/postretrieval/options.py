"""The options of ``bpcr refine`` and ``bpcr dba``, each declared once (:mod:`bpcr.options`).

Each refinement method declares its own options in one frozen dataclass (default, range or choices, help,
paper): :class:`TextOptions` (paper 001 Algorithm 1), :class:`AqeOptions` and :class:`AlphaQeOptions` (query
expansion), :class:`Qe2020Options` (none), :class:`KReciprocalOptions` (Zhong et al., CVPR 2017),
:class:`DiffusionOptions` (Iscen et al., CVPR 2017) and :class:`DupgroupOptions` (the 2020 NTU team);
:data:`METHOD_OPTIONS` names them. :class:`RefineOptions` is what ``bpcr refine`` and a config's
``[[refine]]`` take: the method, how feature sets are weighed and fused, and every method's options flat
(``--k1``, ``k1 = 5``), None meaning "the method's default"; those fields are derived from the methods'
declarations (:func:`_method_option`), and :func:`resolve_method_options` turns them into the chosen method's
dataclass. :class:`DbaOptions` is ``bpcr dba``'s, and a ``[[search]]``'s ``dba = {...}``.

A team's own method registers in the entry-point group ``bpcr.refine_methods`` (:mod:`bpcr.plugins`,
docs/plugins.md) with its own options dataclass (``options_class``, built with :func:`bpcr.options.option`): it is
named as the built-ins are (:func:`refine_method_choices`), and its options come as ``method_options`` (a config's
``[[refine]]`` keys beside RefineOptions' own, ``--method-option KEY=VALUE``; one of RefineOptions' flat names, such
as ``shortlist``, is read from there too); :func:`resolve_method_options` checks them as a built-in's.

Nothing heavy is imported here: the command line reads these classes at start-up, and the method modules
read their constants back from them (``K1 = KReciprocalOptions.k1``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from bpcr import plugins
from bpcr.errors import BadInput
from bpcr.io.runs import SUBMISSION_DEPTH
from bpcr.options import SPEC, check, fields_of, flag_of, option, spec_of
from bpcr.ranges import check_range

MODES = ("fill", "rerank-union")
DUP_BY_CHOICES = ("image", "text", "both", "either")
KR_GRAPHS = ("auto", "joint", "shortlist")
QE_N_MAX = 100
K_MAX = 1000
ITERATIONS_MAX = 1000
GAMMA_MAX = 1000.0
DBA_N_MAX = 100

ZHONG = "Zhong et al. CVPR 2017"
ISCEN = "Iscen et al. CVPR 2017"


def _shortlist() -> Any:
    """The re-ranking methods' shortlist (one declaration, a field of each)."""
    return option(None, "Results re-ranked per query (default: the whole input list).", low=SUBMISSION_DEPTH,
                  integer=True)


@dataclass(frozen=True)
class TextOptions:
    """``text``: two-stage search in the textual neighbours of the first ``k_keep`` results (paper 001 §2.3,
    Algorithm 1; :mod:`bpcr.postretrieval.textrefine`)."""

    k_keep: int = option(3, "Results kept from the input run, paper 001's k; 3 is the paper's best.", low=1,
                         high=SUBMISSION_DEPTH, integer=True, paper="001 Algorithm 1")
    mode: str = option("fill", "{choices}. fill: ranks k+1..7 from the second search (Algorithm 1); rerank-union: "
                               "re-rank the first k together with their textual neighbours.", choices=MODES,
                       paper="001 Algorithm 1")


@dataclass(frozen=True)
class AqeOptions:
    """``aqe``: average query expansion, searched again (Chum et al., ICCV 2007; :mod:`bpcr.postretrieval.qe`)."""

    qe_n: int = option(1, "Results added to the query.", low=1, high=QE_N_MAX, integer=True,
                       paper="Chum et al. ICCV 2007")


@dataclass(frozen=True)
class AlphaQeOptions(AqeOptions):
    """``alpha-qe``: alpha-weighted query expansion (Radenovic, Tolias and Chum, TPAMI 2018, eq 4)."""

    qe_alpha: float = option(1.0, "Weight of result i is its cosine to the power alpha.", low=0.0, high=100.0,
                             paper="Radenovic et al. TPAMI 2018 eq 4")


@dataclass(frozen=True)
class Qe2020Options:
    """``qe-2020``: the 2020 winner's q + 2/3 top1 + 1/3 top2; no free parameter."""


@dataclass(frozen=True)
class KReciprocalOptions:
    """``kreciprocal``: k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, CVPR 2017), the authors' algorithm on the
    joint graph of queries and database (:mod:`bpcr.postretrieval.kreciprocal`) or each query's shortlist on the
    database's k-NN graph (:mod:`bpcr.postretrieval.kreciprocal_shortlist`)."""

    k1: int = option(5, "k of the k-reciprocal sets; the paper used 20.", low=1, high=K_MAX, integer=True,
                     paper=f"{ZHONG} eq 3-6")
    k2: int = option(6, "Neighbours averaged in the local query expansion, the node itself included; the paper "
                        "used 6.", low=1, high=K_MAX, integer=True,
                     paper=f"{ZHONG} eq 11")
    kr_lambda: float = option(0.3, "Weight of the original distance beside the Jaccard distance; the paper used "
                                   "0.3.", low=0.0,
                              high=1.0, paper=f"{ZHONG} eq 13")
    kr_graph: str = option("auto", "Which graph: {choices}. joint: the authors' published algorithm on the graph of "
                                   "the run's queries and the whole database; shortlist: each query's shortlist on the "
                                   "database's k-NN graph (for catalogues too large to read N x N); auto: joint up to "
                                   "50,000 nodes.", choices=KR_GRAPHS, paper=f"{ZHONG}, the authors' re_ranking")
    shortlist: int | None = _shortlist()


@dataclass(frozen=True)
class DiffusionOptions:
    """``diffusion``: diffusion on the database's k-NN graph, truncated to each query's shortlist (Iscen, Tolias,
    Avrithis, Furon and Chum, CVPR 2017; :mod:`bpcr.postretrieval.diffusion`)."""

    kq: int = option(7, "The query's nearest the diffusion starts from.", low=1, high=K_MAX, integer=True,
                     paper=f"{ISCEN} eq 5")
    kd: int = option(10, "Neighbours per database image in the graph.", low=1, high=K_MAX, integer=True,
                     paper=f"{ISCEN} eq 3")
    gamma: float = option(10.0, "Affinities are cosines to the power gamma, above 0.", low=0.0, high=GAMMA_MAX,
                          low_open=True, paper=f"{ISCEN} eq 3, 5")
    diffusion_alpha: float = option(0.99, "alpha of (I - alpha S) f = y, below 1.", low=0.0, high=1.0,
                                    high_open=True, paper=f"{ISCEN} eq 8, §5.1")
    iterations: int = option(20, "Conjugate-gradient steps at most.", low=1, high=ITERATIONS_MAX, integer=True,
                             paper=f"{ISCEN} eq 10, §5.1")
    shortlist: int | None = _shortlist()


@dataclass(frozen=True)
class DupgroupOptions:
    """``dupgroup``: the top hits expanded with their near-duplicate groups (after the 2020 NTU team;
    :mod:`bpcr.postretrieval.dupgroup`)."""

    dup_cosine: float = option(0.9, "Images are near-duplicates above this cosine in every feature set.", low=-1.0,
                               high=1.0)
    dup_tau: float = option(0.7, "Descriptions are near-duplicates above this TF-IDF cosine, at least the index's "
                                 "tau.", low=0.0, high=1.0, paper="001 eq 7")
    dup_by: str = option("either", "Which links make groups: {choices}.", choices=DUP_BY_CHOICES)
    dup_expand: int = option(3, "The first hits expanded with their groups; 3 is the NTU team's top 3.", low=1,
                             high=SUBMISSION_DEPTH, integer=True)
    dup_k: int = option(10, "Nearest images examined for image links.", low=1, high=K_MAX, integer=True)


# name -> the method's options; bpcr.postretrieval.refine.METHODS has the same names, in this order.
METHOD_OPTIONS: dict[str, type] = {
    "text": TextOptions, "aqe": AqeOptions, "alpha-qe": AlphaQeOptions, "qe-2020": Qe2020Options,
    "kreciprocal": KReciprocalOptions, "diffusion": DiffusionOptions, "dupgroup": DupgroupOptions,
}


TEXT_INDEX_METHODS = ("text", "dupgroup")  # the built-in methods that read the textual index


def refine_method_choices() -> tuple[str, ...]:
    """The built-in methods, then the plugins' (entry-point group ``bpcr.refine_methods``, read from metadata only)."""
    return plugins.choices(plugins.REFINE_METHODS, METHOD_OPTIONS)


@dataclass(frozen=True)
class NoOptions:
    """The options of a plugin method that declares none."""


def plugin_method(method: str) -> Any | None:
    """The object plugin refine method ``method`` names (a ``RefineMethod`` or a function), imported; None when no
    plugin has that name. A plugin named as a built-in is refused."""
    return plugins.get(plugins.REFINE_METHODS, method, METHOD_OPTIONS)


def reads_text_index(method: str) -> bool:
    """Whether refine method ``method`` reads the textual index (text, dupgroup; a plugin that says so)."""
    if method in METHOD_OPTIONS:
        return method in TEXT_INDEX_METHODS
    obj = plugin_method(method)
    return obj is not None and getattr(obj, "text_index", "unused") != "unused"


def refine_table(table: Mapping[str, Any]) -> tuple[RefineOptions, dict[str, Any]]:
    """A config's ``[[refine]]`` options (its own keys left out) as RefineOptions and a plugin method's options:
    the keys that are not RefineOptions' go to the method (validated by ``bpcr.pipeline.config`` already)."""
    known = {f.name for f in fields_of(RefineOptions)}
    return (RefineOptions(**{k: v for k, v in table.items() if k in known}),
            {k: v for k, v in table.items() if k not in known})


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _method_option(name: str) -> Any:
    """A :class:`RefineOptions` field for the method option ``name``: default None (the method's default), and the
    range, choices, help and paper of the methods' own declaration, its help led by the methods and defaults."""
    owners = [(method, f) for method, cls in METHOD_OPTIONS.items() for f in fields_of(cls) if f.name == name]
    spec = spec_of(owners[0][1])
    assert all(spec_of(f) == spec for _, f in owners), f"{name}: one declaration, the same in every method"
    by_default: dict[Any, list[str]] = {}
    for method, f in owners:
        by_default.setdefault(f.default, []).append(method)
    lead = ", ".join(", ".join(methods) + ("" if default is None else f" (default {_shown(default)})")
                     for default, methods in by_default.items())
    text = spec.help[0].lower() + spec.help[1:] if spec.help[1:2].islower() else spec.help
    return field(default=None, metadata={SPEC: dataclasses.replace(spec, help=f"{lead}: {text}")})


@dataclass(frozen=True)
class RefineOptions:
    """How ``bpcr refine`` ranks a run again: ``method``, ``weights`` and ``fusion`` of the feature sets when they
    are given, and the methods' options, None leaving an option at its method's default (the fields from
    ``k_keep`` to ``shortlist``: declared in the methods' classes above, an option of another method refused).
    """

    method: str = option("text", "Refinement, one of {choices}: text (paper 001 Algorithm 1), query expansion (aqe, "
                                 "alpha-qe, qe-2020: the 2020 winner's q + 2/3 top1 + 1/3 top2), kreciprocal, "
                                 "diffusion, dupgroup.", choices=refine_method_choices)
    weights: Sequence[float] | None = option(None, "With given feature stores: a weight per feature set (default "
                                                   "all 1).", cli=False)
    fusion: str | None = option(None, "With several feature sets given: sum or product (default sum).")
    k_keep: int | None = _method_option("k_keep")
    mode: str | None = _method_option("mode")
    qe_n: int | None = _method_option("qe_n")
    qe_alpha: float | None = _method_option("qe_alpha")
    k1: int | None = _method_option("k1")
    k2: int | None = _method_option("k2")
    kr_lambda: float | None = _method_option("kr_lambda")
    kr_graph: str | None = _method_option("kr_graph")
    kq: int | None = _method_option("kq")
    kd: int | None = _method_option("kd")
    gamma: float | None = _method_option("gamma")
    diffusion_alpha: float | None = _method_option("diffusion_alpha")
    iterations: int | None = _method_option("iterations")
    dup_cosine: float | None = _method_option("dup_cosine")
    dup_tau: float | None = _method_option("dup_tau")
    dup_by: str | None = _method_option("dup_by")
    dup_expand: int | None = _method_option("dup_expand")
    dup_k: int | None = _method_option("dup_k")
    shortlist: int | None = _method_option("shortlist")


METHOD_FIELDS = tuple(f.name for f in fields_of(RefineOptions) if f.name not in ("method", "weights", "fusion"))


def check_method(method: str) -> type:
    """The options class of refinement ``method`` (a plugin's ``options_class``); BadInput for an unknown one."""
    plugins.check(plugins.REFINE_METHODS, METHOD_OPTIONS)
    if method in METHOD_OPTIONS:
        return METHOD_OPTIONS[method]
    obj = plugin_method(method)
    if obj is None:
        raise BadInput(None, None, f"unknown refine method {method!r}; choose one of "
                                   f"{', '.join(refine_method_choices())}")
    cls = getattr(obj, "options_class", None) or NoOptions
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        where = plugins.provenance(plugins.REFINE_METHODS, method)
        raise BadInput(None, None, f"refine method plugin {method!r} of {where['plugin']}: options_class must be a "
                                   f"dataclass (built with bpcr.options.option), got {cls!r}")
    return cls


def _fits(f: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` is of the kind a plugin's option defaults to (a number for a float, ...)."""
    default = f.default
    if default is None or default is dataclasses.MISSING:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _check_method_value(f: dataclasses.Field, value: Any) -> None:
    spec, flag = spec_of(f), flag_of(f)
    names = spec.names()
    if names is not None:
        if value not in names:
            raise BadInput(None, None, f"unknown {flag} {value!r}; choose one of {', '.join(names)}")
        return
    check_range(flag, value, spec.low, spec.high, low_open=spec.low_open, high_open=spec.high_open,
                integer=spec.integer, optional=f.default is None)


def resolve_method_options(method: str, given: Mapping[str, Any],
                           method_options: Mapping[str, Any] | None = None) -> tuple[Any, list[str]]:
    """The options of ``method``, given or default, checked (as its class); and the names left at their default.

    ``given``: option name -> value, None meaning "not given" (e.g. the method fields of a :class:`RefineOptions`).
    An option of another method is refused, naming the methods it belongs to. ``method_options``: a plugin
    method's own options (name -> value), each refused unless its options class declares it.
    """
    cls = check_method(method)
    own = {f.name: f for f in fields_of(cls)}
    if method_options:
        given = dict(given)
        for name, value in method_options.items():
            if name not in own:
                accepted = ", ".join(own) or "none"
                raise BadInput(None, None, f"refine method {method!r} has no option {name!r} (its options: "
                                           f"{accepted})")
            if not _fits(own[name], value):
                raise BadInput(None, None, f"refine method {method!r}: {name} = {value!r} is not of the kind of its "
                                           f"default {own[name].default!r}")
            if given.get(name) is not None and given[name] != value:
                raise BadInput(None, None, f"option {name!r} of refine method {method!r} is given twice, with "
                                           "different values")
            given[name] = value
    for name, value in given.items():
        if value is not None and name not in own:
            owners = [m for m, c in METHOD_OPTIONS.items() if name in {f.name for f in fields_of(c)}]
            raise BadInput(None, None, f"--{name.replace('_', '-')} is an option of --method {' / '.join(owners)}, "
                                       f"not of --method {method}")
    values, defaulted = {}, []
    for name, f in own.items():
        value = given.get(name)
        if value is None:
            if f.default is dataclasses.MISSING:  # a plugin's required option
                raise BadInput(None, None, f"refine method {method!r} needs its option {name!r}")
            value = f.default
            defaulted.append(name)
        _check_method_value(f, value)
        values[name] = value
    return cls(**values), defaulted


def check_refine_options(options: RefineOptions, method_options: Mapping[str, Any] | None = None
                         ) -> tuple[Any, list[str]]:
    """Refuse (BadInput) an unknown method, another method's option or a value out of its range, before any file
    is read; returns the method's options resolved and the names left at their default. ``method_options``: a
    plugin method's own options (:func:`resolve_method_options`)."""
    return resolve_method_options(options.method, {name: getattr(options, name) for name in METHOD_FIELDS},
                                  method_options)


@dataclass(frozen=True)
class DbaOptions:
    """How ``bpcr dba`` augments a database store: each vector plus its ``n`` nearest, weighted by their cosine to
    the power ``alpha`` (alpha-DBA, Radenovic, Tolias and Chum, TPAMI 2018 §4.2; the plain average at alpha = 0,
    Arandjelovic and Zisserman, CVPR 2012)."""

    n: int = option(1, "Nearest database vectors added to each.", low=1, high=DBA_N_MAX, integer=True,
                    paper="Arandjelovic & Zisserman CVPR 2012")
    alpha: float = option(0.0, "Neighbour i weighs its cosine to the power alpha; 0 is the plain average.", low=0.0,
                          high=100.0, paper="Radenovic et al. TPAMI 2018 §4.2")


def check_dba_options(options: DbaOptions) -> None:
    """Refuse ``n`` and ``alpha`` outside their ranges (before any file is read)."""
    check(options)
