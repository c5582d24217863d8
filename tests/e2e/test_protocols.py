"""OpenAI Realtime and Gemini Live end to end: the demo page against the dev server's
emulations (devserver/openai_realtime.py, gemini_live.py), with a token from POST /session.

Chromium takes WebSocketStream, Firefox the classic WebSocket. Each test checks what the
server sent against what the page did: transcript sha256, samples played and their checksum,
tool results, the truncate's audio_end_ms against the samples the worklet rendered, and the
microphone's rate. The emulations record every client mistake in ``errors``.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import Demo

pytestmark = pytest.mark.e2e

PROTOCOLS = ["openai-realtime", "gemini-live"]
MIC_RATE = {"openai-realtime": 24000, "gemini-live": 16000}
# The emulations close 1000 this long after the scenario (these protocols have no 'done').
HANGUP = {"hangup": 0.5}


def server_conn(demo: Demo, protocol: str) -> dict[str, Any]:
    """The server's record of this page's connection (the newest one of that protocol)."""
    conns = [c for c in demo.server.stats()["connections"] if c.get("protocol") == protocol]
    assert conns, f"the server saw no {protocol} connection"
    return demo.server.wait_closed(conns[-1]["id"])


def run(demo: Demo, protocol: str, **query: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    demo.open(protocol=protocol, **HANGUP, **query)
    s = demo.wait_ended()
    return s, server_conn(demo, protocol)


def expected_transport(browser_name: str) -> str:
    return "websocketstream" if browser_name == "chromium" else "websocket"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_chat_text_and_tools(demo: Demo, protocol: str, browser_name: str) -> None:
    s, srv = run(demo, protocol, scenario="chat", turns=2, tokens=80, burst=0.3, pause=0.2)
    assert s["state"] == "closed", s["error"]
    assert s["transport"] == expected_transport(browser_name)
    assert s["wire"]["protocol"] == protocol
    text = demo.transcript()
    assert len(text) > 100
    assert hashlib.sha256(text.encode()).hexdigest() == srv["text_sha256"], "transcript differs from what was sent"
    assert srv["tool_calls_sent"] == 2 == srv["tool_results_received"] == srv["tool_results_as_expected"]
    assert s["tools"]["results_sent"] == 2 and s["tools"]["errors"] == 0
    assert s["malformed"] == 0 and s["internal_errors"] == [] and s["server"]["errors"] == []
    assert srv["errors"] == [], srv["errors"]
    assert demo.page.locator(".tool-card.ok").count() == 2
    demo.watch.assert_clean()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_voice_plays_every_sample_sent(demo: Demo, protocol: str) -> None:
    s, srv = run(demo, protocol, scenario="voice", seconds=1.5)
    assert s["state"] == "closed", s["error"]
    sent = srv["audio_samples_sent"]
    assert sent == 36000  # 1.5 s at 24 kHz, as base64 in JSON
    a = demo.wait_for(f"s.audio.samples_played >= {sent}")["audio"]
    assert a["sample_rate"] == 24000
    assert a["samples_played"] == sent and a["checksum"] == srv["audio_checksum"]
    assert hashlib.sha256(demo.transcript().encode()).hexdigest() == srv["text_sha256"]
    assert srv["tool_results_as_expected"] == srv["tool_calls_sent"] == 1
    assert srv["errors"] == [], srv["errors"]
    demo.watch.assert_clean()


def test_openai_barge_in_truncates_at_the_samples_rendered(demo: Demo) -> None:
    # The emulated server VAD hears the user 1 s into the answer: speech_started. The client
    # flushes what is queued and truncates the item at what the worklet actually rendered.
    s, srv = run(demo, "openai-realtime", scenario="voice", seconds=4, barge=1)
    assert s["state"] == "closed", s["error"]
    assert s["interruptions"] >= 1
    cut = s["audio"]["cuts"][0]
    item = cut["items"][0]
    emu = srv["emulation"]
    assert emu["truncates_bad"] == 0 and len(emu["truncates"]) == 1, emu["truncates"]
    truncate = emu["truncates"][0]
    assert truncate["item_id"] == item["item_id"]
    assert truncate["audio_end_ms"] == item["played_samples"] * 1000 // 24000
    assert isinstance(truncate["audio_end_ms"], int) and 0 < truncate["audio_end_ms"] < 4000
    # Server VAD already cancelled the response: no response.cancel, so no error back.
    assert emu["response_cancel_received"] == 0 and s["server"]["errors"] == []
    assert srv["errors"] == [], srv["errors"]
    demo.watch.assert_clean()


def test_gemini_interrupted_flushes_queued_audio(demo: Demo) -> None:
    s, srv = run(demo, "gemini-live", scenario="voice", seconds=4, barge=1)
    assert s["state"] == "closed", s["error"]
    assert s["interruptions"] >= 1 and s["audio"]["cuts"], s["audio"]
    # Gemini truncates on its side: the client sends no truncate, only stops playing.
    assert srv["errors"] == [], srv["errors"]
    a = demo.wait_for("s.audio.ring_fill === 0")["audio"]
    assert a["samples_played"] < srv["audio_samples_sent"]
    demo.watch.assert_clean()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_microphone_reaches_the_server_at_the_protocol_rate(demo: Demo, protocol: str) -> None:
    demo.open(protocol=protocol, scenario="voice", seconds=0.5, listen=60, **HANGUP)
    demo.wait_for("s.state === 'open' && s.session.ready === true")
    demo.page.click("#mic")
    demo.wait_for(f"s.mic.active && s.mic.sent_samples > {MIC_RATE[protocol]}")
    demo.page.click("#mic")
    s = demo.wait_ended()
    m = s["mic"]
    assert m["sample_rate"] == MIC_RATE[protocol] and m["dropped_frames"] == 0
    srv = server_conn(demo, protocol)
    assert srv["mic_rates"] == [MIC_RATE[protocol]]
    assert srv["mic_samples_received"] == m["sent_samples"]
    assert srv["errors"] == [], srv["errors"]
    demo.watch.assert_clean()


def test_gemini_cancelled_call_is_never_answered(demo: Demo) -> None:
    s, srv = run(demo, "gemini-live", scenario="chat", turns=1, tokens=40, burst=0.2, pause=0, cancel_tool=1)
    assert s["state"] == "closed", s["error"]
    assert s["tools"]["cancelled"] >= 1
    assert demo.page.locator(".tool-card.cancelled").count() >= 1
    assert srv["errors"] == [], srv["errors"]  # a result for the cancelled call would be one
    demo.watch.assert_clean()


def test_gemini_json_in_binary_frames(demo: Demo) -> None:
    s, srv = run(demo, "gemini-live", scenario="chat", turns=1, tokens=60, burst=0.2, pause=0, binary=1)
    assert s["state"] == "closed", s["error"]
    assert hashlib.sha256(demo.transcript().encode()).hexdigest() == srv["text_sha256"]
    assert srv["errors"] == []
    demo.watch.assert_clean()


def test_the_token_endpoint_refuses_other_origins(demo: Demo) -> None:
    demo.page.goto(demo.server.url)
    status = demo.page.evaluate("async () => (await fetch('/session?provider=openai', {method: 'POST'})).status")
    assert status == 200
    req = urllib.request.Request(
        demo.server.url + "session?provider=openai", method="POST", headers={"Origin": "http://evil.example"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_json_and_unknown_events_are_counted_never_fatal(demo: Demo, protocol: str) -> None:
    # The emulations' faults scenario: malformed JSON, a non-object, an event of an unexpected
    # shape, an unknown event type, a call to a tool nobody has, broken call arguments.
    s, srv = run(demo, protocol, scenario="faults")
    assert s["state"] == "closed", s["error"]
    assert demo.transcript() == "before the faults. after the faults."
    assert s["malformed"] == 4 and s["wire"]["ignored"] == 1
    assert s["tools"]["errors"] == 2 and srv["tool_results_received"] == 2
    assert s["internal_errors"] == [] and srv["errors"] == []
    demo.watch.assert_clean()


def test_readme_openai_page_works(demo: Demo) -> None:
    """web/minimal-openai.html is the README's OpenAI page, as it is: a token from
    POST /session, the emulated server's default chat, a tool, and the microphone at 24 kHz."""
    demo.page.goto(demo.server.url + "minimal-openai.html")
    # The default chat asks for a calculator (not on this page: a failed result), then a clock.
    s = demo.wait_for("s.state === 'open' && s.tools.results_sent >= 2 && s.mic.sent_samples > 24000")
    assert s["wire"]["protocol"] == "openai-realtime" and s["mic"]["sample_rate"] == 24000
    assert demo.transcript() and demo.page.locator(".tool-card.ok").count() >= 1
    assert s["malformed"] == 0 and s["internal_errors"] == []
    demo.page.goto("about:blank")  # the page leaves: the server sees the socket close
    srv = server_conn(demo, "openai-realtime")
    assert srv["mic_rates"] == [24000] and srv["tool_results_as_expected"] >= 1, srv
    # Leaving mid-scenario is recorded as a lost connection; anything else would be a mistake.
    assert [e for e in srv["errors"] if not e.startswith("connection lost")] == [], srv["errors"]
    demo.watch.assert_clean()
