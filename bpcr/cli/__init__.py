"""The `bpcr` command line: a thin Typer layer over the library.

Each command only parses its options, calls one public library function and
prints. A :class:`bpcr.errors.BadInput` raised anywhere becomes one line on
stderr and exit code 2; anything else is an internal error (exit 1).

The commands live in ``stages.py`` (the pipeline, in its order) and
``evaluate.py`` (score, check); ``options.py`` holds the app, the option
parsers and the lists of choices; what is shown comes from ``bpcr.display``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from ..errors import BadInput
from . import stages  # noqa: F401  (registers the pipeline's commands first, in --help too)
from . import evaluate  # noqa: F401,E402
from .options import app


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the console script; ``argv`` lets tests run it in-process."""
    try:
        app(args=argv, prog_name="bpcr")
    except BadInput as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


