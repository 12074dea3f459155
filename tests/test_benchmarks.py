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


def _gpu_all():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("gpu_all", ROOT / "benchmarks" / "gpu_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_gpu_all_help_names_the_steps_and_the_time():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_all.py"), "--help"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Total expected at full size" in done.stdout and "--cpu-smoke" in done.stdout
    assert all(name in done.stdout for name in ("extract", "search", "sift", "train"))


# What the benchmarks print on a GPU (their f-strings, filled in), for gpu_all's parsers.
GPU_EXTRACT = """\
20000 JPEGs 256-512 px (made in 31 s), efficientnet_lite0 at 224 px, batch 256, NVIDIA H100 80GB HBM3, torch 2.5.1, torch threads 16, workers default, decoding full
[1] model-only  9000.0 / 11000.0 images/s | end-to-end whole  3000.0, without start-up (4.0 s)  5000.0, steady  6000.0 images/s | ratio 0.50 (steady 0.60, whole 0.30) | torch threads 16 | load 3.0
[2] model-only 10000.0 / 10000.0 images/s | end-to-end whole  3200.0, without start-up (3.0 s)  5400.0, steady  6200.0 images/s | ratio 0.54 (steady 0.62, whole 0.32) | torch threads 16 | load 3.0
ratio without start-up: median 0.52, range 0.50-0.54 over 2 repeats
JPEG decode, images/s: Pillow (load_rgb, 1 core) 400 | torchvision CPU 500 | torchvision GPU (nvJPEG, batches of 64) 8400 | GPU/Pillow 21.0x
"""
GPU_SEARCH = """\
CUDA device: NVIDIA H100 80GB HBM3
generated 500,000 x 2,048 float16 (1.91 GiB) in 30 s
                        seconds
cpu (numpy + BLAS)        40.00
torch (cuda)               2.00
cpu / torch (cuda): 20.00x; same top 100 after exact re-scoring: 1000/1000 queries; BLAS x, torch threads 16
"""
GPU_SIFT = """\
200 queries x top 100 (20000 pairs), 3138 database images, 16 CPUs (load average 1.0), workers 16; public/private queries 100/100 (split seed 0)
setting                             imgs  desc s match s  cold s    cpu  warm s    cpu   mAP@7  public private    P@1
input run                                                                               0.4548  0.5917  0.4091  0.000
matcher=bf                          3054    10.0     2.0    12.0   90.0     3.0    9.0  0.4240  0.4250  0.4230  0.500
matcher=bf,device=cuda              3054    10.0     0.5    10.5   80.0     1.5    5.0  0.4240  0.4250  0.4230  0.500
"""
GPU_TRAIN = """\
[cpu]
  forward only               50.0 images/s
  train step, last stages      30.0 images/s  (ratio to forward 0.60)
  steps/s, cached trunk      1.500  (72.0 images/s; ratio 3.0x; building the cache of 1152 images x 5 views: whole call 40.0 s against 20.0 s)
[cuda (AMP)]
  forward only             4000.0 images/s
  train step, all  stages  1200.0 images/s  (ratio to forward 0.30)
  end-to-end epoch         1000.0 images/s  (ratio to forward 0.25; 1152 images in 1.2 s, mining 0.5 s apart)
"""


