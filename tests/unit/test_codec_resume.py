"""What the codecs keep and say for a session that goes on on a new connection (issue 10)."""

from __future__ import annotations

import json

from pyclient.events import ResumptionUpdate, TextDelta, TurnEnded
from pyclient.protocols import SessionConfig
from pyclient.protocols.gemini_live import GeminiLiveCodec
from pyclient.protocols.openai_realtime import OpenAIRealtimeCodec


def ev(obj: dict) -> str:
    return json.dumps(obj)


def response(rid: str, item: str, text: str, status: str = "completed") -> list[str]:
    return [
        ev({"type": "response.created", "response": {"id": rid, "output_modalities": ["text"]}}),
        ev({"type": "response.output_text.delta", "response_id": rid, "item_id": item, "delta": text[:3]}),
        ev({"type": "response.output_text.delta", "response_id": rid, "item_id": item, "delta": text[3:]}),
        ev({"type": "response.done", "response": {"id": rid, "status": status}}),
    ]


def test_openai_replays_the_conversation_as_text_before_the_session_update() -> None:
    c = OpenAIRealtimeCodec(audio_output=False)
    assert c.resume_url("wss://x/v1/realtime") == "wss://x/v1/realtime"  # always: a new session
    c.start(SessionConfig(), "realtime")
    c.text("hello there")
    for message in response("r1", "i1", "first answer"):
        c.decode(message)
    c.decode(response("r2", "i2", "cut short")[0])
    c.decode(response("r2", "i2", "cut short")[1])
    assert not c.at_turn_boundary  # r2 is in flight
    c.link_lost()
    assert c.at_turn_boundary
    out = [json.loads(m) for m in c.start(SessionConfig(), "realtime")]
    assert [m["type"] for m in out] == ["conversation.item.create"] * 2 + ["session.update"]
    user, assistant = out[0]["item"], out[1]["item"]
    assert user["role"] == "user" and user["content"] == [{"type": "input_text", "text": "hello there"}]
    assert assistant == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "first answer"}],
        "id": "i1",
    }
    assert c.replayed_items == 2


def test_openai_history_is_bounded_and_a_close_at_the_limit_is_retried() -> None:
    c = OpenAIRealtimeCodec(audio_output=False)
    for i in range(150):
        for message in response(f"r{i}", f"i{i}", "x" * 1000):
            c.decode(message)
    items = c._replay_items()
    assert len(items) <= 100 and sum(len(i["content"][0]["text"]) for i in items) <= 64 * 1024
    assert items[-1]["id"] == "i149"
    assert c.ended_by_limit(1001, "Your session hit the maximum duration of 60 minutes.")
    assert not c.ended_by_limit(1000, "")
    assert c.is_resume_point(TurnEnded({}))


def test_gemini_resumes_with_the_latest_handle_and_marks_there() -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(), "")
    assert c.resume_url("wss://g") == "wss://g"  # before any turn completed: nothing to lose
    c.decode(ev({"setupComplete": {}}))
    events = c.decode(ev({"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}}))
    assert events == [TextDelta("hi")] and not c.at_turn_boundary
    c.decode(ev({"serverContent": {"turnComplete": True}}))
    # A turn completed but no handle yet: the resume point is the handle, not turnComplete
    assert not c.at_turn_boundary and c.resume_url("wss://g") is None
    update = c.decode(ev({"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}}))
    assert c.is_resume_point(update[0]) and not c.is_resume_point(ResumptionUpdate(None, False))
    assert c.at_turn_boundary
    assert c.resume_url("wss://g") == "wss://g"
    setup = json.loads(c.start(SessionConfig(), "")[0])["setup"]
    assert setup["sessionResumption"] == {"handle": "h-1"}
    assert c.ended_by_limit(1011, "Deadline expired before operation could complete.")
    assert not c.ended_by_limit(1011, "Internal error")
