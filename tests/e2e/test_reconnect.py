"""A connection lost mid-stream resumes (issue 10), in Chromium and Firefox, on both transports.

The dev server aborts the TCP connection (``drop_after``: no closing handshake, what was in
flight is lost) and keeps the session for ``resume_window`` s; the client reconnects with the
last sequence number it consumed and the server replays what followed. Each test checks what
a user would: the transcript whole, sha256-equal to the server's session, every sample played,
no tool run twice, state back to ``open`` and then a clean end, reconnection within 2 s.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest

from .conftest import Demo

RECONNECT_WITHIN_S = 2.0  # loopback: the policy's first delay is at most 0.25 s


def gaps(s: dict) -> list[float]:
    """Seconds between each lost connection and the next one opening (stats()["connections"])."""
    c = s["connections"]
    return [b["opened_at"] - a["closed_at"] for a, b in itertools.pairwise(c)]


def assert_resumed(demo: Demo, s: dict, drops: int) -> dict:
    assert s["state"] == "closed" and s["error"] is None, s["error"]
    assert s["reconnects"] == drops and s["resumes"] == drops, (s["reconnects"], s["resumes"], s["connections"])
    assert all(c["code"] == 1006 and c["verdict"] == "retry" for c in s["connections"][:-1]), s["connections"]
    assert all(0 <= g < RECONNECT_WITHIN_S for g in gaps(s)), gaps(s)
    assert s["seq_gaps"] == 0 and s["malformed"] == 0
    server = demo.server.wait_closed(s["server"]["connection_id"])
    assert server["resume"]["connections"] == drops + 1 and server["resume"]["resumes"] == drops
    assert not server["open"] and server["close_code"] == 1000
    return server


@pytest.mark.parametrize("transport", ["auto", "websocket"])
def test_a_dropped_chat_resumes_whole(demo: Demo, transport: str, browser_name: str) -> None:
    if browser_name == "firefox" and transport == "auto":
        pytest.skip("auto is websocket in Firefox: covered by the other parameter")
    chat = {"scenario": "chat", "turns": 2, "tokens": 300, "burst": 0.5, "pause": 0, "transport": transport}
    # WebSocketStream is cut once: Chromium 156's renderer crashes when a WebSocketStream is
    # reset while a write is pending, which a second cut right after a reconnect hits in about
    # a third of sessions (a browser bug, reproduced without pyclient: docs/BROWSER-BUGS.md).
    drops = 1 if transport == "auto" and browser_name == "chromium" else 3
    demo.open(**chat, drop_after=90, drops=drops)
    s = demo.wait_ended()
    server = assert_resumed(demo, s, drops=drops)
    text = demo.transcript()
    assert hashlib.sha256(text.encode()).hexdigest() == server["text_sha256"], "a token lost or repeated"
    tools = s["tools"]
    assert tools["executed"] == tools["calls"] == server["tool_calls_sent"] == 2, tools
    assert server["tool_results_as_expected"] == 2 and server["tool_results_missing_count"] == 0
    assert server["tool_results_unknown"] == 0 and server["resume"]["tool_results_duplicate"] <= tools["results_resent"]
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_dropped_voice_resumes_and_plays_every_sample(demo: Demo) -> None:
    demo.open(scenario="voice", seconds=3, drop_after=50, drops=2)
    s = demo.wait_ended()
    server = assert_resumed(demo, s, drops=2)
    a = demo.wait_for(f"s.audio.samples_played >= {server['audio_samples_sent']}")["audio"]
    assert a["samples_received"] == a["samples_played"] == server["audio_samples_sent"]
    assert a["checksum"] == server["audio_checksum"], "the samples played are the samples sent, in order"
    assert hashlib.sha256(demo.transcript().encode()).hexdigest() == server["text_sha256"]
    assert s["tools"]["executed"] == 1
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_the_timeline_shows_the_loss_and_the_resume(demo: Demo) -> None:
    demo.open(scenario="chat", turns=1, tokens=200, burst=0.5, pause=0, drop_after=60)
    demo.wait_ended()
    lines = demo.page.locator("#timeline li").all_text_contents()
    assert any("lost (code 1006)" in line for line in lines), lines
    assert any("reconnected after" in line for line in lines), lines
    assert any("resumed" in line and "replayed" in line for line in lines), lines
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_a_session_the_server_cannot_resume_ends_in_a_clear_error(demo: Demo) -> None:
    # The server forgets the session at once (resume_window=0.001 s): the client's resume is
    # refused with 4410 and it says so, once, without retrying in a loop.
    demo.open(scenario="chat", turns=1, tokens=200, burst=0.5, pause=0, drop_after=60, resume_window=0.001)
    s = demo.wait_ended()
    assert s["state"] == "error" and s["close"]["code"] == 4410, s["close"]
    assert "resume_failed" in s["error"] and s["reconnects"] == 1 and s["resumes"] == 0, s["error"]
    assert any("resume failed" in line for line in demo.page.locator("#timeline li").all_text_contents())
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_reconnect_off_keeps_a_drop_an_error(demo: Demo) -> None:
    demo.open(scenario="chat", turns=1, tokens=200, burst=0.5, pause=0, drop_after=60, reconnect=0, resume_window=1)
    s = demo.wait_ended()
    assert s["state"] == "error" and s["close"]["code"] == 1006 and s["reconnects"] == 0
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


# ---------------------------------------------------------------- Gemini Live

GEMINI = {"protocol": "gemini-live", "hangup": 0.5}


def test_gemini_go_away_switches_connections_at_a_turn_boundary(demo: Demo) -> None:
    # Each connection lives 1.5 s with goAway 0.7 s before its end: the client finishes the
    # turn, closes, and resumes with the latest handle on a new connection (never while the old
    # one is open: Gemini refuses that with 1011).
    chat = {"scenario": "chat", "turns": 4, "tokens": 60, "burst": 0.3, "pause": 0.2}
    demo.open(**GEMINI, **chat, lifetime_s=1.5, goaway_s=0.7)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "gemini-live", turns=4)
    assert s["session"]["goaways"] >= 1 and last["emulation"]["resumed_from"] is not None
    assert all(c["code"] == 1000 or c["code"] is None for c in s["connections"]), s["connections"]
    assert s["rolled_back"]["turns"] == 0, "switched between turns: nothing to take back"
    demo.watch.assert_clean()


def ask(demo: Demo, turns: int) -> None:
    """Type a question for each turn, the next once the model's answer ended (as a user)."""
    demo.wait_for("s.state === 'open'")
    for turn in range(turns):
        demo.wait_for(f"s.server.turns >= {turn}")
        demo.page.fill("#say", f"question {turn + 1}")
        demo.page.click("#send")
        demo.wait_for("document.getElementById('say').value === ''")  # sent (or waiting for the next socket)


