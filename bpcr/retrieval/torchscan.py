"""Exact search on a torch device: the scan of :func:`bpcr.retrieval.distances.exact_topk` on a GPU
where faiss has none (a faiss-cpu install, or a platform without faiss-gpu wheels).

Each chunk of database rows travels to the device in its stored dtype (a
float16 store moves half the bytes of float32), is widened to float32 there
and scored against every query by one matmul with float32 accumulation and
TF32 off, so the scores are as precise as the CPU's BLAS; ``torch.topk`` then
keeps each query's best ``k`` on the device and only those come back. Exact
ties at the cut go to the lowest row, as on the CPU (:func:`bpcr.retrieval.distances.top_k`),
so both kernels propose the same rows wherever their float32 scores agree, and
bpcr re-scores every candidate in float64 before ranking.

The scores mirror :attr:`bpcr.retrieval.distances.Distance.fast`, distance by distance
(higher = better): cosine divides by each row's norm (float16 rounding leaves
stored rows at 1 +- 1e-3), l2 is the negated distance through one product,
l1 the negated cityblock distance.
"""
from __future__ import annotations

import os
import sys

import numpy as np

# Database rows sent to the device at once (in their stored dtype), and the score block held
# there, (queries, chunk rows) float32: queries go in batches under it.
DEVICE_CHUNK_BYTES = 256 << 20
SCORE_BYTES = 1 << 30


# What a GPU torch can use leaves on Linux: the NVIDIA driver's /proc entry, WSL's GPU device, ROCm's kernel driver.
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


def cuda_available() -> bool:
    """Whether torch sees a CUDA (or ROCm) GPU. On Linux with none of :data:`GPU_DRIVER_PATHS` the answer is no
    without importing torch, which takes about 2 s, paid by every `bpcr search` and `refine` on a CPU machine."""
    if "torch" not in sys.modules and sys.platform.startswith("linux") and \
            not any(os.path.exists(path) for path in GPU_DRIVER_PATHS):
        return False
    import torch

    return torch.cuda.is_available()


class DeviceScan:
    """Queries (NQ, D) float32, prepared as for the CPU kernel, held on ``device`` for a scan.

    Use as a context manager: float32 matmuls run at full precision inside it
    (``torch.set_float32_matmul_precision("highest")``), as the process had it before after.
    """

    def __init__(self, queries: np.ndarray, distance: str, device: str = "cuda") -> None:
        import torch

        if distance not in ("cosine", "l2", "l1"):
            raise ValueError(f"no torch form of distance {distance!r}")
        self._torch = torch
        self.device = torch.device(device)
        self.distance = distance
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
        self._saved_precision: str | None = None

    def __enter__(self) -> "DeviceScan":
        self._saved_precision = self._torch.get_float32_matmul_precision()
        self._torch.set_float32_matmul_precision("highest")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved_precision is not None:
            self._torch.set_float32_matmul_precision(self._saved_precision)

    def _scores(self, q, x):
        torch = self._torch
        if self.distance == "l1":
            return -torch.cdist(q, x, p=1.0)
        products = q @ x.T
        if self.distance == "cosine":
            norms = torch.linalg.vector_norm(x, dim=1).clamp_min_(torch.finfo(x.dtype).tiny)
            return products.div_(norms[None, :])
        squared = products.mul_(-2.0)
        squared += (x * x).sum(dim=1)[None, :]
        squared += (q * q).sum(dim=1)[:, None]
        return squared.clamp_min_(0.0).sqrt_().neg_()

    def topk(self, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """block (m, D) any float dtype, on the host -> (scores (NQ, k) float32, rows (NQ, k) int64 in the block).

        The ``k`` best rows of the block per query, unordered; ties at the cut to the lowest rows.
        """
        torch = self._torch
        m = block.shape[0]
        k = min(k, m)
        x = torch.from_numpy(np.ascontiguousarray(block)).to(self.device).float()
        n_queries = self.queries.shape[0]
        step = max(1, SCORE_BYTES // (4 * max(m, 1)))
        scores = np.empty((n_queries, k), dtype=np.float32)
        rows = np.empty((n_queries, k), dtype=np.int64)
        for q0 in range(0, n_queries, step):
            s = self._scores(self.queries[q0 : q0 + step], x)
            values, index = torch.topk(s, k, dim=1)
            kth = values[:, -1:]
            # Rows tied with the k-th score that topk left out: rare, so put right on the host.
            straddle = ((s == kth).sum(dim=1) > (values == kth).sum(dim=1)).nonzero().flatten().tolist()
            values, index = values.cpu().numpy(), index.cpu().numpy()
            for q in straddle:
                row_scores = s[q].cpu().numpy()
                cut = values[q, -1]
                above = np.flatnonzero(row_scores > cut)
                tied = np.flatnonzero(row_scores == cut)[: k - len(above)]
                index[q] = np.concatenate([above, tied])
                values[q] = row_scores[index[q]]
            scores[q0 : q0 + len(values)] = values
            rows[q0 : q0 + len(values)] = index
        return scores, rows
