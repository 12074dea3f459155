"""The board in a real browser: headless Chromium logs in, submits a file through the form, sees its row
appear, sees the one-line reason for a bad file, and opens the submission's page with its pictures loaded.

Against a real `bpcr serve` on SQLite; Chromium from :mod:`tests.helpers.browser` (skipped, saying why, only
where it cannot be had).
"""
from __future__ import annotations

import pytest

from bpcr.serve.board import open_database, utc_now
from bpcr.serve.members import add_member
from tests.helpers.browser import install_chromium, start_chromium
from tests.helpers.serve_process import start
from tests.helpers.serve_world import PUBLIC, make_world, run_text

pytestmark = pytest.mark.slow  # a real server and a real browser


@pytest.fixture
def browser(tmp_path):
    why_not = install_chromium()
    if why_not is not None:
        pytest.skip(f"no headless Chromium for the browser test: {why_not}")
    driver = start_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


WAIT_S = 20  # for a page the browser is loading after a click (a busy machine is slow)


def _shown(browser, by, what):
    """The element once the page the last click asked for shows it (bounded by WAIT_S)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(expected_conditions.presence_of_element_located((by, what)))


_IMAGES = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"


def test_submit_through_the_form_and_see_the_row(browser, tmp_path):
    from selenium.webdriver.common.by import By

    world = make_world(tmp_path / "world", images=True)
    data = tmp_path / "data"
    engine, _ = open_database(data)
    token = add_member(engine, "alice", utc_now())
    engine.dispose()
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(run_text(world.relevant, 0.6, seed=1))
    bad.write_text("v001,n001,n002\n")
    server = start(["--gt", str(world.gt), "--data", str(data), "--manifest", str(world.db)], tmp_path / "log")
    try:
        browser.get(f"{server.url}/")
        assert browser.find_elements(By.ID, "upload") == []  # no form before logging in
        browser.find_element(By.ID, "login").click()
        _shown(browser, By.ID, "token").send_keys(token)
        browser.find_element(By.ID, "enter").click()
        assert _shown(browser, By.ID, "member").text == "alice"

        browser.find_element(By.ID, "file").send_keys(str(good))
        browser.find_element(By.ID, "name").send_keys("from-the-browser")
        browser.find_element(By.ID, "send").click()
        row = _shown(browser, By.CSS_SELECTOR, "#board tr[data-name='from-the-browser']")
        [shown] = server.board()["submissions"]
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1].startswith("from-the-browser") and cells[2] == "alice"
        assert cells[4] == f"{shown['public']['map7']:.4f}"
        assert "accepted" in browser.find_element(By.ID, "notice").text

        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "send").click()
        error = _shown(browser, By.ID, "error").text
        assert error.startswith("bad.csv:1: 2 predictions, exactly 7 required"), error
        assert len(server.board()["submissions"]) == 1

        browser.get(f"{server.url}/submissions/{shown['id']}/")
        _shown(browser, By.ID, "per-query")
        per_query = browser.find_elements(By.CSS_SELECTOR, "#per-query tr[data-query]")
        assert sorted(r.get_attribute("data-query") for r in per_query) == PUBLIC
        images = browser.execute_script(_IMAGES)
        thumbs = [i for i in images if i[0].startswith("thumbs/")]
        assert len(thumbs) >= 5 * 8 and all(done and width > 0 for _, done, width in images), images
        assert any(src == "chart.svg" for src, *_ in images)
    finally:
        server.stop()
