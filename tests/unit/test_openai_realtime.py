"""OpenAI Realtime GA codec: connecting, decoding a whole session, and what it sends.

Sources (read at these commits; fixtures: tests/unit/fixtures/openai_realtime/README.md):
- openai/openai-node 7b7d6ca71130d37ec09792c50056b47861f2eccf: ``src/realtime/websocket.ts``
  (subprotocols ``realtime`` + ``openai-insecure-api-key.<key>``), ``src/resources/realtime/
  realtime.ts`` (every event: ``ConversationItemTruncateEvent.audio_end_ms``, ``ResponseCancelEvent``,
  ``RealtimeConversationItemFunctionCallOutput.output`` a string, GA session fields).
- openai/openai-agents-js 6d0c61a5f62a5ed8142996a25b33446c810f84b3: ``packages/agents-realtime/src/
  openaiRealtimeWebsocket.ts`` (``ek_`` keys only in a browser unless ``useInsecureApiKey``;
  ``audio_end_ms`` must be an integer), ``openaiRealtimeBase.ts`` (GA ``session.update``:
  ``type: "realtime"``, ``output_modalities``, ``audio.input.format {type: "audio/pcm", rate: 24000}``,
  ``transcription {model: "gpt-4o-mini-transcribe"}``), ``responseCreateSequencer.ts`` (one response
  in flight), ``openaiRealtimeEvents.ts`` (server event schemas, GA renames).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.errors import UsageError
from pyclient.events import (
    AudioChunk,
    Ignored,
    Interrupted,
    ProtocolErrorEvent,
    ResponseDone,
    ServerError,
    SessionReady,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
    UserTranscript,
)
from pyclient.playback import PlaybackPosition
from pyclient.protocols.base import Capabilities, SessionConfig, ToolSpec
from pyclient.protocols.openai_realtime import DEFAULT_MODEL, OpenAIRealtimeCodec
from pyclient.schema import tool_schema
from pyclient.tools import ToolOutcome

FIXTURES = Path(__file__).parent / "fixtures" / "openai_realtime"


def lines(name: str) -> list[str]:
    return [ln for ln in (FIXTURES / name).read_text(encoding="utf-8").split("\n") if ln]


def decode_all(codec: OpenAIRealtimeCodec, messages: list[str]) -> list[Any]:
    out: list[Any] = []
    for m in messages:
        out += codec.decode(m)
    return out


def sent(messages: list[str | bytes]) -> list[dict[str, Any]]:
    assert all(isinstance(m, str) for m in messages), "OpenAI takes text frames only"
    return [json.loads(m) for m in messages]


def ev(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, "event_id": "e", **fields})


def weather(city: str, unit: str = "celsius") -> str:
    "The weather in a city."
    return city


WEATHER = ToolSpec("get_weather", "The weather in a city.", tool_schema(weather))


# --------------------------------------------------------------------------- connecting


def test_class_attributes() -> None:
    assert OpenAIRealtimeCodec.name == "openai-realtime"
    assert OpenAIRealtimeCodec.capabilities == Capabilities(streamed_tool_arguments=True, truncate=True)
    assert OpenAIRealtimeCodec.input_audio_rate == 24000


def test_url_rules() -> None:
    c = OpenAIRealtimeCodec()
    assert c.url("") == f"wss://api.openai.com/v1/realtime?model={DEFAULT_MODEL}"
    assert c.url("default", model="gpt-realtime-mini") == "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    assert c.url("ws://127.0.0.1:8000/openai?scenario=chat") == (
        f"ws://127.0.0.1:8000/openai?scenario=chat&model={DEFAULT_MODEL}"
    )
    assert c.url("ws://h/v1/realtime?model=m1&x=1") == "ws://h/v1/realtime?model=m1&x=1"  # the URL's model kept
    assert c.url("ws://h/v1/realtime?model=m1&x=1", model="m2") == "ws://h/v1/realtime?x=1&model=m2"
    assert OpenAIRealtimeCodec(model="m3").url("") == "wss://api.openai.com/v1/realtime?model=m3"


def test_subprotocols_take_only_ephemeral_keys() -> None:
    c = OpenAIRealtimeCodec()
    assert c.subprotocols(token="ek_68af2b") == ["realtime", "openai-insecure-api-key.ek_68af2b"]
    with pytest.raises(UsageError, match=r"ephemeral client secret \(ek_"):
        c.subprotocols(token="sk-proj-abcdef")
    assert OpenAIRealtimeCodec(allow_long_lived_key=True).subprotocols(token="sk-proj-abcdef") == [
        "realtime",
        "openai-insecure-api-key.sk-proj-abcdef",
    ]
    assert c.subprotocols() == ["realtime"]  # a local server that wants no key
    with pytest.raises(UsageError):
        c.subprotocols(token="ek_with space")


def test_never_the_beta() -> None:
    c = OpenAIRealtimeCodec()
    offered = c.subprotocols(token="ek_1")
    first = c.start(SessionConfig(tools=(WEATHER,)), "realtime")
    assert not any("beta" in p for p in offered)
    assert all("beta" not in m.lower() for m in first)  # type: ignore[union-attr]


def test_session_update_ga_shape() -> None:
    c = OpenAIRealtimeCodec()
    config = SessionConfig(tools=(WEATHER,), model="gpt-realtime", instructions="Be brief.", voice="marin")
    assert sent(c.start(config, "realtime")) == [
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "turn_detection": {"type": "server_vad"},
                    },
                    "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
                },
                "instructions": "Be brief.",
                "tools": [
                    {
                        "type": "function",
                        "name": "get_weather",
                        "description": "The weather in a city.",
                        "parameters": WEATHER.parameters,
                    }
                ],
                "tool_choice": "auto",
            },
        }
    ]
    assert c.tool_schemas == {"get_weather": WEATHER.parameters}


def test_session_update_without_tools_or_turn_detection() -> None:
    c = OpenAIRealtimeCodec(turn_detection=None, transcription_model=None, audio_output=False)
    (msg,) = sent(c.start(SessionConfig(), "realtime"))
    session = msg["session"]
    assert "tools" not in session and "tool_choice" not in session and "instructions" not in session
    assert session["output_modalities"] == ["text"]
    assert session["audio"]["input"] == {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}


# --------------------------------------------------------------------------- a whole session


def reference_audio(messages: list[str]) -> tuple[int, str]:
    """Samples and sha256 of the audio deltas, computed without the codec."""
    sha = hashlib.sha256()
    samples = 0
    for m in messages:
        event = json.loads(m)
        if event["type"] in ("response.output_audio.delta", "response.audio.delta"):
            pcm = base64.b64decode(event["delta"])
            sha.update(pcm)
            samples += len(pcm) // 2
    return samples, sha.hexdigest()


def test_whole_session_decodes_into_the_expected_events() -> None:
    c = OpenAIRealtimeCodec()
    messages = lines("session.jsonl")
    events = decode_all(c, messages)

    assert isinstance(events[0], SessionReady) and events[0].fields["id"] == "sess_C9G5QPteg4UIbotdKLoYQ"
    assert (
        "".join(e.text for e in events if isinstance(e, TextDelta))
        == "It's 18 degrees and sunny in Paris.Anything else?"
    )
    assert [e.text for e in events if isinstance(e, UserTranscript)] == ["What's the weather", " in Paris?"]

    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert all(e.sample_rate == 24000 for e in audio)
    samples, sha = reference_audio(messages)
    assert samples == 3 * 4800 + 2 * 2400
    assert sum(e.samples for e in audio) == samples
    assert hashlib.sha256(b"".join(bytes(e.pcm) for e in audio)).hexdigest() == sha
    # the end of each item: one final chunk (from output_audio.done, or response.done when cancelled)
    assert [(e.item_id, e.samples) for e in audio if e.final] == [("item_asst_002", 0), ("item_asst_003", 0)]
    assert [e.item_id for e in audio if not e.final] == ["item_asst_002"] * 3 + ["item_asst_003"] * 2

    tools = [e for e in events if isinstance(e, (ToolCallStarted, ToolCallArgumentsDelta, ToolCallReady))]
    assert tools == [
        ToolCallStarted("call_wx_001", "get_weather"),
        ToolCallArgumentsDelta("call_wx_001", '{"city":'),
        ToolCallArgumentsDelta("call_wx_001", ' "Paris",'),
        ToolCallArgumentsDelta("call_wx_001", ' "unit": "celsius"}'),
        ToolCallReady("call_wx_001", "get_weather", {"city": "Paris", "unit": "celsius"}),  # once, not twice
    ]
    assert [e for e in events if isinstance(e, Interrupted)] == [Interrupted(None, "speech_started")] * 2
    done = [e.fields for e in events if isinstance(e, ResponseDone)]
    assert [(d["id"], d["status"]) for d in done] == [
        ("resp_001", "completed"),
        ("resp_002", "completed"),
        ("resp_003", "cancelled"),
    ]
    assert sum(isinstance(e, TurnEnded) for e in events) == 3
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert [u.kind for u in usage] == ["usage", "rate_limits", "usage", "usage"]
    assert usage[1].fields["rate_limits"][0] == {
        "name": "requests",
        "limit": 5000,
        "remaining": 4999,
        "reset_seconds": 0.012,
    }
    assert [e for e in events if isinstance(e, Ignored)] == [Ignored("response.future_event")]
    assert [e for e in events if isinstance(e, ServerError)] == [
        ServerError("response_cancel_not_active", "Cancellation failed: no active response found")
    ]
    assert not [e for e in events if isinstance(e, ProtocolErrorEvent)]

    stats = c.stats()
    assert stats["events"] == len(messages)
    assert stats["ignored"] == 1 and stats["bad_json"] == 0
    assert stats["by_type"]["response.output_audio.delta"] == 5
    assert stats["usage"] == {"input_tokens": 3 * 132, "output_tokens": 3 * 121, "total_tokens": 3 * 253}
    assert stats["rate_limits"][1]["name"] == "tokens"
    assert stats["responses_in_flight"] == 0
    assert stats["audio_samples"] == samples


def test_beta_event_names_are_accepted() -> None:
    c = OpenAIRealtimeCodec()
    events = decode_all(c, lines("beta_names.jsonl"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello from a beta server.Now in audio."
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert sum(e.samples for e in audio) == 2400 and audio[-1].final
    assert not [e for e in events if isinstance(e, (Ignored, ProtocolErrorEvent))]


def test_one_transcript_source_per_modality() -> None:
    c = OpenAIRealtimeCodec()  # audio output: the transcript renders, output_text is dropped
    both = [
        ev("response.output_audio_transcript.delta", response_id="r", item_id="i", delta="spoken"),
        ev("response.output_text.delta", response_id="r", item_id="i", delta="written"),
    ]
    assert decode_all(c, both) == [TextDelta("spoken")]
    assert c.stats()["text_dropped"] == 1
    # a response that says it is text-only renders its text
    c.decode(ev("response.created", response={"id": "r2", "output_modalities": ["text"]}))
    got = decode_all(c, [m.replace('"r"', '"r2"') for m in both])
    assert got == [TextDelta("written")]
    # a .done renders the full text only for an item that had no deltas
    done = ev("response.output_audio_transcript.done", response_id="r", item_id="i", transcript="spoken")
    assert c.decode(done) == []
    done = ev("response.output_audio_transcript.done", response_id="r", item_id="j", transcript="whole")
    assert c.decode(done) == [TextDelta("whole")]


def test_user_transcript_completed_only_without_deltas() -> None:
    c = OpenAIRealtimeCodec()
    done = ev("conversation.item.input_audio_transcription.completed", item_id="u", content_index=0, transcript="Hi")
    assert c.decode(done) == [UserTranscript("Hi")]


# --------------------------------------------------------------------------- tool calls


def call_events(call_id: str, item_id: str, response_id: str, arguments: str, name: str = "get_weather") -> list[str]:
    return [
        ev(
            "response.output_item.added",
            response_id=response_id,
            item={"id": item_id, "type": "function_call", "name": name, "call_id": call_id, "arguments": ""},
        ),
        ev(
            "response.function_call_arguments.delta",
            response_id=response_id,
            item_id=item_id,
            call_id=call_id,
            delta=arguments,
        ),
        ev(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            call_id=call_id,
            name=name,
            arguments=arguments,
        ),
        ev(
            "response.output_item.done",
            response_id=response_id,
            item={"id": item_id, "type": "function_call", "name": name, "call_id": call_id, "arguments": arguments},
        ),
    ]


def created(rid: str) -> str:
    return ev("response.created", response={"id": rid, "status": "in_progress"})


def done(rid: str, status: str = "completed") -> str:
    return ev("response.done", response={"id": rid, "status": status})


def started_codec() -> OpenAIRealtimeCodec:
    c = OpenAIRealtimeCodec()
    c.start(SessionConfig(tools=(WEATHER,)), "realtime")
    return c


def test_arguments_are_validated_against_the_tool_schema() -> None:
    c = started_codec()
    events = decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": 3, "planet": "Mars"}')])
    (invalid,) = [e for e in events if isinstance(e, (ToolCallReady, ToolCallInvalid))]
    assert invalid == ToolCallInvalid(
        "c1",
        "get_weather",
        {
            "type": "invalid_arguments",
            "message": "get_weather: city: expected string, got int; planet: unexpected property",
        },
    )
    bad_json = decode_all(c, call_events("c2", "i2", "r", '{"city": '))
    assert [e.error["type"] for e in bad_json if isinstance(e, ToolCallInvalid)] == ["invalid_arguments"]
    unknown = decode_all(c, call_events("c3", "i3", "r", '{"x": 1}', name="other_tool"))
    assert ToolCallReady("c3", "other_tool", {"x": 1}) in unknown  # no schema known: the executor decides


def test_oversize_arguments_fail_once_and_swallow_the_rest() -> None:
    c = OpenAIRealtimeCodec(max_argument_bytes=10)
    events = decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": "Paris"}')])
    assert [type(e).__name__ for e in events] == ["ToolCallStarted", "ToolCallInvalid"]
    assert events[1].error["type"] == "arguments_too_large"


def result(call_id: str, value: Any = "sunny") -> ToolOutcome:
    return ToolOutcome(call_id, "get_weather", True, value)


def types_of(messages: list[str | bytes]) -> list[str]:
    return [m["type"] for m in sent(messages)]


def test_tool_result_is_a_function_call_output_then_one_response_create() -> None:
    c = started_codec()
    decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": "Paris"}'), done("r")])
    out = sent(c.tool_result(result("c1", {"temp": 18})))
    assert out[0] == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c1", "output": '{"temp":18}'},
    }
    assert out[1]["type"] == "response.create" and len(out) == 2
    failed = ToolOutcome("c9", "get_weather", False, error={"type": "tool_error", "message": "boom"})
    item = sent(c.tool_result(failed))[0]["item"]
    assert json.loads(item["output"]) == {"error": {"type": "tool_error", "message": "boom"}}


def test_response_create_waits_for_all_results_of_the_response() -> None:
    c = started_codec()
    decode_all(
        c,
        [
            created("r"),
            *call_events("c1", "i1", "r", '{"city": "Paris"}'),
            *call_events("c2", "i2", "r", '{"city": "Rome"}'),
            done("r"),
        ],
    )
    assert types_of(c.tool_result(result("c1"))) == ["conversation.item.create"]
    assert types_of(c.tool_result(result("c2"))) == ["conversation.item.create", "response.create"]
    assert c.stats()["response_create_sent"] == 1


def test_results_before_response_done_ask_at_response_done() -> None:
    c = started_codec()
    decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": "Paris"}')])
    assert types_of(c.tool_result(result("c1"))) == ["conversation.item.create"]
    assert c.take_outgoing() == []
    c.decode(done("r"))
    assert types_of(c.take_outgoing()) == ["response.create"]
    assert c.take_outgoing() == []


def test_never_two_responses_in_flight() -> None:
    c = started_codec()
    decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": "Paris"}'), done("r")])
    c.decode(created("vad"))  # the server started a response of its own (server VAD)
    assert types_of(c.tool_result(result("c1"))) == ["conversation.item.create"]  # waits
    assert types_of(c.text("and tomorrow?")) == ["conversation.item.create"]  # coalesces
    c.decode(done("vad"))
    assert types_of(c.take_outgoing()) == ["response.create"]  # one, for both requests
    assert types_of(c.text("hello")) == ["conversation.item.create"]  # ours is not created yet
    c.decode(created("r2"))
    c.decode(done("r2"))
    assert types_of(c.take_outgoing()) == ["response.create"]
    assert c.stats()["response_create_sent"] == 2


def test_a_refused_response_create_is_retried_once_after_the_active_response() -> None:
    c = started_codec()
    (_, create) = sent(c.text("hi"))
    refusal = {
        "type": "conversation_already_has_active_response",
        "code": "conversation_already_has_active_response",
        "message": "Conversation already has an active response in progress: resp_x",
        "event_id": create["event_id"],
    }
    events = c.decode(ev("error", error=refusal))
    assert events == [ServerError("conversation_already_has_active_response", refusal["message"])]
    assert c.take_outgoing() == []  # nothing in flight known, but it is retried only after a done
    c.decode(created("resp_x"))
    c.decode(done("resp_x"))
    (retry,) = sent(c.take_outgoing())
    assert retry["type"] == "response.create" and retry["event_id"] != create["event_id"]


def test_a_refusal_that_arrives_after_a_server_response_started_is_still_ours() -> None:
    c = started_codec()
    (_, create) = sent(c.text("hi"))
    c.decode(created("vad"))  # the server's own response took the slot before our create arrived
    refusal = {"code": "conversation_already_has_active_response", "message": "busy", "event_id": create["event_id"]}
    c.decode(ev("error", error=refusal))
    assert c.take_outgoing() == []
    c.decode(done("vad"))
    assert types_of(c.take_outgoing()) == ["response.create"]


def test_a_call_whose_response_ends_first_is_withdrawn() -> None:
    c = started_codec()
    events = decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"ci')[:2], done("r", "cancelled")])
    assert ToolCallCancelled(("c1",)) in events
    assert c.tool_result(result("c1")) == []
    assert c.take_outgoing() == []


def test_a_cancelled_response_withdraws_its_complete_calls_still_unanswered() -> None:
    # A barge-in cancels the response while one call waits (for approval, or a slow tool) and
    # another was answered: only the waiting one is withdrawn, and no response.create follows.
    c = started_codec()
    calls = call_events("c1", "i1", "r", '{"city": "Oslo"}') + call_events("c2", "i2", "r", '{"city": "Rome"}')
    decode_all(c, [created("r"), *calls])
    assert types_of(c.tool_result(result("c2"))) == ["conversation.item.create"]
    events = decode_all(c, [done("r", "cancelled")])
    assert ToolCallCancelled(("c1",)) in events
    assert c.tool_result(result("c1")) == []  # too late: nothing is sent
    assert c.take_outgoing() == []


def test_a_completed_response_withdraws_nothing() -> None:
    c = started_codec()
    events = decode_all(c, [created("r"), *call_events("c1", "i1", "r", '{"city": "Oslo"}'), done("r")])
    assert not any(isinstance(e, ToolCallCancelled) for e in events)
    assert types_of(c.tool_result(result("c1"))) == ["conversation.item.create", "response.create"]


# --------------------------------------------------------------------------- audio, text, cut


def test_microphone_audio() -> None:
    c = OpenAIRealtimeCodec()
    pcm = bytes(range(256)) * 4
    (msg,) = sent(c.audio(pcm, 24000, 1))
    assert msg == {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    with pytest.raises(UsageError, match="24000 Hz, got 16000 Hz"):
        c.audio(pcm, 16000, 1)


def test_audio_end_with_and_without_server_vad() -> None:
    assert OpenAIRealtimeCodec().audio_end(1, 24000, 24000) == []
    manual = OpenAIRealtimeCodec(turn_detection=None)
    assert types_of(manual.audio_end(1, 24000, 24000)) == ["input_audio_buffer.commit", "response.create"]
    assert manual.audio_end(2, 0, 24000) == []  # nothing to commit


def test_typed_text() -> None:
    (item, create) = sent(OpenAIRealtimeCodec().text("hello"))
    assert item == {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
    }
    assert create["type"] == "response.create"


def audio_of(rid: str, item: str, samples: int) -> str:
    data = base64.b64encode(b"\x01\x00" * samples).decode()
    return ev("response.output_audio.delta", response_id=rid, item_id=item, content_index=0, delta=data)


def pos(item: Any, played: int, rate: int = 24000, reason: str = "client") -> PlaybackPosition:
    """Where playback stood at a cut; ``reason`` "client": the page's interrupt(), "server":
    the server's (speech_started under server VAD)."""
    return PlaybackPosition(item, played, played * 1000 / rate, rate, reason)


