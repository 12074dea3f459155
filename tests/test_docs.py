"""The reference site builds strictly, a broken link would fail it, and README's local links resolve.

``mkdocs.yml`` turns broken links, links to missing anchors and pages left out of ``nav`` into
warnings, and ``strict: true`` (plus ``--strict`` here) turns every warning into an error.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=project, capture_output=True, text=True, timeout=300)


def test_docs_build_strictly(tmp_path):
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    return project


@pytest.mark.slow
def test_a_broken_link_fails_the_build(tmp_path):
    project = copy_project(tmp_path)
    assert build(project, tmp_path / "clean").returncode == 0  # the copy alone builds
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "no-such-page.md" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_missing_anchor_fails_the_build(tmp_path):
    project = copy_project(tmp_path)
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [nowhere](demo.md#no-such-heading).\n")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_page_missing_from_nav_fails_the_build(tmp_path):
    project = copy_project(tmp_path)
    (project / "docs" / "orphan.md").write_text("# Orphan\n\nIn no nav.\n")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "orphan.md" in result.stdout + result.stderr


LINK = re.compile(r"\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")


def local_targets(markdown: str) -> list[str]:
    """Every ``](target)`` in ``markdown`` that names a local file: no scheme, no bare anchor."""
    found = []
    for bracketed, bare in LINK.findall(markdown):
        target = bracketed or bare
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        found.append(unquote(target.split("#", 1)[0].split("?", 1)[0]))
    return found


def test_local_target_parsing():
    text = ("[a](docs/a.md) [b](https://x.org/b.md) [c](#top) [d](docs/d.md#part) "
            "[e](mailto:x@y.z) ![f](leaderboard.svg \"chart\") [g](<spaced name.md>)")
    assert local_targets(text) == ["docs/a.md", "docs/d.md", "leaderboard.svg", "spaced name.md"]


def test_readme_local_links_exist():
    targets = local_targets((ROOT / "README.md").read_text(encoding="utf-8"))
    assert targets, "README.md links to no local file: the parser is broken or the links are gone"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