def test_gemini_drop_mid_turn_resumes_from_the_last_handle(demo: Demo) -> None:
    # As the service (asked=1): each model turn answers a typed question. The socket dies
    # mid-turn; the session resumes at the last handle, which does not hold the question that
    # turn answered, so the turn comes again only because the client sends the question again.
    # The client took the cut turn back from the transcript first, and answers its tool call
    # again without running it.
    chat = {"scenario": "chat", "turns": 3, "tokens": 80, "burst": 0.3, "pause": 0.1}
    demo.open(**GEMINI, **chat, asked=1, drop_after=100, drops=2)
    ask(demo, 3)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "gemini-live", turns=3)
    assert s["reconnects"] == 2 and s["rolled_back"]["turns"] >= 1, (s["reconnects"], s["rolled_back"])
    conns = provider_session(demo, "gemini-live")
    # Every turn answered a question the connection it ran on received; 3 asked, the cut ones again.
    assert sum(c["emulation"]["user_turns"] for c in conns) == 3 + s["wire"]["user_turns_resent"]
    assert s["wire"]["user_turns_resent"] >= 1 and last["emulation"]["turns_waited_for_user"] >= 1
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def assert_every_sample_accounted(demo: Demo, last: dict) -> None:
    """A voice turn cut by a loss: the samples of it that were queued are flushed, what was
    heard before the loss was heard, and it plays again whole. Every sample received is
    played or flushed, only the cut turn's are flushed (the finished turns queued before it
    play out), and the whole session as the server sent it is played."""
    a = demo.wait_for("s.audio.ring_fill === 0 && s.audio.samples_played > 0")["audio"]
    cut = a["samples_received"] - last["audio_samples_sent"]  # the cut turn's, received before the loss
    assert a["samples_played"] + a["samples_flushed"] == a["samples_received"] and a["samples_discarded"] == 0, a
    assert 0 <= a["samples_flushed"] <= cut, (a, last["audio_samples_sent"])
    heard = cut - a["samples_flushed"]
    if heard == 0:  # none of the cut turn had played: what was heard is exactly what the server sent
        assert a["samples_played"] == last["audio_samples_sent"] and a["checksum"] == last["audio_checksum"]


