"""The options of ``bpcr whiten`` and a config's ``[[whiten]]``, each declared once (:mod:`bpcr.options`).

Nothing heavy is imported here: the command line reads :class:`WhitenOptions` at start-up, and
:mod:`bpcr.training.whiten` (numpy, scipy) reads its constants back from it.
"""
from __future__ import annotations

from dataclasses import dataclass

from bpcr.errors import BadInput
from bpcr.options import check, option
from bpcr.training.options import TrainOptions

# learned: Lw from the database's positive pairs (Radenovic, Tolias and Chum, TPAMI 2018);
# pca: PCA-whitening of the store's rows (bpcr.features.whitening, as `extract --pca-whiten` learns it).
WHITEN_METHODS = ("learned", "pca")
LW = "Radenovic et al. TPAMI 2018, Lw"


@dataclass(frozen=True)
class WhitenOptions:
    """How ``bpcr whiten`` whitens a store: the method, the dimensions kept and (learned) the pairs' threshold.

    ``method`` None: learned when learning; with ``--from``, the method of the file applied. ``dims`` None: every
    dimension (learned), min(D, N - 1) (pca); with ``--from``, the file's own. ``pair_tau`` is training's
    (:class:`bpcr.training.options.TrainOptions`), so the whitening learns on the pairs training learns on.
    """

    method: str | None = option(None, "{choices}: learned whitening (Lw) from the database manifest's positive "
                                      "pairs, or PCA-whitening of the store's rows (default: learned; with --from, "
                                      "the method of the file applied).", choices=WHITEN_METHODS, paper=LW)
    dims: int | None = option(None, "Dimensions kept, by decreasing eigenvalue (default: all; pca: at most N - 1; "
                                    "with --from, the file's own).", low=1, integer=True, paper=LW)
    pair_tau: float = option(TrainOptions.pair_tau, "Description cosine above which two database listings are a "
                                                    "positive pair (learned; training's pairs).",
                             low=0, high=1, high_open=True)


def check_whiten_options(options: WhitenOptions) -> str | None:
    """Refuse (BadInput) options out of their ranges or that do nothing with this method, before any work;
    returns the method (None: decided by what is applied)."""
    check(options)
    if options.method == "pca" and options.pair_tau != WhitenOptions.pair_tau:
        raise BadInput(None, None, "--pair-tau chooses the positive pairs of --method learned; "
                                   "--method pca learns on the store's rows alone")
    return options.method
