"""End-to-end fixtures: serve.py on a free port, real browsers, request auditing.

Browsers (shared/BROWSERS.md): Debian's ``chromium`` and ``firefox-esr`` when on PATH
(Firefox through WebDriver BiDi, ``channel="moz-firefox"``), else Playwright-managed builds.
Choose browsers with pytest-playwright's ``--browser`` (the README command runs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
FIREFOX_PREFS = {
    "media.cubeb.force_mock_context": True,  # an audio backend without a sound card
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.block-webaudio": False,
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
}
SERVER_START_TIMEOUT_S = 30
SESSION_TIMEOUT_MS = 90_000


@dataclass
class Server:
    url: str
    proc: subprocess.Popen

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def stats(self, conn_id: int | None = None) -> dict[str, Any]:
        suffix = f"?id={conn_id}" if conn_id is not None else ""
        with urllib.request.urlopen(self.url + "stats" + suffix, timeout=10) as r:
            return json.load(r)

    def wait_closed(self, conn_id: int, timeout: float = 30) -> dict[str, Any]:
        """Stats of a connection once the server has recorded its end."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(conn_id)
            if not st["open"] or time.monotonic() > deadline:
                return st
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(SERVER_START_TIMEOUT_S)
    match = re.search(r"http://\S+/", first[0]) if first else None
    if match is None:
        proc.kill()
        raise RuntimeError(f"serve.py did not start: {first!r} {proc.stderr.read() if proc.poll() is not None else ''}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    yield Server(match.group(0), proc)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, browser_name: str) -> dict:
    args = dict(browser_type_launch_args)
    if browser_name == "chromium":
        exe = os.environ.get("PYCLIENT_CHROMIUM") or shutil.which("chromium")
        if exe:
            args["executable_path"] = exe
        args["args"] = [*args.get("args", []), *CHROMIUM_FLAGS]
    elif browser_name == "firefox":
        exe = os.environ.get("PYCLIENT_FIREFOX") or shutil.which("firefox-esr")
        if exe:
            args["executable_path"] = exe
            args["channel"] = "moz-firefox"
        args["firefox_user_prefs"] = {**args.get("firefox_user_prefs", {}), **FIREFOX_PREFS}
    return args


@dataclass
class Watch:
    """Everything a page did that a test must check: errors and where requests went."""

    host: str
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        ok = ("data:", "blob:", f"http://{self.host}/", f"ws://{self.host}/")
        return [u for u in self.requests if not u.startswith(ok)]

    def assert_clean(self) -> None:
        assert self.requests, "no request was recorded at all"
        assert self.outside() == [], f"requests left localhost: {self.outside()}"
        assert self.page_errors == [], f"page errors: {self.page_errors}"


@pytest.fixture
def watch(page: Page, server: Server) -> Watch:
    w = Watch(server.host)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("websocket", lambda ws: w.requests.append(ws.url))
    page.on("pageerror", lambda e: w.page_errors.append(str(e)))
    page.on("console", lambda m: w.console_errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(SESSION_TIMEOUT_MS)
    return w


class Demo:
    """Drives the demo page through its query string and reads ``pyclientStats()``."""

    def __init__(self, page: Page, server: Server, watch: Watch) -> None:
        self.page, self.server, self.watch = page, server, watch

    def open(self, **query: Any) -> Demo:
        self.page.goto(self.server.url + "?" + urlencode({"autostart": 1, **query}))
        self.page.wait_for_function("document.body.dataset.pyclient === 'ready'")
        return self

    def stats(self) -> dict[str, Any]:
        return self.page.evaluate("window.pyclientStats ? pyclientStats() : null")

    def wait_for(self, js_condition: str, timeout_ms: int = SESSION_TIMEOUT_MS) -> dict[str, Any]:
        """Wait until ``js_condition`` holds for ``s = pyclientStats()``; return the stats."""
        self.page.wait_for_function(
            f"(() => {{ const s = window.pyclientStats && pyclientStats(); return !!s && ({js_condition}); }})()",
            timeout=timeout_ms,
            polling=100,
        )
        return self.stats()

    def wait_ended(self) -> dict[str, Any]:
        return self.wait_for("s.state === 'closed' || s.state === 'error'")

    def transcript(self) -> str:
        return self.page.evaluate("document.getElementById('transcript').textContent")


@pytest.fixture
def demo(page: Page, server: Server, watch: Watch) -> Demo:
    return Demo(page, server, watch)