def test_gpu_all_reads_what_the_benchmarks_print_on_a_gpu():
    gpu_all = _gpu_all()
    table = {(r.benchmark, r.device, r.figure): (r.value, r.unit, r.ratio)
             for text, parse in ((GPU_EXTRACT, gpu_all.parse_extract), (GPU_SEARCH, gpu_all.parse_search),
                                 (GPU_SIFT, gpu_all.parse_sift), (GPU_TRAIN, gpu_all.parse_train))
             for r in parse(text)}
    assert table[("extract", "cuda", "model-only, 20,000 images")] == ("10000", "images/s", "")
    assert table[("extract", "cuda", "end-to-end, without start-up")] == ("5200", "images/s",
                                                                          "0.52 (0.50-0.54) of model-only")
    assert table[("extract", "cuda", "JPEG decode, nvJPEG (batched)")] == ("8400", "images/s", "21.0x Pillow")
    search = "exact search 500,000 x 2,048 fp16, 1000 queries"
    assert table[("search", "cuda", f"{search}, torch")] == ("2.00", "s", "20.00x faster than cpu")
    assert table[("search", "cpu", f"{search}, numpy + BLAS")] == ("40.00", "s", "")
    assert table[("search", "cuda", "same top 100 as cpu after re-scoring")][0] == "1000/1000"
    assert table[("sift", "cuda (torch)", "matcher=bf,device=cuda: matching, cold run (200 queries x top 100)")] \
        == ("0.5", "s", "4.00x*")
    assert table[("sift", "cuda (torch)", "matcher=bf,device=cuda: whole re-ranking, warm cache")][2] == "2.00x*"
    assert table[("train", "cuda (AMP)", "train step, all stages")] == ("1200.0", "images/s", "0.30 of forward")
    assert table[("train", "cuda (AMP)", "end-to-end epoch")] == ("1000.0", "images/s", "0.25 of forward")
    assert table[("train", "cpu", "steps, cached trunk (72.0 images/s)")] == ("1.500", "steps/s",
                                                                               "3.0x vs full network")


def _scale_rehearsal():
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # its helpers are imported as the script's neighbours
    try:
        return importlib.import_module("scale_rehearsal")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_scale_rehearsal_flags_a_stage_that_grows_faster_than_n_log_n():
    rehearsal = _scale_rehearsal()
    sizes = [1_000, 10_000, 100_000]

    def row(seconds: float, peak_mib: float, input_mib: float) -> dict:
        return {"wall": seconds, "cpu": seconds, "peak_bytes": int(peak_mib * 2**20), "disk_bytes": 0,
                "input_bytes": int(input_mib * 2**20), "returncode": 0}

    # A start-up of 3 s: the linear stage's wall ratio is far below 10, its increments say N^1.
    results = {n: {"linear": row(3 + n / 1_000, 300 + n / 1_000, n / 1_000),
                   "quadratic": row(3 + (n / 1_000) ** 2 / 100, 300, n / 1_000),
                   "holds twice its input": row(3 + n / 1_000, 300 + 2 * n / 1_000, n / 1_000)} for n in sizes}
    printed = rehearsal.table(results)
    comparison = printed.split("against N = 10,000")[1].split("Extrapolation")[0]
    rows = {line[:34].strip(): line[34:].split() for line in comparison.splitlines()[2:] if line.strip()}
    assert rows["linear"][4] == "1.00" and rows["linear"][-1] == "(incr)"  # k wall, from the increments
    assert not rows["linear"][-1].endswith("!")
    assert rows["quadratic"][4] == "2.00" and rows["quadratic"][-1].endswith("!")
    assert rows["holds twice its input"][-1].endswith("!")
    assert "Extrapolation" in printed


@pytest.mark.slow
def test_scale_rehearsal_smoke_times_every_stage(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "rehearsal.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale_rehearsal.py"), "--smoke",
                           "--scratch", str(tmp_path / "scratch"), "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]["40"]
    stages = ["prepare", "prepare again (cached)", "extract database", "extract queries", "index ivf gem",
              "index ivf grmac", "index flat gem", "index flat grmac", "search ivf-gem", "search ivf-grmac",
              "search fused", "search fused-flat", "text index", "refine text", "refine kreciprocal",
              "refine dupgroup", "rerank sift (10 queries)", "ensemble rrf", "score", "report"]
    assert list(results) == stages
    for stage, r in results.items():
        assert r["wall"] > 0 and r["cpu"] > 0 and r["peak_bytes"] > 0, stage
    assert results["extract database"]["disk_bytes"] > 40 * 1280 * 2  # two float16 stores of 40 rows
    assert all(stage in done.stdout for stage in stages)
