"""Start-up: the lean page (js/boot.js, no PyScript) and a socket opened while Python boots
(js/early.js) that pyclient adopts: one connection, nothing lost."""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

from devserver.harness import Server

from .conftest import SESSION_TIMEOUT_MS, Watch

pytestmark = pytest.mark.e2e


def run_lean(page: Page, server: Server, **query: object) -> tuple[dict, list[dict]]:
    """One chat session on web/lab/pyclient-lean.html; its stats and the server's connections
    of that session (told apart by a seed of their own)."""
    seed = secrets.randbelow(2**31)
    q = {"scenario": "chat", "turns": 1, "tokens": 300, "burst": 0, "pause": 0, "audio": "off", "seed": seed, **query}
    page.goto(server.url + "lab/pyclient-lean.html?" + urlencode(q))
    page.wait_for_function(
        "window.pyclientStats && ['closed', 'error'].includes(pyclientStats().state)",
        timeout=SESSION_TIMEOUT_MS,
        polling=100,
    )
    s = page.evaluate("pyclientStats()")
    conns = [c for c in server.stats()["connections"] if c["params"].get("seed") == str(seed)]
    return s, conns


def assert_whole(page: Page, server: Server, s: dict, conn: dict) -> None:
    """The session's text in the page is what the server sent, every tool call was answered,
    no frame is missing or malformed."""
    server_side = server.wait_closed(conn["id"])
    text = page.evaluate("document.getElementById('transcript').textContent")
    assert hashlib.sha256(text.encode()).hexdigest() == server_side["text_sha256"]
    assert server_side["tool_results_received"] == server_side["tool_calls_sent"] >= 1
    assert s["seq_gaps"] == 0 and s["malformed"] == 0


@pytest.mark.parametrize("transport", ["auto", "websocket"])
def test_the_socket_opened_during_boot_is_adopted(
    page: Page, server: Server, watch: Watch, transport: str, browser_name: str
) -> None:
    if browser_name == "firefox" and transport == "auto":
        pytest.skip("auto is websocket in Firefox: covered by the other parameter")
    # The server answers the upgrade late, as a far provider would: still one socket.
    s, conns = run_lean(page, server, transport=transport, handshake_ms=300)
    assert s["state"] == "closed", s
    assert s["receive"]["early_socket"] is True
    assert len(conns) == 1, conns
    assert_whole(page, server, s, conns[0])
    watch.assert_clean()


def test_without_an_early_socket_the_client_opens_its_own(page: Page, server: Server, watch: Watch) -> None:
    s, conns = run_lean(page, server, early=0)
    assert s["state"] == "closed" and s["receive"]["early_socket"] is False
    assert len(conns) == 1
    watch.assert_clean()


def test_an_early_socket_the_client_would_not_open_is_closed(page: Page, server: Server, watch: Watch) -> None:
    # Opened for other subprotocols than the client offers (no credit): not taken, and closed
    # rather than left open; the list is empty after the client looked.
    page.goto(server.url + "style.css")
    got = page.evaluate(
        """async () => {
          const { openEarly, takeEarly } = await import("/pyclient/browser/js/early.js");
          const early = openEarly("/ws?scenario=chat&tokens=5", ["pyclient.v1"], { transport: "websocket" });
          await new Promise((r) => { early.ws.onopen = r; });
          const url = new URL("/ws?scenario=chat&tokens=5", location.href); url.protocol = "ws:";
          const taken = takeEarly(url.href, ["pyclient.v1.credit", "pyclient.v1"], "websocket");
          const left = globalThis.pyclientEarly.length;
          return { taken: taken === undefined, closing: early.ws.readyState >= 2, left };
        }"""
    )
    assert got == {"taken": True, "closing": True, "left": 0}
    watch.assert_clean()


def test_an_early_socket_that_failed_before_python_came_is_not_taken(page: Page, server: Server, watch: Watch) -> None:
    # WebSocketStream in Chromium, the classic socket in Firefox: the client must open a
    # fresh socket rather than adopt a dead one.
    page.goto(server.url + "style.css")
    got = page.evaluate(
        """async () => {
          const { openEarly, takeEarly } = await import("/pyclient/browser/js/early.js");
          const early = openEarly("/no-such-socket", ["pyclient.v1"]);
          await new Promise((resolve) => {
            const dead = () => early.ended || (early.ws && early.ws.readyState === 3);
            const check = () => (dead() ? resolve() : setTimeout(check, 20));
            check();
          });
          const url = new URL("/no-such-socket", location.href); url.protocol = "ws:";
          const taken = takeEarly(url.href, ["pyclient.v1"], early.transport) !== undefined;
          return { transport: early.transport, taken };
        }"""
    )
    assert got["taken"] is False, got
    watch.forgive_socket_error("no-such-socket")
    watch.assert_clean()


def test_the_package_is_imported_from_the_bytecode_it_ships(page: Page, server: Server, watch: Watch) -> None:
    # /pyclient.zip carries CPython 3.14 bytecode built by the server (devserver/bytecode.py):
    # every pyclient module the session imported came from it, none compiled in the page.
    s, _ = run_lean(page, server)
    assert s["state"] == "closed", s
    got = page.evaluate("pyclientBytecode")
    assert got["modules"] >= 20 and got["from_bytecode"] == got["modules"], got
    watch.assert_clean()


def test_the_package_without_bytecode_still_runs(page: Page, server: Server, watch: Watch) -> None:
    # ?bytecode=0: sources only (what a server that cannot build bytecode serves): compiled
    # in the page, same session.
    s, conns = run_lean(page, server, bytecode=0)
    assert s["state"] == "closed" and s["seq_gaps"] == 0, s
    assert len(conns) == 1
    got = page.evaluate("pyclientBytecode")
    assert got["modules"] >= 20 and got["from_bytecode"] == 0, got
    watch.assert_clean()


def test_the_pyscript_page_imports_the_bytecode_too(page: Page, server: Server, watch: Watch) -> None:
    # PyScript unpacks the same zip ("files": {"/pyclient.zip": "./*"}), __pycache__ included.
    page.goto(server.url + "lab/pyclient.html?scenario=chat&turns=1&tokens=50&burst=0&pause=0&audio=off")
    page.wait_for_function("window.pyclientBytecode", timeout=SESSION_TIMEOUT_MS, polling=100)
    got = page.evaluate("pyclientBytecode")
    assert got["modules"] >= 20 and got["from_bytecode"] == got["modules"], got
    watch.assert_clean()


def test_classic_batches_go_straight_to_a_client_that_keeps_up(page: Page, server: Server, watch: Watch) -> None:
    # Tokens paced over a second: the client is idle when most batches come, so it takes them
    # as JavaScript hands them over (no asyncio hop, no queue); the tool call's wait leaves
    # the rest of its batch to the queue. Nothing lost, nothing out of order either way.
    s, conns = run_lean(page, server, transport="websocket", early=0, tokens=200, burst=1)
    assert s["state"] == "closed" and s["transport"] == "websocket", s
    assert s["receive"]["direct_batches"] >= 1, s["receive"]
    assert_whole(page, server, s, conns[0])
    watch.assert_clean()
