"""The scripts in benchmarks/ run for minutes, so no test runs them; this one reads them.

Every name a function of a benchmark reads as a global must exist at module
level or among the builtins. A moved helper whose import went astray is then
a failing test, not a NameError minutes into a measurement.
"""
from __future__ import annotations

import builtins
import symtable

import pytest
from tests.helpers import ROOT

BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def _functions(table: symtable.SymbolTable):
    for child in table.get_children():
        if child.get_type() == "function":
            yield child
        yield from _functions(child)


def _undefined(source: str, name: str) -> list[str]:
    module = symtable.symtable(source, name, "exec")
    defined = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    defined |= {t.get_name() for t in module.get_children()} | set(dir(builtins)) | {"__file__", "__name__"}
    return sorted({f"{f.get_name()}: {s.get_name()}" for f in _functions(module) for s in f.get_symbols()
                   if s.is_global() and s.is_referenced() and s.get_name() not in defined})


def test_the_reader_finds_a_missing_import():
    assert _undefined("def f():\n    return helper()\n", "x.py") == ["f: helper"]
    assert _undefined("from m import helper\ndef f():\n    return helper()\n", "x.py") == []


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_global_a_benchmark_reads_is_defined(script):
    assert _undefined(script.read_text(), script.name) == []
