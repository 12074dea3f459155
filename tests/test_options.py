"""bpcr.options: one declaration per option, and the range check, --help text and Typer command derived from it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from bpcr.errors import BadInput
from bpcr.options import check, cli_command, defaults, fields_of, help_text, option


@dataclass(frozen=True)
class Toy:
    margin: float = option(1.0, "Contrastive margin m.", low=0, high=2, low_open=True, paper="004 §3.2")
    steps: int | None = option(None, "Steps.", low=1, integer=True)
    loss: str = option("a", "Loss: {choices}.", choices=("a", "b"))
    kind: str = option("x", "Kind.", choices=lambda: ("x", "y"))
    hidden: int = option(3, "Not on the command line.", cli=False)


def test_defaults_and_fields():
    assert defaults(Toy) == {"margin": 1.0, "steps": None, "loss": "a", "kind": "x", "hidden": 3}
    assert [f.name for f in fields_of(Toy)] == ["margin", "steps", "loss", "kind", "hidden"]


@pytest.mark.parametrize("given, message", [
    ({"margin": 0.0}, "--margin must be a number in (0, 2], got 0.0"),
    ({"margin": 2.5}, "--margin must be a number in (0, 2], got 2.5"),
    ({"steps": 0}, "--steps must be an integer at least 1, got 0"),
    ({"steps": 1.5}, "--steps must be an integer at least 1, got 1.5"),
    ({"loss": "c"}, "unknown loss 'c'; choose from a, b"),
    ({"kind": "z"}, "unknown kind 'z'; choose from x, y"),
])
def test_check_refuses_with_the_flag_and_the_range(given, message):
    with pytest.raises(BadInput) as err:
        check(Toy(**given))
    assert err.value.reason == message


def test_check_accepts_the_defaults_and_none_where_the_default_is_none():
    check(Toy())
    check(Toy(margin=2.0, steps=None, loss="b", kind="y"))


def test_help_text_says_the_range_choices_and_paper():
    text = {f.name: help_text(f) for f in fields_of(Toy)}
    assert text["margin"] == "Contrastive margin m (a number in (0, 2]; paper 004 §3.2)."
    assert text["steps"] == "Steps (an integer at least 1)."
    assert text["loss"] == "Loss: a, b."
    assert text["kind"] == "Kind (one of x, y)."
    assert "[" not in "".join(text.values())  # rich would read square brackets as markup


def test_cli_command_derives_every_offered_option():
    app = typer.Typer()
    seen = []

    @app.command()
    @cli_command(Toy)
    def run(name: str = typer.Argument(...), options: Toy = Toy()) -> None:
        seen.append((name, options))

    runner = CliRunner()
    result = runner.invoke(app, ["n1", "--margin", "1.5", "--steps", "4", "--loss", "b"])
    assert result.exit_code == 0, result.output
    assert seen == [("n1", Toy(margin=1.5, steps=4, loss="b"))]
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "300"})
    assert "--margin" in result.output and "a number in (0, 2]; paper 004 §3.2" in result.output
    assert "--hidden" not in result.output
    result = runner.invoke(app, ["n2"])
    assert seen[-1] == ("n2", Toy())
