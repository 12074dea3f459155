"""The team's board: `bpcr serve` (and its add-member, reveal) and `bpcr submit`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bpcr.cli.options import app
from bpcr.errors import BadInput
from bpcr.options import cli_command
from bpcr.serve.options import ServeOptions

serve_app = typer.Typer(no_args_is_help=False, add_completion=False, rich_markup_mode="rich")
app.add_typer(serve_app, name="serve", rich_help_panel="Team board")

DATA_HELP = "The board's folder: its record, its SQLite database (unless --db), uploads in flight, thumbnails."
DB_HELP = ("Database URL, e.g. postgresql://user@host/board for a board several machines share. Default: the one "
           "the board's first start recorded, else DATA/board.sqlite.")


@serve_app.callback(invoke_without_command=True)
@cli_command(ServeOptions)
def serve(
    ctx: typer.Context,
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground truth in the challenge format; never shown, only its public half's figures until `bpcr serve reveal`."),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Database manifest (database.csv from bpcr prepare), queries.csv beside it, to check submissions as `bpcr check` does. Needed at the first start; recorded in DATA/serve.json for later ones."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    options: ServeOptions = ServeOptions(),
) -> None:
    """Serve a team's leaderboard: members submit runs over HTTP, the board checks and scores them against
    ground truth it never shows, keeps every submission, and fuses any of them on request.

    The board at URL/ shows each submission's public mAP@7 with its interval; the private half is hidden
    until `bpcr serve reveal`. Each member submits with their token, at most --daily-limit a day.

    Examples:

      bpcr serve --gt ground_truth/demo.csv --data work/board --manifest work/demo/prepared/database.csv

      bpcr serve add-member alice --data work/board   (prints alice's token, once)

      bpcr submit http://127.0.0.1:8000 submissions/lite0-gem.csv --token TOKEN

      bpcr serve reveal --data work/board   (the private half, at the end)
    """
    if ctx.invoked_subcommand is not None:
        return
    if gt is None or data is None:
        raise BadInput(None, None, "bpcr serve needs --gt FILE and --data DIR (or a command: add-member, reveal)")
    import uvicorn

    from bpcr.options import check
    from bpcr.serve.app import create_app
    from bpcr.serve.board import open_board
    from bpcr.serve.database import shown_url

    check(options)
    board = open_board(gt, data, manifest, db=db, options=options)
    typer.echo(f"the board of {data} ({shown_url(str(board.engine.url))}): http://{options.host}:{options.port}/ "
               f"- {len(board.public_gt)} public of {len(board.gt)} queries shown; Ctrl-C stops it")
    uvicorn.run(create_app(board), host=options.host, port=options.port, log_level="warning",
                timeout_graceful_shutdown=5)


@serve_app.command("add-member")
def add_member_command(
    name: str = typer.Argument(..., help="The member's name as the board shows it."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Add a member and print their token, once: the board keeps only its hash.

    Example: bpcr serve add-member alice --data work/board
    """
    from bpcr.serve.board import open_database, utc_now
    from bpcr.serve.members import add_member

    engine, _ = open_database(data, db)
    token = add_member(engine, name, utc_now())
    typer.echo(token)
    typer.echo(f"{name}'s token, shown once: bpcr submit URL RUN.csv --token {token}", err=True)


@serve_app.command("reveal")
def reveal_command(
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Reveal the private half: the board then ranks by private mAP@7, as `bpcr score` ranks runs.

    Example: bpcr serve reveal --data work/board
    """
    from bpcr.serve.board import open_database, reveal

    engine, _ = open_database(data, db)
    reveal(engine)
    typer.echo("revealed: the board now shows the private half and ranks by it")


@app.command("submit", rich_help_panel="Team board")
def submit_command(
    url: str = typer.Argument(..., help="The board, e.g. http://127.0.0.1:8000"),
    run: Path = typer.Argument(..., help="The submission CSV; NAME.json beside it goes along as its provenance."),
    token: str = typer.Option(..., "--token", envvar="BPCR_TOKEN", help="Your token (bpcr serve add-member printed it); or the environment's BPCR_TOKEN."),
    name: Optional[str] = typer.Option(None, "--name", help="The name the board shows. Default: the file's name without .csv."),
    note: str = typer.Option("", "--note", help="A note the board shows beside it."),
    timeout: float = typer.Option(300.0, "--timeout", min=1, max=3600, help="Seconds to wait for the board's answer."),
) -> None:
    """Submit a run to a team's board (`bpcr serve`): it is checked and scored there.

    Exit code 0 when the board accepted and scored it, 2 with the board's one-line reason when it refused it
    (or could not be reached), 1 when the board itself failed.

    Example: bpcr submit http://127.0.0.1:8000 submissions/lite0-gem.csv --token TOKEN --note "GeM p=3"
    """
    from bpcr.serve.client import BoardFailed, submit

    try:
        done = submit(url, run, token, name, note, timeout)
    except BoardFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for warning in done.warnings:
        typer.echo(f"warning: {warning}", err=True)
    public = done.public
    words = f"accepted: submission {done.id} ({done.name}), public mAP@7 {public['map7']:.4f}"
    if public.get("ci95"):
        words += f" [{public['ci95'][0]:.4f}, {public['ci95'][1]:.4f}]"
    typer.echo(words + f" on {public['n_queries']} queries")
    if done.private is not None:
        typer.echo(f"private mAP@7 {done.private['map7']:.4f} on {done.private['n_queries']} queries")
    typer.echo(done.url)
