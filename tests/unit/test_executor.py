"""ToolExecutor: every call ends in an answer that encodes, and sync tools are timed."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from pyclient.events import ToolCallInvalid, ToolCallReady
from pyclient.frames import FrameDecoder, Sequencer, ToolResultFrame
from pyclient.tools import ToolExecutor, ToolOutcome, ToolRegistry

from .aio import run


def execute(registry: ToolRegistry, name: str, arguments: dict, **kw) -> ToolOutcome:
    return run(ToolExecutor(registry).execute(ToolCallReady("call_1", name, arguments), **kw))


def send_and_decode(outcome: ToolOutcome) -> ToolResultFrame:
    """What the server would read: the outcome encoded as the client sends it."""
    seq = Sequencer()
    wire = seq.tool_result(outcome.call_id, ok=outcome.ok, result=outcome.result, error=outcome.error)
    (frame,) = FrameDecoder().feed_message(memoryview(wire))
    assert isinstance(frame, ToolResultFrame), frame
    return frame


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("\ud800", "surrogate"),
        ({"k": "ok \udfff"}, "surrogate"),
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        ({1, 2}, "set"),
    ],
)
def test_a_result_that_cannot_be_encoded_becomes_a_structured_error(value: object, why: str) -> None:
    reg = ToolRegistry()
    reg.register(lambda: value, name="bad")
    out = execute(reg, "bad", {})
    assert not out.ok and out.error["type"] == "result_not_json", out
    # The error itself always encodes, and the server can read it.
    frame = send_and_decode(out)
    assert frame.call_id == "call_1" and not frame.ok and frame.error["type"] == "result_not_json"


def test_an_error_message_with_a_lone_surrogate_still_encodes() -> None:
    reg = ToolRegistry()

    def boom() -> None:
        raise ValueError("bad \ud800 input")

    reg.register(boom)
    out = execute(reg, "boom", {})
    frame = send_and_decode(out)
    assert frame.error["type"] == "tool_error" and "\\ud800" in frame.error["message"]


def test_a_result_larger_than_the_peer_accepts_is_refused_before_sending() -> None:
    reg = ToolRegistry()
    reg.register(lambda n: "x" * n, name="big")
    ok = execute(reg, "big", {"n": 1000}, max_payload=2000)
    assert ok.ok and ok.result == "x" * 1000
    out = execute(reg, "big", {"n": 1_048_576}, max_payload=1_048_576)
    assert not out.ok and out.error["type"] == "result_too_large"
    assert "accepts at most 1048576" in out.error["message"]
    assert len(json.dumps(out.error)) < 1000


def test_invalid_calls_are_answered_with_their_error() -> None:
    out = run(
        ToolExecutor(ToolRegistry()).execute(
            ToolCallInvalid("call_2", "x", {"type": "invalid_arguments", "message": "bad \ud800"})
        )
    )
    assert not out.ok and send_and_decode(out).error["type"] == "invalid_arguments"


def test_sync_tools_are_timed_and_flagged_past_their_timeout() -> None:
    reg = ToolRegistry()

    def slow() -> str:
        time.sleep(0.05)
        return "done"

    reg.register(slow, timeout=0.01)
    out = execute(reg, "slow", {})
    # A sync tool cannot be stopped: it finishes, its time is measured and it is flagged.
    assert out.ok and out.result == "done"
    assert out.sync and out.blocking_ms >= 50 and out.over_timeout


def test_async_tools_are_not_blocking_and_can_time_out() -> None:
    reg = ToolRegistry()

    async def waits() -> str:
        await asyncio.sleep(10)
        return "never"

    reg.register(waits, timeout=0.05)
    out = execute(reg, "waits", {})
    assert not out.ok and out.error["type"] == "timeout"
    assert not out.sync and out.blocking_ms == 0


def test_a_sync_tool_that_raises_is_still_timed() -> None:
    reg = ToolRegistry()

    def fails() -> None:
        time.sleep(0.02)
        raise RuntimeError("no")

    reg.register(fails)
    out = execute(reg, "fails", {})
    assert out.error["type"] == "tool_error" and out.sync and out.blocking_ms >= 20


def test_arguments_are_validated_against_the_schema_and_nothing_runs() -> None:
    reg = ToolRegistry()
    ran = []

    def book(city: str, nights: int, smoking: bool = False) -> str:
        ran.append(city)
        return "booked"

    reg.register(book)
    out = execute(reg, "book", {"city": 3, "nights": "two"})
    assert not out.ok and out.error["type"] == "invalid_arguments"
    assert "city: expected string" in out.error["message"] and "nights" in out.error["message"]
    assert execute(reg, "book", {"city": "Oslo", "nights": 2, "pool": True}).error["type"] == "invalid_arguments"
    assert ran == []
    assert execute(reg, "book", {"city": "Oslo", "nights": 2}).result == "booked" and ran == ["Oslo"]
