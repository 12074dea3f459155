"""The command line's shared parts: the Typer app, option parsing and the lists of choices."""
from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence

import typer

from bpcr import __version__
from bpcr.errors import BadInput
from bpcr.ranges import check_weights
# The run fusions, normalisers, rank scores (bpcr ensemble) and metric variants (bpcr score), beside their options.
from bpcr.evaluation.options import NORMALISERS, RANK_SCORES, RUN_FUSIONS, VARIANTS  # noqa: F401 - lists of choices
from bpcr.retrieval.options import DISTANCES, KINDS as INDEX_KINDS, SIMILARITY_FUSIONS  # noqa: F401 - lists of choices
from bpcr.reranking.options import MATCHERS, SCORERS  # noqa: F401 - lists of choices (bpcr rerank)

app = typer.Typer(
    name="bpcr",
    help=(
        "Submission and leaderboard kit for beauty and personal-care product retrieval "
        "(AI Meets Beauty / Perfect-500K).\n\n"
        "Pipeline: prepare -> extract -> index -> search -> refine -> rerank -> ensemble -> score."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bpcr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def parse_weights(weights: Optional[str]) -> Optional[List[float]]:
    """``--weights 0.6,0.4`` -> [0.6, 0.4]; None stays None. Each finite and >= 0, not all 0."""
    if weights is None:
        return None
    try:
        values = [float(w) for w in weights.split(",")]
    except ValueError:
        raise BadInput(None, None, f"--weights {weights!r}: expected comma-separated numbers such as 0.6,0.4") from None
    return check_weights(values)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), 1 <= I <= N; BadInput otherwise."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise BadInput(None, None, f"--shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise BadInput(None, None, f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["gem.p=4", "grmaac.q=[0.5,0.5,1]"]`` -> {"gem": {"p": 4}, ...}; values read as JSON, else text."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        pooling, dot, name = key.partition(".")
        if not sep or not dot or not pooling or not name:
            raise BadInput(None, None, f"--param must look like POOLING.KEY=VALUE (e.g. gem.p=4), got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(pooling.strip(), {})[name.strip()] = parsed
    return out


def parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """``["strength=0.5", "mode=soft"]`` -> {"strength": 0.5, "mode": "soft"}: a plugin refine method's options
    (``--method-option``); values read as JSON, else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(None, None, f"--method-option must look like KEY=VALUE (e.g. strength=0.5), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out



# The CLI's lists of choices, spelled here so that `bpcr --help` stays fast (no torch or faiss
# import); tests/test_cli.py proves each equals its registry. The distances, index kinds and similarity
# fusions are imported above from bpcr.retrieval.options, beside the options that offer them.
POOLINGS = ("mac", "spoc", "gem", "rmac", "ramac", "grmac", "vamac", "grmaac", "srmac", "crow")  # bpcr.features.pooling.POOLINGS
REFINE_MODES = ("fill", "rerank-union")  # bpcr.postretrieval.refine.MODES
REFINE_METHODS = ("text", "aqe", "alpha-qe", "qe-2020", "kreciprocal", "diffusion", "dupgroup")  # bpcr.postretrieval.refine.METHODS
DUP_BY = ("image", "text", "both", "either")  # bpcr.postretrieval.dupgroup.DUP_BY_CHOICES


def choices(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def renamed(old: str, new: str, old_value, new_value, default):
    """The value of an option given under its deprecated name ``old`` (with a warning), else ``new_value``."""
    if old_value is None:
        return new_value
    from bpcr.cli.display import warn

    warn(f"{old} is deprecated; use {new}")
    if new_value != default:
        raise BadInput(None, None, f"give {new} or its old name {old}, not both")
    return old_value
