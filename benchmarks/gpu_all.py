"""Every GPU measurement in one command, one table: run this first on a machine with a CUDA GPU.

    python benchmarks/gpu_all.py --out RESULTS_DIR        # on the GPU machine (no network needed)
    python benchmarks/gpu_all.py --cpu-smoke              # anywhere: every step at tiny sizes on the CPU

Each step is one of the existing benchmarks, run as a subprocess with the
arguments that make it a CUDA measurement, with a timeout; its output streams
to the terminal and to RESULTS_DIR/<step>.log, its key figures are parsed from
its printed lines, and at the end one table is printed (and written to
RESULTS_DIR/table.txt and results.json): benchmark, device, figure, value,
unit, the ratio the benchmark printed (``*``: computed here from two of its
rows), the step's wall seconds, and above it the GPU name, driver, torch,
CUDA and cuDNN versions and numpy's BLAS (``common.blas_kernel``).

Steps (``--only`` picks some, e.g. to split the run over two sessions):

  extract  extract_throughput.py --device cuda --images 20000 --batch-size 256
           --repeats 2: sustained extraction of 20,000 generated 256-512 px JPEGs,
           model-only vs end-to-end (AMP, channels-last, decoding processes),
           and nvJPEG decoding vs Pillow.                        ~3 min (timeout 15)
  search   gpu_search.py --n 500000 --dim 2048 --queries 1000: exact top-116
           with the torch kernel on the GPU vs numpy + BLAS on the CPU, same
           float16 store (1.9 GiB), and their agreement after re-scoring
           (faiss-gpu is not needed: the torch path is what is measured).
                                                                 ~3 min (timeout 15)
  sift     rerank_cost.py on the demo (generated first, 3,339 images; 200
           queries x top 100): the exact matcher (matcher=bf) in the CPU
           worker processes vs through torch on the GPU (device=cuda), cold
           and warm descriptor cache, with mAP@7 beside.         ~3 min (timeout 15)
  train    train_throughput.py (defaults: Lite0 at 224 px): the CPU section
           (with the cached-trunk lines), then CUDA with AMP: forward-only,
           train-step and end-to-end epoch images/s.            ~4 min (timeout 15)

Total expected at full size: about 13 minutes on one H100/H200 with 16 cores
(estimates from the benchmarks' docstrings and docs/speed.md: the demo's
3,138 images extract in 7.4 s on an H200, the demo generates and prepares in
23 s on 2 cores, the 500,000 x 2,048 store is 1.9 GiB written chunk by chunk;
the CPU sides of search and train dominate), at most an hour with every
timeout reached. Where one command may run 10 minutes at most, run
``--only extract search`` and ``--only sift train``.

Without a CUDA GPU it refuses (exit 2) unless ``--cpu-smoke``, which runs every
step at tiny sizes with CUDA hidden (about 70 s on a busy 2-core CPU):
it proves the wiring and the parsing, not a speed. Exit status 1 when a step
failed, timed out or printed nothing this script could read.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ("extract", "search", "sift", "train")
NUM = r"[-+]?\d+(?:\.\d+)?"


@dataclass
class Row:
    """One figure of one benchmark."""

    benchmark: str
    device: str
    figure: str
    value: str
    unit: str = ""
    ratio: str = ""
    seconds: str = ""


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout: float
    parse: object  # (text) -> list[Row]
    rc: int | None = None
    seconds: float = 0.0
    status: str = "not run"
    rows: list[Row] = field(default_factory=list)


# ---------------------------------------------------------------- parsers (pure: text in, rows out)

def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parse_extract(text: str) -> list[Row]:
    """extract_throughput.py: model-only, end-to-end (without start-up, steady), start-up, nvJPEG decoding."""
    rows: list[Row] = []
    head = re.search(r"^(\d+) JPEGs .*?batch \d+, (.+?), torch \S+, torch threads", text, re.MULTILINE)
    device = head.group(2) if head else "?"
    device = "cpu" if device.endswith("CPU cores") else "cuda"  # the GPU's name heads the table
    images = f"{int(head.group(1)):,} images" if head else "?"
    reps = re.findall(rf"^\[\d+\] model-only\s+({NUM}) /\s+({NUM}) images/s \| (?:draft )?end-to-end whole\s+({NUM}), "
                      rf"without start-up \(({NUM}) s\)\s+({NUM}), steady\s+({NUM}) images/s \| ratio ({NUM}) "
                      rf"\(steady ({NUM}), whole ({NUM})\)", text, re.MULTILINE)
    if reps:
        v = [[float(x) for x in r] for r in reps]
        summary = re.search(rf"^ratio without start-up: median ({NUM}), range ({NUM})-({NUM})", text, re.MULTILINE)
        ratio = f"{summary.group(1)} ({summary.group(2)}-{summary.group(3)})" if summary else ""
        rows += [
            Row("extract", device, f"model-only, {images}", f"{_median([r[0] for r in v] + [r[1] for r in v]):.0f}",
                "images/s"),
            Row("extract", device, "end-to-end, without start-up", f"{_median([r[4] for r in v]):.0f}", "images/s",
                f"{ratio} of model-only" if ratio else ""),
            Row("extract", device, "end-to-end, steady state", f"{_median([r[5] for r in v]):.0f}", "images/s",
                f"{_median([r[7] for r in v]):.2f} of model-only"),
            Row("extract", device, "end-to-end, whole call", f"{_median([r[2] for r in v]):.0f}", "images/s",
                f"{_median([r[8] for r in v]):.2f} of model-only"),
            Row("extract", device, "start-up (model, workers)", f"{_median([r[3] for r in v]):.1f}", "s"),
        ]
    dec = re.search(rf"Pillow \(load_rgb, 1 core\) ({NUM}) \| torchvision CPU ({NUM}) \| torchvision GPU "
                    rf"\(nvJPEG, batches of \d+\) ({NUM}) \| GPU/Pillow ({NUM})x", text)
    if dec:
        rows += [Row("extract", device, "JPEG decode, nvJPEG (batched)", dec.group(3), "images/s",
                     f"{dec.group(4)}x Pillow"),
                 Row("extract", "cpu", "JPEG decode, Pillow (1 core)", dec.group(1), "images/s")]
    share = re.search(rf"^((?:JPEG draft )?decode)\+resize ({NUM}) ms/image on one core = (\d+)% of the model", text, re.MULTILINE)
    if share:
        rows.append(Row("extract", "cpu", "decode+resize, one core", share.group(2), "ms/image",
                        f"{share.group(3)}% of model time"))
    return rows


def parse_search(text: str) -> list[Row]:
    """gpu_search.py: seconds of each kernel, cpu / torch, agreement after exact re-scoring."""
    rows: list[Row] = []
    gen = re.search(r"^generated ([\d,]+) x ([\d,]+) float16", text, re.MULTILINE)
    size = f"{gen.group(1)} x {gen.group(2)}" if gen else "?"
    queries = re.search(r"same top (\d+) after exact re-scoring: \d+/(\d+) queries", text)
    what = f"exact search {size} fp16, {queries.group(2) if queries else '?'} queries"
    ratios = {m.group(1): m for m in re.finditer(
        rf"^cpu / (.+?): ({NUM})x; same top (\d+) after exact re-scoring: (\d+)/(\d+) queries", text, re.MULTILINE)}
    for label, seconds in re.findall(rf"^(cpu \(numpy \+ BLAS\)|torch \(\S+\)|faiss-gpu)\s+({NUM})$", text, re.MULTILINE):
        device = "cpu" if label.startswith("cpu") else "cuda" if label == "faiss-gpu" else label[7:-1]
        kernel = {"cpu (numpy + BLAS)": "numpy + BLAS", "faiss-gpu": "faiss-gpu"}.get(label, "torch")
        r = ratios.get(label)
        rows.append(Row("search", device, f"{what}, {kernel}", seconds, "s", f"{r.group(2)}x faster than cpu" if r else ""))
        if r:
            rows.append(Row("search", device, f"same top {r.group(3)} as cpu after re-scoring", f"{r.group(4)}/{r.group(5)}",
                            "queries"))
    return rows


def parse_sift(text: str) -> list[Row]:
    """rerank_cost.py: per setting, the cold run's matching and describing seconds, cold and warm wall, mAP@7.

    Ratios are computed here (``*``): the first setting's seconds over this one's."""
    rows: list[Row] = []
    head = re.search(r"^(\d+) queries x top (\d+) \((\d+) pairs\)", text, re.MULTILINE)
    pairs = f"{head.group(1)} queries x top {head.group(2)}" if head else "?"
    setting_re = re.compile(rf"^(\S+?)\s+(\d+)\s+({NUM})\s+({NUM})\s+({NUM})\s+({NUM})\s+({NUM}|nan)\s+({NUM}|nan)\s+"
                            rf"({NUM})\s+({NUM}|nan)\s+({NUM}|nan)\s+({NUM})$", re.MULTILINE)
    first: dict[str, float] | None = None
    for m in setting_re.finditer(text):
        label = m.group(1)
        device = dict(kv.partition("=")[::2] for kv in label.split(",")).get("device", "cpu")
        device = {"cpu": "cpu (worker processes)", "auto": "auto (torch on a GPU, else as cpu)"}.get(
            device, f"{device} (torch)")
        values = {"match": float(m.group(4)), "describe": float(m.group(3)), "cold": float(m.group(5)),
                  "warm": float(m.group(7))}

        def ratio(key: str, values: dict[str, float] = values, first: dict[str, float] | None = first) -> str:
            if first is None or not values[key] > 0 or not first[key] > 0:
                return ""
            return f"{first[key] / values[key]:.2f}x*"

        rows += [Row("sift", device, f"{label}: matching, cold run ({pairs})", m.group(4), "s", ratio("match")),
                 Row("sift", device, f"{label}: describing, cold run", m.group(3), "s"),
                 Row("sift", device, f"{label}: whole re-ranking, cold cache", m.group(5), "s", ratio("cold")),
                 Row("sift", device, f"{label}: whole re-ranking, warm cache", m.group(7), "s", ratio("warm")),
                 Row("sift", device, f"{label}: mAP@7 (all queries)", m.group(9), "")]
        if first is None:
            first = values
    for label, why in re.findall(r"^(\S+?)\s+failed: (.*)$", text, re.MULTILINE):
        rows.append(Row("sift", "?", f"{label}: FAILED", why[:60], ""))
    return rows


def parse_train(text: str) -> list[Row]:
    """train_throughput.py: per device section, forward-only, train step, end-to-end epoch, the cached trunk."""
    rows: list[Row] = []
    device = "?"
    line_re = re.compile(rf"^  (forward only|train step, \w+\s+stages|end-to-end epoch|steps/s, [\w ,]+?)\s+({NUM})"
                         rf"(?: images/s)?\s*(?:\((.*)\))?\s*$")
    for line in text.splitlines():
        section = re.match(r"^\[(\w+)( \(AMP\))?\]$", line)
        if section:
            device = section.group(1) + (" (AMP)" if section.group(2) else "")
            continue
        m = line_re.match(line)
        if not m:
            continue
        figure, value, note = re.sub(r"\s+", " ", m.group(1)), m.group(2), m.group(3) or ""
        r = re.search(rf"ratio(?: to forward)? ({NUM}x?)", note)
        ratio = (r.group(1) + ("" if r.group(1).endswith("x") else " of forward")) if r else ""
        if figure.startswith("steps/s"):
            ips = re.match(rf"({NUM}) images/s", note)
            rows.append(Row("train", device, figure.replace("steps/s, ", "steps, "), value, "steps/s",
                            ratio + (" vs full network" if r else "")))
            if ips:
                rows[-1].figure += f" ({ips.group(1)} images/s)"
        else:
            rows.append(Row("train", device, figure, value, "images/s", ratio))
    return rows


PARSERS = {"extract": parse_extract, "search": parse_search, "sift": parse_sift, "train": parse_train}


# ---------------------------------------------------------------- the steps

def steps(smoke: bool, demo: Path, timeout: float | None) -> list[Step]:
    py = [sys.executable, "-u"]
    b = str(HERE)
    if smoke:
        argv = {
            "extract": [f"{b}/extract_throughput.py", "--device", "cpu", "--images", "12", "--batch-size", "6",
                        "--repeats", "1", "--model-images", "6", "--size", "64", "--workers", "0", "--threads", "1"],
            "search": [f"{b}/gpu_search.py", "--cpu-n", "2000", "--cpu-queries", "8", "--dim", "64", "--depth", "10"],
            "sift": [f"{b}/rerank_cost.py", "--data", str(demo), "--queries", "4", "--top", "8", "--workers", "1",
                     "--settings", "matcher=bf", "matcher=bf,device=auto"],
            "train": [f"{b}/train_throughput.py", "--images", "4", "--size", "64", "--batch-size", "2", "--steps", "1"],
        }
        limits = dict.fromkeys(STEPS, 300.0)
    else:
        argv = {
            "extract": [f"{b}/extract_throughput.py", "--device", "cuda", "--images", "20000", "--batch-size", "256",
                        "--repeats", "2"],
            "search": [f"{b}/gpu_search.py", "--n", "500000", "--dim", "2048", "--queries", "1000", "--depth", "100"],
            "sift": [f"{b}/rerank_cost.py", "--data", str(demo), "--queries", "200", "--top", "100",
                     "--settings", "matcher=bf", "matcher=bf,device=cuda"],
            "train": [f"{b}/train_throughput.py", "--images", "96", "--size", "224", "--batch-size", "16",
                      "--steps", "3"],
        }
        limits = dict.fromkeys(STEPS, 900.0)
    return [Step(name, py + argv[name], timeout or limits[name], PARSERS[name]) for name in STEPS]


DEMO = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bpcr.dataset.options import DemoOptions
from bpcr.demo import prepare_demo
sizes = json.loads(sys.argv[3])
started = time.perf_counter()
prepare_demo(sys.argv[2], DemoOptions(seed=0, **sizes))
print(f"demo generated and prepared in {time.perf_counter() - started:.1f} s")
"""

