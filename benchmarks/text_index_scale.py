"""Build time and peak memory of the textual index (paper 001 §2.2) at Perfect-500K scale.

Generates realistic product descriptions with a seeded RNG (brands, product
lines, types, shades, sizes, marketing words; each product listed several
times with reworded titles; a share of CJK and empty descriptions), writes a
manifest, then builds the index in a fresh subprocess per size and prints the
wall time and the subprocess's peak resident memory (ru_maxrss). A side-by-side
run compares the kernel with the plain ``X[chunk] @ X.T`` product on a smaller
size.

    .venv/bin/python benchmarks/text_index_scale.py                    # 100K and 500K
    .venv/bin/python benchmarks/text_index_scale.py --sizes 20000 --naive-size 20000
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = [
    "lipstick", "lip gloss", "lip liner", "lip balm", "liquid lipstick", "mascara", "eyeliner", "eye shadow palette",
    "brow pencil", "brow gel", "foundation", "cushion foundation", "concealer", "blush", "bronzer", "highlighter",
    "primer", "setting spray", "setting powder", "pressed powder", "bb cream", "cc cream", "face cream", "night cream",
    "eye cream", "serum", "essence", "toner", "cleanser", "cleansing oil", "micellar water", "moisturizer", "sunscreen",
    "sheet mask", "clay mask", "sleeping mask", "exfoliator", "shampoo", "conditioner", "hair mask", "hair oil",
    "hair spray", "body lotion", "body wash", "hand cream", "perfume", "eau de parfum", "eau de toilette",
    "nail polish", "top coat", "makeup brush", "sponge", "false lashes", "makeup remover", "lip tint",
]
COLOURS = [
    "ruby", "nude", "rose", "coral", "berry", "mocha", "plum", "peach", "scarlet", "cherry", "mauve", "taupe", "ivory",
    "beige", "sand", "honey", "caramel", "espresso", "bronze", "gold", "silver", "pink", "red", "wine", "fuchsia",
    "lilac", "violet", "blue", "black", "brown", "clear", "natural", "porcelain", "vanilla", "almond", "cocoa",
    "tan", "warm", "cool", "neutral", "light", "medium", "deep", "fair", "golden", "rosewood", "cinnamon", "brick",
]
MARKETING = [
    "new", "long lasting", "waterproof", "matte", "hydrating", "moisturizing", "for women", "for men", "gift set",
    "limited edition", "best seller", "authentic", "original", "100% genuine", "free shipping", "vegan",
    "cruelty free", "paraben free", "travel size", "full size", "mini", "value pack", "2 pack", "3 pack", "sealed",
    "brand new", "in box", "unboxed", "tester", "anti aging", "brightening", "oil control", "sensitive skin",
    "dry skin", "oily skin", "all skin types", "spf 30", "spf 50", "pa+++", "smudge proof", "transfer proof",
    "volumizing", "lengthening", "nourishing", "repair", "whitening", "soothing", "firming", "refill", "sale",
]
SIZES = ["ml", " ml", "g", " g", " oz", " fl oz", "ml/", " ML", "mL"]
SYLLABLES = [
    "lu", "mi", "ere", "ko", "ra", "ve", "la", "sha", "ni", "do", "bel", "ta", "ri", "sa", "no", "va", "zen", "ki",
    "ma", "lo", "fe", "li", "cia", "or", "tis", "pa", "ro", "se", "an", "ge", "lia", "mo", "ne", "qu", "ju", "vi",
]
CJK = "美丽口红粉底液精华面霜保湿防晒眼影睫毛膏香水洗发护发身体乳卸妆水滋润补水控油遮瑕持久不脱色正品限量版礼盒"
HANGUL = "립스틱파운데이션마스카라에센스크림토너선크림향수샴푸"


def _word(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> str:
    return "".join(rng.choice(SYLLABLES, size=int(rng.integers(lo, hi + 1))))


def generate_descriptions(n: int, seed: int = 0) -> list[str]:
    """``n`` descriptions: products listed 1-8 times, product lines with up to 30 shades."""
    rng = np.random.default_rng(seed)
    # Brand popularity falls off like a power law; the largest holds about 2% of listings.
    brands = [" ".join(_word(rng) for _ in range(int(rng.integers(1, 3)))) for _ in range(max(100, n // 100))]
    popularity = 1.0 / (np.arange(len(brands)) + 10.0) ** 1.1
    popularity /= popularity.sum()
    line_words = [_word(rng, 2, 4) for _ in range(max(2000, n // 20))] + [
        "velvet", "ultra", "hydra", "luminous", "pro", "silk", "glow", "perfect", "intense", "rouge", "color", "care"]
    out: list[str] = []
    while len(out) < n:
        brand = brands[int(rng.choice(len(brands), p=popularity))]
        line = " ".join(rng.choice(line_words, size=int(rng.integers(1, 4))))
        kind = TYPES[int(rng.integers(len(TYPES)))]
        size = f"{int(rng.choice([5, 10, 15, 30, 50, 75, 100, 150, 200, 250, 500]))}{rng.choice(SIZES)}"
        shades = int(rng.choice([1, 1, 1, 2, 4, 8, 12, 20, 30]))
        for shade in range(shades):
            shade_name = f"{int(rng.integers(1, 100)):02d} {rng.choice(COLOURS)}" if shades > 1 else ""
            for _ in range(int(rng.integers(1, 9))):
                if len(out) >= n:
                    break
                roll = rng.random()
                if roll < 0.02:
                    out.append("")
                    continue
                if roll < 0.06:
                    out.append(native_title(brand, size, rng))
                    continue
                out.append(reworded([brand, line, kind, shade_name, size], rng, max_marketing=4))
    return out


def native_title(brand: str, size: str, rng: np.random.Generator) -> str:
    """A listing written in another script: the brand, 4-13 Hangul or CJK characters, the size."""
    alphabet = HANGUL if rng.random() < 0.3 else CJK
    native = "".join(rng.choice(list(alphabet), size=int(rng.integers(4, 14))))
    return f"{brand} {native} {size}"


def reworded(parts: list[str], rng: np.random.Generator, max_marketing: int) -> str:
    """A listing's words as sellers write them: up to ``max_marketing`` marketing words added, a tenth of the
    words dropped, sometimes shuffled, title- or upper-cased, the first words set apart by a separator."""
    parts = parts + list(rng.choice(MARKETING, size=int(rng.integers(0, max_marketing + 1)), replace=False))
    parts = [p for p in parts if p and rng.random() > 0.1]
    if rng.random() < 0.3:
        rng.shuffle(parts)
    text = " ".join(parts)
    style = rng.random()
    text = text.title() if style < 0.4 else text.upper() if style < 0.5 else text
    sep = str(rng.choice([" ", " - ", ", ", " | "]))
    return sep.join(text.split(" ", 2)) if sep != " " else text


def write_manifest_csv(path: Path, descriptions: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "path", "width", "height", "description"])
        for row, text in enumerate(descriptions):
            writer.writerow([f"n{row:07d}", f"images/n{row:07d}.jpg", 500, 500, text])


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _child_generate(n: int, seed: int, path: str) -> None:
    write_manifest_csv(Path(path), generate_descriptions(n, seed))


def _child_build(manifest: str, out: str) -> None:
    from bpcr.text.index import build_text_index

    started = time.perf_counter()
    index = build_text_index(manifest, out, force=True)
    seconds = time.perf_counter() - started
    lengths = np.diff(index.indptr)
    print(json.dumps({
        "seconds": seconds,
        "vectors_seconds": index.meta["seconds"]["vectors"],
        "peak_mb": _peak_mb(),
        "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        "counts": index.meta["counts"],
        "median_neighbours": float(np.median(lengths)),
        "p99_neighbours": float(np.percentile(lengths, 99)),
    }))


def _child_compare(manifest: str) -> None:
    """The kernel against the plain chunked X @ X.T on the same TF-IDF matrix."""
    import scipy.sparse as sp

    from bpcr.dataset.manifest import read_manifest
    from bpcr.text.tfidf import DEFAULT_TAU, is_english, similar_pairs, tfidf_vectors

    texts = [t for t in read_manifest(manifest).descriptions if is_english(t)]
    x, _ = tfidf_vectors(texts)
    started = time.perf_counter()
    fast = similar_pairs(x, DEFAULT_TAU)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    xt = sp.csr_matrix(x.T)
    pairs = 0
    for lo in range(0, x.shape[0], 1000):
        block = sp.coo_matrix(x[lo : lo + 1000] @ xt)
        keep = (block.data > DEFAULT_TAU) & (block.row + lo != block.col)
        pairs += int(np.count_nonzero(keep))
    naive_s = time.perf_counter() - started
    print(json.dumps({"kernel_s": fast_s, "naive_s": naive_s, "kernel_pairs": int(fast.nnz), "naive_pairs": pairs}))


def _run(args: list[str]) -> tuple[dict | None, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"child {args[0]} failed with exit code {done.returncode}")
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else None), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--naive-size", type=int, default=20_000, help="size of the side-by-side run (0 to skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bpcr-ti-bench-") as tmp:
        if args.naive_size:
            manifest = str(Path(tmp) / f"naive_{args.naive_size}.csv")
            _run(["--child-generate", str(args.naive_size), str(args.seed), manifest])
            result, _ = _run(["--child-compare", manifest])
            assert result is not None
            print(
                f"side by side at {args.naive_size:,} descriptions: kernel {result['kernel_s']:.2f} s, "
                f"plain X[chunk] @ X.T {result['naive_s']:.2f} s "
                f"(x{result['naive_s'] / max(result['kernel_s'], 1e-9):.1f}); "
                f"pairs {result['kernel_pairs']:,} vs {result['naive_pairs']:,}"
            )
        for n in args.sizes:
            manifest = str(Path(tmp) / f"manifest_{n}.csv")
            _, gen_wall = _run(["--child-generate", str(n), str(args.seed), manifest])
            result, wall = _run(["--child-build", manifest, str(Path(tmp) / f"ti_{n}")])
            assert result is not None
            counts = result["counts"]
            print(
                f"{n:>9,} descriptions: build {result['seconds']:.1f} s (TF-IDF {result['vectors_seconds']:.1f} s, "
                f"process {wall:.1f} s, CPU {result['cpu_s']:.1f} s), peak RSS {result['peak_mb']:,.0f} MB; "
                f"{counts['terms']:,} terms, {counts['non_english']:,} non-English, {counts['empty']:,} empty, "
                f"{counts['neighbour_entries']:,} neighbour entries, median {result['median_neighbours']:.0f}, "
                f"p99 {result['p99_neighbours']:.0f}, max {counts['max_neighbours']:,} per image "
                f"(generation {gen_wall:.1f} s, not counted)"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-generate":
        _child_generate(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-build":
        _child_build(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-compare":
        _child_compare(sys.argv[2])
    else:
        main()
