"""The options of ``bpcr combine`` and a config's ``[[combine]]``, each declared once (:mod:`bpcr.options`).

Nothing heavy is imported here: the command line reads :class:`CombineOptions` at start-up, and
:mod:`bpcr.features.combine` (numpy, scikit-learn) reads its constants back from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bpcr.errors import BadInput
from bpcr.options import check, fields_of, option
from bpcr.ranges import SEED_MAX, check_weights

COMBINE_DTYPES = ("float16", "float32")
COMBINED_POOLING = "combined"  # a combined store's meta pooling, and its folder's name in a pipeline


@dataclass(frozen=True)
class CombineOptions:
    """How ``bpcr combine`` joins stores: each input's weight, then optional z-normalisation and PCA, learned on
    the database rows only and applied unchanged to the queries (the AI Meets Beauty 2018 2nd place's z-norm and
    PCA to 2048 over 16 concatenated descriptors; the 2020 runner-up's weights 10 and 8.95).

    ``weights`` None: all 1. Ranking by the combined store without ``znorm`` and ``pca`` equals ranking by
    sum_s w_s^2 cos_s: the weights act squared on the cosines (:mod:`bpcr.features.combine`). ``dtype`` None: the
    widest of the inputs' (applying: the database's combined store's).
    """

    weights: Sequence[float] | None = option(None, "Weight of each input store, one per store in their order "
                                                   "(comma-separated on the command line), finite, at least 0 and "
                                                   "not all 0 (default all 1); the ranking equals the sum of the "
                                                   "stores' cosines weighted by the squares.", cli=False)
    znorm: bool = option(False, "Z-normalise each dimension of the concatenation with the mean and standard "
                                "deviation of the database rows (applied unchanged to the queries).")
    pca: int | None = option(None, "Keep this many principal components of the concatenation (z-normalised first "
                                   "with --znorm), learned on the database rows (scikit-learn PCA, seeded); at most "
                                   "min(rows, dimensions).", low=1, integer=True)
    pca_rows: int | None = option(None, "Learn the PCA on this many database rows drawn with --seed (default: every "
                                        "row; the PCA holds rows x dimensions float64 numbers in memory).", low=2,
                                  integer=True)
    pca_whiten: bool = option(False, "Divide each kept principal component by its standard deviation "
                                     "(PCA-whitening; with --pca only).")
    seed: int = option(0, "Seed of the PCA's solver (scikit-learn's random_state) and of --pca-rows' draw.",
                       low=0, high=SEED_MAX, integer=True)
    dtype: str | None = option(None, "Feature dtype of the combined store: {choices} (default: the widest of the "
                                     "inputs'; applying, the database combined store's).", choices=COMBINE_DTYPES)


COMBINE_FIELDS = {f.name: f for f in fields_of(CombineOptions)}


def check_combine_options(options: CombineOptions, n_stores: int | None = None) -> list[float] | None:
    """Refuse (BadInput) options out of their ranges, or that do nothing, before any work; returns the weights as
    floats (None: all 1). ``n_stores``: the number of inputs, which the weights must match."""
    check(options)
    weights = None if options.weights is None else check_weights(options.weights)
    if weights is not None and n_stores is not None and len(weights) != n_stores:
        raise BadInput(None, None, f"--weights needs {n_stores} finite numbers, one per input store; "
                                   f"got {list(options.weights or [])}")
    if options.pca is None:
        for flag, value in (("--pca-whiten", options.pca_whiten), ("--pca-rows", options.pca_rows)):
            if value:
                raise BadInput(None, None, f"{flag} applies to the PCA; give --pca K")
    elif options.pca_rows is not None and options.pca_rows < options.pca:
        raise BadInput(None, None, f"--pca-rows {options.pca_rows} is fewer than the {options.pca} components "
                                   "--pca keeps")
    return weights
