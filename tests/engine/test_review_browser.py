"""The review page in a real headless Chromium, driven through chromedriver's W3C WebDriver HTTP API with
httpx (no selenium/playwright needed). Needs the Debian packages ``chromium`` and ``chromium-driver``;
skipped with the reason when they are absent."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from clearmamba.engine.review import create_app  # noqa: E402
from tests.engine.test_review import make_review_state  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless browser test needs Chromium and its driver: apt-get install chromium chromium-driver",
)
TOKEN = "browser-test-token"
KEY_ENTER = "\ue007"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


class WebDriver:
    """The handful of W3C WebDriver commands this test needs."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=30)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--disable-extensions",
                            "--window-size=1200,900",
                        ],
                    },
                }
            }
        }
        self.sid = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        r = self.http.request(method, path, json=body)
        value = r.json()["value"]
        if r.status_code != 200:
            raise RuntimeError(f"webdriver {path}: {value}")
        return value

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.sid}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def url(self) -> str:
        return self.cmd("GET", "/url")

    def find(self, css):
        value = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(value.values()))

    def text(self, css) -> str:
        return self.cmd("GET", f"/element/{self.find(css)}/text")

    def press(self, key):
        self.cmd(
            "POST",
            "/actions",
            {
                "actions": [
                    {
                        "type": "key",
                        "id": "kbd",
                        "actions": [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}],
                    }
                ]
            },
        )

    def type_into(self, css, text):
        self.cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def quit(self):
        try:
            self.http.delete(f"/session/{self.sid}")
        finally:
            self.http.close()


@pytest.fixture
def live_review(tmp_path):
    out = tmp_path / "out"
    make_review_state(out)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(out, TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, what="uvicorn")
    dport = _free_port()
    driver_proc = subprocess.Popen(
        [DRIVER, f"--port={dport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(
            lambda: httpx.get(f"http://127.0.0.1:{dport}/status").json()["value"]["ready"],
            what="chromedriver",
        )
        browser = WebDriver(f"http://127.0.0.1:{dport}")
        try:
            yield browser, f"http://127.0.0.1:{port}", out
        finally:
            browser.quit()
    finally:
        driver_proc.terminate()
        driver_proc.wait(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)


def test_browser_accepts_one_item_and_corrects_another(live_review):
    browser, base, out = live_review
    browser.get(f"{base}/?token={TOKEN}")
    _wait(lambda: browser.url().endswith("/item/1"), what="first item")
    assert "ambiguous_eye" in browser.text(".reason")
    for expected in ("/item/2", "/item/3"):  # skip ahead with 'n' to the unknown diagnosis
        browser.press("n")
        _wait(lambda e=expected: browser.url().endswith(e), what=expected)
    assert "unknown_diagnosis" in browser.text(".reason")
    browser.press("c")  # focus the first field: the label
    browser.type_into("select[name=label]", "uveitis")
    browser.press(KEY_ENTER)  # save the correction
    _wait(lambda: browser.url().endswith("/item/1"), what="back to the first open item")
    browser.press("a")  # accept item 1 (its label is known now) with the keyboard
    _wait(lambda: browser.url().endswith("/item/2"), what="the last open item")
    assert "phi_after_erasure" in browser.text(".reason")
    with sqlite3.connect(out / "private" / "state.sqlite") as con:
        decisions = con.execute("SELECT item_id, action, fields FROM decisions ORDER BY id").fetchall()
        labels = {r[0] for r in con.execute("SELECT label FROM outputs")}
        statuses = dict(con.execute("SELECT id, status FROM review_items").fetchall())
    assert [(d[0], d[1]) for d in decisions] == [(3, "correct"), (1, "accept")]
    assert '"label": "uveitis"' in decisions[0][2]
    assert labels == {"uveitis"}
    assert statuses == {1: "accepted", 2: "open", 3: "corrected"}
