"""A deterministic synthetic miniature of Perfect-500K (the bundled demo data).

Model of the task. Products come in *families* that share a shape, a colour
scheme, a label layout, a pattern and a product line (a lipstick range, a serum
line); the members of a family differ in brand text, shade or variant. A few
hundred *target* products each get 1-6 clean shop images (plain or studio
background, varied angle, scale and crop) and are the subject of at most one
query photo each. The database is padded with distractor images of other
products: a quarter of them siblings of a target (hard negatives that mostly
fine detail -- text, logo, hue -- tells apart), the rest products of unrelated
families. Query photos put the product in clutter with perspective, rotation,
occlusion, lighting, colour casts, blur, noise and low JPEG quality; about one
in ten is stored EXIF-rotated like a phone photo. Every database image has a
shop-style description (brand, line, type, shade, size) that varies between
listings of one product, a few in Chinese, Korean, French or Spanish. A handful
of deliberately broken or unusual files (zero bytes, truncated, PNG behind a
``.jpg`` name, CMYK, 16-bit, palette, grayscale, a decompression bomb) are
always distractors, never relevant.

Every file depends only on ``seed`` and its own index: image ``i`` of kind ``k``
draws from ``numpy.random.default_rng([seed, k, i])``, so the worker count and
scheduling never change a byte. The difficulty knobs in :mod:`.catalogue` were
set so that a plain global descriptor (ImageNet EfficientNet-Lite0, MAC or GeM,
224 px) reaches a mAP@7 like published global descriptors on the real data, with
the right product usually in its top 100 (room for re-ranking and textual
refinement to show what they add).

Modules, in the order an image is made: :mod:`.catalogue` (knobs, vocabulary,
families, products, listing titles), :mod:`.artwork` (label lettering, logos,
patterns, graphics), :mod:`.drawing` (one sprite drawer per category),
:mod:`.photo` (shop listings and user photos), :mod:`.messy` (the broken and
unusual files), :mod:`.generate` (the plan, the workers, the files on disk).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from .generate import DemoSummary, generate_demo
from .messy import MESSY_KINDS

if TYPE_CHECKING:
    from ..prepare import PrepareSummary
    from ..progress import Progress

__all__ = ["MESSY_KINDS", "DemoSummary", "generate_demo", "generator_digest", "prepare_demo"]


def generator_digest() -> str:
    """SHA-256 of the generator's source: every ``.py`` file of this package, in file-name order.

    The files depend on the code as well as the arguments, so a changed digest means a changed dataset.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py"), key=lambda p: p.name):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare_demo(out: Path, seed: int = 0, n_products: int = 200, n_distractors: int = 2500, n_queries: int = 200,
                 workers: int | None = None, progress: Progress | None = None) -> PrepareSummary:
    """Generate the demo into ``out`` (see :func:`generate_demo`) and prepare it into ``out/prepared``.

    ``workers`` processes render and then check the images (default: one per CPU); ``progress`` is told of
    every image checked (:mod:`bpcr.progress`).
    """
    from ..prepare import check_outputs, prepare
    from ..ranges import DEMO_QUERIES_MAX, check_range

    check_range("--n-queries", n_queries, 1, DEMO_QUERIES_MAX, integer=True)
    check_range("--workers", workers, 1, integer=True, optional=True)
    out = Path(out)
    check_outputs(out / "prepared")  # before the dataset is generated, not after
    generate_demo(out, seed=seed, n_products=n_products, n_distractors=n_distractors, n_queries=n_queries,
                  workers=workers)
    return prepare(out / "database", out / "descriptions.csv", out / "queries", out / "ground_truth.csv",
                   out / "prepared", workers=workers, progress=progress)
