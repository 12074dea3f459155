"""Plugins (bpcr.plugins): a tiny distribution on PYTHONPATH registers a pooling, a run fusion, a refine method and a
metric variant, and each is then used end to end from the command line as a built-in is, recorded in what it made."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcr import plugins
from bpcr.errors import BadInput

pytestmark = pytest.mark.slow  # each case runs the CLI in a subprocess with the plugin on its path

PLUGIN = '''"""A tiny bpcr plugin: one entry in each of the four groups."""
from dataclasses import dataclass

from bpcr.options import option


def peak(x, power: float = 2.0, mask=None):
    """Pooling: the per-channel mean of max(x, 0) ** power (masked when a mask is given)."""
    y = x.clamp_min(0) ** power
    if mask is not None:
        y = y * mask.unsqueeze(1)
    return y.mean(dim=(-2, -1))


def firstvote(table, weights, bonus: float = 1.0):
    """Run fusion: sum_r w_r (1 / rank_r(d) + bonus [rank_r(d) = 1])."""
    import numpy as np

    listed = table.ranks > 0
    points = np.where(listed, 1.0 / np.where(listed, table.ranks, 1.0), 0.0) + bonus * (table.ranks == 1)
    return np.einsum("wr,...rc->w...c", weights, points)


firstvote.uses_scores = False


@dataclass(frozen=True)
class SwapOptions:
    n: int = option(2, "Results reversed at the top.", low=1, high=7, integer=True)


def swap(context, n=2):
    """Refine method: each query's first n results in reverse order."""
    from bpcr.postretrieval.context import Refinement, count_changed, reciprocal_ranks

    ranking = {}
    for q, ids in context.run.ranking.items():
        ids = list(dict.fromkeys(ids))
        ranking[q] = ids[:n][::-1] + ids[n:]
    scores = {q: reciprocal_ranks(r) for q, r in ranking.items()}
    return Refinement(ranking, scores, {"n": n}, f"the first {n} reversed", count_changed(context, ranking))


swap.options_class = SwapOptions
swap.reference = "the tiny plugin's swap"


def top1(ranked, relevant, k):
    """Metric variant: 1 when the first result is relevant."""
    return 1.0 if ranked[:1] and ranked[0] in relevant else 0.0