def test_a_cut_the_server_started_truncates_without_cancelling() -> None:
    # Under server VAD the server already cancelled: a response.cancel would only draw
    # response_cancel_not_active (agents-js does the same).
    c = OpenAIRealtimeCodec()
    decode_all(c, [created("r2"), audio_of("r2", "now", 24000)])
    out = sent(c.cut([pos("now", 7201, reason="server")]))
    assert out == [{"type": "conversation.item.truncate", "item_id": "now", "content_index": 0, "audio_end_ms": 300}]


def test_cut_truncates_only_cut_items_with_integer_ms() -> None:
    c = OpenAIRealtimeCodec()
    decode_all(c, [created("r1"), audio_of("r1", "old", 4800), done("r1"), created("r2"), audio_of("r2", "now", 24000)])
    out = sent(c.cut([pos("old", 4800), pos("now", 7201), pos("unknown", 10)]))
    assert out == [
        {"type": "response.cancel", "response_id": "r2"},
        {"type": "conversation.item.truncate", "item_id": "now", "content_index": 0, "audio_end_ms": 300},
    ]
    assert isinstance(out[1]["audio_end_ms"], int)
    assert c.cut([pos("now", 100)]) == []  # already truncated: never twice
    assert c.stats()["truncates_sent"] == 1 and c.stats()["cancels_sent"] == 1


