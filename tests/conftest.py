"""Shared test helpers: run the CLI in-process and read its exit code and output."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Call ``bpcr ARGS...`` in-process; returns exit code, stdout and stderr."""
    from bpcr.cli import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_faiss_thread():
    # faiss's OpenMP threads spin; on a busy 2-core machine two of them run far slower than one.
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def good_gt(tmp_path: Path) -> Path:
    """A valid ground truth: v1 -> n1, n2; v2 -> n3."""
    path = tmp_path / "gt.csv"
    path.write_text("Validation Image ID,Training Image ID\nv1,n1,n2\nv2,n3\n")
    return path


@pytest.fixture
def good_run(tmp_path: Path) -> Path:
    """A valid submission answering v1 and v2 of ``good_gt``."""
    path = tmp_path / "good.csv"
    path.write_text("v1,n1,n2,n3,n4,n5,n6,n7\nv2,n3,n1,n2,n4,n5,n6,n7\n")
    return path
