"""A stage's options, declared once: each is a field of a frozen dataclass that carries its default, range,
choices, help and the paper it comes from.

Everything else is derived from that one declaration: the range check (:func:`check`, with
:func:`bpcr.ranges.check_range`'s words), the ``--help`` text with its range (:func:`help_text`), the
Typer command's options (:func:`cli_command`), the keys a config table accepts and the defaults a stage
key hashes (:func:`defaults`). A stage entry point takes ``(inputs, options, progress)``::

    @dataclass(frozen=True)
    class IndexOptions:
        hnsw_m: int = option(32, "HNSW neighbours per node.", low=2, integer=True)

    def build_index(store, out, options: IndexOptions = IndexOptions(), log=print): ...
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from bpcr.errors import BadInput
from bpcr.ranges import bounds_text, check_range

SPEC = "bpcr"  # the key of a field's metadata that holds its Spec


@dataclass(frozen=True)
class Spec:
    """What one option is: its help, its numeric range or its choices, and where it comes from.

    ``low``/``high`` with ``low_open``/``high_open`` and ``integer`` bound a number (None stays allowed when
    the default is None); ``choices`` is a sequence of names or a function returning them (a registry read
    late). ``flag`` is the CLI name when it is not ``--name-with-dashes``; ``cli``: False for options a
    config or a notebook sets but the command line does not offer. ``paper``: e.g. ``"004 §3.2"``.
    ``metavar``: how ``--help`` shows the option's value(s) (e.g. ``"A B"``), when not Typer's default.
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    paper: str | None = None
    flag: str | None = None
    cli: bool = True
    metavar: str | None = None

    def names(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    @property
    def bounded(self) -> bool:
        return self.low is not None or self.high is not None or self.integer


# The default of an option that has none: a config must set it, the command line requires it.
REQUIRED = dataclasses.MISSING


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with ``default`` (or :data:`REQUIRED`) and its :class:`Spec` (keyword arguments as Spec's)."""
    return field(default=default, metadata={SPEC: Spec(help, **spec)})


def comma_integers(text: str) -> tuple[int, ...] | None:
    """A command line's comma list of integers (``"224,240"`` -> ``(224, 240)``), or None when a part is not one;
    the option's own check says what is wrong, with the text as given."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        return None


def fields_of(cls: type) -> list[dataclasses.Field]:
    """The declared options of an options class, in order."""
    return [f for f in dataclasses.fields(cls) if SPEC in f.metadata]


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata[SPEC]


def flag_of(f: dataclasses.Field) -> str:
    return spec_of(f).flag or "--" + f.name.replace("_", "-")


def defaults(cls: type) -> dict[str, Any]:
    """name -> default of every option (required ones have none and are left out)."""
    return {f.name: f.default for f in fields_of(cls) if f.default is not REQUIRED}


def check(options: Any, spell: Callable[[dataclasses.Field], str] = flag_of) -> None:
    """Refuse (BadInput naming the option as ``spell`` spells it: its flag, or e.g. its config key) any option
    outside its range or choices."""
    for f in fields_of(type(options)):
        spec, value = spec_of(f), getattr(options, f.name)
        if spec.bounded:
            check_range(spell(f), value, spec.low, spec.high, low_open=spec.low_open, high_open=spec.high_open,
                        integer=spec.integer, optional=f.default is None)
        names = spec.names()
        if names is not None and value not in names and not (value is None and f.default is None):
            raise BadInput(None, None, f"unknown {spell(f).lstrip('-')} {value!r}; choose from {', '.join(names)}")


def help_text(f: dataclasses.Field) -> str:
    """The option's ``--help`` line: its help, then its range or choices as the check enforces them."""
    spec = spec_of(f)
    names = spec.names()
    text = spec.help.replace("{choices}", ", ".join(names or ()))
    notes = []  # no square brackets: rich reads them as markup in --help
    if names is not None and "{choices}" not in spec.help:
        notes.append("one of " + ", ".join(names))
    if spec.bounded:
        notes.append(bounds_text(spec.low, spec.high, spec.low_open, spec.high_open, spec.integer))
    if spec.paper:
        notes.append(f"paper {spec.paper}")
    return f"{text.rstrip('.')} ({'; '.join(notes)})." if notes else text


def cli_command(cls: type, into: str = "options") -> Callable[[Callable], Callable]:
    """Give a Typer command function one CLI option per field of ``cls``, passed to it as ``cls(...)`` in ``into``.

    The function declares its inputs as usual (Arguments, ``--out``) and one parameter ``into``; the options of
    ``cls`` with ``cli=True`` are appended to its signature as ``typer.Option``s built from their specs.
    """
    import typer

    hints = typing.get_type_hints(cls)

    def wrap(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != into]
        offered = [f for f in fields_of(cls) if spec_of(f).cli]
        params = own + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                          default=typer.Option(... if f.default is REQUIRED else f.default,
                                                               flag_of(f), help=help_text(f),
                                                               metavar=spec_of(f).metavar))
                        for f in offered]

        def command(**kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f in offered}
            return func(**kwargs, **{into: cls(**given)})

        command.__name__, command.__qualname__, command.__doc__ = func.__name__, func.__qualname__, func.__doc__
        command.__module__ = func.__module__
        command.__signature__ = signature.replace(parameters=sorted(params, key=lambda p: p.kind))
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.options_class = cls  # where each of its options is declared (tests read it)
        return command

    return wrap
