"""The web console in headless Chromium (Debian's chromium and chromedriver, driven by
Selenium): the demo jobs with progress bars, a partly failed job opened, retry pressed,
its files seen changing state. A screenshot is saved in the test's output folder."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.local.demo import run_demo
from src.local.stack import EmbeddedStack
from tests.support.admin_api import AdminApi
from tests.support.aws import wait_for
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
KEY = "console-test-key"


@pytest.fixture(scope="module")
def service(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    env = {**embedded_stack.env(embedded_stack.provision("web-")), "ADMIN_API_KEYS": KEY,
           "POLLING_INTERVAL_MS": "300", "POLLER_TICK_MS": "200", "SQS_WAIT_TIME_SECONDS": "1"}  # fmt: skip
    process = ServiceProcess(env, tmp_path_factory.mktemp("web") / "service.log").start()
    yield process
    process.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver are not installed (make browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_console_shows_progress_and_retries_a_partly_failed_job(
    service: ServiceProcess, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    env = dict(service.env)
    results = run_demo(env, timeout=120)
    assert all(r.as_expected for r in results), [r.line() for r in results]
    api = AdminApi(f"http://127.0.0.1:{service.port}", KEY)
    partly = {"jobId": str(uuid.uuid4()), "exportId": f"t{uuid.uuid4().hex[:6]}-files-4-fail-2-failfirst-1",
              "userId": "console"}  # fmt: skip
    assert api.post("/jobs", partly).status == 202
    wait_for(
        lambda: api.get(f"/jobs/{partly['jobId']}").body["completedAt"], 60, "the partly failed job"
    )

    from selenium.webdriver.common.keys import Keys

    driver.get(f"http://127.0.0.1:{service.port}/console")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "key").send_keys(KEY + Keys.TAB)  # type: ignore[attr-defined]

    # Read the page in one script each time: auto-refresh redraws the rows every 3 s.
    def rows() -> list[list[object]]:
        return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
            "return [...document.querySelectorAll('tr.job')].map(r => "
            "[r.dataset.jobId, r.querySelector('.progress') !== null])"
        )

    listed = wait_for(lambda: found if len(found := rows()) >= len(results) + 1 else None,
                      30, "the job list")  # fmt: skip
    assert all(has_bar for _, has_bar in listed)
    demo_ids = {r.detail.split()[1] for r in results if r.detail.startswith("job ")}
    assert demo_ids and demo_ids <= {job_id for job_id, _ in listed}

    driver.execute_script(  # type: ignore[attr-defined]
        "document.querySelector(`tr.job[data-job-id='${arguments[0]}']`).click()", partly["jobId"]
    )

    def file_states() -> list[str]:
        return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
            "return [...document.querySelectorAll('#files tr.file td:nth-child(3)')]"
            ".map(td => td.textContent)"
        )

    assert wait_for(lambda: file_states() == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"] or None,
                    30, "the failed files")  # fmt: skip
    driver.find_element(By.ID, "retry").click()  # type: ignore[attr-defined]
    wait_for(lambda: file_states() == ["COMPLETED"] * 4 or None, 60, "the retried files")

    # The job ends a moment after its last file (a separate conditional write), so a
    # refresh can show every file COMPLETED while the job still says DOWNLOADING.
    def status() -> str:
        return driver.find_element(By.CSS_SELECTOR, "#facts .status").text  # type: ignore[attr-defined,no-any-return]

    wait_for(lambda: status() != "status: DOWNLOADING", 30, "the job to end")
    assert status() == "status: COMPLETED"
    screenshot = tmp_path / "console.png"
    driver.save_screenshot(str(screenshot))  # type: ignore[attr-defined]
    assert screenshot.stat().st_size > 10_000
    print(f"console screenshot: {screenshot}")


def test_the_console_page_needs_no_key_but_its_data_does(service: ServiceProcess) -> None:
    anonymous = AdminApi(f"http://127.0.0.1:{service.port}")
    page = anonymous.get("/console")
    assert page.status == 200 and "Export service" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert anonymous.get("/jobs").status == 401
