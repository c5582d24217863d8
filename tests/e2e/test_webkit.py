"""WebKit (the Safari engine): the classic-WebSocket fallback and postMessage audio, for real.

Drives Debian's WebKitGTK MiniBrowser through ``WebKitWebDriver`` (Selenium) on a private
Xvfb display (shared/BROWSERS.md). Runs where those are installed (``./dev test`` installs them
as root on Debian); elsewhere it is skipped and says why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from devserver.harness import Server

pytestmark = pytest.mark.e2e

DRIVER = shutil.which("WebKitWebDriver")
XVFB = shutil.which("Xvfb")
MINIBROWSER = next(
    (str(p) for p in Path("/usr/lib").glob("*/webkit2gtk-4.*/MiniBrowser") if os.access(p, os.X_OK)), None
)
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    if not (DRIVER and XVFB and MINIBROWSER):
        pytest.skip("WebKitWebDriver, MiniBrowser or Xvfb not installed (apt-get install webkit2gtk-driver xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    number = os.read(read, 16).decode().strip()
    os.close(read)
    yield f":{number}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def webkit(display: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.webkitgtk.options import Options
    from selenium.webdriver.webkitgtk.service import Service

    opts = Options()
    opts.binary_location = MINIBROWSER
    opts.add_argument("--automation")
    service = Service(DRIVER, env={**os.environ, "DISPLAY": display})
    driver = webdriver.WebKitGTK(options=opts, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def stats(driver: Any) -> dict[str, Any] | None:
    return driver.execute_script("return window.pyclientStats ? pyclientStats() : null")


def run_demo(driver: Any, server: Server, **query: Any) -> dict[str, Any]:
    driver.get(server.url + "?" + urlencode({"autostart": 1, **query}))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # a condition, polled; WebDriver has no wait_for_function
        s = stats(driver)
        if s and s["state"] in ("closed", "error"):
            return s
        time.sleep(0.2)
    raise AssertionError(f"session did not end within {TIMEOUT_S} s: {stats(driver)}")


def assert_local(driver: Any, server: Server) -> None:
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls, "no resource was recorded"
    assert [u for u in urls if not u.startswith(server.url)] == []


def test_chat_in_webkit_uses_the_classic_fallback(webkit: Any, server: Server) -> None:
    assert webkit.execute_script("return 'WebSocketStream' in window") is False
    s = run_demo(webkit, server, scenario="chat", turns=2, tokens=100, burst=0.2, pause=0.2)
    assert s["state"] == "closed" and s["transport"] == "websocket", s
    assert s["protocol"] == "pyclient.v1.credit"
    conn = server.wait_closed(s["server"]["connection_id"])
    text = webkit.execute_script("return document.getElementById('transcript').textContent")
    assert hashlib.sha256(text.encode()).hexdigest() == conn["text_sha256"]
    assert s["tools"]["results_sent"] == 2 and conn["tool_results_received"] == 2
    assert all(r["as_expected"] for r in conn["tool_results"])
    assert s["malformed"] == 0 and s["internal_errors"] == []
    assert_local(webkit, server)


def test_webkit_without_shared_array_buffer_picks_postmessage_audio(webkit: Any, server: Server) -> None:
    s = run_demo(webkit, server, scenario="voice", seconds=1)
    assert webkit.execute_script("return typeof SharedArrayBuffer") == "undefined"
    assert s["state"] == "closed"
    a = s["audio"]
    assert a["mode"] == "postmessage" and a["error"] is None
    conn = server.wait_closed(s["server"]["connection_id"])
    # Every sample reached the ring or was played (whether WebKit's audio output runs here
    # depends on the machine's audio sink; see shared/BROWSERS.md).
    assert a["samples_received"] == conn["audio_samples_sent"]
    assert a["samples_played"] + a["ring_fill"] == conn["audio_samples_sent"]
    assert_local(webkit, server)
