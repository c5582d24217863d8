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
    # r2 was cut short: the new session is asked for the answer after its configuration
    assert [m["type"] for m in out] == ["conversation.item.create"] * 2 + ["session.update", "response.create"]
    assert c.responses_asked_again == 1 and c.stats()["responses_asked_again"] == 1
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


def test_openai_asks_again_only_for_an_answer_the_loss_cut_short() -> None:
    c = OpenAIRealtimeCodec(audio_output=False)
    c.start(SessionConfig(), "realtime")
    for message in response("r1", "i1", "whole answer"):
        c.decode(message)
    c.link_lost()  # between responses (a renewal): nothing owed
    assert [json.loads(m)["type"] for m in c.start(SessionConfig(), "realtime")][-1] == "session.update"
    # A question sent, its response.create not yet answered when the session is lost: asked again
    sent = [json.loads(m)["type"] for m in c.text("and then?")]
    assert sent == ["conversation.item.create", "response.create"]
    c.link_lost()
    out = [json.loads(m) for m in c.start(SessionConfig(), "realtime")]
    assert [m["type"] for m in out][-2:] == ["session.update", "response.create"]
    assert out[-3]["item"]["content"] == [{"type": "input_text", "text": "and then?"}]
    # One response in flight still holds: a second question waits for that response
    assert [json.loads(m)["type"] for m in c.text("more?")] == ["conversation.item.create"]


def gemini_turn(c: GeminiLiveCodec, text: str, handle: str | None) -> None:
    c.decode(ev({"serverContent": {"modelTurn": {"parts": [{"text": text}]}}}))
    c.decode(ev({"serverContent": {"turnComplete": True}}))
    if handle:
        c.decode(ev({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}))


def resumed(c: GeminiLiveCodec) -> list[str]:
    """A change of connection: the user texts sent again once the new one is set up."""
    c.link_lost()
    c.start(SessionConfig(), "")
    assert c.take_outgoing() == []  # nothing before setupComplete
    c.decode(ev({"setupComplete": {}}))
    return [json.loads(m)["clientContent"]["turns"][0]["parts"][0]["text"] for m in c.take_outgoing()]


def test_gemini_sends_again_the_user_turns_a_handle_may_not_hold() -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(), "")
    c.decode(ev({"setupComplete": {}}))
    c.text("q1")
    gemini_turn(c, "a1", "h-1")  # answered, and a handle after the answer: held
    assert resumed(c) == []
    c.text("q2")
    c.decode(ev({"serverContent": {"modelTurn": {"parts": [{"text": "a2 cut"}]}}}))
    # The loss cut the answer to q2: the session resumes at h-1, which does not hold q2
    assert resumed(c) == ["q2"]
    gemini_turn(c, "a2", None)  # answered again, but no handle yet: q2 is still at stake
    c.text("q3")  # sent before the handle of a2 arrived
    assert resumed(c) == ["q2", "q3"]
    gemini_turn(c, "a2", "h-2")  # q2 and q3 were both sent before this turn began: both held
    assert resumed(c) == []
    # A user turn sent during a model turn is not answered by that turn
    c.decode(ev({"serverContent": {"modelTurn": {"parts": [{"text": "a4..."}]}}}))
    c.text("q5")
    c.decode(ev({"serverContent": {"turnComplete": True}}))
    c.decode(ev({"sessionResumptionUpdate": {"newHandle": "h-3", "resumable": True}}))
    assert resumed(c) == ["q5"]
    assert c.stats()["user_turns_resent"] == 4 and c.stats()["user_turns_kept"] == 1


def test_gemini_keeps_a_bounded_number_of_user_turns() -> None:
    from pyclient.protocols.gemini_live import MAX_KEPT_TURNS

    c = GeminiLiveCodec()
    c.start(SessionConfig(), "")
    c.decode(ev({"setupComplete": {}}))
    for i in range(MAX_KEPT_TURNS + 5):
        c.text(f"q{i}")
    c.text("x" * 300_000)  # larger than the whole bound: sent, not kept
    again = resumed(c)
    assert len(again) == MAX_KEPT_TURNS and again[0] == "q5" and again[-1] == f"q{MAX_KEPT_TURNS + 4}"
    assert c.stats()["user_turns_not_kept"] == 6


def test_gemini_a_turn_that_begins_with_a_tool_call_answers_what_was_sent_before_it() -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(), "")
    c.decode(ev({"setupComplete": {}}))
    c.text("q1")
    c.decode(ev({"toolCall": {"functionCalls": [{"id": "c1", "name": "clock", "args": {}}]}}))
    c.text("q2")  # typed while the tool runs: that turn began before it, so does not answer it
    gemini_turn(c, "a1", "h-1")
    assert resumed(c) == ["q2"]


def test_openai_forgets_the_lost_sessions_audio_items() -> None:
    from pyclient.playback import PlaybackPosition

    c = OpenAIRealtimeCodec()
    c.start(SessionConfig(), "realtime")
    c.decode(ev({"type": "response.created", "response": {"id": "r1", "output_modalities": ["audio"]}}))
    delta = {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": "AAAAAA=="}
    c.decode(ev(delta))
    c.link_lost()
    # A barge-in while the old session's audio plays out: nothing to truncate in the new session
    assert c.cut([PlaybackPosition("i1", 1, 0.04, 24000, "speech_started")]) == []