@pytest.mark.parametrize("audio", ["auto", "postmessage"])
def test_gemini_voice_cut_mid_turn_plays_the_finished_turns_whole(demo: Demo, audio: str) -> None:
    # The ring over a SharedArrayBuffer, and its postMessage fallback (no cross-origin isolation).
    voice = {"scenario": "voice", "seconds": 0.8, "items": 3, **({"audio": audio} if audio != "auto" else {})}
    demo.open(**GEMINI, **voice, asked=1, drop_after=60, drops=1)
    ask(demo, 3)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "gemini-live", turns=1)
    assert s["reconnects"] == 1 and s["rolled_back"]["turns"] == 1, (s["reconnects"], s["rolled_back"])
    assert_every_sample_accounted(demo, last)
    assert s["audio"]["mode"] == ("postmessage" if audio == "postmessage" else "sab")
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_gemini_voice_survives_go_away_with_every_sample_played(demo: Demo) -> None:
    demo.open(**GEMINI, scenario="voice", seconds=0.8, items=3, lifetime_s=1.6, goaway_s=0.8)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "gemini-live", turns=1)
    a = demo.wait_for(f"s.audio.samples_played >= {last['audio_samples_sent']}")["audio"]
    assert a["samples_played"] == last["audio_samples_sent"] and a["checksum"] == last["audio_checksum"]
    demo.watch.assert_clean()


# ---------------------------------------------------------------- OpenAI Realtime

OPENAI = {"protocol": "openai-realtime", "hangup": 0.5}


def provider_session(demo: Demo, protocol: str) -> list[dict]:
    """The server's records of this page's session with ``protocol``: every connection, oldest first."""
    conns = [c for c in demo.server.stats()["connections"] if c.get("protocol") == protocol]
    last = demo.server.wait_closed(conns[-1]["id"])
    return [demo.server.stats(i) for i in last["resumed_connections"]] + [last]


def assert_whole(demo: Demo, s: dict, protocol: str, turns: int) -> dict:
    assert s["state"] == "closed" and s["error"] is None, (s["error"], s["connections"])
    conns = provider_session(demo, protocol)
    last = conns[-1]
    assert len(conns) == s["reconnects"] + 1 >= 2, ([c["id"] for c in conns], s["connections"])
    for c in conns:
        assert all("dropped on purpose" in e for e in c["errors"]), c["errors"]
    text = demo.transcript()
    assert hashlib.sha256(text.encode()).hexdigest() == last["text_sha256"], "a token lost or repeated"
    assert last["tool_calls_sent"] == turns == last["tool_results_as_expected"], last
    assert s["tools"]["executed"] == turns, s["tools"]  # no tool ran twice
    assert all(0 <= g < RECONNECT_WITHIN_S for g in gaps(s)), gaps(s)
    assert s["malformed"] == 0
    return last


def test_openai_drop_opens_a_new_session_with_the_conversation_replayed(demo: Demo) -> None:
    # No resume exists: the client opens a new session and replays the conversation as text
    # items; the emulation goes on after the turns they close. The cut turn is taken back first
    # and asked for again.
    chat = {"scenario": "chat", "turns": 3, "tokens": 80, "burst": 0.3, "pause": 0.1}
    demo.open(**OPENAI, **chat, drop_after=150, drops=2)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "openai-realtime", turns=3)
    assert s["reconnects"] == 2 and last["emulation"]["replayed_assistant_items"] >= 1
    # A new session never speaks first: the answer the loss cut short came because the client
    # asked for it (response.create after the replay), and every such request was used.
    conns = provider_session(demo, "openai-realtime")
    asked_again = sum(c["emulation"]["answers_asked_again"] for c in conns)
    assert asked_again == s["wire"]["responses_asked_again"] >= 1, [c["emulation"] for c in conns[1:]]
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_openai_session_expired_goes_on_in_a_new_session(demo: Demo) -> None:
    chat = {"scenario": "chat", "turns": 3, "tokens": 60, "burst": 0.3, "pause": 0.2}
    demo.open(**OPENAI, **chat, max_session_s=1.3)
    s = demo.wait_ended()
    assert_whole(demo, s, "openai-realtime", turns=3)
    # 1001 "...maximum duration..." after session_expired (Chromium may drop that last event).
    # (Or 1006 when the browser saw no clean closing handshake; either way the session went on.)
    first = s["connections"][0]
    assert first["code"] == 1006 or (first["code"] == 1001 and "maximum duration" in first["reason"]), first
    demo.watch.assert_clean()