def test_cut_after_the_response_is_done_sends_no_cancel() -> None:
    c = OpenAIRealtimeCodec()
    decode_all(c, [created("r1"), audio_of("r1", "a", 4800), done("r1")])
    assert types_of(c.cut([pos("a", 0)])) == ["conversation.item.truncate"]
    assert c.cut([]) == []


# --------------------------------------------------------------------------- receive path details


def test_droppable_only_audio_deltas_from_the_first_characters() -> None:
    c = OpenAIRealtimeCodec()
    assert c.droppable(audio_of("r", "i", 10))
    assert c.droppable(ev("response.audio.delta", delta="AAAA").encode())
    assert not c.droppable(ev("response.output_audio_transcript.delta", delta="hi"))
    assert not c.droppable(ev("response.done", response={}))
    nested = json.dumps({"type": "conversation.item.added", "item": {"type": "response.output_audio.delta"}})
    assert not c.droppable(nested)
    assert not c.droppable('{"event_id": "' + "x" * 300 + '", "type": "response.output_audio.delta"}')
    assert not c.droppable(b"\xff\xfe")


def test_binary_frames_and_bad_input_are_counted() -> None:
    c = OpenAIRealtimeCodec()
    assert c.decode(ev("session.created", session={}).encode()) == [SessionReady({})]
    assert isinstance(c.decode("{"), list) and c.stats()["bad_json"] == 1
    assert isinstance(c.decode(b"\xff")[0], ProtocolErrorEvent) and c.stats()["bad_json"] == 2
    assert isinstance(c.decode('{"type": 5}')[0], ProtocolErrorEvent)
    assert isinstance(c.decode(ev("response.output_audio.delta", item_id="i", delta="!!!"))[0], ProtocolErrorEvent)
    assert c.decode(ev("response.output_audio.delta", item_id="i", delta="")) == []
    assert c.stats()["protocol_errors"] == 2


