"""bpcr: submission and leaderboard kit for beauty and personal-care product retrieval.

The front door for a notebook (each name is imported on first use, so
``import bpcr`` stays light)::

    import bpcr
    run = bpcr.load_run("submissions/lite0-grmac.trec")      # a run: ranking, scores, provenance
    gt = bpcr.read_ground_truth("ground_truth/demo.csv")     # {query_id: [relevant IDs]}
    bpcr.map_at_k(run.top(7), gt)                            # the challenge's mAP@7
    scores = bpcr.score_runs(["submissions/"], "ground_truth/demo.csv")  # intervals, tests
    fused = bpcr.fuse_runs([run, other], "rrf")              # a fused Run, in memory

The papers the kit implements (their text is in ``shared/seeds/``), and where:

| paper | title | modules |
|---|---|---|
| 000 | Cross-domain beauty and personal care product retrieval (hybrid deep + SIFT) | ``pooling`` (MAC eq 1, SPoC eq 2, R-MAC eq 3, RA-MAC eq 4-5), ``distances`` (eq 6-8), ``sift`` + ``rerank`` (§3.1.1, §3.4.2) |
| 001 | Attention-driven unsupervised retrieval with visual and textual clues | ``pooling`` (GRMAC eq 1-2), ``textindex`` (§2.2, eq 3-7), ``refine`` (Algorithm 1), ``fusion`` (product fusion, eq 8) |
| 002 | Multi-attention cross-domain beauty product retrieval (MANet) | ``pooling`` (SR-MAC), ``saliency``, ``metrics`` (eq A1-A2, as a named variant), ``prepare`` (cleaning invalid images) |
| 003 | VM-Net: variable attention and multi-feature combination | ``pooling`` (VAMAC eq 2-7, GRMAAC eq 8-12), ``extract`` (middle-layer features, §3.4), ``fusion`` (weighted-sum fusion, eq 16), ``saliency`` |
| 004 | Matching user photos to online products with robust deep features | ``losses`` (contrastive eq 1, robust contrastive §3.2), ``pseudolabels`` + ``train`` + ``trainloop`` (pairs, hard negatives, multi-task, §3.2-3.3), efficiency figures in ``benchmarks/`` (§4.5) |
"""

__version__ = "0.1.0"

# name -> (module, attribute): the notebook front door, imported lazily (PEP 562).
_FRONT_DOOR = {
    "load_run": ("io.runs", "load_run"),
    "write_run": ("io.runs", "write_run"),
    "read_ground_truth": ("dataset.gt", "read_ground_truth"),
    "map_at_k": ("evaluation.metrics", "map_at_k"),
    "ap_at_k": ("evaluation.metrics", "ap_at_k"),
    "score_runs": ("evaluation.score", "score_runs"),
    "fuse_runs": ("evaluation.ensemble", "fuse_runs"),
    "open_store": ("io.store", "open_store"),
}

__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str):
    if name in _FRONT_DOOR:
        from importlib import import_module

        module, attribute = _FRONT_DOOR[name]
        return getattr(import_module(f"bpcr.{module}"), attribute)
    raise AttributeError(f"module 'bpcr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
