"""The options of ``bpcr sweep`` and ``bpcr predict``, each declared once (:mod:`bpcr.options`): the CLI and the
range checks are derived from :class:`SweepOptions` and :class:`PredictOptions` (neither is a config table: both
commands read a whole config).

Nothing heavy is imported here: the CLI reads it at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass

from bpcr.options import check, option
from bpcr.ranges import SEED_MAX


@dataclass(frozen=True)
class SweepOptions:
    """How ``bpcr sweep`` chooses (:func:`bpcr.pipeline.sweep.sweep`): on the public half of the split
    (``split_seed``, ``public_share``; default the config's ``[score]`` one) by the run ``target`` (default the
    config's last run), over a grid of at most ``max_points`` points. Every field's help says the rest.
    """

    target: str | None = option(None, "The run the choice is made on (default: the config's last run).", flag="--run")
    split_seed: int | None = option(None, "Seed of the public/private split (as `bpcr score`). Default: the "
                                          "split_seed of the config's score table (0 when it sets none); one that "
                                          "differs from it is refused.", low=0, high=SEED_MAX, integer=True)
    public_share: float | None = option(None, "Share of queries in the public half. Default: the public_share of the "
                                              "config's score table (0.5 when it sets none).",
                                        low=0, high=1, low_open=True, high_open=True)
    max_points: int = option(200, "Refuse a grid of more points than this (each point is a whole pipeline run); "
                                  "counted before anything is written.", low=1, integer=True)


@dataclass(frozen=True)
class PredictOptions:
    """How ``bpcr predict`` answers new queries (:func:`bpcr.pipeline.predict.predict`): with the run ``run``
    (default the config's last run)."""

    run: str | None = option(None, "The run whose answers are written (default: the config's last run).")


def check_sweep_options(options: SweepOptions) -> None:
    """Refuse (BadInput) options out of their ranges, before the config is read."""
    check(options)
