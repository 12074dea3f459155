"""A tiny dataset for `bpcr report`: labelled images, manifests, ground truth, two runs and their hand-computed AP@7."""
from __future__ import annotations

from pathlib import Path

from bpcr.dataset.gt import write_ground_truth
from bpcr.dataset.manifest import write_manifest

# Hand-computed AP@7 (challenge definition) of the runs written by make_dataset.
GT = {"v1": ["n1", "n2"], "v2": ["n3"], "v3": ["n4", "n5", "n6"], "v4": ["n7"]}
RUNS = {
    "base": {  # v1: hit at 1 -> 1/2; v2: hit at 3 -> 1/3; v3: none -> 0; v4: hit at 1 -> 1
        "v1": ["n1", "n3", "n4", "n5", "n6", "n7", "n8"],
        "v2": ["n9", "n8", "n3", "n1", "n2", "n4", "n5"],
        "v3": ["n1", "n2", "n3", "n7", "n8", "n9", "n10"],
        "v4": ["n7", "n1", "n2", "n3", "n4", "n5", "n6"],
    },
    "better": {  # v1: 1; v2: 1; v3: hits at 1 and 3 -> (1 + 2/3)/3; v4: hit at 2 -> 1/2 (n99 is not in the manifest)
        "v1": ["n1", "n2", "n3", "n4", "n5", "n6", "n7"],
        "v2": ["n3", "n1", "n2", "n4", "n5", "n6", "n7"],
        "v3": ["n4", "n8", "n5", "n9", "n10", "n1", "n2"],
        "v4": ["n99", "n7", "n1", "n2", "n3", "n4", "n5"],
    },
}
AP = {
    "base": {"v1": 0.5, "v2": 1 / 3, "v3": 0.0, "v4": 1.0},
    "better": {"v1": 1.0, "v2": 1.0, "v3": (1 + 2 / 3) / 3, "v4": 0.5},
}
# mean AP: v1 0.75, v2 0.667, v3 0.278, v4 0.75 -> worst first, ties (v1, v4) by ID
WORST_FIRST = ["v3", "v2", "v1", "v4"]
# AP(better) - AP(base): v2 +0.667, v3 +0.556, v1 +0.5, v4 -0.5
DIFF_ORDER = ["v2", "v3", "v1", "v4"]


def make_dataset(root: Path) -> dict[str, Path]:
    """Small coloured images with their IDs drawn on them, manifests, ground truth and two runs.

    One query photo is CMYK and one is EXIF-rotated, as phone photos arrive.
    """
    from PIL import Image, ImageDraw

    images = root / "images"
    images.mkdir(parents=True)
    paths: dict[str, list] = {"q": [], "d": []}
    for kind, ids in (("q", sorted(GT)), ("d", [f"n{i}" for i in range(1, 11)])):
        for number, image_id in enumerate(ids):
            colour = ((53 * number + (90 if kind == "q" else 0)) % 256, (97 * number) % 256, (151 * number + 40) % 256)
            image = Image.new("RGB", (96, 72), colour)
            ImageDraw.Draw(image).text((8, 28), image_id, fill=(255, 255, 255))
            path = images / f"{image_id}.jpg"
            if image_id == "v2":
                image.convert("CMYK").save(path, "JPEG")
            elif image_id == "v3":
                exif = Image.Exif()
                exif[0x0112] = 6  # rotated: shown upright after the transpose
                image.save(path, "JPEG", exif=exif)
            else:
                image.save(path, "JPEG")
            paths[kind].append((image_id, path))
    prepared = root / "prepared"
    prepared.mkdir()
    for name, kind in (("database.csv", "d"), ("queries.csv", "q")):
        ids = [i for i, _ in paths[kind]]
        write_manifest(prepared / name, ids, [p for _, p in paths[kind]], [96] * len(ids), [72] * len(ids),
                       [""] * len(ids))
    gt = root / "gt.csv"
    write_ground_truth(gt, GT)
    runs = root / "runs"
    runs.mkdir()
    for name, ranking in RUNS.items():
        (runs / f"{name}.csv").write_text("".join(f"{q},{','.join(ids)}\n" for q, ids in sorted(ranking.items())))
    return {"gt": gt, "runs": runs, "db": prepared / "database.csv", "queries": prepared / "queries.csv"}
