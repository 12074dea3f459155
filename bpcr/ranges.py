"""Allowed ranges of numeric options, checked where each stage function starts.

The command line shows the same ranges in ``--help`` (Typer's ``min=``/``max=``)
and refuses values outside them before calling a stage; these checks make a
notebook or a pipeline config meet the same limits. Messages name the option
as the command line spells it.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Sequence

from bpcr.errors import BadInput

# faiss (ClusteringParameters.seed) and OpenCV (setRNGSeed) keep a seed in a C int.
SEED_MAX = 2**31 - 1
# Bootstrap and randomisation resamples: p-values down to 1e-6 already; more only costs time.
RESAMPLES_MAX = 1_000_000
# Weight-tuning resolution (weights are multiples of 1/steps): the grid over 4 runs has
# C(steps + 3, 3) points, 176,851 at 100; beyond that tuning runs for hours.
TUNING_STEPS_MAX = 100
# The demo's query IDs are "v" and six digits, drawn without repetition.
DEMO_QUERIES_MAX = 1_000_000
# Report thumbnails (longest side, pixels): below 16 nothing can be told apart; above 1024 the
# report folder is no longer small enough to zip and share.
THUMB_MIN, THUMB_MAX = 16, 1024
# A network's input size in pixels: the one range of extract's --size and prepare's --presize sizes.
INPUT_SIZE_MIN, INPUT_SIZE_MAX = 16, 4096
# SIFT re-ranking's working size (the longer side, pixels): rerank's --max-side default, and the side prepare's
# --presize keeps so that re-ranking could read the cache.
SIFT_SIDE = 384
# Queries shown in one report page.
REPORT_LIMIT_MAX = 10_000_000


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"above {low}" if low_open else f"at least {low}"
    return f"below {high}" if high_open else f"at most {high}"


def bounds_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False,
                integer: bool = False) -> str:
    """What a value within the bounds is, in words: ``an integer at least 1``, ``a number in (0, 2]``."""
    kind = "an integer" if integer else "a number"
    return kind if low is None and high is None else f"{kind} {_bounds(low, high, low_open, high_open)}"


def _is_number(value: object, integer: bool = False) -> bool:
    """A finite int or float (numpy's too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        return False
    return math.isfinite(value)


def check_range(option: str, value: object, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, integer: bool = False,
                optional: bool = False) -> None:
    """Refuse ``value`` (BadInput naming ``option``) unless it is a finite number within the bounds.

    ``integer``: only an int will do (a float is refused); ``optional``: None is allowed.
    """
    if value is None and optional:
        return
    ok = _is_number(value, integer)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise BadInput(None, None, f"{option} must be {bounds_text(low, high, low_open, high_open, integer)}, got {value!r}")


def check_seed(seed: object, option: str = "--seed") -> None:
    check_range(option, seed, 0, SEED_MAX, integer=True)


def check_weights(weights: Sequence[object], option: str = "--weights") -> list[float]:
    """Weights as floats: each finite and >= 0, not all 0 (a weighted sum needs one positive weight)."""
    values = []
    for w in weights:
        if not _is_number(w) or w < 0:
            raise BadInput(None, None, f"{option} must be finite numbers >= 0, not all 0; got {list(weights)}")
        values.append(float(w))
    if not any(values):
        raise BadInput(None, None, f"{option} must be finite numbers >= 0, not all 0; got {list(weights)}")
    return values