'''

ENTRY_POINTS = """[bpcr.poolings]
peak = bpcr_tiny_plugin:peak

[bpcr.fusions]
firstvote = bpcr_tiny_plugin:firstvote

[bpcr.refine_methods]
swap = bpcr_tiny_plugin:swap

[bpcr.metric_variants]
top1 = bpcr_tiny_plugin:top1
"""
DIST, VERSION = "bpcr-tiny-plugin", "0.1"


def provenance_of(name: str) -> dict:
    return {"plugin": DIST, "version": VERSION, "entry_point": f"bpcr_tiny_plugin:{name}"}


def write_distribution(root: Path, dist: str, version: str, entry_points: str, module: str | None = None,
                       source: str = "") -> Path:
    """A distribution as an installer leaves it: a module and a ``*.dist-info`` folder beside it."""
    root.mkdir(parents=True, exist_ok=True)
    if module:
        (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    return write_distribution(tmp_path_factory.mktemp("site"), DIST, VERSION, ENTRY_POINTS, "bpcr_tiny_plugin",
                              PLUGIN)


def bpcr(path: Path, *args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``bpcr ARGS`` in a fresh interpreter whose PYTHONPATH holds ``path`` (where the plugin is installed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), *filter(None, [os.environ.get("PYTHONPATH")])]),
               COLUMNS="400")
    return subprocess.run([sys.executable, "-m", "bpcr", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def python(path: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ metadata


def test_names_come_from_metadata_without_importing_plugin_code(plugin_path):
    code = ("import sys\nfrom importlib.metadata import entry_points\nfrom bpcr import plugins\n"
            "ours = {g: plugins.names(g) for g in plugins.GROUPS}\n"
            "print(sorted(m for m in ('bpcr_tiny_plugin', 'torch', 'numpy') if m in sys.modules))\n"
            "theirs = {g: tuple(sorted(e.name for e in entry_points(group=g))) for g in plugins.GROUPS}\n"
            "print(ours == theirs, ours['bpcr.poolings'], plugins.provenance('bpcr.fusions', 'firstvote'))\n")
    out = python(plugin_path, code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[]"  # nothing imported, the plugin included
    assert lines[1] == f"True ('peak',) {provenance_of('firstvote')}"


def test_help_lists_the_plugins_from_metadata_only(plugin_path):
    code = ("import sys\nfrom bpcr.cli import main\n"
            "for command in ('extract', 'ensemble', 'refine', 'score'):\n"
            "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('bpcr_tiny_plugin', 'torch', 'numpy', 'cv2', 'faiss', 'sklearn', 'scipy')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(plugin_path), COLUMNS="400"))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "mac, spoc, gem, rmac, ramac, grmac, vamac, grmaac, srmac, crow, peak" in text
    assert "rrf, borda, combsum, combmnz, firstvote" in text
    assert "text, aqe, alpha-qe, qe-2020, kreciprocal, diffusion, dupgroup, swap" in text
    assert "challenge, nrel, cutoff-mean, hits, top1" in text


# ------------------------------------------------------------------------------------------------ end to end


def test_extract_with_a_plugin_pooling(plugin_path, tmp_path):
    from bpcr.dataset.manifest import write_manifest
    from tests.helpers.extraction import write_images

    (tmp_path / "img").mkdir()
    ids, paths, widths, heights = write_images(tmp_path / "img", 5)
    write_manifest(tmp_path / "db.csv", ids, paths, widths, heights, [""] * len(ids))
    result = bpcr(plugin_path, "extract", tmp_path / "db.csv", "--pooling", "peak,gem", "--param", "peak.power=3",
                  "--backbone", "test_resnet", "--weights", "none", "--size", 32, "--batch-size", 4, "--workers", 0,
                  "--device", "cpu", "--threads", 1, "--dtype", "float32", "--out", tmp_path / "feats")
    assert result.returncode == 0, result.stdout + result.stderr
    meta = json.loads((tmp_path / "feats" / "peak" / "meta.json").read_text())
    assert meta["pooling"] == "peak" and meta["pooling_params"] == {"power": 3.0} and meta["mask"] is None
    assert meta["plugin"] == provenance_of("peak")
    gem_meta = json.loads((tmp_path / "feats" / "gem" / "meta.json").read_text())
    assert "plugin" not in gem_meta  # a built-in's store records what it always did
    peak = np.load(tmp_path / "feats" / "peak" / "features.npy")
    gem = np.load(tmp_path / "feats" / "gem" / "features.npy")
    assert peak.shape == gem.shape and peak.shape[0] == len(ids)
    assert np.allclose(np.linalg.norm(peak, axis=1), 1, atol=1e-5) and not np.allclose(peak, gem)
    # its parameters are checked as a built-in's
    bad = bpcr(plugin_path, "extract", tmp_path / "db.csv", "--pooling", "peak", "--param", "peak.p=3",
               "--backbone", "test_resnet", "--weights", "none", "--out", tmp_path / "bad")
    one_line_error(bad, "pooling 'peak' has no parameter 'p' (allowed: power)")


def _fused(runs, weights, bonus=1.0):
    """firstvote's rule, by hand: best first, equal scores by ID."""
    out = {}
    for q in runs[0]:
        score = {}
        for run, w in zip(runs, weights):
            for rank, doc in enumerate(run[q], start=1):
                score[doc] = score.get(doc, 0.0) + w * (1.0 / rank + (bonus if rank == 1 else 0.0))
        out[q] = sorted(score, key=lambda d: (-round(score[d], 9), d))
    return out


def test_ensemble_refine_and_score_with_plugins(plugin_path, tmp_path):
    from bpcr.io.runs import load_run, write_run
    from tests.helpers.refine_world import chain_world, make_world

    docs = [f"n{i}" for i in range(10)]
    a = {"v1": docs, "v2": docs[::-1]}
    b = {"v1": [docs[1], docs[0], *docs[2:]], "v2": [docs[3], *docs[:3], *docs[4:]]}
    for name, ranking in (("a", a), ("b", b)):
        write_run(tmp_path / "runs", name, ranking, {q: [1.0 / r for r in range(1, 11)] for q in ranking},
                  {"method": "hand"})
    fused = bpcr(plugin_path, "ensemble", tmp_path / "runs" / "a.trec", tmp_path / "runs" / "b.trec", "--method",
                 "firstvote", "--weights", "0.75,0.25", "--name", "fused", "--out", tmp_path / "subs")
    assert fused.returncode == 0, fused.stdout + fused.stderr
    run = load_run(tmp_path / "subs" / "fused")
    assert run.ranking == _fused([a, b], [0.75, 0.25])
    prov = json.loads((tmp_path / "subs" / "fused.json").read_text())
    assert prov["method"] == "ensemble:firstvote" and prov["plugin"] == provenance_of("firstvote")
    assert prov["params"]["bonus"] == 1.0 and prov["params"]["norm"] is None  # ranks only, as it says

    gt = tmp_path / "gt.csv"
    gt.write_text("Validation Image ID,Training Image ID\nv1,n1\nv2,n9,n8\n")
    scored = bpcr(plugin_path, "score", tmp_path / "subs" / "fused.csv", "--gt", gt, "--variant", "top1",
                  "--resamples", 50, "--json", tmp_path / "scores.json", "--no-leaderboard")
    assert scored.returncode == 0, scored.stdout + scored.stderr
    entry = json.loads((tmp_path / "scores.json").read_text())["runs"]["fused"]
    want = np.mean([1.0 if run.ranking[q][0] in rel else 0.0 for q, rel in (("v1", {"n1"}), ("v2", {"n9", "n8"}))])
    assert entry["map7"] == pytest.approx(want) and entry["variants"]["top1"] == pytest.approx(want)
    assert set(entry["variants"]) == {"challenge", "nrel", "cutoff-mean", "hits", "top1"}
    assert entry["variant_plugin"] == {"variant": "top1", **provenance_of("top1")}

    db, queries = chain_world()
    base = make_world(tmp_path / "world", db, queries)
    refined = bpcr(plugin_path, "refine", base, "--method", "swap", "--method-option", "n=3", "--name", "swapped",
                   "--out", tmp_path / "subs")
    assert refined.returncode == 0, refined.stdout + refined.stderr
    before, after = load_run(base), load_run(tmp_path / "subs" / "swapped")
    assert after.ranking["v1"] == before.ranking["v1"][:3][::-1] + before.ranking["v1"][3:]
    prov = json.loads((tmp_path / "subs" / "swapped.json").read_text())
    assert prov["method"] == "refine:swap" and prov["plugin"] == provenance_of("swap")
    assert prov["params"] == {"n": 3} and prov["defaults"]["reference"] == "the tiny plugin's swap"
    # its options are checked as a built-in's, another method's are refused
    one_line_error(bpcr(plugin_path, "refine", base, "--method", "swap", "--method-option", "n=9", "--name", "x",
                        "--out", tmp_path / "subs"), "--n must be")
    one_line_error(bpcr(plugin_path, "refine", base, "--method", "swap", "--k1", 5, "--name", "x",
                        "--out", tmp_path / "subs"), "--k1 is an option of --method kreciprocal, not of --method swap")
    one_line_error(bpcr(plugin_path, "refine", base, "--method", "swap", "--method-option", "m=1", "--name", "x",
                        "--out", tmp_path / "subs"), "refine method 'swap' has no option 'm' (its options: n)")


def test_a_config_names_plugins_as_built_ins(plugin_path, tmp_path):
    code = """
from pathlib import Path
from bpcr.errors import BadInput
from bpcr.pipeline.config import validate_config
from bpcr.postretrieval.options import RefineOptions, refine_table
base = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["gem", "peak"]}],
        "search": [{"name": "s", "features": "e/peak"}, {"name": "t", "features": "e/gem"}],
        "refine": [{"name": "r", "input": "s", "method": "swap", "n": 3}],
        "ensemble": [{"name": "f", "inputs": ["s", "t"], "method": "firstvote"}],
        "score": {"variant": "top1"}}
validate_config(Path("c.toml"), base)
table = refine_table({"method": "swap", "n": 3, "shortlist": 50})
print(table == (RefineOptions(method="swap", shortlist=50), {"n": 3}))
for refine in ({"n": 9}, {"m": 1}, {"n": "3"}, {"k1": 5}):
    try:
        validate_config(Path("c.toml"), dict(base, refine=[{"name": "r", "input": "s", "method": "swap", **refine}]))
    except BadInput as exc:
        print(exc.reason)
"""
    out = python(plugin_path, code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("[refine r] --n must be")
    assert lines[2].startswith("[refine r] unknown option 'm'")
    assert lines[3] == "[refine r] n must be an integer, got '3' (a string)"
    assert lines[4] == "[refine r] --k1 is an option of --method kreciprocal, not of --method swap"


# ------------------------------------------------------------------------------------------------ refusals


@pytest.fixture(scope="module")
def shadow_path(tmp_path_factory) -> Path:
    """A distribution naming a metric variant and a pooling as built-ins, and a fusion whose module is missing."""
    return write_distribution(tmp_path_factory.mktemp("shadow"), "bpcr-shadow", "2.0",
                              "[bpcr.metric_variants]\nchallenge = bpcr_shadow:challenge\n\n"
                              "[bpcr.poolings]\ngem = bpcr_shadow:gem\n\n"
                              "[bpcr.fusions]\nbroken = bpcr_no_such_module:fuse\n")


def test_a_plugin_named_as_a_built_in_is_one_line(shadow_path, tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("Validation Image ID,Training Image ID\nv1,n1\n")
    (tmp_path / "run.csv").write_text("v1,n1,n2,n3,n4,n5,n6,n7\n")
    one_line_error(bpcr(shadow_path, "score", tmp_path / "run.csv", "--gt", gt, "--no-leaderboard"),
                   "plugin 'challenge' of distribution bpcr-shadow 2.0", "built-in metric variant")
    one_line_error(bpcr(shadow_path, "extract", tmp_path / "none.csv", "--pooling", "gem", "--out", tmp_path / "f"),
                   "plugin 'gem' of distribution bpcr-shadow 2.0", "built-in pooling")
    one_line_error(bpcr(shadow_path, "ensemble", tmp_path / "run.csv", tmp_path / "run.csv", "--method", "broken",
                        "--name", "x", "--out", tmp_path / "subs"),
                   "run fusion plugin 'broken' of distribution bpcr-shadow 2.0", "cannot be loaded",
                   "ModuleNotFoundError")
    assert bpcr(shadow_path, "score", "--help").returncode == 0  # --help never fails on a plugin


# ------------------------------------------------------------------------------------------------ in-process


@pytest.fixture
def on_path(monkeypatch, plugin_path):
    """The plugin importable in this process (the scan is per sys.path, so it is seen at once and forgotten after)."""
    monkeypatch.syspath_prepend(str(plugin_path))
    yield
    sys.modules.pop("bpcr_tiny_plugin", None)


def test_registries_answer_for_a_plugin_as_for_a_built_in(on_path):
    import torch

    from bpcr.evaluation.metrics import ap_at_k
    from bpcr.features.pooling import check_params, mask_use, pooling_function, pooling_params
    from bpcr.postretrieval.refine import METHODS, get_method
    from bpcr.retrieval.fusion import RUN_FUSIONS, get_run_fusion

    assert plugins.choices(plugins.POOLINGS, ("gem",)) == ("gem", "peak")
    assert pooling_params("peak") == {"power": 2.0} and mask_use("peak") == "optional"
    assert check_params("peak", {"power": 3}) == {"power": 3.0}
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(pooling_function("peak")(x, power=3.0), (x ** 3).mean(dim=(-2, -1)))
    fusion = get_run_fusion("firstvote")
    assert fusion.name == "firstvote" and fusion.defaults == {"bonus": 1.0} and not fusion.uses_scores
    assert "firstvote" not in RUN_FUSIONS  # the built-in tables hold the built-ins only
    method = get_method("swap")
    assert method.defaults == {"n": 2} and method.text_index == "unused" and "swap" not in METHODS
    assert ap_at_k(["a", "b"], {"b"}, 7, "top1") == 0.0 and ap_at_k(["b"], {"b"}, 7, "top1") == 1.0
    with pytest.raises(ValueError, match="unknown metric variant 'nope'"):
        ap_at_k(["a"], {"a"}, 7, "nope")


def test_a_mask_parameter_without_default_makes_the_mask_required(monkeypatch, tmp_path):
    write_distribution(tmp_path, "bpcr-masked", "1.0", "[bpcr.poolings]\nmasked = bpcr_masked:masked\n"
                       "needy = bpcr_masked:needy\n", "bpcr_masked",
                       "def masked(x, mask):\n    return (x * mask.unsqueeze(1)).amax(dim=(-2, -1))\n\n"
                       "def needy(x, alpha):\n    return x.mean(dim=(-2, -1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bpcr.features.pooling import check_params, mask_use, plugin_provenance

    try:
        assert mask_use("masked") == "required" and check_params("masked") == {}
        assert plugin_provenance("masked") == {"plugin": "bpcr-masked", "version": "1.0",
                                               "entry_point": "bpcr_masked:masked"}
        assert plugin_provenance("gem") is None
        with pytest.raises(BadInput, match="parameter 'alpha' has no default"):
            check_params("needy")
    finally:
        sys.modules.pop("bpcr_masked", None)


def test_two_distributions_naming_one_plugin_are_refused(monkeypatch, tmp_path):
    for dist in ("bpcr-one", "bpcr-two"):
        write_distribution(tmp_path / dist, dist, "1", "[bpcr.metric_variants]\nsame = m:f\n")
        monkeypatch.syspath_prepend(str(tmp_path / dist))
    assert plugins.names(plugins.METRIC_VARIANTS) == ("same",)
    with pytest.raises(BadInput, match=r"metric variant plugin 'same' is declared by 2 distributions"):
        plugins.load(plugins.METRIC_VARIANTS)