def test_openai_voice_cut_mid_response_plays_the_finished_responses_whole(demo: Demo) -> None:
    demo.open(**OPENAI, scenario="voice", seconds=0.8, items=3, drop_after=120, drops=1)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "openai-realtime", turns=1)
    assert s["reconnects"] == 1 and s["wire"]["responses_asked_again"] == 1, (s["reconnects"], s["wire"])
    assert_every_sample_accounted(demo, last)
    demo.watch.forgive_socket_error("drop_after=")
    demo.watch.assert_clean()


def test_openai_client_renews_the_session_between_turns(demo: Demo) -> None:
    demo.open(**OPENAI, scenario="voice", seconds=0.8, items=3, renew_s=1.0)
    s = demo.wait_ended()
    last = assert_whole(demo, s, "openai-realtime", turns=1)
    assert s["renewals"] >= 1 and s["rolled_back"]["turns"] == 0
    a = demo.wait_for(f"s.audio.samples_played >= {last['audio_samples_sent']}")["audio"]
    assert a["samples_played"] == last["audio_samples_sent"] and a["checksum"] == last["audio_checksum"]
    demo.watch.assert_clean()


# ---------------------------------------------------------------- a server restart


@pytest.fixture
def restartable(page, browser_name: str):
    """A server of this test's own (it restarts it) and the demo page on it."""
    from devserver.harness import start_server

    from .conftest import SESSION_TIMEOUT_MS, Watch

    servers = [start_server("--session-rate", "1000")]
    w = Watch(servers[0].host)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("websocket", lambda ws: w.requests.append(ws.url))
    page.on("pageerror", lambda e: w.page_errors.append(str(e)))
    page.set_default_timeout(SESSION_TIMEOUT_MS)
    demo = Demo(page, servers[0], w)

    def restart() -> None:
        port = servers[-1].url.rstrip("/").rsplit(":", 1)[1]
        servers[-1].stop()
        servers.append(start_server("--session-rate", "1000", "--port", port))
        demo.server = servers[-1]

    demo.restart = restart  # type: ignore[attr-defined]
    yield demo
    servers[-1].stop()


def test_pyclient_session_survives_a_server_restart(restartable: Demo) -> None:
    # The server restarts mid-stream (SIGTERM: its sockets close with 1012). The new server
    # restores the session from the signed resume token and the scenario's parameters: it runs
    # the seeded scenario again, takes what the client consumed as delivered, and goes on.
    demo = restartable
    demo.open(scenario="chat", turns=2, tokens=400, burst=2.0, pause=0.5)
    demo.wait_for("s.text.chars_rendered > 800 && s.tools.calls >= 1")
    demo.restart()  # type: ignore[attr-defined]
    s = demo.wait_ended()
    assert s["state"] == "closed" and s["error"] is None, (s["error"], s["connections"])
    assert s["reconnects"] >= 1 and s["connections"][0]["code"] in (1006, 1012), s["connections"]
    server = demo.server.wait_closed(s["server"]["connection_id"])
    assert server["restored_from"] is not None and server["frames_restored"] > 0
    text = demo.transcript()
    assert hashlib.sha256(text.encode()).hexdigest() == server["text_sha256"], "a token lost or repeated"
    assert s["tools"]["executed"] == 2 == server["tool_results_as_expected"], (s["tools"], server["tool_results"])
    demo.watch.forgive_socket_error("ws?")
    demo.watch.assert_clean()


