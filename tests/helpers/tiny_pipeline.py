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


def run_tiny(folder: Path):
    """``bpcr run tiny.toml`` in ``folder``, silent; its PipelineResult."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return run_pipeline("tiny.toml", log=lambda _: None)


def stages_run(result) -> set[str]:
    """"stage:name" of every stage that ran (not skipped), scoring left out."""
    return {f"{t.stage}:{t.name}" for t in result.times if not t.skipped and t.stage != "score"}


def first_run(tmp_path_factory, tiny_demo_config, name: str, then: str):
    """A module's finished tiny pipeline: the tiny demo with 6 queries on one worker, ``then`` appended, run once in
    a new folder; (folder, its PipelineResult)."""
    folder = tmp_path_factory.mktemp(name)
    (folder / "tiny.toml").write_text(tiny_demo_config(6, one_worker=True, then=then))
    return folder, run_tiny(folder)
