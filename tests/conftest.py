"""Shared test helpers: run the CLI in-process and read its exit code and output; a tiny demo config."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest



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
def refused_config(cli, tmp_path, monkeypatch):
    """Write TEXT as a config, ``bpcr run`` it: exit code 2, REASON in one line of stderr, nothing written."""

    def check(text: str, reason: str) -> None:
        config = tmp_path / "bad.toml"
        config.write_text(text)
        monkeypatch.chdir(tmp_path)
        result = cli("run", config)
        assert result.code == 2, result
        assert reason in result.err and len(result.err.strip().splitlines()) == 1, result.err
        assert [p.name for p in tmp_path.iterdir()] == ["bad.toml"]

    return check


@pytest.fixture
def one_faiss_thread():
    # faiss's OpenMP threads spin; on a busy 2-core machine two of them run far slower than one.
    from bpcr.retrieval.distances import faiss_threads

    with faiss_threads(1):
        yield


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


TINY_DEMO = """work = "work"
submissions = "subs"
leaderboard = "lb.md"
[prepare]
demo = true
seed = 2
n_products = 8
n_distractors = 20
n_queries = {n_queries}
{prepare_workers}[[extract]]
name = "lite0"
backbone = "tf_efficientnet_lite0"
size = 64
poolings = ["mac"]
{extract_workers}[[search]]
name = "mac"
features = "lite0/mac"
"""


@pytest.fixture(scope="session")
def tiny_demo_config():
    """``make(n_queries, one_worker=False, then="")``: the text of a tiny demo config.

    It writes into ``work/``, ``subs/`` and ``lb.md``: a generated demo of 8
    products and 20 distractors, Lite0 at 64 px pooled with MAC, and one search
    run ``mac``; ``then`` is appended (more tables). ``one_worker``: one process
    renders the demo and extraction decodes in the main process on one thread.
    """
    def make(n_queries: int, one_worker: bool = False, then: str = "") -> str:
        return TINY_DEMO.format(n_queries=n_queries, prepare_workers="workers = 1\n" if one_worker else "",
                                extract_workers="workers = 0\nthreads = 1\n" if one_worker else "") + then

    return make
