"""bpcr.pipeline.config: a config value against a stage function's annotation, and the words used for it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytest

from bpcr.pipeline.config import load_config
from bpcr.pipeline.configtypes import accepts, check_options, describe
from bpcr.errors import BadInput


@pytest.mark.parametrize("annotation,good,bad", [
    (int, [3, -1], [True, 3.0, "3"]),
    (float, [3, 0.5], [False, "0.5", [1.0]]),
    (bool, [True, False], [1, "true"]),
    (str | Path, ["a/b"], [5, ["a"]]),
    (Optional[int], [1], ["1", 1.5]),
    (Sequence[float], [[], [1, 2.5]], ["gem", [1, "2"], 1.0]),
    (list[str] | str, ["gem", ["gem", "mac"]], [5, ["gem", 5]]),
    (tuple[int, int], [[1, 4]], [[1], [1, 2, 3], [1, "4"]]),
    (Mapping[str, Mapping[str, Any]], [{"gem": {"p": 3}}], [{"gem": 3}, ["gem"]]),
    (Any, [1, "x", [1]], []),
])
def test_accepts(annotation, good, bad):
    assert all(accepts(annotation, v) for v in good)
    assert not any(accepts(annotation, v) for v in bad)


def test_describe_uses_the_config_words():
    assert describe(int) == "an integer"
    assert describe(float | None) == "a number"
    assert describe(str | Path | None) == "a string"
    assert describe(Sequence[float] | None) == "an array of numbers"
    assert describe(str | Sequence[str | Path]) == "a string or an array of strings"
    assert describe(tuple[int, int] | None) == "an array of 2 integers"


def test_check_options_names_the_table_the_key_and_the_type(tmp_path):
    def stage(store: str, size: int = 224, scales: Sequence[float] = (1.0,), name: str | None = None,
              *, required: int) -> None:
        """A stage function's signature."""

    config = tmp_path / "c.toml"
    check_options(config, "extract a", stage, {"size": 96, "scales": [1, 0.5], "required": 1}, {"store"})
    cases = [({"size": "96", "required": 1}, "[extract a] size must be an integer, got '96' (a string)"),
             ({"scales": 1.0, "required": 1}, "[extract a] scales must be an array of numbers, got 1.0 (a number)"),
             ({"store": "x", "required": 1}, "[extract a] unknown option 'store'; accepted: name, required, scales, size"),
             ({}, "[extract a] needs 'required'")]
    for options, message in cases:
        with pytest.raises(BadInput) as info:
            check_options(config, "extract a", stage, options, {"store"})
        assert str(info.value) == f"{config}: {message}"


