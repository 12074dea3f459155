"""The options of ``bpcr text-index``, each declared once (:mod:`bpcr.options`): the CLI, a config's
``[text_index]`` table and the pipeline's stage key are derived from :class:`TextIndexOptions`.

It imports nothing heavy (the CLI reads it at start-up); :mod:`bpcr.text.tfidf` reads its defaults back from here.
"""
from __future__ import annotations

from dataclasses import dataclass

from bpcr.options import option


@dataclass(frozen=True)
class TextIndexOptions:
    """How ``bpcr text-index`` builds the textual index of the database descriptions (paper 001 §2.2, eq 3-7).

    Each image's neighbours are the images whose description's TF-IDF cosine is strictly above ``tau`` (eq 7);
    a description with more than ``max_non_latin`` of its letters outside the Latin script is non-English and
    dropped. ``chunk_rows`` and ``max_candidates`` bound the memory of the pair search (:mod:`bpcr.text.tfidf`)
    and never change the index. Every field's help says the rest.
    """

    tau: float = option(0.6, "Neighbours have TF-IDF cosine strictly above tau.", low=0, high=1, high_open=True,
                        paper="001 §2.2 eq 7")
    max_non_latin: float = option(0.2, "A description with more than this share of non-Latin letters counts as "
                                        "non-English and is dropped.", low=0, high=1, paper="001 §2.2")
    chunk_rows: int = option(8192, "Rows of the TF-IDF matrix searched at once for pairs.", low=1, integer=True,
                             flag="chunk_rows", cli=False)
    max_candidates: int = option(4_000_000, "Upper bound on candidate pairs held at once (about 12 bytes each, a "
                                            "few copies).", low=1, integer=True, flag="max_candidates", cli=False)

