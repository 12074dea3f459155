#!/bin/sh
# Every GPU measurement in one command (benchmarks/gpu_all.py --help); arguments pass through. No network needed.
cd "$(dirname "$0")/.." && PY=.venv/bin/python && { [ -x "$PY" ] || PY=python3; } && exec "$PY" benchmarks/gpu_all.py "$@"
