"""SIFT re-ranking on full-size phone photos: seconds per pair, JPEG draft decoding against a full decode.

Real queries are phone photos of up to 4320 x 3240 px; the demo's are a few
hundred pixels. This generates full-size versions of a prepared dataset's
images: every query enlarged into a 12 MP JPEG (4000 x 3000, or 3000 x 4000
for portrait shots, edges replicated to 4:3, with sensor-like noise; ~2 MB at
quality 92), every shortlisted database image enlarged to a 1000 px shop
image. Then it prints, side by side:

- one 12 MP photo: milliseconds to decode and shrink it to ``--max-side``
  with and without JPEG draft mode, and to describe it with SIFT;
- the re-ranking stage on ``--queries`` x top ``--top`` of them, per setting
  (default: ``jpeg_draft`` on and off): cold and warm wall seconds (fresh
  process each), seconds per pair, and mAP@7 (all / public / private) and P@1,
  so the accuracy a speed-up costs, if any, is printed beside it.

    .venv/bin/python benchmarks/sift_fullsize.py --data work/demo --run submissions/fused-lite0-lite1-grmac.trec
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rerank_cost import CHILD, parse_setting, random_shortlists, threads_info  # noqa: E402

from bpcr.dataset.gt import read_ground_truth  # noqa: E402
from bpcr.dataset.manifest import read_manifest, write_manifest  # noqa: E402
from bpcr.evaluation.metrics import map_at_k, precision_at_1  # noqa: E402
from bpcr.io.runs import load_run, write_run  # noqa: E402
from bpcr.reranking.sift import extract_sift, reproducible_opencv  # noqa: E402
from bpcr.reranking.sift_cache import SiftOptions  # noqa: E402
from bpcr.reranking.sift_tasks import load_gray  # noqa: E402
from bpcr.evaluation.split import QuerySplit  # noqa: E402

PHOTO_LONG, PHOTO_SHORT = 4000, 3000
SHOP_LONG = 1000


def enlarge(src: Path, dst: Path, long_side: int, four_by_three: bool, noise: float, seed: int) -> tuple[int, int]:
    """Write ``src`` enlarged so its long side is ``long_side`` (padded to 4:3 when asked) as a JPEG."""
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    if four_by_three:  # fit inside the frame, so nothing is cropped
        scale = min(scale, PHOTO_SHORT / min(h, w))
    img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    if four_by_three:
        portrait = h > w
        target = (PHOTO_LONG, PHOTO_SHORT) if portrait else (PHOTO_SHORT, PHOTO_LONG)  # (rows, cols)
        pad_y, pad_x = max(0, target[0] - img.shape[0]), max(0, target[1] - img.shape[1])
        img = cv2.copyMakeBorder(img, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2,
                                 cv2.BORDER_REPLICATE)[: target[0], : target[1]]
    if noise > 0:
        rng = np.random.default_rng(seed)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return img.shape[1], img.shape[0]


def generate(data: Path, out: Path, run_path: Path | None, n_queries: int, top: int, seed: int) -> dict:
    prepared = data / "prepared"
    db, queries = read_manifest(prepared / "database.csv"), read_manifest(prepared / "queries.csv")
    gt = read_ground_truth(prepared / "ground_truth.csv")
    query_ids = sorted(set(queries.ids) & set(gt))[:n_queries]
    if run_path is not None:
        source = load_run(run_path)
        ranking = {q: source.ranking[q][:top] for q in query_ids if q in source.ranking}
        scores = {q: (source.scores[q][:top] if source.scores else [-float(r) for r in range(len(ranking[q]))])
                  for q in ranking}
    else:
        ranking, scores = random_shortlists(db.ids, gt, query_ids, top, seed)
    db_rows, q_rows = db.index(), queries.index()
    shortlisted = sorted({d for ids in ranking.values() for d in ids if d in db_rows})
    (out / "database").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(parents=True, exist_ok=True)
    sizes = {}
    for k, q in enumerate(query_ids):
        dst = out / "queries" / f"{q}.jpg"
        sizes[("q", q)] = enlarge(queries.paths[q_rows[q]], dst, PHOTO_LONG, True, 3.0, seed + k)
    for k, d in enumerate(shortlisted):
        dst = out / "database" / f"{d}.jpg"
        sizes[("d", d)] = enlarge(db.paths[db_rows[d]], dst, SHOP_LONG, False, 0.0, seed + k)
    write_manifest(out / "queries.csv", query_ids, [out / "queries" / f"{q}.jpg" for q in query_ids],
                   [sizes[("q", q)][0] for q in query_ids], [sizes[("q", q)][1] for q in query_ids], [""] * len(query_ids))
    write_manifest(out / "database.csv", shortlisted, [out / "database" / f"{d}.jpg" for d in shortlisted],
                   [sizes[("d", d)][0] for d in shortlisted], [sizes[("d", d)][1] for d in shortlisted],
                   [""] * len(shortlisted))
    write_run(out, "input", ranking, scores, {"run": "input"}, depth=top)
    return {q: gt[q] for q in query_ids}


def one_photo(path: Path, max_side: int, max_keypoints: int, repeat: int) -> None:
    """Decode + shrink one 12 MP photo with and without draft mode, then describe it, in this process."""
    times: dict[str, list[float]] = {"full decode": [], "draft decode": [], "SIFT": []}
    for _ in range(repeat):
        for label, draft in (("full decode", False), ("draft decode", True)):
            started = time.perf_counter()
            gray = load_gray(path, SiftOptions(max_side, max_keypoints, jpeg_draft=draft))
            times[label].append(time.perf_counter() - started)
        started = time.perf_counter()
        with reproducible_opencv():
            extract_sift(gray, max_keypoints)
        times["SIFT"].append(time.perf_counter() - started)
    full, draft = statistics.median(times["full decode"]), statistics.median(times["draft decode"])
    print(f"one {path.stat().st_size / 1e6:.1f} MB 12 MP photo -> {gray.shape[1]} x {gray.shape[0]} (median of {repeat}): "
          f"full decode + shrink {1000 * full:.0f} ms, draft decode + shrink {1000 * draft:.0f} ms "
          f"({full / draft:.1f}x), SIFT {1000 * statistics.median(times['SIFT']):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a prepared demo folder (prepared/*.csv under it)")
    parser.add_argument("--run", type=Path, help="input run for the shortlists (default: random ones holding the relevant)")
    parser.add_argument("--out", type=Path, default=None, help="where the full-size images go (default: a temporary folder)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=["jpeg_draft=1", "jpeg_draft=0"],
                        help="rerank keyword arguments per setting (see benchmarks/rerank_cost.py)")
    parser.add_argument("--repeat", type=int, default=5, help="repeats of the one-photo timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bpcr_sift_fullsize_") as tmp:
        out = args.out or Path(tmp) / "images"
        started = time.perf_counter()
        gt = generate(args.data, out, args.run, args.queries, args.top, args.seed)
        query_ids = sorted(gt)
        split = QuerySplit()
        halves = {"all": query_ids, "public": split.half(query_ids, "public"), "private": split.half(query_ids, "private")}
        before = load_run(out / "input.trec")
        pairs = sum(len(v) for v in before.ranking.values())
        db_count = len(read_manifest(out / "database.csv").ids)
        print(f"generated {len(query_ids)} photos of {PHOTO_LONG} x {PHOTO_SHORT} and {db_count} shop images of "
              f"{SHOP_LONG} px in {time.perf_counter() - started:.0f} s; {pairs} pairs; {os.cpu_count()} CPUs "
              f"(load average {os.getloadavg()[0]:.1f}), workers {args.workers or os.cpu_count()}")
        print(threads_info())
        one_photo(out / "queries" / f"{query_ids[0]}.jpg", 512, 250, args.repeat)

        def quality(run) -> str:
            maps = [map_at_k({q: run.ranking[q][:7] for q in ids}, {q: gt[q] for q in ids}) if ids else float("nan")
                    for ids in halves.values()]
            p1 = float(np.mean([precision_at_1(run.ranking[q], gt[q]) for q in query_ids]))
            return " ".join(f"{m:>7.4f}" for m in maps) + f" {p1:>6.3f}"

        header = (f"{'setting':<30} {'desc s':>7} {'match s':>7} {'cold s':>7} {'s/pair':>7} {'warm s':>7} "
                  f"{'s/pair':>7} {'mAP@7':>7} {'public':>7} {'private':>7} {'P@1':>6}")
        print(header)
        print(f"{'input run':<30} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {quality(before)}")
        print("-" * len(header))
        for k, text in enumerate(args.settings):
            _, kwargs = parse_setting(text)
            name = f"s{k}"
            child_args = {"run": str(out / "input.trec"), "db": str(out / "database.csv"),
                          "queries": str(out / "queries.csv"), "name": name, "out": str(Path(tmp)),
                          "cache": str(Path(tmp) / f"cache-{name}"), "no_warm": False,
                          "kwargs": {"top": args.top, "workers": args.workers, **kwargs}}
            done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), json.dumps(child_args)],
                                  capture_output=True, text=True, cwd=str(ROOT))
            if done.returncode != 0:
                print(f"{text:<30} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            cold, warm = report["cold"], report["warm"]
            print(f"{text:<30} {cold['seconds']['descriptors']:>7.1f} {cold['seconds']['matching']:>7.1f} "
                  f"{cold['wall']:>7.1f} {cold['wall'] / pairs:>7.4f} {warm['wall']:>7.1f} {warm['wall'] / pairs:>7.4f} "
                  f"{quality(load_run(cold['trec']))}", flush=True)


if __name__ == "__main__":
    main()
