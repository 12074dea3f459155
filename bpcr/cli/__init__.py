"""The `bpcr` command line: a thin Typer layer over the library.

Each command only parses its options, calls one public library function and
prints. A :class:`bpcr.errors.BadInput` raised anywhere, and a usage error
found while parsing (a missing option, a value outside the range ``--help``
shows), becomes one line on stderr and exit code 2; anything else is an
internal error (exit 1).

The commands live in ``stages.py`` (the pipeline's stages, in their order),
``chains.py`` (run, predict, sweep, train), ``evaluate.py`` (score, check, report) and ``serve.py`` (serve,
submit: the team's board); ``options.py`` holds the app, the option
parsers and the lists of choices; what is shown comes from ``bpcr.cli.display``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from bpcr.errors import BadInput
from bpcr.cli import stages  # noqa: F401  (registers the pipeline's commands first, in --help too)
from bpcr.cli import chains  # noqa: F401,E402
from bpcr.cli import evaluate  # noqa: F401,E402
from bpcr.cli import serve  # noqa: F401,E402
from bpcr.cli.options import app


# Typer reports parsing errors as ClickException (its own copy of click's, or click's itself):
# the base class of the public typer.BadParameter.
_ParsingError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the console script; ``argv`` lets tests run it in-process."""
    try:
        # Not standalone: Typer would print a usage error as a framed box of several lines.
        code = app(args=argv, prog_name="bpcr", standalone_mode=False)
    except BadInput as exc:
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(2)
    except _ParsingError as exc:
        # `bpcr` alone: the help was printed when the error was made.
        if type(exc).__name__ != "NoArgsIsHelpError":
            typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # typer.Exit(code), e.g. 130 after Ctrl-C
        sys.exit(code)