INFO = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy, torch
from common import blas_kernel
cuda = torch.cuda.is_available()
print(json.dumps({
    "gpu": torch.cuda.get_device_name(0) if cuda else None,
    "gpu_count": torch.cuda.device_count() if cuda else 0,
    "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
    "numpy": numpy.__version__, "blas": blas_kernel(), "cpus": len(os.sched_getaffinity(0)),
    "python": sys.version.split()[0]}))
"""


def _env(smoke: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # every step on the CPU, even on a GPU machine
    return env


def machine_info(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", INFO, str(HERE)], check=False, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    info = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-500:]}
    info["driver"] = None
    smi = shutil.which("nvidia-smi")
    if smi and env.get("CUDA_VISIBLE_DEVICES") != "":
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], check=False, capture_output=True,
                                 text=True, timeout=30).stdout.split()
            info["driver"] = out[0] if out else None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def run_logged(argv: list[str], log: Path, timeout: float, env: dict[str, str], echo: str | None) -> tuple[int | None, str]:
    """Run ``argv`` in its own process group, stdout and stderr to ``log`` (and to the terminal, prefixed with
    ``echo``); on timeout the whole group is stopped. Returns (exit status or None on timeout, the output)."""
    lines: list[str] = []
    with open(log, "w", encoding="utf-8") as sink:
        sink.write("$ " + " ".join(argv) + "\n")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                cwd=ROOT, env=env, start_new_session=True)

        def pump() -> None:
            for line in proc.stdout:
                lines.append(line)
                sink.write(line)
                sink.flush()
                if echo is not None:
                    print(f"{echo}{line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        reader.join(timeout=30)
    return rc, "".join(lines)


# ---------------------------------------------------------------- the table

def render(info: dict, rows: list[Row], smoke: bool) -> str:
    out = []
    if smoke:
        out.append("CPU SMOKE RUN (tiny sizes, CUDA hidden): wiring and parsing only, not a measurement")
    gpu = info.get("gpu") or "none"
    if info.get("gpu_count", 0) > 1:
        gpu += f" (x{info['gpu_count']}, device 0 used)"
    if info.get("gpu_memory_gib"):
        gpu += f", {info['gpu_memory_gib']} GiB"
    out.append(f"GPU: {gpu}; "
               f"driver {info.get('driver') or 'n/a'}; torch {info.get('torch')}, CUDA {info.get('cuda') or 'n/a'}, "
               f"cuDNN {info.get('cudnn') or 'n/a'}; Python {info.get('python')}, numpy {info.get('numpy')}, "
               f"{info.get('cpus')} CPUs")
    out.append(f"BLAS: {info.get('blas')}")
    head = Row("benchmark", "device", "figure", "value", "unit", "ratio (as printed)", "step s")
    table = [head] + rows
    keys = list(asdict(head))
    widths = {k: max(len(getattr(r, k)) for r in table) for k in keys}
    for i, r in enumerate(table):
        cells = [getattr(r, k).rjust(widths[k]) if k in ("value", "seconds") else getattr(r, k).ljust(widths[k])
                 for k in keys]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * widths[k] for k in keys))
    out.append("ratio: as the benchmark printed it; * computed here (first setting's seconds / this one's). "
               "Logs: every step's full output beside this table.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="every step at tiny sizes on the CPU (CUDA hidden): proves the wiring, measures nothing")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="run these steps only")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the logs, table.txt and results.json (default: a new temporary folder, kept)")
    parser.add_argument("--demo", type=Path, default=None,
                        help="a prepared demo folder for the sift step (default: generated into a scratch folder)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per step (default: 900 each at full size, 300 in the smoke run)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the benchmarks' output as it comes")
    args = parser.parse_args(argv)

    smoke = args.cpu_smoke
    env = _env(smoke)
    out = args.out or Path(tempfile.mkdtemp(prefix="bpcr-gpu-all-"))
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info(env)
    if "error" in info:
        print(f"could not import torch/numpy in {sys.executable}:\n{info['error']}", file=sys.stderr)
        return 2
    if not smoke and not info.get("gpu"):
        print(f"no CUDA GPU here (torch {info.get('torch')}, CUDA {info.get('cuda')}); "
              "run with --cpu-smoke to check the wiring", file=sys.stderr)
        return 2
    print(f"results and logs: {out}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bpcr-gpu-all-scratch-"))
    rows: list[Row] = []
    record: dict = {"smoke": smoke, "info": info, "steps": {}}
    failed = False
    try:
        demo = args.demo or scratch / "demo"
        for step in steps(smoke, demo, args.timeout):
            if step.name not in args.only:
                continue
            if step.name == "sift" and not (demo / "prepared" / "database.csv").is_file():
                sizes = ({"n_products": 6, "n_distractors": 12, "n_queries": 6, "workers": 1} if smoke else {})
                print(f"== sift: generating the demo dataset into {demo}", flush=True)
                rc, text = run_logged([sys.executable, "-u", "-c", DEMO, str(ROOT), str(demo), json.dumps(sizes)],
                                      out / "demo.log", step.timeout, env, None if args.quiet else "  demo| ")
                secs = re.search(rf"in ({NUM}) s", text)
                rows.append(Row("sift", "cpu", "setup: demo generated and prepared",
                                secs.group(1) if secs else "FAILED", "s" if secs else ""))
                if rc != 0:
                    failed = True
                    record["steps"]["demo"] = {"rc": rc}
                    continue
            print(f"== {step.name}: {' '.join(step.argv[1:])}  (timeout {step.timeout:.0f} s)", flush=True)
            started = time.perf_counter()
            step.rc, text = run_logged(step.argv, out / f"{step.name}.log", step.timeout, env,
                                       None if args.quiet else f"  {step.name}| ")
            step.seconds = time.perf_counter() - started
            step.rows = step.parse(text)
            step.status = ("timed out" if step.rc is None else f"failed (exit {step.rc})" if step.rc != 0
                           else "ok" if step.rows else "nothing parsed")
            if step.status != "ok":
                failed = True
                step.rows.append(Row(step.name, "?", f"{step.status.upper()}: see {step.name}.log", "", ""))
            step.rows[0].seconds = f"{step.seconds:.0f}"
            rows += step.rows
            record["steps"][step.name] = {"argv": step.argv[1:], "rc": step.rc, "status": step.status,
                                          "seconds": round(step.seconds, 1), "rows": [asdict(r) for r in step.rows]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = render(info, rows, smoke)
    print("\n" + table)
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"\n(table.txt, results.json and the logs in {out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
