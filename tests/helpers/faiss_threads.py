"""How many OpenMP threads faiss had while a module's store chunks were read: a spy on its ``iter_chunks``."""
from __future__ import annotations

import sys
from types import ModuleType

from bpcr.retrieval.distances import faiss_module


def watch_chunk_threads(monkeypatch, module: ModuleType) -> list[tuple[str, set[int]]]:
    """Replace ``module.iter_chunks`` with one that records, for each pass over the chunks, the function that
    made it and faiss's thread counts at its steps (the work a loop does between steps runs under them)."""
    faiss = faiss_module()
    real = module.iter_chunks
    seen: list[tuple[str, set[int]]] = []

    def watched(*args, **kwargs):
        threads: set[int] = set()
        seen.append((sys._getframe(1).f_code.co_name, threads))
        for item in real(*args, **kwargs):
            threads.add(faiss.omp_get_max_threads())
            yield item

    monkeypatch.setattr(module, "iter_chunks", watched)
    return seen
