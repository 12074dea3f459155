"""A small mutation check of scoring, splitting, tuning and the in-sample marks: each plausible bug below is put
into a scratch copy of the kit, and the tests that should catch it are run there; every one must fail.

The bugs are those a reader would not see in a diff: a leaderboard ranked by all queries, folds that choose their
weights on their own held-out queries, a choice recorded without its stars, a chooser that ignores the
leaderboard's split. The working tree is never touched (the copy lives in a temporary folder).

    .venv/bin/python benchmarks/mutation_scoring.py            # every mutant, about 2 minutes on 2 cores
    .venv/bin/python benchmarks/mutation_scoring.py --only rank

Exit code 1 when a mutant survives.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("bpcr", "tests", "ground_truth", "configs", "docs", "README.md", "pyproject.toml")

# (name, file, text, replacement, tests that must fail)
MUTANTS = [
    ("rank by all queries", "bpcr/evaluation/score.py",
     "return (private.in_sample, -private.map7, -self.map7, self.name)",
     "return (private.in_sample, -self.map7, -self.map7, self.name)",
     "tests/evaluation/test_score.py::test_ranked_by_the_private_half_not_by_all_queries"),
    ("half intervals over all queries", "bpcr/evaluation/score.py",
     "bootstrap_ci(values, n_resamples=n_resamples, seed=seed), len(values),",
     "bootstrap_ci(list(score.per_query.values()), n_resamples=n_resamples, seed=seed), len(values),",
     "tests/evaluation/test_score.py::test_score_intervals_are_the_bootstrap_of_the_per_query_aps"),
    ("interval seed ignored", "bpcr/evaluation/score.py",
     "ci95=bootstrap_ci(values, n_resamples=options.n_resamples, seed=options.seed),",
     "ci95=bootstrap_ci(values, n_resamples=options.n_resamples, seed=0),",
     "tests/evaluation/test_score.py::test_score_intervals_are_the_bootstrap_of_the_per_query_aps"),
    ("public share ignored", "bpcr/evaluation/score.py",
     "split = QuerySplit(options.split_seed, options.public_share)", "split = QuerySplit(options.split_seed, 0.5)",
     "tests/evaluation/test_score.py::test_public_share_sets_the_size_of_the_public_half"),
    ("p-value without the +1 in its denominator", "bpcr/evaluation/stats.py",
     "return (1 + count) / (1 + n_resamples)", "return (1 + count) / n_resamples", "tests/evaluation/test_stats.py"),
    ("folds choose on all queries", "bpcr/evaluation/tuning.py",
     "                        for cols in train_columns]",
     "                        for cols in [all_columns] * len(train_columns)]", "tests/evaluation/test_tuning.py"),
    ("ensemble folds over every query of --tune-on", "bpcr/evaluation/ensemble.py",
     "tuning = tune(aligned, fusion, gt, folds", "tuning = tune(aligned, fusion, gt_all, folds",
     "tests/evaluation/test_ensemble.py::test_cross_validation_folds_are_drawn_and_chosen_within_the_public_half"),
    ("defaults chosen on the demo not starred", "bpcr/evaluation/chosen.py",
     "    choices += _default_choices(prov, where)\n", "", "tests/evaluation/test_chosen.py"),
    ("inputs' choices not inherited", "bpcr/evaluation/score.py",
     "found += [c.inherited(source) for c in gather(source, seen | {source})]", "pass",
     "tests/evaluation/test_chosen.py"),
    ("hits divided as the challenge", "bpcr/evaluation/metrics.py",
     "return total / hits if hits else 0.0", "return total / min(len(relevant), k)",
     "tests/evaluation/test_metrics.py tests/evaluation/test_metrics_crosscheck.py"),
    ("report shows every query", "bpcr/evaluation/report.py",
     "half_ids = scores[0].split.half(gt, options.half)", 'half_ids = scores[0].split.half(gt, "all")',
     "tests/evaluation/test_report.py"),
    ("pipeline ensemble tuned on the default split", "bpcr/pipeline/stages.py",
     '                options.update({k: v for k, v in self.config.get("score", {}).items()\n'
     '                                if k in ("split_seed", "public_share")})\n', "",
     "tests/pipeline/test_config.py"),
    ("an [[ensemble]] split of its own accepted", "bpcr/pipeline/config.py",
     '                    _check_one_split(path, label, entry, config.get("score", {}))\n', "                    pass\n",
     "tests/pipeline/test_config.py"),
    ("sweep chooses on seed 0 whatever [score] says", "bpcr/pipeline/sweep.py",
     '    split = QuerySplit(chosen["split_seed"], chosen["public_share"])', "    split = QuerySplit(0, 0.5)",
     "tests/pipeline/test_sweep.py::test_one_split_for_the_sweep_its_tuned_ensembles_and_the_chosen_leaderboard"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutants whose name contains this")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only is None or args.only in m[0]]
    survived = []
    with tempfile.TemporaryDirectory(prefix="bpcr-mutants-") as tmp:
        scratch = Path(tmp)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, scratch / name)
        # Unmutated, the same tests pass in the copy: a mutant is caught by what it changed, not by the copy.
        every = sorted({t for m in chosen for t in m[4].split()})
        clean = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *every], cwd=scratch,
                               capture_output=True, text=True)
        if clean.returncode != 0:
            print(clean.stdout[-3000:])
            print("the tests fail on the unmutated copy: nothing to learn from the mutants")
            return 1
        for name, path, text, replacement, tests in chosen:
            target = scratch / path
            original = target.read_text(encoding="utf-8")
            if original.count(text) != 1:
                print(f"{name}: the text to mutate is not in {path} once; update this script")
                survived.append(name)
                continue
            mutated = original.replace(text, replacement)
            try:
                compile(mutated, path, "exec")  # a mutant that does not compile would be "caught" for nothing
            except SyntaxError as exc:
                print(f"{name}: the mutant is not valid Python ({exc}); update this script")
                survived.append(name)
                continue
            target.write_text(mutated, encoding="utf-8")
            started = time.perf_counter()
            try:
                # The copy's folder comes first on sys.path: its bpcr is the mutated one.
                run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                      *tests.split()], cwd=scratch, capture_output=True, text=True)
            finally:
                target.write_text(original, encoding="utf-8")
            caught = run.returncode != 0
            print(f"{'caught  ' if caught else 'SURVIVED'} {name} ({time.perf_counter() - started:.0f} s)", flush=True)
            if not caught:
                survived.append(name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
