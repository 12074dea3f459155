"""A messy dataset for `bpcr prepare` (every kind of bad file, description and ground-truth row) and a run of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bpcr.dataset.options import PrepareOptions
from bpcr.dataset.prepare import prepare
from tests.helpers.images import noise, write_bomb_png

DESCRIPTIONS = (
    "image_id,description\n"                      # line 1
    'n1,"Maybelline, Super Stay, lipstick 24h"\n'  # 2: quoted commas
    "n2,Шампунь для волос 250 мл\n"               # 3: non-English, kept
    "n3,\n"                                        # 4: empty
    "n99,row without an image\n"                   # 5
    "n1,a repeat of n1\n"                          # 6: repeat, first kept
    "bad id,spaces are not allowed\n"              # 7: invalid ID
    "n4,rouge,à lèvres,mat\n"                      # 8: unquoted commas joined
)

GROUND_TRUTH = "Validation Image ID,Training Image ID\nv1,n1,n2\nv2,n8\nv3,n3\nv4,n5\n"


def make_dataset(root: Path) -> dict[str, Path]:
    db = root / "data" / "database"
    queries = root / "data" / "queries"
    db.mkdir(parents=True)
    queries.mkdir(parents=True)
    Image.fromarray(noise(24, 32, 1)).save(db / "n1.jpg")
    Image.fromarray(noise(10, 12, 2)).save(db / "n2.jpg", format="PNG")
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(db / "n3.jpg")
    Image.fromarray(np.full((5, 9), 40000, dtype=np.uint16)).save(db / "n4.png")
    palette = Image.new("P", (7, 3))
    palette.putpalette([0, 0, 0] * 256)
    palette.save(db / "n5.png", transparency=0)
    Image.new("L", (11, 13), 90).save(db / "n6.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise(20, 40, 3)).save(db / "n7.jpg", exif=exif)
    (db / "n8.jpg").write_bytes(b"")
    whole = noise(64, 64, 4)
    Image.fromarray(whole).save(db / "n9.jpg")
    (db / "n9.jpg").write_bytes((db / "n9.jpg").read_bytes()[:900])
    write_bomb_png(db / "n10.png", 15000)
    (db / "n11.jpg").write_text("not a picture\n")
    Image.fromarray(noise(4, 4, 5)).save(db / "bad name.jpg")
    Image.fromarray(noise(4, 4, 6)).save(db / "n12.jpg")
    Image.fromarray(noise(4, 4, 6)).save(db / "n12.png")
    (db / "readme.txt").write_text("hello\n")
    (db / ".DS_Store").write_bytes(b"\x00\x01")
    (db / "sub").mkdir()
    Image.fromarray(noise(30, 20, 7)).save(queries / "v1.jpg")
    Image.fromarray(noise(16, 16, 8)).save(queries / "v2.jpg")
    (queries / "v3.jpg").write_bytes((db / "n1.jpg").read_bytes()[:300])
    descriptions = root / "data" / "descriptions.csv"
    descriptions.write_text(DESCRIPTIONS, encoding="utf-8")
    gt = root / "data" / "gt.csv"
    gt.write_text(GROUND_TRUTH)
    return {"db": db, "queries": queries, "descriptions": descriptions, "gt": gt, "out": root / "out"}


def run(d: dict[str, Path], workers: int = 1):
    return prepare(d["db"], d["descriptions"], d["queries"], d["gt"], d["out"], PrepareOptions(workers=workers))
