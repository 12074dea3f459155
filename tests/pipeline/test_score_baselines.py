"""A config's [score] baseline: a run's path (one baseline for every run), or a table of run name -> baseline run
name (each run its own), checked against the config's runs before any stage."""
from __future__ import annotations

from pathlib import Path

import pytest

from bpcr.errors import BadInput
from bpcr.pipeline.config import load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
RUNS = """[prepare]
demo = true
[[extract]]
name = "e"
backbone = "tf_efficientnet_lite0"
poolings = ["gem", "grmac"]
[[search]]
name = "lite0-gem"
features = "e/gem"
[[search]]
name = "lite0-grmac"
features = "e/grmac"
[[search]]
name = "trained-gem"
features = "e/gem"
[[search]]
name = "trained-grmac"
features = "e/grmac"
"""


def _validate(tmp_path: Path, score: str) -> dict:
    path = tmp_path / "c.toml"
    path.write_text(RUNS + score)
    config = load_config(path)
    validate_config(path, config)
    return config


def test_a_table_of_baselines_and_a_path_are_accepted(tmp_path):
    table = _validate(tmp_path, '[score.baseline]\ntrained-gem = "lite0-gem"\ntrained-grmac = "lite0-grmac"\n')
    assert table["score"]["baseline"] == {"trained-gem": "lite0-gem", "trained-grmac": "lite0-grmac"}
    inline = _validate(tmp_path, '[score]\nbaseline = { trained-gem = "lite0-gem" }\n')
    assert inline["score"]["baseline"] == {"trained-gem": "lite0-gem"}
    path = _validate(tmp_path, '[score]\nbaseline = "submissions/lite0-gem.csv"\n')  # today's: not checked here
    assert path["score"]["baseline"] == "submissions/lite0-gem.csv"


@pytest.mark.parametrize("score, reason", [
    ('[score.baseline]\ntrained-gem = "lite0-gme"\n',
     "[score] baseline 'trained-gem' = 'lite0-gme': 'lite0-gme' is not a run of this config; did you mean "
     "'lite0-gem'?"),
    ('[score.baseline]\ntrained-x = "lite0-gem"\n', "[score] baseline 'trained-x' = 'lite0-gem': 'trained-x' is not "
                                                    "a run of this config"),
    ('[score.baseline]\ntrained-gem = "trained-gem"\n', "[score] baseline 'trained-gem' = 'trained-gem': a run "
                                                        "cannot be compared with itself"),
    ('[score]\nbaseline = {}\n', "[score] baseline names no run"),
    ('[score.baseline]\ntrained-gem = 3\n', "[score] baseline must be a string or a table"),
    ('[score]\nbaseline = 3\n', "[score] baseline must be a string or a table, got 3 (an integer)"),
])
def test_a_bad_table_of_baselines_is_refused_naming_the_config(tmp_path, score, reason):
    with pytest.raises(BadInput) as info:
        _validate(tmp_path, score)
    assert info.value.file == str(tmp_path / "c.toml") and reason in info.value.reason, str(info.value)


@pytest.mark.parametrize("score, reason", [
    ('[score.baseline]\ntrained-gem = "lite0"\n', "[score] baseline 'trained-gem' = 'lite0': 'lite0' is not a run "
                                                  "of this config"),
    ('[score.baseline]\ntrained-gem = "trained-gem"\n', "a run cannot be compared with itself"),
])
def test_bpcr_run_refuses_a_bad_table_before_any_stage(refused_config, score, reason):
    refused_config(RUNS + score, reason)  # exit 2, one line, nothing written


def test_the_training_demo_compares_each_trained_run_with_its_untrained_twin():
    path = ROOT / "configs" / "demo-train.toml"
    config = load_config(path)
    validate_config(path, config)
    twins = config["score"]["baseline"]
    features = {e["name"]: e["features"] for e in config["search"] if isinstance(e["features"], str)}
    trained_stores = {e["name"] for e in config["extract"] if str(e.get("weights", "")).startswith("train:")}
    untrained = {f.split("/")[1]: name for name, f in features.items() if f.split("/")[0] == "lite0"}
    trained = [name for name, f in features.items() if f.split("/")[0] in trained_stores]
    assert trained and sorted(n for n in twins if n in trained) == sorted(trained)
    for name in trained:  # the same pooling, untrained
        assert twins[name] == untrained[features[name].split("/")[1]], name
