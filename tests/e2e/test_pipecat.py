"""A real Pipecat bot on the other end: the demo page with ``?protocol=pipecat&url=ws://…``
against ``tests/pipecat_bot`` (pipecat-ai's websocket server transport, protobuf serializer and
RTVI, a pipeline of local processors), in Chromium (WebSocketStream) and Firefox (classic).

The bot runs on its own port with its own origin check set to the page's origin; the page's
CSP lets it connect there (``serve.py --connect-src``). What the bot counted on its side
(``GET /stats``) is compared with what the page did: the transcript, every audio sample (a
checksum over exactly the samples played), the tool result, the barge-in, the microphone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from devserver.harness import Server, start_server

from ..pipecat_bot.harness import PIPECAT_MISSING, BotProcess, free_port, pipecat_installed, start_bot
from .conftest import SESSION_TIMEOUT_MS, Demo, Watch

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not pipecat_installed(), reason=PIPECAT_MISSING)]

RENDER_QUANTUM = 128
MIC_RATE = 16000


@pytest.fixture(scope="module")
def pipecat_env() -> Iterator[tuple[Server, BotProcess]]:
    port = free_port()
    srv = start_server("--connect-src", f"ws://127.0.0.1:{port}")
    try:
        bot = start_bot(port=port, origin=srv.url.rstrip("/"))
    except Exception:
        srv.stop()
        raise
    yield srv, bot
    bot.stop()
    srv.stop()


@pytest.fixture
def pipecat_demo(page: Page, pipecat_env: tuple[Server, BotProcess]) -> Iterator[tuple[Demo, BotProcess]]:
    srv, bot = pipecat_env
    # The bot's socket: Firefox reports the handshake as an http:// request to it.
    watch = Watch(srv.host, also_allowed=(bot.ws_url + "/", bot.ws_url.replace("ws://", "http://") + "/"))
    page.on("request", lambda r: watch.requests.append(r.url))
    page.on("websocket", lambda ws: watch.requests.append(ws.url))
    page.on("pageerror", lambda e: watch.page_errors.append(str(e)))
    page.set_default_timeout(SESSION_TIMEOUT_MS)
    yield Demo(page, srv, watch), bot


def wait_bot(bot: BotProcess, condition: Any, what: str, demo: Demo) -> dict[str, Any]:
    """Poll the bot's /stats (through the page's clock: waits are conditions, not sleeps)."""
    deadline_ms = SESSION_TIMEOUT_MS
    waited = 0
    while True:
        stats = bot.stats()
        if condition(stats):
            return stats
        if waited >= deadline_ms:
            raise AssertionError(f"bot never got to: {what}; its stats: {json.dumps(stats)[:3000]}")
        demo.page.wait_for_timeout(100)
        waited += 100


def test_a_turn_with_a_real_pipecat_bot(pipecat_demo: tuple[Demo, BotProcess], browser_name: str) -> None:
    demo, bot = pipecat_demo
    demo.page.goto(demo.server.url + "?" + urlencode({"autostart": 1, "protocol": "pipecat", "url": bot.ws_url}))
    demo.page.wait_for_function("document.body.dataset.pyclient === 'ready'")
    s = demo.wait_for("s.state === 'open' && s.session.ready === true")  # bot-ready arrived
    assert s["transport"] == ("websocketstream" if browser_name == "chromium" else "websocket")

    # The microphone up at 16 kHz, while the bot answers typed text.
    demo.page.click("#mic")
    demo.wait_for(f"s.mic.active && s.mic.sent_samples > {MIC_RATE // 2}")
    demo.page.fill("#say", "What is 17 times 23?")
    demo.page.click("#send")

    # The bot's turn: text, audio, the calculator call (answered by the demo's tool), more
    # audio, then a barge-in 1 s into it.
    srv = wait_bot(bot, lambda b: b["interruptions"] and b["tool_results"], "a tool result and a barge-in", demo)
    s = demo.wait_for("s.audio.cuts.length >= 1 && s.audio.ring_fill === 0 && s.tools.results_sent === 1")
    demo.page.click("#mic")  # stop: the rest of the microphone goes up
    s = demo.wait_for("!s.mic.active && s.mic.queued_frames === 0")
    srv = wait_bot(bot, lambda b: b["mic"]["samples"] >= s["mic"]["sent_samples"], "all the microphone", demo)

    # Text: exactly what the bot's LLM said, once (bot-transcription repeats it: not rendered).
    text = demo.transcript()
    assert text == srv["text"]["sent"] and len(text) > 50
    assert hashlib.sha256(text.encode()).hexdigest() == srv["text"]["sha256"]

    # Audio: every sample the bot sent reached the ring; what played is exactly its prefix
    # (checksum over those samples), and the cut dropped the rest.
    a = s["audio"]
    assert a["sample_rate"] == srv["audio"]["formats"][0][0]
    # Sent = written to the ring + late frames of the cut utterance dropped before the ring
    # (by the sink, or by the codec before the bot started anew); written = played + flushed by
    # the cut (the ring is empty now).
    stale = s["wire"]["stale_samples_dropped"]  # arrived after the cut: the cut utterance's
    assert a["samples_received"] + a["samples_discarded"] + stale == srv["audio"]["samples_sent"]
    assert a["samples_played"] + a["samples_flushed"] == a["samples_received"]
    assert a["checksum"] == bot.ring_checksum(a["samples_played"])
    (cut,) = a["cuts"]  # one barge-in (InterruptionFrame, bot-interrupted...): one cut
    assert cut["queued_samples"] == a["samples_flushed"]
    assert cut["tail_frames"] < RENDER_QUANTUM  # silent within the render quantum that saw it

    # The tool: the demo calculator ran, the bot checked the result.
    (result,) = srv["tool_results"]
    assert result["matched"] is True, result
    assert s["tools"]["results_sent"] == 1 and s["tools"]["errors"] == 0

    # The microphone reached the bot at 16 kHz, every sample.
    assert srv["mic"]["sample_rates"] == [MIC_RATE]
    assert srv["mic"]["samples"] == s["mic"]["sent_samples"]

    assert s["malformed"] == 0 and s["internal_errors"] == [] and s["server"]["errors"] == []
    assert srv["errors"] == [], srv["errors"]
    demo.page.click("#disconnect")
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    demo.watch.assert_clean()


@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_a_pipecat_tool_call_waits_for_the_users_approval(pipecat_demo: tuple[Demo, BotProcess], decision: str) -> None:
    demo, bot = pipecat_demo
    query = {"autostart": 1, "protocol": "pipecat", "url": bot.ws_url, "approve": "calculator"}
    demo.page.goto(demo.server.url + "?" + urlencode(query))
    demo.page.wait_for_function("document.body.dataset.pyclient === 'ready'")
    demo.wait_for("s.state === 'open' && s.session.ready === true")
    demo.page.fill("#say", "What is 17 times 23?")
    demo.page.click("#send")
    # The bot waits for the result (up to a minute); the call waits for the user.
    call = demo.page.get_by_role("dialog", name="Tool calls awaiting approval").get_by_role("group", name="calculator")
    expect(call).to_contain_text("17 * 23")
    assert demo.stats()["tools"]["executed"] == 0
    call.get_by_role("button", name=decision).click()
    srv = wait_bot(bot, lambda b: b["tool_results"], "the tool result", demo)
    (result,) = srv["tool_results"]
    s = demo.wait_for("s.tools.results_sent === 1")
    if decision == "Approve":
        assert result["matched"] is True and s["tools"]["executed"] == 1, result
    else:
        assert result["result"] == {"error": {"type": "denied_by_user", "message": "the user denied this call"}}
        assert s["tools"]["executed"] == 0 and s["tools"]["denied"] == 1
    demo.page.click("#disconnect")
    assert demo.wait_ended()["state"] == "closed"
    demo.watch.assert_clean()
