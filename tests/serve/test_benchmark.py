"""benchmarks/serve_latency.py runs: its --smoke mode, against a real board, prints every figure it promises."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_the_latency_benchmark_runs_in_smoke_mode():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_latency.py"), "--smoke",
                           "--max-seconds", "120"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for words in ("100-query submission, upload->row:", "board page GET /, 30 rows:", "board JSON GET /api/board"):
        line = next((line for line in lines if line.startswith(words)), None)
        assert line is not None and "p95" in line and "n 3" in line, (words, done.stdout)
    assert "the board holds 30" in done.stdout
