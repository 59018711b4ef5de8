"""The dashboard in real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, via Selenium):
upload a file through the upload box, watch the progress bar move and the new snapshot appear.

``scripts/test.sh`` installs the browser when it is missing; where it cannot be installed this test
is skipped with the reason. ``TRAINCTL_SCREENSHOT=path.png`` also saves the screenshot there (the
README's ``docs/dashboard.png`` is made that way).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.base.faults import FAULT_ENV
from core.state.status import StatusFile
from tests.conftest import chat_rows, write_jsonl
from tests.reliability.harness import stopped_child
from trainer.checkpoints.markers import MARKER_NAME

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TRAINCTL = str(Path(sys.executable).with_name("trainctl"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver "
    "(scripts/test.sh does it when run as root) to run the dashboard test",
)


@pytest.fixture()
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(predicate, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _http_url(layout) -> str | None:
    status = StatusFile(layout.status_file).read()
    return status.http_url if status else None


def test_a_file_dropped_in_the_upload_box_trains_live_into_a_new_snapshot(layout, token, browser, tmp_path):
    config = json.loads(layout.config_file.read_text())
    config["hyperparams"] = {**config["hyperparams"], "batch_size": 2, "max_steps": 30}
    config["checkpoint"] = {**config.get("checkpoint", {}), "save_steps": 10, "log_steps": 10}
    config["daemon"] = {"stable_seconds": 0.0, "rescan_seconds": 1.0}
    layout.config_file.write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "upload" / "web.jsonl", chat_rows(24))
    # The child freezes itself as it completes checkpoint-10 (step 10 of 30 is in the status then), so
    # the page is seen mid-run however fast or slow the machine is; the test lets it go on after.
    env = {**os.environ, FAULT_ENV: f"checkpoint-10/{MARKER_NAME}:1:stop"}
    daemon = subprocess.Popen([TRAINCTL, "daemon", "--base-dir", str(layout.root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        url = _wait(lambda: _http_url(layout), "the daemon's dashboard", 90)
        browser.get(url)
        _wait(lambda: browser.find_element(By.ID, "live").text == "● live", "the event stream")
        browser.find_element(By.ID, "token").send_keys(token + "\t")
        browser.find_element(By.ID, "file-input").send_keys(str(data))

        result = _wait(lambda: "good rows" in (t := browser.find_element(By.ID, "upload-result").text) and t,
                       "the upload's validation summary", 60)
        assert result.startswith("inbox/web.jsonl: 24 good rows, 0 bad")
        widths = set()

        def mid_run_width():
            width = browser.find_element(By.ID, "progress-bar").get_attribute("style")
            widths.add(width)
            return width not in ("width: 0%;", "width: 0.0%;", "width: 100%;") and width

        child = _wait(lambda: stopped_child(daemon.pid), "the training child to stop at checkpoint-10", 240)
        _wait(mid_run_width, "the progress bar part of the way", 60)
        os.kill(child, signal.SIGCONT)

        def current_snapshot_row():
            try:  # the page redraws the table on every event, so look the rows up afresh each time
                widths.add(browser.find_element(By.ID, "progress-bar").get_attribute("style"))
                rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr")]
            except StaleElementReferenceException:
                return None
            return [text for text in rows if "web.jsonl" in text and text.startswith("●")]  # ● marks current

        assert _wait(current_snapshot_row, "the new snapshot in the table, marked current")
        moving = {w for w in widths if w not in ("width: 0%;", "width: 0.0%;")}
        assert len(moving) >= 2, f"the progress bar did not move: {sorted(widths)}"
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#loss-chart polyline"), "the loss curve", 30)
        screenshot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if target := os.environ.get("TRAINCTL_SCREENSHOT"):
            shutil.copy(screenshot, target)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
