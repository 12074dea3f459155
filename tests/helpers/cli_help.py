"""Reading a command's --help table against the options class it derives its options from."""
from __future__ import annotations

from typing import Mapping

from bpcr.options import fields_of, flag_of, help_text, spec_of


def help_as_declared(cli, monkeypatch, command: str, cls: type, own_flags: Mapping[str, str] | None = None
                     ) -> tuple[list[str], str]:
    """Check that each option of ``cls`` shows in ``bpcr command --help`` as declared: its field's help with
    the range or choices the check enforces. ``own_flags``: field -> the flag the command spells itself for
    a field it does not let :func:`bpcr.options.cli_command` derive. Returns (the table's lines, the whole help).
    """
    monkeypatch.setenv("COLUMNS", "2000")  # one help line per option
    lines = cli(command, "--help").out.splitlines()
    table = [line for line in lines if line.lstrip().startswith("│")]  # the options, not the examples above them
    for f in fields_of(cls):
        spec = spec_of(f)
        flag = flag_of(f) if spec.cli else (own_flags or {}).get(f.name)
        shown_flag = (flag or flag_of(f)).split("/")[0]  # a switch --name/--no-name shows as its first name
        line = next((line for line in table if line.strip("│ *\t").split(" ")[0] == shown_flag), None)
        if flag is None:  # a library's and a config's option only
            assert line is None, line
            continue
        assert line is not None, f"{flag} not in `bpcr {command} --help`"
        assert " ".join(help_text(f).split()) in " ".join(line.split()), (f.name, line)
        if spec.names():
            assert ", ".join(spec.names()) in line, f.name
    return table, "\n".join(lines)
