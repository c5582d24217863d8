"""End-to-end fixtures: serve.py on a free port, real browsers, request auditing.

Browsers and their flags come from ``devserver.harness`` (shared/BROWSERS.md). Choose them
with pytest-playwright's ``--browser`` (the README's test command runs both).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

from devserver.harness import Server, launch_args, start_server

SESSION_TIMEOUT_MS = 90_000


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    # Every test mints tokens from the one server (reconnects mint one per socket): the
    # per-address limit is raised so the suite's pace never meets it (tests/unit checks the 429).
    srv = start_server("--session-rate", "1000")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, browser_name: str) -> dict:
    return launch_args(browser_name, browser_type_launch_args)


@dataclass
class Watch:
    """Everything a page did that a test must check: errors and where requests went."""

    host: str
    also_allowed: tuple[str, ...] = ()  # other servers a test points the page at (a Pipecat bot)
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        ok = ("data:", "blob:", f"http://{self.host}/", f"ws://{self.host}/", *self.also_allowed)
        return [u for u in self.requests if not u.startswith(ok)]

    def forgive_socket_error(self, marker: str) -> None:
        """A socket the test made fail on purpose: Firefox reports it as a page error of its own
        ("can't establish a connection", "was interrupted while the page was loading")."""
        self.page_errors = [e for e in self.page_errors if marker not in e]

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
