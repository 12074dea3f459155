"""The leaderboard chart: each run's mAP@7 with its 95% bootstrap interval.

SVG with matplotlib's non-deterministic parts pinned (no date metadata, a fixed
hash salt for element IDs), so the same scores always give the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .fileio import atomic_path


def write_chart(scores: Sequence, path: str | Path) -> None:
    """Horizontal bars of mAP@7, best at the top, with interval whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(scores)[::-1]
    height = max(2.0, 0.35 * len(rows) + 1.0)
    with matplotlib.rc_context({"svg.hashsalt": "bpcr", "svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(7.5, height))
        y = list(range(len(rows)))
        values = [s.map7 for s in rows]
        lower = [s.map7 - s.ci95[0] for s in rows]
        upper = [s.ci95[1] - s.map7 for s in rows]
        ax.barh(y, values, color="#4c72b0", height=0.6)
        ax.errorbar(values, y, xerr=[lower, upper], fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.set_yticks(y, [s.name for s in rows])
        ax.set_xlim(0, 1)
        ax.set_xlabel("mAP@7 (95% bootstrap interval over queries)")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": "bpcr"})
        plt.close(fig)
