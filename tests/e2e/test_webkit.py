"""WebKit (the Safari engine): the classic-WebSocket fallback and postMessage audio, for real.

Drives Debian's WebKitGTK MiniBrowser through ``WebKitWebDriver`` (Selenium) on a private
Xvfb display (shared/BROWSERS.md). Runs where those are installed (``./dev test`` installs them
as root on Debian); elsewhere it is skipped and says why.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import tempfile
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
TIMEOUT_S = 90  # for a demo session to end
START_TIMEOUT_S = 20  # for Xvfb to name its display
DRIVER_TIMEOUT_S = 120  # any one WebDriver HTTP call (the default is no timeout at all)


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a free display it picks itself; returns the process and ``:N``.

    ``-displayfd`` writes the number and then a newline: the pipe must stay open until both
    arrived, else Xvfb dies with "Cannot write display number" (seen here, 1 run in 6), and a
    WebDriver session on a dead display hangs.
    """
    read, write = os.pipe()
    with tempfile.TemporaryFile() as log:  # not a pipe: nobody drains it while the tests run
        proc = subprocess.Popen(
            [XVFB, "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stderr=log,
        )
        os.close(write)
        got = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while not got.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
                if not select.select([pipe], [], [], left)[0]:
                    break
                chunk = pipe.read(16)
                if not chunk:  # Xvfb exited
                    break
                got += chunk
        number = got.decode().strip()
        if not got.endswith(b"\n") or not number.isdigit() or proc.poll() is not None:
            proc.kill()
            proc.wait(10)
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"Xvfb did not start (display {got!r}, exit {proc.returncode}): {err[-2000:]}")
    return proc, f":{number}"


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    if not (DRIVER and XVFB and MINIBROWSER):
        pytest.skip("WebKitWebDriver, MiniBrowser or Xvfb not installed (apt-get install webkit2gtk-driver xvfb)")
    proc, name = start_xvfb()
    try:
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def webkit(display: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.remote.client_config import ClientConfig
    from selenium.webdriver.remote.remote_connection import RemoteConnection
    from selenium.webdriver.webkitgtk.options import Options
    from selenium.webdriver.webkitgtk.service import Service

    opts = Options()
    opts.binary_location = MINIBROWSER
    opts.add_argument("--automation")
    service = Service(DRIVER, env={**os.environ, "DISPLAY": display})
    service.start()
    try:
        # Our own connection, so that every call to the driver has a deadline.
        config = ClientConfig(remote_server_addr=service.service_url, timeout=DRIVER_TIMEOUT_S)
        executor = RemoteConnection(client_config=config)
        driver = webdriver.Remote(command_executor=executor, options=opts)
    except BaseException:
        service.stop()
        raise
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            service.stop()


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
