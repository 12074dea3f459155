"""The demo generator: layout, ground truth, descriptions, messy files, determinism."""
from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from bpcr import demo
from bpcr.demo import photo
from bpcr.demo.catalogue import STREAM_HANDHELD, STREAM_QUERY, STREAM_SHOP, CATEGORIES, HARD_NEGATIVE_SHARE, product_spec, seeded_rng
from bpcr.demo.drawing import DRAWERS, product_sprite
from bpcr.demo.generate import _plan
from bpcr.demo.handheld import handheld_of, print_revision
from bpcr.demo.messy import _bomb_png
from bpcr.demo.photo import encode_jpeg
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.dataset.gt import read_ground_truth, write_ground_truth
from bpcr.io.ids import is_valid_id
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # module fixtures build a dataset, a network or a pipeline run

TINY = dict(n_products=6, n_distractors=20, n_queries=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoSummary:
    return demo.generate_demo(tmp_path_factory.mktemp("a") / "demo", seed=3, workers=1, **TINY)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _usable(summary: demo.DemoSummary) -> list[Path]:
    return [p for p in summary.database_dir.iterdir() if p.stem not in summary.messy]


def test_layout_and_counts(tiny: demo.DemoSummary) -> None:
    db = sorted(tiny.database_dir.iterdir())
    queries = sorted(tiny.queries_dir.iterdir())
    assert sorted(p.name for p in tiny.out.iterdir()) == ["database", "descriptions.csv", "ground_truth.csv", "queries"]
    assert len(db) == tiny.n_database == tiny.n_target_images + tiny.n_distractor_images
    assert tiny.n_distractor_images == 20  # messy files take distractor slots
    assert len(queries) == tiny.n_queries == 5
    assert all(p.stem.startswith("n") and is_valid_id(p.stem) and len(p.stem) == 8 for p in db)
    assert all(p.stem.startswith("v") and is_valid_id(p.stem) and p.suffix == ".jpg" for p in queries)
    assert len({p.stem for p in db}) == len(db)
    assert len(tiny.messy) == 10 and set(tiny.messy.values()) == set(demo.MESSY_KINDS)
    assert tiny.bytes_on_disk == sum(p.stat().st_size for p in tiny.out.rglob("*") if p.is_file())


def test_ground_truth_is_valid_and_points_at_shop_images(tiny: demo.DemoSummary) -> None:
    gt = read_ground_truth(tiny.ground_truth_csv)
    stems = {p.stem for p in tiny.database_dir.iterdir()}
    assert sorted(gt) == sorted(p.stem for p in tiny.queries_dir.iterdir())
    relevant = [r for rel in gt.values() for r in rel]
    assert all(1 <= len(rel) <= 6 for rel in gt.values())
    assert set(relevant) <= stems
    assert not set(relevant) & set(tiny.messy)
    assert len(set(relevant)) == len(relevant)  # one query per product: no image serves two queries
    assert all((tiny.database_dir / f"{r}.jpg").is_file() for r in relevant)


def test_ground_truth_without_rendering_is_the_generated_file_byte_for_byte(tiny: demo.DemoSummary,
                                                                          tmp_path: Path) -> None:
    write_ground_truth(tmp_path / "gt.csv", demo.demo_ground_truth(seed=3, **TINY))
    assert (tmp_path / "gt.csv").read_bytes() == tiny.ground_truth_csv.read_bytes()


def test_committed_demo_ground_truth_is_the_default_demo_s(tmp_path: Path) -> None:
    """``ground_truth/demo.csv`` is what ``bpcr run configs/demo.toml`` scores against: seed 0, default sizes."""
    write_ground_truth(tmp_path / "gt.csv", demo.demo_ground_truth(seed=0))
    committed = ROOT / "ground_truth" / "demo.csv"
    assert committed.read_bytes() == (tmp_path / "gt.csv").read_bytes()
    assert len(read_ground_truth(committed)) == 200


def test_descriptions_parse_with_commas_and_other_languages(tiny: demo.DemoSummary) -> None:
    raw = tiny.descriptions_csv.read_bytes()
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["id", "description"]
    body = rows[1:]
    assert all(len(r) == 2 for r in body)
    ids = [r[0] for r in body]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stems = {p.stem for p in tiny.database_dir.iterdir()}
    assert set(ids) <= stems
    assert sorted(stems - set(ids)) == list(tiny.missing_descriptions) and tiny.missing_descriptions
    assert set(tiny.messy) <= set(ids)
    assert any("," in d for _, d in body) and b'"' in raw
    assert any(any(ord(c) > 0x2FF for c in d) for _, d in body)  # CJK or Hangul


def test_same_seed_is_byte_identical_across_folders_and_worker_counts(tiny: demo.DemoSummary,
                                                                     tmp_path: Path) -> None:
    again = demo.generate_demo(tmp_path / "b", seed=3, workers=2, **TINY)
    assert _hashes(again.out) == _hashes(tiny.out)
    assert again.messy == tiny.messy and again.exif_rotated_queries == tiny.exif_rotated_queries


def test_rerun_in_place_is_allowed_but_foreign_files_are_refused(tiny: demo.DemoSummary, tmp_path: Path) -> None:
    out = tmp_path / "c"
    demo.generate_demo(out, seed=3, workers=1, **TINY)
    demo.generate_demo(out, seed=3, workers=1, **TINY)
    assert _hashes(out) == _hashes(tiny.out)
    with pytest.raises(BadInput, match="another dataset"):
        demo.generate_demo(out, seed=4, workers=1, **TINY)


def test_different_seed_changes_the_data(tiny: demo.DemoSummary, tmp_path: Path) -> None:
    other = demo.generate_demo(tmp_path / "d", seed=4, workers=1, **TINY)
    mine, theirs = _hashes(tiny.out), _hashes(other.out)
    assert mine["descriptions.csv"] != theirs["descriptions.csv"]
    assert mine["ground_truth.csv"] != theirs["ground_truth.csv"]
    queries = [{h for name, h in hashes.items() if name.startswith("queries/")} for hashes in (mine, theirs)]
    assert len(queries[0]) == 5 and queries[0].isdisjoint(queries[1])


def test_regular_images_are_256_to_512_px_on_the_long_side(tiny: demo.DemoSummary) -> None:
    for path in [*_usable(tiny), *tiny.queries_dir.iterdir()]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert 256 <= max(ImageOps.exif_transpose(image).size) <= 512, path.name


def test_exif_rotated_queries_are_upright_after_transpose(tiny: demo.DemoSummary) -> None:
    assert len(tiny.exif_rotated_queries) == 1  # 10% of 5 queries, at least one
    for query in tiny.exif_rotated_queries:
        with Image.open(tiny.queries_dir / f"{query}.jpg") as image:
            orientation = image.getexif()[0x0112]
            assert orientation in (3, 6, 8)
            upright = ImageOps.exif_transpose(image)
            swapped = orientation in (6, 8)
            assert upright.size == (image.size[::-1] if swapped else image.size)
    plain = [q for q in read_ground_truth(tiny.ground_truth_csv) if q not in tiny.exif_rotated_queries]
    with Image.open(tiny.queries_dir / f"{plain[0]}.jpg") as image:
        assert 0x0112 not in image.getexif()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_jpeg_round_trip_restores_the_upright_pixels(orientation: int) -> None:
    # left third bright, the rest dark: any wrong turn moves the bright block elsewhere
    pixels = np.zeros((60, 90, 3), np.uint8)
    pixels[:, :30] = 255
    with Image.open(io.BytesIO(encode_jpeg(pixels, 95, orientation))) as image:
        stored = np.asarray(image.convert("L"), np.float32)
        upright = np.asarray(ImageOps.exif_transpose(image).convert("L"), np.float32)
    assert upright.shape == (60, 90)
    assert upright[:, :25].mean() > 240 and upright[:, 35:].mean() < 15
    assert stored.shape == ((90, 60) if orientation in (6, 8) else (60, 90))


def test_messy_files_are_the_documented_kinds(tiny: demo.DemoSummary) -> None:
    files = {p.stem: p for p in tiny.database_dir.iterdir()}
    by_kind = {kind: files[i] for i, kind in tiny.messy.items()}
    assert by_kind["zero_byte"].stat().st_size == 0
    assert by_kind["png_named_jpg"].suffix == ".jpg"
    assert by_kind["png_named_jpg"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    modes = {"cmyk_jpeg": "CMYK", "gray16_png": "I;16", "palette_png": "P", "gray_jpeg": "L", "rgba_png": "RGBA"}
    for kind, mode in modes.items():
        with Image.open(by_kind[kind]) as image:
            image.load()
            assert image.mode == mode, kind
    with Image.open(by_kind["exif_rotated_jpeg"]) as image:
        assert image.getexif()[0x0112] == 6
    with pytest.raises(OSError):
        with Image.open(by_kind["truncated_jpeg"]) as image:
            image.load()
    bomb = by_kind["decompression_bomb"]
    assert bomb.stat().st_size < 64_000
    assert Image.MAX_IMAGE_PIXELS is not None
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    assert set(tiny.unusable) == {i for i, k in tiny.messy.items()
                                  if k in ("zero_byte", "truncated_jpeg", "decompression_bomb")}


def test_bomb_png_declares_its_size_in_a_valid_header() -> None:
    data = _bomb_png(64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == 64 and int.from_bytes(data[20:24], "big") == 64
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "1" and image.size == (64, 64) and np.asarray(image).sum() == 0


def test_plan_puts_siblings_among_distractors_at_the_default_size() -> None:
    images, picks = _plan(0, 200, 2500, 200)
    shop = [im for im in images if im.role == "shop"]
    distractors = [im for im in images if im.role != "shop"]
    assert len(distractors) == 2500 and len(picks) == len(set(picks)) == 200  # one query per target product
    regular = 2500 - len(demo.MESSY_KINDS)
    assert sum(im.sibling for im in images) == round(regular * HARD_NEGATIVE_SHARE)
    target_families = {im.product[0] for im in shop}
    assert all(im.product[0] in target_families for im in images if im.sibling)
    assert not {im.product for im in shop} & {im.product for im in distractors}
    counts = {}
    for im in shop:
        counts[im.product] = counts.get(im.product, 0) + 1
    assert len(counts) == 200 and set(counts.values()) <= set(range(1, 7))


def test_family_siblings_share_line_and_type_but_not_identity() -> None:
    base = product_spec(0, 5, 0)
    for member in range(1, 6):
        sibling = product_spec(0, 5, member)
        assert (sibling["line"], sibling["type"], sibling["category"]) == (base["line"], base["type"], base["category"])
        assert (sibling["brand"], sibling["variant"]) != (base["brand"], base["variant"])
        assert sibling["body"] != base["body"]


def test_every_category_has_a_drawer_and_draws_on_its_canvas() -> None:
    assert set(DRAWERS) == set(CATEGORIES)
    seen = set()
    for family in range(200):
        spec = product_spec(0, family, 0)
        if spec["category"] in seen:
            continue
        seen.add(spec["category"])
        rgb, alpha = product_sprite(spec)
        assert rgb.dtype == np.uint8 and alpha.dtype == np.float32 and rgb.shape[:2] == alpha.shape
        assert rgb.shape[:2] == ((360, 170) if spec["tall"] else (230, 300))
        assert 0.1 < alpha.mean() < 1.0 and alpha.min() == 0.0 and alpha.max() == 1.0
    assert seen == set(CATEGORIES)


def test_generator_digest_covers_every_source_file_in_name_order() -> None:
    import hashlib

    folder = Path(demo.__file__).parent
    files = sorted(folder.glob("*.py"), key=lambda p: p.name)
    assert {p.name for p in files} >= {"__init__.py", "catalogue.py", "drawing.py", "generate.py"}
    assert demo.generator_digest() == hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_prepare_demo_generates_the_same_files_then_prepares_them(tiny: demo.DemoSummary, tmp_path: Path) -> None:
    told = []

    @contextmanager
    def progress(label: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
        yield told.append

    summary = demo.prepare_demo(tmp_path / "demo", demo.DemoOptions(seed=3, workers=1, **TINY), progress=progress)
    out = tmp_path / "demo"
    assert sorted(p.name for p in out.iterdir()) == ["database", "descriptions.csv", "ground_truth.csv", "prepared",
                                                     "queries"]
    made = {k: v for k, v in _hashes(out).items() if not k.startswith("prepared")}
    assert made == _hashes(tiny.out)
    assert (out / "prepared" / "database.csv").is_file() and (out / "prepared" / "queries.csv").is_file()
    assert summary.database.usable == tiny.n_database - len(tiny.unusable)
    assert summary.queries.usable == tiny.n_queries
    assert sum(told) > 0  # the callback reaches prepare


def test_query_photos_show_the_package_in_hand_not_the_listing_artwork(monkeypatch: pytest.MonkeyPatch) -> None:
    # The calibration's direction (see bpcr.demo): local features must earn their matches. The same photos
    # (pose, clutter, camera) printing the listing's exact artwork are the control; the package in hand
    # (another print run, curved, softer, glossy, a sticker) must keep well under its SIFT matches.
    from bpcr.reranking.sift import extract_sift, match, to_gray

    seed, specs = 5, [product_spec(5, family, 0) for family in range(6)]

    def keypoints(pixels: np.ndarray):
        return extract_sift(to_gray(Image.fromarray(pixels), 512), 250)

    def matches_with_listings() -> list[int]:
        return [len(match(keypoints(photo.query_image(spec, seed, seeded_rng(seed, STREAM_QUERY, i), seeded_rng(seed, STREAM_HANDHELD, i))),
                          listing, matcher="bf"))
                for i, (spec, listing) in enumerate(zip(specs, listings))]

    listings = [keypoints(photo.shop_image(spec, seeded_rng(seed, STREAM_SHOP, i))) for i, spec in enumerate(specs)]
    in_hand = matches_with_listings()
    monkeypatch.setattr(photo, "print_revision", lambda spec, rng: spec)
    monkeypatch.setattr(photo, "handheld_of", lambda spec, rng: None)
    exact_artwork = matches_with_listings()
    assert sum(exact_artwork) >= 25 * len(specs)  # the control matches: the listing's artwork is findable
    assert sum(in_hand) < 0.6 * sum(exact_artwork), (in_hand, exact_artwork)


def test_package_in_hand_differs_from_the_listing_beyond_geometry() -> None:
    # Curvature off: what differs between the two front views is the print run, softness, gloss or a sticker.
    from dataclasses import replace

    changed = []
    for family in range(12):
        spec = product_spec(2, family, 0)
        listed, alpha = product_sprite(spec)
        package = seeded_rng(2, STREAM_HANDHELD, family)
        held, held_alpha = product_sprite(print_revision(spec, package), replace(handheld_of(spec, package), yaw=None))
        assert np.array_equal(alpha, held_alpha)  # the silhouette is the product's own
        inside = alpha > 0.5
        changed.append(float(np.abs(listed.astype(np.int16) - held.astype(np.int16))[inside].mean()))
    assert min(changed) > 2.0, changed
