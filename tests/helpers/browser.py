"""Headless Chromium for the tests that look at pages as a browser shows them (the report, the team's board).

Chromium and its driver are the Debian packages ``chromium`` and ``chromium-driver``; where either is
missing :func:`install_chromium` installs them with apt-get (as root), and the tests are skipped, saying why,
only when that fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")


def install_chromium() -> str | None:
    """Install Chromium and its driver when missing; None when they are there, else why they are not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing and there is no apt-get to install {' '.join(PACKAGES)}"
    if os.geteuid() != 0:
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing; installing {' '.join(PACKAGES)} needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=120", *PACKAGES]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` did not finish in 20 minutes"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return f"`{' '.join(command)}` failed (exit {done.returncode}): {last}"
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"{' '.join(PACKAGES)} installed, yet {CHROMIUM} or {CHROMEDRIVER} is missing"
    return None


def start_chromium(profile: Path, window: str = "1400,1000"):
    """A headless Chromium driven by selenium, its profile in ``profile``; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    return driver
