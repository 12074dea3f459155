"""A tiny pipeline in a folder (``tiny.toml``): run it, name the stages that ran, copy it aside with a few of its
query photos as new photos for ``bpcr predict``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bpcr.pipeline.runner import run_pipeline


def copy_with_photos(folder: Path, tmp_path: Path, n: int = 2) -> tuple[Path, Path]:
    """``folder`` copied to ``tmp_path/copy``, and its first ``n`` query images in ``tmp_path/photos``."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((copy / "work" / "queries").iterdir())[:n]:
        shutil.copy(photo, photos / photo.name)
    return copy, photos


def predicted_copy(folder: Path, tmp_path: Path, cli, monkeypatch, *run: str) -> tuple[Path, Path]:
    """``bpcr predict`` (``cli``, with ``run``'s options) of 2 query photos from a copy of ``folder``
    (:func:`copy_with_photos`), from within the copy, checked to answer both in ``tmp_path/answers.csv``;
    (the copy, the photos)."""
    copy, photos = copy_with_photos(folder, tmp_path)
    monkeypatch.chdir(copy)
    result = cli("predict", "tiny.toml", photos, tmp_path / "answers.csv", *run)
    assert result.code == 0, result.err
    assert len((tmp_path / "answers.csv").read_text().splitlines()) == 2
    return copy, photos


def run_tiny(folder: Path):
    """``bpcr run tiny.toml`` in ``folder``, silent; its PipelineResult."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return run_pipeline("tiny.toml", log=lambda _: None)


def stages_run(result) -> set[str]:
    """"stage:name" of every stage that ran (not skipped), scoring left out."""
    return {f"{t.stage}:{t.name}" for t in result.times if not t.skipped and t.stage != "score"}


def rerun_after_edit(folder: Path, tmp_path: Path, old: str, new: str) -> tuple[Path, set[str]]:
    """``folder`` copied to ``tmp_path/copy``, checked to re-run nothing, then ``old`` replaced by ``new`` in its
    ``tiny.toml`` and run again: (the copy, the stages that second run ran)."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert stages_run(run_tiny(copy)) == set()
    config = copy / "tiny.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return copy, stages_run(run_tiny(copy))


def first_run(tmp_path_factory, tiny_demo_config, name: str, then: str):
    """A module's finished tiny pipeline: the tiny demo with 6 queries on one worker, ``then`` appended, run once in
    a new folder; (folder, its PipelineResult)."""
    folder = tmp_path_factory.mktemp(name)
    (folder / "tiny.toml").write_text(tiny_demo_config(6, one_worker=True, then=then))
    return folder, run_tiny(folder)
