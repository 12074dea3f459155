"""The options of ``bpcr rerank``, each declared once (:mod:`bpcr.options`): the CLI, a config's ``[[rerank]]``
tables, the pipeline's stage key, the run's provenance (``NAME.json`` ``params``) and the key of the SIFT cache
(:class:`bpcr.reranking.sift_cache.SiftOptions`) are derived from :class:`RerankOptions`.

It imports nothing heavy (the CLI reads it at start-up), so the scorers and matchers are named here;
:mod:`bpcr.reranking.order` and :mod:`bpcr.reranking.sift` read them back, and tests/cli/test_cli.py proves
the CLI lists equal them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpcr.options import option
from bpcr.ranges import SEED_MAX, SIFT_SIDE


@dataclass(frozen=True)
class Scorer:
    description: str
    local: str | None  # the SIFT score it ranks by; None: the one named by blend_of


# How a shortlist is re-scored (the scores are described in bpcr.reranking.rerank's docstring).
SCORERS: dict[str, Scorer] = {
    "matches": Scorer("number of ratio-test SIFT matches, ties by mean match distance (paper 000 §3.1.1)", "matches"),
    "inliers": Scorer("RANSAC homography inliers among the ratio-test matches (spatial verification)", "inliers"),
    "blend": Scorer("(1-λ)·input score + λ·SIFT score, both min-max normalised per shortlist", None),
}
LOCAL_SCORERS = ("matches", "inliers")  # the SIFT scores; blend mixes one of them with the input run's
MATCHERS = ("flann", "bf")  # bpcr.reranking.sift.match / match_many
# Where descriptors are cached when no --cache-dir is given (the pipeline uses WORK/sift-cache).
DEFAULT_CACHE_DIR = Path("work") / "cache" / "sift"


@dataclass(frozen=True)
class RerankOptions:
    """How ``bpcr rerank`` re-ranks each query's shortlist by SIFT matching (paper 000 §3.1.1, §3.4.2).

    The ``top`` images of every query (the paper: 100) are matched with the query: SIFT keypoints (at most
    ``max_keypoints`` per image, described at ``max_side`` pixels, JPEGs decoded in draft mode with
    ``jpeg_draft``; RootSIFT with ``root_sift``), nearest neighbours by ``matcher`` (``bf`` exact, ``flann``
    the paper's k-d forest) and Lowe's ratio test at ``ratio`` (the paper: 0.8). ``scorer`` ranks by the
    number of matches, by the RANSAC homography inliers among them (``ransac_threshold`` pixels), or by a
    ``blend`` of the input score and the ``blend_of`` score with weight ``blend_weight``. ``seed`` reseeds
    FLANN and RANSAC on every pair. ``workers`` processes describe and match (default: every core);
    ``device`` other than cpu matches with ``bf`` through torch. Every field's help says the rest.
    """

    top: int = option(100, "Re-rank the top N of each query; the rest keep the input order.", low=1, integer=True,
                      paper="000 §3.4.2")
    scorer: str = option("matches", "{choices}: ratio-test match count, RANSAC homography inliers, or a blend with "
                                    "the input score.", choices=tuple(SCORERS), paper="000 §3.1.1")
    blend_weight: float = option(0.5, "λ of blend: (1-λ)·input + λ·SIFT score, both min-max normalised per query.",
                                 low=0, high=1)
    blend_of: str = option("matches", "SIFT score that blend mixes in: {choices}.", choices=LOCAL_SCORERS)
    ratio: float = option(0.8, "Lowe's ratio test threshold; the paper's is 0.8.", low=0, high=1, low_open=True,
                          paper="000 §3.1.1")
    # The keypoint cap was chosen on the public half of the demo's queries (seed 0, 384 px, bf):
    # `bpcr sweep configs/demo.toml --grid rerank.fused-sift.max_keypoints=250,500,1000 --run fused-sift`
    # gave mAP@7 0.383 / 0.362 / 0.361 (the private half, reported only: 0.421 / 0.410 / 0.406). A larger
    # cap mostly adds keypoints from the clutter of the query photo, which match distractors, and matching
    # time grows with it.
    max_keypoints: int = option(250, "SIFT keypoints kept per image, strongest first.", low=1, integer=True)
    # Shop images are a few hundred pixels on a side; phone photos are shrunk to
    # match their scale, and SIFT time grows with the pixel count. Measured with
    # benchmarks/rerank_cost.py on demo seed 1 (200 queries x top 100 of the fused
    # Lite0+Lite1 run, bf, "matches"), mAP@7 public / private half: 0.424 / 0.425
    # at 512 px, 0.458 / 0.460 at 384, 0.449 / 0.476 at 320, 0.446 / 0.426 at 256;
    # 384 scored best on the public half, and describes an image in ~0.7x the CPU
    # time of 512.
    max_side: int = option(SIFT_SIDE, "Images are shrunk so their long side is at most this many pixels.", low=32,
                           integer=True)
    # Same demo and runs: FLANN 0.416 / 0.432, exact "bf" 0.424 / 0.425 (public /
    # private), with matching ~15x faster (one product per query and shortlist);
    # with RootSIFT, FLANN 0.494 / 0.493, bf 0.501 / 0.495.
    matcher: str = option("bf", "{choices}: bf is exact, a query against its whole shortlist in one matrix product; "
                                "flann is the paper's k-d forest, 5 trees, 50 checks.", choices=MATCHERS,
                          paper="000 §3.1.1")
    root_sift: bool = option(False, "Match RootSIFT descriptors (L1-normalised, square-rooted SIFT).",
                             flag="--root-sift/--no-root-sift")
    jpeg_draft: bool = option(True, "Decode large JPEGs at a reduced scale near --max-side.",
                              flag="--jpeg-draft/--no-jpeg-draft")
    seed: int = option(0, "Seed of FLANN's random trees and of RANSAC.", low=0, high=SEED_MAX, integer=True)
    workers: int | None = option(None, "Processes; default: one per CPU.", low=1, integer=True)
    device: str = option("cpu", "Where --matcher bf matches: cpu (in the worker processes), auto or cuda[:N] (torch).")
    ransac_threshold: float = option(5.0, "RANSAC reprojection threshold in pixels (of the shrunk images) of the "
                                          "homography whose inliers the inliers score counts.", low=0, low_open=True,
                                     flag="ransac_threshold", cli=False, paper="000 §3.4.2")

    @property
    def local(self) -> str:
        """The SIFT score the run ranks by or blends in: ``matches`` or ``inliers``."""
        return SCORERS[self.scorer].local or self.blend_of
