"""Tool calls that wait for the user's approval: the demo page's ``?approve=<tools>`` against
the dev server, Playwright clicking the dialog's real buttons (found by role and name).

Each test checks both ends: what the server received (the result, or ``denied_by_user`` /
``approval_timeout``), and that a refused tool never ran (``tools.executed``).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Locator, expect

from .conftest import Demo

pytestmark = pytest.mark.e2e

PROTOCOLS = ["pyclient", "openai-realtime", "gemini-live"]
DIALOG = "Tool calls awaiting approval"
# One calculator call mid-text; the emulations close 1000 half a second after the scenario.
CHAT = {"scenario": "chat", "turns": 1, "tokens": 80, "burst": 0.3, "pause": 0, "hangup": 0.5}


def open_chat(demo: Demo, protocol: str, **query: Any) -> Locator:
    """Open the chat with the calculator needing approval; returns the dialog once it shows."""
    demo.open(protocol=protocol, approve="calculator", **{**CHAT, **query})
    dialog = demo.page.get_by_role("dialog", name=DIALOG)
    expect(dialog).to_be_visible()
    return dialog


def server_conn(demo: Demo) -> dict[str, Any]:
    conns = demo.server.stats()["connections"]
    assert conns, "the server saw no connection"
    return demo.server.wait_closed(conns[-1]["id"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_approved_call_runs_and_the_server_gets_its_result(demo: Demo, protocol: str) -> None:
    dialog = open_chat(demo, protocol)
    call = dialog.get_by_role("group", name="calculator")
    expect(call).to_contain_text("expression")  # the preview shows the arguments
    s = demo.wait_for("s.tools.awaiting_approval === 1")
    assert s["tools"]["executed"] == 0  # nothing ran before the decision
    assert demo.page.locator(".tool-card.awaiting").count() == 1
    # Focus moved into the dialog, on the safe choice.
    assert demo.page.evaluate("document.activeElement.textContent") == "Deny"
    call.get_by_role("button", name="Approve").click()
    expect(dialog).to_be_hidden()
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    t = s["tools"]
    assert (t["approved"], t["denied"], t["awaiting_approval"], t["executed"]) == (1, 0, 0, 1)
    srv = server_conn(demo)
    assert srv["tool_results_as_expected"] == 1 == srv["tool_calls_sent"], srv["tool_results"]
    assert srv["errors"] == [], srv["errors"]
    assert demo.page.locator(".tool-card.ok").count() == 1
    demo.watch.assert_clean()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_denied_call_never_runs_and_the_server_is_told(demo: Demo, protocol: str) -> None:
    dialog = open_chat(demo, protocol)
    dialog.get_by_role("group", name="calculator").get_by_role("button", name="Deny").click()
    expect(dialog).to_be_hidden()
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    t = s["tools"]
    assert (t["approved"], t["denied"], t["executed"], t["results_sent"]) == (0, 1, 0, 1)
    srv = server_conn(demo)
    assert srv["tool_result_errors"] == {"denied_by_user": 1}
    assert srv["tool_results_received"] == 1 and srv["errors"] == [], srv["errors"]
    card = demo.page.locator(".tool-card.denied")
    expect(card).to_contain_text("denied · did not run")
    demo.watch.assert_clean()


def test_escape_denies_the_focused_call(demo: Demo) -> None:
    dialog = open_chat(demo, "pyclient")
    demo.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    s = demo.wait_ended()
    assert s["tools"]["denied"] == 1 and s["tools"]["executed"] == 0
    assert server_conn(demo)["tool_result_errors"] == {"denied_by_user": 1}
    demo.watch.assert_clean()


@pytest.mark.parametrize("protocol", ["pyclient", "gemini-live"])
def test_undecided_call_is_denied_at_its_timeout(demo: Demo, protocol: str) -> None:
    dialog = open_chat(demo, protocol, approval_timeout=4)
    expect(dialog.get_by_role("group", name="calculator")).to_contain_text("Denied automatically after 4 s")
    expect(dialog).to_be_hidden()  # nobody clicked
    s = demo.wait_ended()
    t = s["tools"]
    assert (t["denied"], t["approval_timeouts"], t["executed"]) == (1, 1, 0)
    srv = server_conn(demo)
    assert srv["tool_result_errors"] == {"approval_timeout": 1} and srv["errors"] == [], srv["errors"]
    expect(demo.page.locator(".tool-card.denied")).to_contain_text("not approved in time")
    demo.watch.assert_clean()


@pytest.mark.parametrize("cancel_ms", [0, 500])
def test_call_cancelled_by_the_server_leaves_the_queue(demo: Demo, cancel_ms: int) -> None:
    # Gemini withdraws a slow_lookup call (toolCallCancellation) right after it (0: in the same
    # write, before the client's task for it even started) or half a second later. (The
    # counters prove it was queued: the dialog shows it for half a second at most.)
    demo.open(protocol="gemini-live", approve="slow_lookup", cancel_tool=1, cancel_ms=cancel_ms, **CHAT)
    dialog = demo.page.get_by_role("dialog", name=DIALOG)
    demo.wait_for("s.tools.approval_cancelled === 1")
    expect(dialog).to_be_hidden()  # withdrawn: it left the queue without a decision
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    t = s["tools"]
    assert (t["approval_cancelled"], t["approved"], t["denied"], t["awaiting_approval"]) == (1, 0, 0, 0)
    assert t["executed"] == 1  # the calculator (not approval-gated here) ran; slow_lookup did not
    expect(demo.page.locator(".tool-card.cancelled")).to_contain_text("cancelled by the server")
    srv = server_conn(demo)
    assert srv["errors"] == [], srv["errors"]  # a result for the withdrawn call would be one
    demo.watch.assert_clean()


def test_barge_in_that_cancels_the_response_withdraws_a_waiting_call(demo: Demo) -> None:
    # OpenAI: the clock call comes 2 s into a 4 s answer; at 3 s the user speaks (server VAD
    # cancels the response). The call still waiting for approval leaves the queue, unanswered.
    demo.open(protocol="openai-realtime", scenario="voice", seconds=4, barge=3, approve="clock", hangup=0.5)
    dialog = demo.page.get_by_role("dialog", name=DIALOG)
    demo.wait_for("s.tools.approval_cancelled === 1")  # queued, then withdrawn by the cut
    expect(dialog).to_be_hidden()
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    t = s["tools"]
    assert (t["approval_cancelled"], t["executed"], t["results_sent"]) == (1, 0, 0)
    assert s["interruptions"] >= 1
    expect(demo.page.locator(".tool-card.cancelled")).to_contain_text("cancelled by the server")
    srv = server_conn(demo)
    assert srv["tool_results_received"] == 0 and srv["errors"] == [], srv["errors"]
    demo.watch.assert_clean()


def test_stream_goes_on_while_calls_wait(demo: Demo) -> None:
    # Voice: the clock call comes 2 s into a 4 s answer. While it waits, audio keeps playing
    # and text keeps rendering: waiting for a person never stalls the stream.
    demo.open(scenario="voice", seconds=4, approve="clock")
    dialog = demo.page.get_by_role("dialog", name=DIALOG)
    expect(dialog.get_by_role("group", name="clock")).to_be_visible()
    s = demo.wait_for("s.tools.awaiting_approval === 1 && s.audio.samples_played > 0")
    played, chars = s["audio"]["samples_played"], s["text"]["chars_rendered"]
    # Half a second more audio and more text, with the call still waiting.
    s = demo.wait_for(
        f"s.audio.samples_played > {played + 12000} && s.text.chars_rendered > {chars}"
        " && s.tools.awaiting_approval === 1"
    )
    assert s["tools"]["approval_stalls"] == 0 and s["tools"]["executed"] == 0
    dialog.get_by_role("group", name="clock").get_by_role("button", name="Approve").click()
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    srv = server_conn(demo)
    sent = srv["audio_samples_sent"]
    a = demo.wait_for(f"s.audio.samples_played >= {sent}")["audio"]  # queued audio plays out
    assert a["samples_played"] == sent and a["checksum"] == srv["audio_checksum"]
    assert srv["tool_results_as_expected"] == 1 == srv["tool_calls_sent"]
    demo.watch.assert_clean()


def test_several_calls_wait_in_arrival_order(demo: Demo) -> None:
    # Two turns: a calculator call, then a clock call; both need approval.
    demo.open(scenario="chat", turns=2, tokens=60, burst=0.2, pause=0, approve="calculator,clock")
    dialog = demo.page.get_by_role("dialog", name=DIALOG)
    demo.wait_for("s.tools.awaiting_approval === 2")
    names = dialog.get_by_role("group").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    assert names == ["calculator, call 1", "clock, call 2"]
    assert dialog.get_by_role("list").count() == 1 and dialog.get_by_role("listitem").count() == 2
    dialog.get_by_role("group", name="calculator").get_by_role("button", name="Deny").click()
    # Focus moves on to the next pending call.
    focused = demo.page.evaluate("document.activeElement.closest('[role=group]').getAttribute('aria-label')")
    assert focused == "clock, call 2"
    dialog.get_by_role("group", name="clock").get_by_role("button", name="Approve").click()
    s = demo.wait_ended()
    assert s["state"] == "closed", s["error"]
    t = s["tools"]
    assert (t["approved"], t["denied"], t["executed"]) == (1, 1, 1)
    srv = server_conn(demo)
    assert srv["tool_result_errors"] == {"denied_by_user": 1} and srv["tool_results_as_expected"] == 1
    demo.watch.assert_clean()