def test_odd_audio_bytes_are_trimmed_to_whole_samples() -> None:
    (chunk,) = OpenAIRealtimeCodec().decode(ev("response.output_audio.delta", item_id="i", delta="AAEC"))
    assert chunk.pcm == b"\x00\x01" and chunk.samples == 1


def test_counted_types_are_bounded() -> None:
    c = OpenAIRealtimeCodec()
    for i in range(200):
        c.decode(ev(f"future.type_{i}"))
    by_type = c.stats()["by_type"]
    assert len(by_type) <= 65 and by_type["other"] == 200 - 64
    assert c.stats()["ignored"] == 200


JSONISH = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda t, d: json.dumps({"type": t, **d}),
        st.sampled_from(
            [
                "response.output_audio.delta",
                "response.done",
                "response.created",
                "response.output_item.added",
                "response.output_item.done",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "error",
                "session.updated",
                "conversation.item.input_audio_transcription.completed",
                "rate_limits.updated",
                "x",
            ]
        ),
        st.dictionaries(
            st.sampled_from(
                ["delta", "item_id", "response_id", "call_id", "item", "response", "error", "arguments", "name"]
            ),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                max_leaves=8,
            ),
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(JSONISH, st.binary(max_size=80)), max_size=12))
def test_malformed_input_never_raises(messages: list[str | bytes]) -> None:
    c = started_codec()
    for m in messages:
        events = c.decode(m)
        assert isinstance(events, list)
        c.droppable(m)
        c.take_outgoing()
    stats = c.stats()
    assert stats["events"] + stats["bad_json"] + stats["protocol_errors"] >= 0
    assert stats["responses_in_flight"] >= 0


