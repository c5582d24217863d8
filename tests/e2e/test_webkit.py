"""WebKit (the Safari engine): the classic-WebSocket fallback and postMessage audio, for real.

Drives Debian's WebKitGTK MiniBrowser through ``WebKitWebDriver`` (Selenium) on a private
Xvfb display, with a private PulseAudio daemon (a null sink) for it to play into
(shared/BROWSERS.md). Runs where those are installed (``./dev test`` installs them as root on
Debian); elsewhere it is skipped and says why.

Like Safari, WebKitGTK starts an AudioContext suspended until a user gesture resumes it: the
page shows "Click to enable audio" and these tests click it through WebDriver (a real click,
which is a user gesture; a script's ``click()`` is not).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from devserver import webkit as webkit_env
from devserver.harness import Server

pytestmark = pytest.mark.e2e

TIMEOUT_S = 90  # for a demo session to end


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    why = webkit_env.missing()
    if why:
        pytest.skip(why)
    with webkit_env.display() as name:
        yield name


@pytest.fixture(scope="module")
def audio_output() -> Iterator[dict[str, str]]:
    with webkit_env.audio_output() as env:
        yield env


@pytest.fixture
def webkit(display: str, audio_output: dict[str, str]) -> Iterator[Any]:
    with webkit_env.session(display, audio_output) as driver:
        yield driver


stats = webkit_env.stats
wait_for = webkit_env.wait_for


def run_demo(driver: Any, server: Server, **query: Any) -> dict[str, Any]:
    open_demo(driver, server, **query)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # a condition, polled; WebDriver has no wait_for_function
        s = stats(driver)
        if s and s["state"] in ("closed", "error"):
            return s
        time.sleep(0.2)
    raise AssertionError(f"session did not end within {TIMEOUT_S} s: {stats(driver)}")


def open_demo(driver: Any, server: Server, **query: Any) -> None:
    driver.get(server.url + "?" + urlencode({"autostart": 1, **query}))


def enable_audio(driver: Any) -> dict[str, Any]:
    """The page asks for a gesture (never silently); click its control as a user would."""
    s = wait_for(driver, "s.audio.unlock_shown")
    assert s["audio"]["context_state"] == "suspended" and s["audio"]["blocked"] >= 1
    label = driver.execute_script("return document.querySelector('button.pyclient-audio-unlock').textContent")
    assert label == "Click to enable audio"
    webkit_env.enable_audio(driver)
    return s


def play_out(driver: Any, server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """Click "enable audio" whenever the page asks (each new AudioContext asks again), until the
    session ended and every sample the server sent has played; client and server stats."""

    deadline = time.monotonic() + TIMEOUT_S
    sent = None
    while time.monotonic() < deadline:
        s = stats(driver)
        if s and s["audio"].get("unlock_shown"):
            webkit_env.click_unlock(driver)  # a new context asks again (or the button is leaving)
        elif s and s["state"] in ("closed", "error"):
            if sent is None:
                conn = server.wait_closed(s["server"]["connection_id"]) if s["server"].get("connection_id") else None
                sent = conn["audio_samples_sent"] if conn else None
            if sent is not None and s["audio"]["samples_played"] >= sent and s["audio"]["ring_fill"] == 0:
                return s, conn
        time.sleep(0.1)
    raise AssertionError(f"audio did not play out within {TIMEOUT_S} s: {stats(driver)}")


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


def needs_audio_output(audio_output: dict[str, str]) -> None:
    if not audio_output:
        pytest.skip("no PulseAudio here (apt-get install pulseaudio gstreamer1.0-pulseaudio): WebKit cannot play")


def test_webkit_plays_every_sample_once_the_user_enables_audio(
    webkit: Any, server: Server, audio_output: dict[str, str]
) -> None:
    needs_audio_output(audio_output)
    # The context at the device's rate (44.1 kHz here; WebKit would accept the stream's own
    # 24 kHz, the default, which the other tests use): our worklet resamples every sample.
    open_demo(webkit, server, scenario="voice", seconds=2, context_rate="device")
    before = enable_audio(webkit)
    assert before["audio"]["samples_played"] == 0  # nothing played before the gesture
    s, conn = play_out(webkit, server)
    a = s["audio"]
    assert s["state"] == "closed", s["error"]
    assert a["mode"] == "postmessage" and a["context_state"] == "running" and not a["unlock_shown"]
    # Integrity: every sample sent played once, in order (checksum over what the worklet rendered).
    assert a["samples_played"] == conn["audio_samples_sent"] == 48000
    assert a["checksum"] == conn["audio_checksum"]
    assert a["samples_flushed"] == 0 and a["samples_discarded"] == 0
    # "Played" counts stream samples consumed. The context runs at the device rate, so the
    # worklet's resampler consumed all 48,000 samples while rendering about 88,200 frames (at
    # 44.1 kHz): at least the stream's length at the context rate, in 128-frame quanta.
    assert a["context_rate"] != a["sample_rate"] == 24000
    assert a["quanta"] * 128 >= a["samples_played"] * a["context_rate"] / a["sample_rate"]
    assert webkit.execute_script("return document.querySelector('button.pyclient-audio-unlock')") is None
    assert_local(webkit, server)


def test_webkit_barge_in_reports_the_exact_position(webkit: Any, server: Server, audio_output: dict[str, str]) -> None:
    needs_audio_output(audio_output)
    from selenium.webdriver.common.by import By

    open_demo(webkit, server, scenario="voice", seconds=8)
    enable_audio(webkit)
    wait_for(webkit, "s.audio.samples_played > 24000")
    webkit.find_element(By.ID, "interrupt").click()
    s = wait_for(webkit, "s.audio.cuts.length === 1")
    cut = s["audio"]["cuts"][0]
    assert cut["acked"] and cut["reason"] == "client"
    assert cut["tail_frames"] < 128  # silent within the render quantum that saw the cut
    (item,) = cut["items"]
    s = wait_for(webkit, "s.state === 'closed' || s.state === 'error'")
    conn = server.wait_closed(s["server"]["connection_id"])
    a = s["audio"]
    assert item["played_samples"] == a["samples_played"]  # to the sample: what the worklet consumed
    assert a["samples_flushed"] > 0
    assert conn["playback_positions"] == [item]
    assert conn["audio_samples_sent"] < 8 * 24000
    assert_local(webkit, server)


def test_webkit_rate_change_plays_both_rates(webkit: Any, server: Server, audio_output: dict[str, str]) -> None:
    needs_audio_output(audio_output)
    open_demo(webkit, server, scenario="voice", seconds=1, items=2, rates="24000,16000")
    s, conn = play_out(webkit, server)
    a = s["audio"]
    assert s["state"] == "closed", s["error"]
    assert a["rate_changes"] == 1 and a["sample_rate"] == 16000
    assert a["samples_played"] == conn["audio_samples_sent"] == 24000 + 16000
    assert a["checksum"] == conn["audio_checksum"]
    assert_local(webkit, server)


@pytest.mark.parametrize("protocol", ["openai-realtime", "gemini-live"])
def test_webkit_plays_each_protocol(webkit: Any, server: Server, audio_output: dict[str, str], protocol: str) -> None:
    needs_audio_output(audio_output)
    open_demo(webkit, server, protocol=protocol, scenario="voice", seconds=1.5, hangup=0.5)
    enable_audio(webkit)
    s = wait_for(webkit, "s.state === 'closed' || s.state === 'error'")
    assert s["state"] == "closed", s["error"]
    conns = [c for c in server.stats()["connections"] if c.get("protocol") == protocol]
    conn = server.wait_closed(conns[-1]["id"])
    sent = conn["audio_samples_sent"]
    a = wait_for(webkit, f"s.audio.samples_played >= {sent} && s.audio.ring_fill === 0")["audio"]
    assert a["samples_played"] == sent == 36000 and a["checksum"] == conn["audio_checksum"]
    text = webkit.execute_script("return document.getElementById('transcript').textContent")
    assert hashlib.sha256(text.encode()).hexdigest() == conn["text_sha256"]
    assert conn["errors"] == [], conn["errors"]
    assert_local(webkit, server)