def test_invalid_toml_names_its_line_and_column(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("work = 'w'\n\n[prepare]\ndb = \n")
    with pytest.raises(BadInput) as info:
        load_config(path)
    assert info.value.line == 4 and "invalid TOML" in info.value.reason and "(column 6)" in info.value.reason


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(BadInput, match="too large for a config"):
        load_config(path)


def test_an_annotation_that_cannot_be_resolved_accepts_anything(tmp_path):
    namespace: dict = {}
    exec("from __future__ import annotations\ndef stage(a: int, b: OnlyForTypeCheckers = None): pass", namespace)
    check_options(tmp_path / "c.toml", "t", namespace["stage"], {"a": 1, "b": [1]}, set())
    with pytest.raises(BadInput, match=r"\[t\] a must be an integer"):
        check_options(tmp_path / "c.toml", "t", namespace["stage"], {"a": "1"}, set())


def test_one_split_an_ensemble_tunes_on_the_split_the_leaderboard_scores_with(tmp_path):
    """A tuned [[ensemble]] takes [score]'s split; a split of its own that differs is refused, since tuning would
    then choose on queries the leaderboard reports as private. [score] chosen_on (what `bpcr sweep` writes) is
    checked before any stage."""
    from bpcr.pipeline.config import validate_config

    base = {"prepare": {"demo": True}, "extract": [{"name": "e", "backbone": "b", "poolings": ["mac"]}],
            "search": [{"name": "s1", "features": "e/mac"}, {"name": "s2", "features": "e/mac"}]}

    def config(entry: dict, score: dict) -> dict:
        return dict(base, ensemble=[{"name": "f", "inputs": ["s1", "s2"], "method": "rrf", "tune": True, **entry}],
                    score=score)

    validate_config(tmp_path / "c.toml", config({}, {"split_seed": 3}))
    validate_config(tmp_path / "c.toml", config({"split_seed": 3, "public_share": 0.5}, {"split_seed": 3}))
    with pytest.raises(BadInput, match=r"\[ensemble f\] split_seed = 0 differs from \[score\] split_seed = 3"):
        validate_config(tmp_path / "c.toml", config({"split_seed": 0}, {"split_seed": 3}))
    with pytest.raises(BadInput, match=r"\[ensemble f\] public_share = 0.3 differs from \[score\] public_share = 0.5"):
        validate_config(tmp_path / "c.toml", config({"public_share": 0.3}, {}))
    record = {"what": "top = 3", "by": "bpcr sweep", "runs": ["s1"], "query_ids": ["v1"], "half": "public",
              "split": {"method": "bpcr-split/1", "seed": 3, "public_share": 0.5}}
    validate_config(tmp_path / "c.toml", config({}, {"split_seed": 3, "chosen_on": [record]}))
    with pytest.raises(BadInput, match=r"chosen_on must be an array of tables"):
        validate_config(tmp_path / "c.toml", config({}, {"chosen_on": record}))
    with pytest.raises(BadInput, match=r"\[score\] chosen_on: query_ids must be a list of query IDs"):
        validate_config(tmp_path / "c.toml", config({}, {"chosen_on": [{**record, "query_ids": "v1"}]}))


def test_the_pipeline_tunes_its_ensembles_on_the_split_of_score(tmp_path, monkeypatch):
    """The tuned [[ensemble]] is given [score]'s split_seed and public_share (and keyed by them), whatever the
    EnsembleOptions defaults say; an untuned one is keyed as before."""
    import bpcr.evaluation.ensemble as ensemble_module
    from bpcr.pipeline.runner import Pipeline

    (tmp_path / "c.toml").write_text(
        'work = "w"\n[prepare]\ndemo = true\n[[ensemble]]\nname = "t"\ninputs = ["a", "b"]\nmethod = "rrf"\n'
        'tune = true\n[[ensemble]]\nname = "u"\ninputs = ["a", "b"]\nmethod = "rrf"\n'
        '[score]\nsplit_seed = 7\npublic_share = 0.25\n')
    monkeypatch.chdir(tmp_path)
    pipeline = Pipeline(tmp_path / "c.toml", log=lambda _: None)
    pipeline.gt = tmp_path / "gt.csv"
    pipeline.keys.update({"run:a": "ka", "run:b": "kb"})
    given = {}

    def fake(paths, name, options, out, *, tune_on=None):
        given[name] = (options, tune_on)
        for suffix in (".csv", ".trec", ".json"):
            (Path(out) / f"{name}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            (Path(out) / f"{name}{suffix}").write_text("")

    monkeypatch.setattr(ensemble_module, "ensemble", fake)
    pipeline.ensemble()
    tuned, tune_on = given["t"]
    assert (tuned.split_seed, tuned.public_share, tune_on) == (7, 0.25, tmp_path / "gt.csv")
    untuned, _ = given["u"]
    assert (untuned.split_seed, untuned.public_share) == (0, 0.5)
    from bpcr.pipeline.stages import code_defaults, stage_key

    def stamped(name):
        return json.loads((tmp_path / "w" / ".stamps" / "ensemble" / f"{name}.json").read_text())["key"]

    assert stamped("u") == stage_key("ensemble", {"method": "rrf"}, code_defaults("ensemble"), ["ka", "kb"])
    assert stamped("t") == stage_key("ensemble", {"method": "rrf", "tune_on": tmp_path / "gt.csv", "split_seed": 7,
                                                  "public_share": 0.25}, code_defaults("ensemble"), ["ka", "kb"])