class FakeServer:
    """A server that answers response.create the way OpenAI does, and may start responses itself."""

    def __init__(self, codec: OpenAIRealtimeCodec) -> None:
        self.codec = codec
        self.active: str | None = None
        self.inbox: list[dict[str, Any]] = []  # client messages not yet processed
        self.n = 0
        # what an observer of the wire knows: responses created and not done, creates unanswered
        self.seen_active: set[str] = set()
        self.unanswered: set[str] = set()
        self.creates = 0

    def send(self, messages: list[str | bytes]) -> None:
        for m in sent(messages):
            if m["type"] == "response.create":
                assert not self.seen_active and not self.unanswered, "response.create while one is in flight"
                self.creates += 1
                self.unanswered.add(m["event_id"])
            self.inbox.append(m)

    def deliver(self, event: str) -> None:
        data = json.loads(event)
        if data["type"] == "response.created":
            self.seen_active.add(data["response"]["id"])
            self.unanswered.clear()
        elif data["type"] == "response.done":
            self.seen_active.discard(data["response"]["id"])
        elif data["type"] == "error":
            self.unanswered.discard(data["error"].get("event_id"))
        self.codec.decode(event)
        self.send(self.codec.take_outgoing())

    def start(self) -> None:
        self.n += 1
        self.active = f"resp_{self.n}"
        self.deliver(created(self.active))

    def step(self, action: str) -> None:
        if action == "text":
            self.send(self.codec.text("hi"))
        elif action == "vad" and self.active is None:
            self.start()
        elif action == "finish" and self.active is not None:
            rid, self.active = self.active, None
            self.deliver(done(rid))
        elif action == "process" and self.inbox:
            m = self.inbox.pop(0)
            if m["type"] == "response.create":
                if self.active is None:
                    self.start()
                else:
                    error = {"code": "conversation_already_has_active_response", "message": "busy"}
                    self.deliver(ev("error", error={**error, "event_id": m["event_id"]}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["text", "vad", "finish", "process"]), max_size=40))