@pytest.mark.parametrize("transport", ["auto", "websocket"])
def test_the_microphone_pauses_while_the_server_restarts(restartable: Demo, transport: str, browser_name: str) -> None:
    # While no socket carries the session, captured audio is dropped and counted (nobody
    # could hear it live), never queued for later or sent into a dead socket; capture goes on
    # and its audio flows again on the new socket.
    if browser_name == "firefox" and transport == "auto":
        pytest.skip("auto is websocket in Firefox: covered by the other parameter")
    demo = restartable
    demo.open(scenario="chat", turns=3, tokens=600, burst=2.0, pause=0.5, transport=transport)
    demo.wait_for("s.state === 'open'")
    demo.page.click("#mic")
    demo.wait_for("s.mic.active && s.mic.sent_samples > 0 && s.text.chars_rendered > 300")
    demo.restart()  # type: ignore[attr-defined]
    sent = demo.wait_for("s.reconnects >= 1 && s.state === 'open'")["mic"]["sent_samples"]
    demo.wait_for(f"s.mic.sent_samples > {sent} || s.state !== 'open'")
    s = demo.wait_ended()
    assert s["state"] == "closed" and s["error"] is None, (s["error"], s["connections"])
    m = s["mic"]
    assert m["sent_samples"] > sent, ("no microphone audio after the reconnect", m)
    assert m["paused_samples"] > 0 and not m["paused"] and m["error"] is None, m
    assert m["captured_samples"] == m["sent_samples"] + m["paused_samples"] + m["lost_samples"] + m["dropped_samples"]
    server = demo.server.wait_closed(s["server"]["connection_id"])
    assert 0 < server["mic_samples_received"] <= m["sent_samples"], (server["mic_samples_received"], m)
    demo.watch.forgive_socket_error("ws?")
    demo.watch.assert_clean()


@pytest.mark.parametrize("protocol", ["gemini-live", "openai-realtime"])
def test_provider_session_survives_a_server_restart(restartable: Demo, protocol: str) -> None:
    # The emulated provider restarts mid-turn: its sockets drop. The client mints a new token
    # from the new server and goes on (Gemini: the latest handle; OpenAI: a new session with the
    # conversation replayed); the new server reads the signed handle / item ids it never issued.
    demo = restartable
    demo.open(protocol=protocol, hangup=0.5, scenario="chat", turns=3, tokens=150, burst=1.0, pause=0.3)
    demo.wait_for("s.server.turns >= 1 && s.text.chars_rendered > 700")  # mid-way through turn 2
    demo.restart()  # type: ignore[attr-defined]
    s = demo.wait_ended()
    assert s["state"] == "closed" and s["error"] is None, (s["error"], s["connections"])
    conns = [c for c in demo.server.stats()["connections"] if c.get("protocol") == protocol]
    last = demo.server.wait_closed(conns[-1]["id"])
    assert last["restored_from"] is not None, last
    text = demo.transcript()
    assert hashlib.sha256(text.encode()).hexdigest() == last["text_sha256"], "a token lost or repeated"
    answered = last["tool_results_as_expected"] + last["tool_results_before_restart"]
    assert s["tools"]["executed"] == 3 == last["tool_calls_sent"] == answered, (s["tools"], last)
    assert last["errors"] == [], last["errors"]
    demo.watch.forgive_socket_error("/")
    demo.watch.assert_clean()


@pytest.mark.parametrize("transport", ["auto", "websocket"])
def test_a_silent_half_open_connection_is_given_up_and_resumed(demo: Demo, transport: str, browser_name: str) -> None:
    # The server stops writing and reading without closing (freeze_after): no close ever
    # comes. The client's ping goes unanswered for heartbeat_s; it gives the socket up and
    # resumes the session on a new one.
    if browser_name == "firefox" and transport == "auto":
        pytest.skip("auto is websocket in Firefox: covered by the other parameter")
    chat = {"scenario": "chat", "turns": 2, "tokens": 200, "burst": 0.5, "pause": 0, "transport": transport}
    demo.open(**chat, freeze_after=80, heartbeat_s=0.5)
    s = demo.wait_ended()
    assert s["state"] == "closed" and s["error"] is None, (s["error"], s["connections"])
    assert s["heartbeat"]["dead_links"] == 1 and s["reconnects"] == 1 and s["resumes"] == 1
    assert "given up for dead" in s["connections"][0]["reason"], s["connections"]
    server = demo.server.wait_closed(s["server"]["connection_id"])
    assert server["frozen"] and server["resume"]["resumes"] == 1
    assert hashlib.sha256(demo.transcript().encode()).hexdigest() == server["text_sha256"]
    assert s["tools"]["executed"] == 2 == server["tool_results_as_expected"]
    demo.watch.forgive_socket_error("freeze_after=")  # Firefox reports the socket it gave up
    demo.watch.assert_clean()
