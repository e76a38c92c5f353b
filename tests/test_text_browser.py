"""The pages in a real headless Chromium (selenium), against a real `deepflows serve` process on a tiny index built by
the real stages (tests/text_books.py): Talk to Books answers a query,
a Semantris Arcade round and a Blocks round each clear a word. Screenshots go to pytest's tmp_path, and are copied to
$DEEPFLOWS_SCREENSHOTS when it is set. The browser is kept off the network (../shared/notes/browser-and-stack.md).

Without Chromium the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from text_books import tiny_index_once

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    index, port = tiny_index_once(tmp_path_factory), free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "deepflows.cli", "serve", "--index", str(index), "--port",
                                    str(port)], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # loading the encoder and WordNet takes seconds
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /api/health: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def driver(tmp_path):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 "--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER,
                                                          log_output=str(tmp_path / "chromedriver.log")))
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    if os.environ.get("DEEPFLOWS_SCREENSHOTS"):
        keep = Path(os.environ["DEEPFLOWS_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / path.name)
    return path


def wait(driver, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def texts(driver, selector: str) -> list[str]:
    """The texts of the elements at `selector`, read at one instant (Arcade redraws its board 4 times a second)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
                                 selector)  # fmt: skip


def test_talk_to_books(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    driver.get(server)
    wait(driver, lambda d: "13 sentences from 2 books" in d.find_element(By.ID, "index-info").text)
    screenshot(driver, tmp_path, "home")
    driver.find_element(By.ID, "link-books").click()
    wait(driver, lambda d: d.find_elements(By.ID, "query"))
    driver.find_element(By.ID, "query").send_keys("Should I marry a sailor?")
    driver.find_element(By.ID, "search-button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".book .hit mark"))
    books = driver.find_elements(By.CSS_SELECTOR, ".book")
    marks = [m.text for m in driver.find_elements(By.CSS_SELECTOR, ".hit mark")]
    assert marks[0] == "Is it wise to marry a sailor?" and all(marks) and len(books) == 2
    assert books[0].find_element(By.CSS_SELECTOR, ".title").text
    assert "score" in books[0].find_element(By.CSS_SELECTOR, ".meta").text
    screenshot(driver, tmp_path, "talk-to-books")
    book_id = books[-1].get_attribute("data-book-id")
    books[-1].find_element(By.CSS_SELECTOR, "button.more").click()
    wait(driver, lambda d: "Showing the best" in d.find_elements(By.CSS_SELECTOR, ".book button.more")[-1].text)
    last = driver.find_elements(By.CSS_SELECTOR, ".book")[-1]
    assert last.get_attribute("data-book-id") == book_id and len(last.find_elements(By.CSS_SELECTOR, ".hit")) >= 1
    driver.execute_script("arguments[0].scrollIntoView()", last)
    screenshot(driver, tmp_path, "talk-to-books-more")


# Clues tried in turn until the game takes one (a clue sharing a word with one on screen is refused).
CLUES = ("weather", "music", "kitchen", "animal", "travel")


@pytest.mark.parametrize("mode", ["arcade", "blocks"])
def test_semantris_round(server, driver, tmp_path, mode):
    from selenium.webdriver.common.by import By

    driver.get(f"{server}/{mode}?seed=3")
    driver.find_element(By.ID, "start").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#board .word"))
    words = texts(driver, "#board .word")
    assert driver.find_element(By.ID, "score").text == "0"
    screenshot(driver, tmp_path, f"semantris-{mode}-start")
    clue = driver.find_element(By.ID, "clue")

    def send(text: str) -> str:
        clue.clear()
        clue.send_keys(text)
        driver.find_element(By.ID, "clue-button").click()  # the status says "Ranking…" until the answer
        return wait(driver, lambda d: (t := d.find_element(By.ID, "status").text) != "Ranking…" and t)

    assert "may not be" in send(words[-1])  # a word on the screen: the game refuses it, and says so
    assert driver.find_element(By.ID, "cleared").text == "0"
    answers = [send(candidate) for candidate in CLUES if driver.find_element(By.ID, "cleared").text == "0"]
    assert driver.find_element(By.ID, "cleared").text == "1", answers
    assert int(driver.find_element(By.ID, "score").text) > 0 and "cleared" in answers[-1]
    ranked = [text.rsplit(" (", 1)[0] for text in texts(driver, "#ranking li")]
    assert set(words) <= set(ranked)  # every word on screen ranked (Arcade's clock may have added more)
    assert ranked[0] in words and ranked[0] not in texts(driver, "#board .word")
    screenshot(driver, tmp_path, f"semantris-{mode}-cleared")
