"""The Pipecat codec: frames built with Pipecat's own ``frames_pb2`` (the reference) in, the
events and messages a Pipecat bot expects out."""

from __future__ import annotations

import array
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.errors import UsageError
from pyclient.events import (
    AudioChunk,
    ControlMessage,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    SessionReady,
    TextDelta,
    ToolCallCancelled,
    ToolCallReady,
    ToolCallStarted,
    UserTranscript,
)
from pyclient.protocols import SessionConfig, ToolSpec, get_codec
from pyclient.protocols.pipecat import RTVI_VERSION, PipecatCodec
from pyclient.tools import ToolOutcome
from tests.pipecat_bot.harness import PIPECAT_MISSING, load_frames_pb2

frames_pb2 = load_frames_pb2()
pytestmark = pytest.mark.skipif(frames_pb2 is None, reason=PIPECAT_MISSING)

CALC = ToolSpec("calculator", "Arithmetic.", {"type": "object", "properties": {"expression": {"type": "string"}}})


def codec() -> PipecatCodec:
    c = get_codec("pipecat")
    assert isinstance(c, PipecatCodec)
    c.start(SessionConfig(tools=(CALC,)), "")
    return c


def rtvi(type_: str, **data: Any) -> bytes:
    f = frames_pb2.Frame()
    f.message.data = json.dumps({"label": "rtvi-ai", "type": type_, "id": "x", **({"data": data} if data else {})})
    return f.SerializeToString()


def audio(samples: int, rate: int = 24000, channels: int = 1, value: int = 1) -> bytes:
    f = frames_pb2.Frame()
    f.audio.audio = array.array("h", [value] * samples * channels).tobytes()
    f.audio.sample_rate, f.audio.num_channels, f.audio.name = rate, channels, "TTSAudioRawFrame#1"
    return f.SerializeToString()


def interruption() -> bytes:
    f = frames_pb2.Frame()
    f.interruption.SetInParent()
    return f.SerializeToString()


def sent(message: bytes) -> tuple[str, Any]:
    """What the bot reads: the Frame's oneof and, for a MessageFrame, the RTVI JSON."""
    f = frames_pb2.Frame.FromString(message)
    which = f.WhichOneof("frame")
    return which, json.loads(f.message.data) if which == "message" else f.audio


def decode_all(c: PipecatCodec, messages: list[bytes]) -> list[Any]:
    return [e for m in messages for e in c.decode(m)]


def test_client_ready_first_and_bot_ready_makes_it_ready() -> None:
    c = PipecatCodec()
    (msg,) = c.start(SessionConfig(), "")
    kind, body = sent(msg)
    assert kind == "message" and body["label"] == "rtvi-ai" and body["type"] == "client-ready"
    assert body["data"]["version"] == RTVI_VERSION and body["data"]["about"]["library"] == "pyclient"
    assert not c.ready
    events = c.decode(rtvi("bot-ready", version="2.2.0", about={"library": "pipecat-ai"}))
    assert isinstance(events[0], SessionReady) and c.ready