def test_one_response_in_flight_against_a_server(actions: list[str]) -> None:
    server = FakeServer(started_codec())
    for action in actions:
        server.step(action)
    for _ in range(100):  # let everything settle: every request ends in a response
        if server.inbox:
            server.step("process")
        elif server.active is not None:
            server.step("finish")
        else:
            break
    if "text" in actions:
        assert server.creates >= 1
    assert server.codec.stats()["response_create_waiting"] is False  # nothing owed is stuck
    assert server.codec.stats()["responses_in_flight"] == 0


def test_cut_skips_unsendable_or_repeated_items_and_responses_in_flight_are_bounded() -> None:
    # Found by bench/fuzz.py: cut raised EncodeError for an item id with a lone surrogate, a
    # repeated item got two truncates, and responses never done grew without bound.
    c = OpenAIRealtimeCodec()
    c.decode(r'{"type":"response.output_audio.delta","response_id":"r","item_id":"i\ud800","delta":"AAAAAAAA"}')
    assert c.cut([pos("i\ud800", 1)]) == []
    decode_all(c, [created("r2"), audio_of("r2", "now", 24000)])
    assert types_of(c.cut([pos("now", 1, reason="server"), pos("now", 2, reason="server")])) == [
        "conversation.item.truncate"
    ]
    for i in range(1000):
        c.decode(json.dumps({"type": "response.created", "response": {"id": f"r{i}"}}))
    assert c.stats()["responses_in_flight"] <= 257


def test_a_response_id_that_is_not_valid_unicode_is_never_cancelled() -> None:
    # Found by the fuzzer: a page's interrupt() sent response.cancel with a lone surrogate in
    # the response id, and the encoder raised. The item is still truncated.
    c = OpenAIRealtimeCodec()
    decode_all(c, [created("r\udfff"), audio_of("r\udfff", "now", 2400)])
    out = sent(c.cut([pos("now", 1200)]))
    assert [m["type"] for m in out] == ["conversation.item.truncate"]
