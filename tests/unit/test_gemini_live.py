"""Gemini Live codec: connecting, decoding a whole session, and what it sends.

Sources: googleapis/js-genai at 6e9b35c45e21f0d37179a24d29dca01ebed698e6 (fixtures:
tests/unit/fixtures/gemini_live/README.md):
- ``src/live.ts``: ``auth_tokens/`` -> ``BidiGenerateContentConstrained`` + ``access_token``, else
  ``BidiGenerateContent`` + ``key``; server JSON as text, Blob or ArrayBuffer; ``setup`` first,
  then wait for ``setupComplete``; ``toolResponse.functionResponses`` need ``id`` and ``name``.
- ``src/converters/_live_converters.ts`` (``liveConnectConfigToMldev``): ``setup.generationConfig.
  responseModalities``/``speechConfig``, ``setup.systemInstruction``, ``setup.tools``,
  ``inputAudioTranscription``, ``outputAudioTranscription``, ``sessionResumption``,
  ``contextWindowCompression``; ``liveSendRealtimeInputParametersToMldev``: ``realtimeInput.audio``,
  ``audioStreamEnd``.
- ``src/types.ts``: ``LiveServerMessage`` and its parts; ``FunctionResponse.response`` ("Use
  "output" key to specify function output and "error" key to specify error details").
- ``src/_transformers.ts`` ``processJsonSchema`` (JSON Schema -> Gemini ``Schema``), ``tModel``.
- ``test/system/recordings/live_ML_Dev_*.websocket.log`` (recorded sessions, e.g. the setup
  ``{"setup":{"model":"models/...","tools":[{"functionDeclarations":[{"name":"get_current_weather",
  ...,"parameters":{"type":"OBJECT",...}}]}]}}``), ``test/unit/live_test.ts`` (goAway, resumption).
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
    GoAway,
    Ignored,
    Interrupted,
    ProtocolErrorEvent,
    ResponseDone,
    ResumptionUpdate,
    SessionReady,
    TextDelta,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
    UsageReport,
    UserTranscript,
)
from pyclient.protocols.base import Capabilities, SessionConfig, ToolSpec
from pyclient.protocols.gemini_live import DEFAULT_MODEL, GeminiLiveCodec, gemini_schema, parse_duration_ms
from pyclient.schema import tool_schema
from pyclient.tools import ToolOutcome

FIXTURES = Path(__file__).parent / "fixtures" / "gemini_live"
HOST = "wss://generativelanguage.googleapis.com"
CONSTRAINED = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
BIDI = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


def messages(name: str) -> list[str | bytes]:
    """Fixture lines as received messages: ``b64:`` lines are binary frames."""
    out: list[str | bytes] = []
    for ln in (FIXTURES / name).read_text(encoding="utf-8").split("\n"):
        if ln:
            out.append(base64.b64decode(ln[4:]) if ln.startswith("b64:") else ln)
    return out


def decode_all(codec: GeminiLiveCodec, msgs: list[str | bytes]) -> list[Any]:
    out: list[Any] = []
    for m in msgs:
        out += codec.decode(m)
    return out


def sent(msgs: list[str | bytes]) -> list[dict[str, Any]]:
    assert all(isinstance(m, str) for m in msgs)
    return [json.loads(m) for m in msgs]


def get_current_weather(location: str, unit: str | None = None) -> str:
    "Get the current weather in a given location"
    return location


WEATHER = ToolSpec(
    "get_current_weather", "Get the current weather in a given location", tool_schema(get_current_weather)
)


# --------------------------------------------------------------------------- connecting


def test_class_attributes() -> None:
    assert GeminiLiveCodec.name == "gemini-live"
    assert GeminiLiveCodec.capabilities == Capabilities(resume=True)
    assert GeminiLiveCodec.input_audio_rate == 16000
    assert GeminiLiveCodec().subprotocols(token="auth_tokens/x") == []


def test_url_token_goes_to_v1alpha_constrained_with_access_token() -> None:
    c = GeminiLiveCodec()
    assert c.url("", token="auth_tokens/abc123") == f"{HOST}{CONSTRAINED}?access_token=auth_tokens/abc123"
    assert c.url("default", token="auth_tokens/abc") == f"{HOST}{CONSTRAINED}?access_token=auth_tokens/abc"


def test_url_api_key_goes_to_v1beta_with_key() -> None:
    assert GeminiLiveCodec().url("", token="AIzaSyKEY") == f"{HOST}{BIDI}?key=AIzaSyKEY"
    assert GeminiLiveCodec(api_key=True).url("", token="auth_tokens/looks-like") == (
        f"{HOST}{BIDI}?key=auth_tokens/looks-like"
    )


def test_url_of_a_local_server_keeps_scheme_host_and_path() -> None:
    c = GeminiLiveCodec()
    assert c.url("ws://127.0.0.1:8000/gemini?scenario=voice", token="auth_tokens/t") == (
        "ws://127.0.0.1:8000/gemini?scenario=voice&access_token=auth_tokens/t"
    )
    assert c.url("ws://127.0.0.1:8000", token="k") == f"ws://127.0.0.1:8000{BIDI}?key=k"
    assert c.url("ws://127.0.0.1:8000/g?key=old", token="auth_tokens/new") == (
        "ws://127.0.0.1:8000/g?access_token=auth_tokens/new"
    )
    assert c.url("ws://127.0.0.1:8000/g") == "ws://127.0.0.1:8000/g"  # no credential, no parameter


def test_setup_message() -> None:
    c = GeminiLiveCodec(resume_handle="handle-7", context_window_compression={"slidingWindow": {}})
    config = SessionConfig(tools=(WEATHER,), instructions="Be brief.", voice="Puck")
    assert sent(c.start(config, "")) == [
        {
            "setup": {
                "model": f"models/{DEFAULT_MODEL}",
                "generationConfig": {
                    "responseModalities": ["AUDIO"],
                    "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
                },
                "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}]},
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "get_current_weather",
                                "description": "Get the current weather in a given location",
                                "parameters": {
                                    "type": "OBJECT",
                                    "properties": {
                                        "location": {"type": "STRING"},
                                        "unit": {"nullable": True, "type": "STRING"},
                                    },
                                    "required": ["location"],
                                },
                            }
                        ]
                    }
                ],
                "inputAudioTranscription": {},
                "outputAudioTranscription": {},
                "sessionResumption": {"handle": "handle-7"},
                "contextWindowCompression": {"slidingWindow": {}},
            }
        }
    ]
    assert c.ready is False


def test_setup_minimal_and_json_schema_parameters() -> None:
    (msg,) = sent(GeminiLiveCodec().start(SessionConfig(model="models/gemini-live-2.5-flash-preview"), ""))
    assert msg["setup"]["model"] == "models/gemini-live-2.5-flash-preview"
    assert msg["setup"]["sessionResumption"] == {}
    assert "tools" not in msg["setup"] and "systemInstruction" not in msg["setup"]

    def clock() -> str:
        return "now"

    tools = (ToolSpec("clock", "The time.", tool_schema(clock)), WEATHER)
    (msg,) = sent(GeminiLiveCodec(json_schema_parameters=True).start(SessionConfig(tools=tools), ""))
    decls = msg["setup"]["tools"][0]["functionDeclarations"]
    assert decls[1]["parametersJsonSchema"] == WEATHER.parameters
    (msg,) = sent(GeminiLiveCodec().start(SessionConfig(tools=tools), ""))
    assert "parameters" not in msg["setup"]["tools"][0]["functionDeclarations"][0]  # no parameters: left unset


def test_gemini_schema_converts_like_process_json_schema() -> None:
    # the example in js-genai's processJsonSchema comment: a nullable array
    schema = {
        "type": "object",
        "properties": {"nullableArray": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "string"}}]}},
        "required": ["nullableArray"],
        "additionalProperties": False,
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {"nullableArray": {"nullable": True, "type": "ARRAY", "items": {"type": "STRING"}}},
        "required": ["nullableArray"],
    }
    assert gemini_schema({"type": ["string", "number", "null"]}) == {
        "nullable": True,
        "anyOf": [{"type": "STRING"}, {"type": "NUMBER"}],
    }
    assert gemini_schema({"type": "integer", "enum": [1, 2]}) == {
        "type": "INTEGER",
        "enum": ["1", "2"],
        "format": "enum",
    }
    assert gemini_schema({"type": "string", "enum": ["a", None]}) == {"type": "STRING", "enum": ["a"], "nullable": True}
    assert gemini_schema({"type": "weird"}) == {"type": "TYPE_UNSPECIFIED"}


# --------------------------------------------------------------------------- a whole session


def reference_audio(msgs: list[str | bytes]) -> tuple[int, str]:
    sha = hashlib.sha256()
    samples = 0
    for m in msgs:
        obj = json.loads(m)
        for part in obj.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "inlineData" in part:
                pcm = base64.b64decode(part["inlineData"]["data"])
                sha.update(pcm)
                samples += len(pcm) // 2
    return samples, sha.hexdigest()


def test_whole_session_decodes_into_the_expected_events() -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(tools=(WEATHER,)), "")
    msgs = messages("session.jsonl")
    assert isinstance(msgs[13], bytes)  # one message arrives in a binary frame
    events = decode_all(c, msgs)

    assert events[0] == SessionReady({}) and c.ready
    assert [e.text for e in events if isinstance(e, UserTranscript)] == [
        "What is the weather",
        " in Redmond Washington?",
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It's sunny in Redmond today.Let me"

    audio = [e for e in events if isinstance(e, AudioChunk)]
    samples, sha = reference_audio(msgs)
    assert samples == 4800 + 4800 + 2400 + 2400 + 2400
    assert sum(e.samples for e in audio) == samples
    assert hashlib.sha256(b"".join(bytes(e.pcm) for e in audio)).hexdigest() == sha
    assert all(e.sample_rate == 24000 for e in audio)
    # turn 1 is item 1 (ended by turnComplete); turn 2's audio is item 2, flushed by the interruption
    assert [(e.item_id, e.samples, e.final) for e in audio] == [
        (1, 4800, False),
        (1, 4800, False),
        (1, 2400, False),
        (1, 0, True),
        (2, 2400, False),
        (2, 2400, False),
    ]
    assert [e for e in events if isinstance(e, Interrupted)] == [Interrupted(2, "interrupted")]
    assert [e.fields for e in events if isinstance(e, TurnEnded)] == [{"turn": 1}, {"turn": 2}]
    assert [e.fields for e in events if isinstance(e, ResponseDone)] == [{"item_id": 1}]

    tools = [e for e in events if isinstance(e, (ToolCallStarted, ToolCallReady, ToolCallInvalid, ToolCallCancelled))]
    assert tools == [
        ToolCallStarted("function-call-5831923424298605773", "get_current_weather"),
        ToolCallReady("function-call-5831923424298605773", "get_current_weather", {"location": "Redmond, WA"}),
        ToolCallStarted("function-call-2", "get_current_weather"),
        ToolCallInvalid(  # validated against the registered tool's schema: nothing runs
            "function-call-2",
            "get_current_weather",
            {"type": "invalid_arguments", "message": "get_current_weather: location: required property missing"},
        ),
        ToolCallCancelled(("function-call-2",)),
    ]

    (usage,) = [e for e in events if isinstance(e, UsageReport)]
    assert usage.kind == "usage" and usage.fields["totalTokenCount"] == 553
    assert [e for e in events if isinstance(e, ResumptionUpdate)] == [
        ResumptionUpdate("Cg0KC3Jlc3VtZS0wMDE", True),
        ResumptionUpdate(None, False),
    ]
    assert [e for e in events if isinstance(e, GoAway)] == [GoAway(10_000)]
    assert [e for e in events if isinstance(e, Ignored)] == [Ignored("someFutureMessage")]
    assert not [e for e in events if isinstance(e, ProtocolErrorEvent)]

    stats = c.stats()
    assert stats["resumption_handle"] == "Cg0KC3Jlc3VtZS0wMDE" and stats["resumable"] is False
    assert c.resumption_handle == "Cg0KC3Jlc3VtZS0wMDE"
    assert stats["goaway_time_left_ms"] == 10_000
    assert stats["usage"]["totalTokenCount"] == 553
    assert stats["turns"] == 2 and stats["interruptions"] == 1 and stats["ignored"] == 1
    assert stats["by_type"]["serverContent"] == 14 and stats["by_type"]["voiceActivity"] == 1
    assert stats["audio_samples"] == samples


def test_recorded_text_session() -> None:
    c = GeminiLiveCodec()
    events = decode_all(c, messages("text_recording.jsonl"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Yes, I'm here! How can I help you today?"
    assert sum(isinstance(e, TurnEnded) for e in events) == 1
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert ready == [
        ToolCallReady("function-call-5831923424298605773", "get_current_weather", {"location": "Redmond, WA"})
    ]


def content(**fields: Any) -> str:
    return json.dumps({"serverContent": fields})


def audio_msg(samples: int, mime: str = "audio/pcm;rate=24000") -> str:
    data = base64.b64encode(b"\x02\x00" * samples).decode()
    return content(modelTurn={"parts": [{"inlineData": {"mimeType": mime, "data": data}}]})


def test_one_transcript_source_per_turn() -> None:
    c = GeminiLiveCodec()
    turn = [
        audio_msg(10),
        content(modelTurn={"parts": [{"text": "words"}]}),
        content(outputTranscription={"text": "said"}),
        content(modelTurn={"parts": [{"text": "thinking", "thought": True}]}),
        content(turnComplete=True),
        content(modelTurn={"parts": [{"text": "text turn"}]}),  # a turn answered in text
        content(outputTranscription={"text": "dup"}),
        content(turnComplete=True),
    ]
    got = [e.text for e in decode_all(c, turn) if isinstance(e, TextDelta)]
    assert got == ["said", "text turn"]
    assert c.stats()["text_dropped"] == 2
    text_only = GeminiLiveCodec(audio_output=False)
    got = [e.text for e in decode_all(text_only, turn) if isinstance(e, TextDelta)]
    assert got == ["words", "text turn"]


def test_audio_rate_comes_from_the_mime_type() -> None:
    c = GeminiLiveCodec()
    assert c.decode(audio_msg(4, "audio/pcm;rate=16000"))[0].sample_rate == 16000
    assert c.decode(audio_msg(4, "audio/pcm"))[0].sample_rate == 24000
    assert isinstance(c.decode(audio_msg(4, "audio/pcm;rate=1"))[0], ProtocolErrorEvent)
    assert c.decode(audio_msg(4, "image/png")) == []


# --------------------------------------------------------------------------- sending


def test_tool_results() -> None:
    c = GeminiLiveCodec()
    c.decode(json.dumps({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "get_current_weather", "args": {}}]}}))
    ok = ToolOutcome("fc-1", None, True, {"temp": 18})
    assert sent(c.tool_result(ok)) == [
        {
            "toolResponse": {
                "functionResponses": [
                    {"id": "fc-1", "name": "get_current_weather", "response": {"output": {"temp": 18}}}
                ]
            }
        }
    ]
    failed = ToolOutcome("fc-2", "f", False, error={"type": "timeout", "message": "slow"})
    assert sent(c.tool_result(failed))[0]["toolResponse"]["functionResponses"][0]["response"] == {
        "error": {"type": "timeout", "message": "slow"}
    }


def test_results_of_cancelled_calls_are_never_sent() -> None:
    c = GeminiLiveCodec()
    c.decode(json.dumps({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "f", "args": {}}]}}))
    assert c.decode(json.dumps({"toolCallCancellation": {"ids": ["fc-1", 5]}})) == [ToolCallCancelled(("fc-1",))]
    assert c.tool_result(ToolOutcome("fc-1", "f", True, 1)) == []
    assert c.stats()["results_suppressed"] == 1


def test_microphone_text_and_cut() -> None:
    c = GeminiLiveCodec()
    pcm = bytes(range(200))
    assert sent(c.audio(pcm, 16000, 1)) == [
        {"realtimeInput": {"audio": {"data": base64.b64encode(pcm).decode(), "mimeType": "audio/pcm;rate=16000"}}}
    ]
    with pytest.raises(UsageError, match="16000 Hz, got 24000 Hz"):
        c.audio(pcm, 24000, 1)
    assert sent(c.audio_end(1, 100, 16000)) == [{"realtimeInput": {"audioStreamEnd": True}}]
    assert sent(c.text("hi")) == [
        {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}}
    ]
    assert c.cut([]) == []


# --------------------------------------------------------------------------- receive path details


def test_ready_only_after_setup_complete() -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(), "")
    assert not c.ready
    c.decode(b'{"setupComplete": {}}')
    assert c.ready


def test_droppable_only_audio_only_server_content() -> None:
    c = GeminiLiveCodec()
    assert c.droppable(audio_msg(100))
    assert c.droppable(audio_msg(100).encode())
    pretty = json.dumps(json.loads(audio_msg(10)), indent=2)
    assert c.droppable(pretty)
    mixed = content(modelTurn={"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "AAAA"}}]}, turnComplete=True)
    assert not c.droppable(mixed)
    assert not c.droppable(
        content(modelTurn={"parts": [{"inlineData": {"mimeType": "audio/pcm", "data": "AA"}}, {"text": "x"}]})
    )
    assert not c.droppable(content(modelTurn={"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}))
    assert not c.droppable(content(outputTranscription={"text": "x"}))
    assert not c.droppable(json.dumps({"toolCall": {}}))
    assert not c.droppable(b"\xff\xfe")


def test_durations() -> None:
    assert parse_duration_ms("30s") == 30_000
    assert parse_duration_ms("1.5s") == 1500
    assert parse_duration_ms("0.000001s") == 0
    assert parse_duration_ms("-2s") == -2000
    assert parse_duration_ms("30") is None
    assert parse_duration_ms(30) is None
    assert GeminiLiveCodec().decode('{"goAway": {}}') == [GoAway(None)]


def test_bad_input_is_counted() -> None:
    c = GeminiLiveCodec()
    events = decode_all(c, messages("bad_lines.jsonl"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["binary ok"]
    errors = [e for e in events if isinstance(e, ProtocolErrorEvent)]
    assert len(errors) == 6
    stats = c.stats()
    assert stats["bad_json"] == 2 and stats["protocol_errors"] == 4
    assert c.decode("{}") == [Ignored("{}")]


JSONISH = st.one_of(
    st.text(max_size=200),
    st.builds(
        json.dumps,
        st.dictionaries(
            st.sampled_from(
                [
                    "setupComplete",
                    "serverContent",
                    "toolCall",
                    "toolCallCancellation",
                    "usageMetadata",
                    "goAway",
                    "sessionResumptionUpdate",
                    "other",
                ]
            ),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "modelTurn",
                                "parts",
                                "inlineData",
                                "data",
                                "mimeType",
                                "text",
                                "functionCalls",
                                "id",
                                "name",
                                "args",
                                "ids",
                                "timeLeft",
                                "newHandle",
                                "resumable",
                                "turnComplete",
                                "interrupted",
                            ]
                        ),
                        inner,
                        max_size=3,
                    )
                ),
                max_leaves=10,
            ),
        ),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(JSONISH, st.binary(max_size=80)), max_size=12))
def test_malformed_input_never_raises(msgs: list[str | bytes]) -> None:
    c = GeminiLiveCodec()
    c.start(SessionConfig(tools=(WEATHER,)), "")
    for m in msgs:
        assert isinstance(c.decode(m), list)
        c.droppable(m)
    assert c.stats()["messages"] + c.stats()["bad_json"] + c.stats()["protocol_errors"] >= len(msgs)


def test_a_tool_name_with_a_lone_surrogate_fails_and_is_answered() -> None:
    # Found by bench/fuzz.py: tool_result raised EncodeError for such a name.
    from pyclient.tools import ToolOutcome

    g = GeminiLiveCodec()
    (call,) = g.decode(r'{"toolCall":{"functionCalls":[{"id":"c1","name":"f\ud800","args":{}}]}}')
    assert call.error["type"] == "invalid_name" and call.name == "f\ufffd"
    (msg,) = g.tool_result(ToolOutcome("c1", call.name, False, error=call.error))
    assert '"id":"c1"' in msg
    assert g.tool_result(ToolOutcome("\ud800", None, True, result=1)) == []  # an id nobody can be answered on
