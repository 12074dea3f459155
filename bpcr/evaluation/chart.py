"""The leaderboard chart: each run's private mAP@7 with its 95% bootstrap interval.

The private half is what the leaderboard ranks by (``bpcr.evaluation.score``); where a
run was scored without a split, its all-queries figure is drawn.

SVG with matplotlib's non-deterministic parts pinned (no date metadata, a fixed
hash salt for element IDs), so the same scores always give the same bytes.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from bpcr.io.fileio import write_group


def _plotted(score) -> tuple[float, tuple[float, float]]:
    """The figure drawn for one run: its private mAP@7 and interval, else all queries'."""
    private = getattr(score, "halves", {}).get("private")
    if private is not None and private.map7 is not None:
        return private.map7, private.ci95
    return score.map7, score.ci95


def write_chart(scores: Sequence, path: str | Path) -> None:
    """Write :func:`chart_svg` to ``path`` atomically (a symbolic link is written through)."""
    write_group({Path(path): chart_svg(scores)})


XLABEL = "private mAP@7 (95% bootstrap interval over the private queries)"


def chart_svg(scores: Sequence, xlabel: str = XLABEL) -> bytes:
    """Horizontal bars of private mAP@7 in the leaderboard's order, with interval whiskers, as SVG bytes.

    ``xlabel`` names the figure drawn when it is another (a board that shows the public half only draws
    objects with no private half: their ``map7`` and ``ci95``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(scores)[::-1]
    height = max(2.0, 0.35 * len(rows) + 1.0)
    with matplotlib.rc_context({"svg.hashsalt": "bpcr", "svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(7.5, height))
        y = list(range(len(rows)))
        plotted = [_plotted(s) for s in rows]
        values = [v for v, _ in plotted]
        lower = [v - ci[0] for v, ci in plotted]
        upper = [ci[1] - v for v, ci in plotted]
        ax.barh(y, values, color="#4c72b0", height=0.6)
        ax.errorbar(values, y, xerr=[lower, upper], fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.set_yticks(y, [s.name for s in rows])
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "bpcr"})
        plt.close(fig)
    return buffer.getvalue()
