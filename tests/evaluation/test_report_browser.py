"""`bpcr report` as a real browser shows it: headless Chromium opens the page from disk.

Checked on what the page shows, not on its source: every image has loaded, the
queries stand worst first from top to bottom, the relevant thumbnails (and only
they) are framed green and ticked, and the AP figures are the hand-computed
ones. A full-page screenshot is saved under the test's tmp folder, and copied to
$BPCR_REPORT_SCREENSHOT when that is set.

Chromium and its driver come from :mod:`tests.helpers.browser` (installed with
apt-get where missing; the test is skipped, saying why, only when that fails).
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.browser import install_chromium, start_chromium
from tests.helpers.report_dataset import AP, GT, RUNS, WORST_FIRST, make_dataset

pytestmark = pytest.mark.slow  # drives a real headless browser

GREEN = "rgb(26, 150, 65)"  # the frame of a relevant thumbnail (#1a9641 in bpcr.evaluation.report's CSS)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why_not = install_chromium()
    if why_not is not None:
        pytest.skip(f"no headless Chromium for the browser test: {why_not}")
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


_SHOWN = """
const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
const sections = Array.from(document.querySelectorAll('section.query'))
  .map(s => [s.getBoundingClientRect().top + window.scrollY, s]).sort((a, b) => a[0] - b[0]).map(p => p[1]);
return {
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, visible(i)]),
  order: sections.map(s => s.dataset.query),
  rows: sections.map(s => Array.from(s.querySelectorAll('tr.run')).map(r => ({
    run: r.dataset.run,
    ap: r.querySelector('.ap').innerText,
    cells: Array.from(r.querySelectorAll('figure')).map(f => ({
      id: f.dataset.id,
      caption: f.querySelector('figcaption').innerText,
      frame: getComputedStyle(f.querySelector('.box')).borderTopColor,
      picture: f.querySelector('img') !== null,
    })),
  }))),
  summary: Array.from(document.querySelectorAll('table.summary tr[data-run]'))
    .map(r => Array.from(r.cells).map(c => c.innerText)),
  height: document.documentElement.scrollHeight,
};
"""


def test_the_report_shows_what_the_runs_answered(browser, cli, tmp_path, record_property):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "report"
    result = cli("report", data["runs"], "--gt", data["gt"], "--out", out, "--manifest-db", data["db"],
                 "--thumb", 64, "--half", "all")
    assert result.code == 0, result.err
    browser.get((out / "index.html").as_uri())
    shown = browser.execute_script(_SHOWN)

    # every picture loaded (the one image missing from the manifest is a labelled box, not a broken picture)
    assert shown["images"] and all(done and width > 0 and seen for _, done, width, seen in shown["images"]), \
        [i for i in shown["images"] if not (i[1] and i[2] > 0)]
    sources = [src for src, *_ in shown["images"]]
    # 4 query photos, 7 answers x 2 runs x 4 queries less n99, the 7 relevant images; and the chart
    assert sum(src.startswith("thumbs/") for src in sources) == 4 + 7 * 2 * 4 - 1 + 7
    assert "leaderboard.svg" in sources

    assert shown["order"] == WORST_FIRST
    for query, rows in zip(shown["order"], shown["rows"]):
        assert [r["run"] for r in rows] == ["better", "base"]  # the leaderboard's order
        for row in rows:
            assert row["ap"] == f"AP@7 {AP[row['run']][query]:.4f}"
            assert [c["id"] for c in row["cells"]] == RUNS[row["run"]][query]
            for cell in row["cells"]:
                relevant = cell["id"] in GT[query]
                assert (cell["frame"] == GREEN) == relevant, (query, row["run"], cell)
                assert ("✓" in cell["caption"]) == relevant, (query, row["run"], cell)
                assert cell["picture"] == (cell["id"] != "n99"), cell
    means = {run: sum(AP[run].values()) / len(GT) for run in RUNS}
    assert {r[0]: r[4] for r in shown["summary"]} == {run: f"{m:.4f}" for run, m in means.items()}

    # the whole page, as a reader scrolls through it
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1400, "height": shown["height"], "deviceScaleFactor": 1, "mobile": False})
    png = base64.b64decode(browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"])
    assert png.startswith(b"\x89PNG")
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(png)
    if os.environ.get("BPCR_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["BPCR_REPORT_SCREENSHOT"])
        screenshot = Path(os.environ["BPCR_REPORT_SCREENSHOT"])
    record_property("screenshot", str(screenshot))
    print(f"screenshot of the report: {screenshot}")
