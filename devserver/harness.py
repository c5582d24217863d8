"""Start ``serve.py`` on a free port and launch our browsers (used by tests and benchmarks).

Browsers (shared/BROWSERS.md): Debian's ``chromium`` and ``firefox-esr`` when on PATH (Firefox
through WebDriver BiDi, ``channel="moz-firefox"``), else Playwright-managed builds.
``PYCLIENT_CHROMIUM`` / ``PYCLIENT_FIREFOX`` override the executables.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 30

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


def launch_args(browser_name: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Playwright ``launch()`` keyword arguments for ``chromium`` or ``firefox`` here."""
    args = dict(base or {})
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
class Server:
    """A running ``serve.py``; ``url`` ends with a slash."""

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
        """Stats of a connection once the server has recorded its end (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(conn_id)
            if not st["open"] or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(*extra_args: str) -> Server:
    """Start ``serve.py --port 0`` and wait for the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--port", "0", *extra_args],
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
        err = proc.stderr.read() if proc.poll() is not None else ""
        raise RuntimeError(f"serve.py did not start: {first!r} {err}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipes drained
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return Server(match.group(0), proc)
