"""The search page in a real browser: headless Chromium uploads a photo to a running service,
follows the job, and shows its results page, which is read back from the rendered document.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium``
(the ``test`` extra); without them the test fails, saying what to install.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LANDMARKS, _free_port

pytestmark = pytest.mark.integration

TOKEN = "browser-token"
SACRE = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))
OTHERS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))[:2] + sorted(LANDMARKS.glob("_distractors*/*.jpg"))[:3]
QUERY = SACRE[5]
"""The photo a person picks: not in the store, five other photos of its place are."""
DROPPED = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))[2]
"""The photo a person drops: not in the store, two other photos of its place are."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver)) if not found]
    if missing:
        pytest.fail(f"the browser test needs {' and '.join(missing)} on PATH: install Debian's packages with "
                    "`apt-get install -y chromium chromium-driver`")
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400"):
        options.add_argument(argument)
    # The driver named outright: selenium then looks for nothing to download.
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port, on a thread; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="landmark-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def test_a_person_searches_by_photo_and_sees_the_matches(
    browser: Any, database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from landmark import config as cfg
    from landmark.api import create_api
    from landmark.session import Session
    from landmark.settings import Settings

    settings = cfg.resolve(Settings, {
        "database_url": database_url, "dask_scheduler": dask_cluster_address, "extractor": "aliked",
        "results": str(tmp_path / "results"), "api_token": TOKEN,
    }, environ={})
    with Session(settings) as lm:
        assert lm.index([str(p) for p in SACRE[:5] + OTHERS]).stored == 10

    with serving(create_api(settings)) as base:
        browser.get(base + "/")
        token_form = browser.find_element(By.ID, "token-form")
        assert token_form.is_displayed()  # the service needs a token: the page asks for it first
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        token_form.submit()
        assert not token_form.is_displayed()
        browser.execute_script("""
            window.said = [];
            new MutationObserver(() => window.said.push(document.getElementById('status').textContent))
                .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true});
        """)
        browser.find_element(By.ID, "file").send_keys(str(QUERY))

        def settled(driver: Any) -> bool:
            status = driver.find_element(By.ID, "status")
            failed = "error" in (status.get_attribute("class") or "")
            return failed or driver.find_element(By.ID, "result").is_displayed()

        WebDriverWait(browser, 300, poll_frequency=0.5).until(settled)
        status = browser.find_element(By.ID, "status")
        assert status.text == f"Done: {QUERY.name}", status.text
        said = browser.execute_script("return window.said")
        assert said[0] == f"Uploading {QUERY.name}…" and said[-1] == f"Done: {QUERY.name}", said

        job_id = browser.find_element(By.TAG_NAME, "body").get_attribute("data-job-id")
        ranking = httpx.get(f"{base}/jobs/{job_id}/result.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        top = ranking["matches"][0]
        assert Path(top["uri"]).parent.name == "sacre_coeur" and top["uri"] != QUERY.as_uri()
        assert ranking["query"].endswith(f"/uploads/{ranking['query'].split('/')[-2]}/{QUERY.name}")

        browser.switch_to.frame(browser.find_element(By.ID, "result"))
        first = browser.find_element(By.ID, "rank-1")
        assert first.find_element(By.CSS_SELECTOR, ".uri").text == top["uri"]
        assert f"{top['inliers']} inliers" in first.find_element(By.CSS_SELECTOR, ".caption").text
        assert "strong" in first.get_attribute("class").split()
        # The stored picture and the query's are drawn side by side, with the lines between them.
        drawn = browser.execute_script("""
            const box = (selector) => document.querySelector(selector).getBoundingClientRect();
            return [box('#rank-1 svg.stored image').width, box('#rank-1 svg.pair use').width,
                    document.querySelectorAll('#rank-1 .lines path').length,
                    document.querySelectorAll('li.match').length];
        """)
        assert drawn[0] > 100 and drawn[1] > 100 and drawn[2] > 0 and drawn[3] == len(ranking["matches"])
        href = first.find_element(By.CSS_SELECTOR, "svg.stored image").get_attribute("href")
        browser.switch_to.default_content()
        # ... and the picture is a JPEG the browser decodes (checked on the search page: the results
        # page runs no script, so its frame runs none either).
        size = browser.execute_async_script("""
            const [href, done] = arguments;
            const picture = new Image();
            picture.onload = () => done([picture.naturalWidth, picture.naturalHeight]);
            picture.onerror = () => done(null);
            picture.src = href;
        """, href)
        assert href.startswith("data:image/jpeg;base64,") and size is not None and max(size) == 256

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(height + 100, 6000))
        shot = tmp_path / "search-page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 50_000

        browser.refresh()  # the token is kept for the tab's session: not asked again
        assert not browser.find_element(By.ID, "token-form").is_displayed()

        # A photo dropped on the page searches too.
        browser.execute_script("""
            const [name, data] = arguments;
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dropped = new DataTransfer();
            dropped.items.add(new File([bytes], name, {type: "image/jpeg"}));
            const drop = new DragEvent("drop", {dataTransfer: dropped, bubbles: true, cancelable: true});
            document.getElementById("drop").dispatchEvent(drop);
        """, DROPPED.name, base64.b64encode(DROPPED.read_bytes()).decode())
        WebDriverWait(browser, 300, poll_frequency=0.5).until(settled)
        assert browser.find_element(By.ID, "status").text == f"Done: {DROPPED.name}"
        dropped_job = browser.find_element(By.TAG_NAME, "body").get_attribute("data-job-id")
        assert dropped_job != job_id
        browser.switch_to.frame(browser.find_element(By.ID, "result"))
        assert Path(browser.find_element(By.CSS_SELECTOR, "#rank-1 .uri").text).parent.name == "berliner_dom"