def test_the_llm_text_renders_once_and_spoken_copies_do_not() -> None:
    c = codec()
    # A bot that never reports LLM text: its spoken text is the transcript.
    events = decode_all(c, [rtvi("bot-tts-text", text="Spoken"), rtvi("bot-output", text=" words")])
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Spoken", " words"]
    # Once the LLM's words are seen, they are the source, in every later turn too, whatever
    # arrives first (TTS of an earlier response may still be speaking).
    events = decode_all(
        c,
        [
            rtvi("bot-llm-started"),
            rtvi("bot-llm-text", text="Hello"),
            rtvi("bot-tts-text", text="Hello"),
            rtvi("bot-llm-text", text=" café 🙂"),
            rtvi("bot-transcription", text="Hello café 🙂"),
            rtvi("bot-llm-started"),
            rtvi("bot-output", text="late speech of the last answer"),
            rtvi("bot-llm-text", text=" More."),
        ],
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", " café 🙂", " More."]
    assert c.stats()["text_dropped"] == 3 and c.stats()["llm_text_seen"] is True


def test_audio_goes_to_the_ring_at_its_rate_and_stereo_is_downmixed() -> None:
    c = codec()
    (chunk,) = c.decode(audio(960, 24000))
    assert isinstance(chunk, AudioChunk) and (chunk.item_id, chunk.sample_rate, chunk.samples) == (1, 24000, 960)
    assert bytes(chunk.pcm) == array.array("h", [1] * 960).tobytes()
    f = frames_pb2.Frame()
    f.audio.audio = array.array("h", [1000, -3000] * 4).tobytes()
    f.audio.sample_rate, f.audio.num_channels = 16000, 2
    (stereo,) = c.decode(f.SerializeToString())
    assert stereo.samples == 4 and array.array("h", stereo.pcm).tolist() == [-1000] * 4
    assert c.droppable(audio(10)) and not c.droppable(rtvi("bot-ready"))
    assert c.audio_samples(audio(480, channels=2)) == 480


def test_one_barge_in_cuts_one_utterance_once_and_drops_its_late_audio() -> None:
    c = codec()
    decode_all(c, [rtvi("bot-started-speaking"), audio(960)])
    events = decode_all(c, [interruption(), rtvi("user-started-speaking"), rtvi("bot-interrupted")])
    cuts = [e for e in events if isinstance(e, Interrupted)]
    assert [(e.item_id, e.reason) for e in cuts] == [(1, "InterruptionFrame")]  # one cut, not three
    assert c.decode(audio(960)) == []  # sent before the bot saw the cut: dropped, counted
    assert c.stats()["stale_samples_dropped"] == 960
    # The next turn: a new utterance plays; its own opening interruption cuts nothing.
    assert decode_all(c, [interruption(), rtvi("bot-interrupted")]) == []
    events = decode_all(c, [rtvi("bot-llm-started"), rtvi("bot-tts-started"), audio(480)])
    (chunk,) = [e for e in events if isinstance(e, AudioChunk)]
    assert chunk.item_id == 2 and chunk.samples == 480
    assert c.stats()["interruptions"] == 1


def test_user_speech_alone_cuts_only_where_the_bot_allows_interruptions() -> None:
    strict = get_codec("pipecat", barge_in_on_user_speech=False)
    strict.start(SessionConfig(tools=(CALC,)), "")
    events = decode_all(strict, [rtvi("bot-started-speaking"), audio(960), rtvi("user-started-speaking")])
    assert not any(isinstance(e, Interrupted) for e in events)
    assert strict.decode(audio(960))[0].item_id == 1  # the bot kept talking: the same utterance
    default = codec()
    events = decode_all(default, [rtvi("bot-started-speaking"), audio(960), rtvi("user-started-speaking")])
    assert [e.item_id for e in events if isinstance(e, Interrupted)] == [1]


def test_user_speaking_after_the_bot_finished_is_not_a_barge_in() -> None:
    c = codec()
    events = decode_all(c, [rtvi("bot-started-speaking"), audio(960), rtvi("bot-stopped-speaking")])
    final = [e for e in events if isinstance(e, AudioChunk) and e.final]
    assert len(final) == 1 and final[0].item_id == 1
    events = c.decode(rtvi("user-started-speaking"))
    assert not any(isinstance(e, Interrupted) for e in events)
    assert isinstance(events[-1], ControlMessage) and events[-1].type == "user-started-speaking"
    assert c.decode(audio(10))[0].item_id == 2


def test_function_call_runs_only_for_a_registered_tool_and_the_result_carries_its_arguments() -> None:
    c = codec()
    args = {"expression": "17 * 23"}
    events = c.decode(
        rtvi("llm-function-call-in-progress", tool_call_id="call_1", function_name="calculator", arguments=args)
    )
    assert events == [ToolCallStarted("call_1", "calculator"), ToolCallReady("call_1", "calculator", args)]
    (msg,) = c.tool_result(ToolOutcome("call_1", "calculator", True, 391))
    kind, body = sent(msg)
    assert kind == "message" and body["type"] == "llm-function-call-result"
    assert body["data"] == {
        "function_name": "calculator",
        "tool_call_id": "call_1",
        "arguments": args,
        "result": {"result": 391},  # RTVI takes a dict or a string
    }
    err = ToolOutcome("call_2", "calculator", False, error={"type": "denied_by_user", "message": "no"})
    c.decode(rtvi("llm-function-call-in-progress", tool_call_id="call_2", function_name="calculator", arguments={}))
    assert sent(c.tool_result(err)[0])[1]["data"]["result"] == {"error": {"type": "denied_by_user", "message": "no"}}
    # The bot's own function, and a call reported without its name: seen, never answered.
    own = c.decode(rtvi("llm-function-call-in-progress", tool_call_id="c3", function_name="lookup", arguments={}))
    hidden = c.decode(rtvi("llm-function-call-in-progress", tool_call_id="c4"))
    assert all(isinstance(e, ControlMessage) for e in own + hidden)
    assert c.stats()["calls_not_ours"] == 1 and c.stats()["calls_unreported"] == 1


def test_a_cancelled_call_is_withdrawn_and_never_answered() -> None:
    c = codec()
    c.decode(rtvi("llm-function-call-in-progress", tool_call_id="c1", function_name="calculator", arguments={}))
    events = c.decode(rtvi("llm-function-call-stopped", tool_call_id="c1", cancelled=True))
    assert events[0] == ToolCallCancelled(("c1",))
    assert c.tool_result(ToolOutcome("c1", "calculator", True, 1)) == []
    assert c.stats()["results_suppressed"] == 1


def test_user_text_errors_and_metrics() -> None:
    c = codec()
    f = frames_pb2.Frame()
    f.transcription.text, f.transcription.user_id = "hello there", "u"
    assert c.decode(f.SerializeToString()) == [UserTranscript("hello there")]
    assert c.decode(rtvi("user-transcription", text="hel", final=False, user_id="u", timestamp="t")) == []
    assert c.decode(rtvi("user-transcription", text="hello", final=True, user_id="u", timestamp="t")) == [
        UserTranscript("hello")
    ]
    (err,) = c.decode(rtvi("error", error="LLM failed", fatal=True))
    assert err == ServerError("fatal", "LLM failed")
    assert c.decode(rtvi("error-response", error="bad version")) == [ServerError("error-response", "bad version")]
    (metrics,) = c.decode(rtvi("metrics", ttfb=[{"processor": "x", "value": 0.1}]))
    assert metrics.kind == "metrics"


def test_sending_microphone_and_text() -> None:
    c = codec()
    pcm = b"\x01\x00" * 320
    kind, body = sent(c.audio(pcm, 16000, 1)[0])
    assert kind == "audio" and (body.audio, body.sample_rate, body.num_channels) == (pcm, 16000, 1)
    with pytest.raises(UsageError, match="16000 Hz"):
        c.audio(pcm, 24000, 1)
    kind, body = sent(c.text("hi")[0])
    assert body["type"] == "send-text" and body["data"]["content"] == "hi"


@pytest.mark.parametrize(
    "message",
    [
        "a text message",
        b"\xff\xff\xff",
        b"",
        rtvi("x")[:-3],  # truncated
        bytes([4 << 3 | 2, 3]) + b"\x0a\x01{",  # MessageFrame data "{" (not JSON)
        bytes([4 << 3 | 2, 4]) + b"\x0a\x02\xff\xfe",  # data not UTF-8
        bytes([9 << 3 | 2, 0]),  # a Frame kind nobody knows
    ],
)
def test_malformed_frames_are_counted_and_the_stream_goes_on(message: Any) -> None:
    c = codec()
    (event,) = c.decode(message)
    assert isinstance(event, ProtocolErrorEvent)
    assert c.stats()["malformed"] == 1
    assert isinstance(c.decode(audio(10))[0], AudioChunk)


def test_deep_json_and_bad_audio_are_malformed() -> None:
    c = codec()
    deep = frames_pb2.Frame()
    deep.message.data = "[" * 1000 + "]" * 1000
    bad_rate = frames_pb2.Frame()
    bad_rate.audio.audio, bad_rate.audio.sample_rate = b"\x00\x00", 7
    odd = frames_pb2.Frame()
    odd.audio.audio, odd.audio.sample_rate = b"\x00\x00\x00", 16000
    for m in (deep, bad_rate, odd):
        assert isinstance(c.decode(m.SerializeToString())[0], ProtocolErrorEvent)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_never_raises(data: bytes) -> None:
    c = codec()
    c.decode(data)
    c.droppable(data)
    c.audio_samples(data)


def test_calls_that_are_not_valid_unicode_never_make_an_encoder_raise() -> None:
    # Found by the fuzzer: arguments with a lone surrogate were echoed in the result and made
    # tool_result raise; a call id with one cannot be answered at all.
    c = codec()
    bad_args = '{"label":"rtvi-ai","type":"llm-function-call-in-progress","data":{"tool_call_id":"c1",'
    bad_args += '"function_name":"calculator","arguments":{"expression":"\\ud800"}}}'
    f = frames_pb2.Frame()
    f.message.data = bad_args
    (invalid,) = c.decode(f.SerializeToString())
    assert invalid.error["type"] == "invalid_arguments"
    (msg,) = c.tool_result(ToolOutcome("c1", "calculator", False, error=invalid.error))
    assert sent(msg)[1]["data"]["arguments"] == {}
    f.message.data = bad_args.replace('"c1"', '"c\\udfff"')
    assert isinstance(c.decode(f.SerializeToString())[0], ProtocolErrorEvent)
    assert c.tool_result(ToolOutcome("c\udfff", "calculator", True, 1)) == []
