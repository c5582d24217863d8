"""Demux routing: channels, sequence checks, UTF-8 across frames, control events."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.demux import Demux
from pyclient.events import (
    AudioChunk,
    Channel,
    ControlMessage,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    ServerHello,
    StreamDone,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallInvalid,
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
)
from pyclient.frames import BytesSource, Kind, Sequencer, encode_raw


def test_each_frame_goes_to_its_channel() -> None:
    s = Sequencer()
    d = Demux()
    events = []
    for msg in (
        s.control("hello", connection_id=1),
        s.text("hi "),
        s.audio(b"\x00\x00" * 480, sample_rate=24000, item_id=1),
        s.tool_call("c", '{"a": 1}', name="f", final=True),
        s.control("end_of_turn"),
        s.control("interrupted", item_id=1),
        s.control("error", code="overloaded", message="try later"),
        s.control("something_new", x=1),
        s.control("done"),
    ):
        events += d.feed_message(msg)
    kinds = [type(e) for e in events]
    assert kinds == [
        ServerHello,
        TextDelta,
        AudioChunk,
        ToolCallStarted,
        ToolCallArgumentsDelta,
        ToolCallReady,
        TurnEnded,
        Interrupted,
        ServerError,
        ControlMessage,
        StreamDone,
    ]
    assert [e.channel for e in events][:4] == [Channel.CONTROL, Channel.TEXT, Channel.AUDIO, Channel.TOOLS]
    assert events[2].samples == 480 and events[2].sample_rate == 24000
    assert events[5].arguments == {"a": 1}
    assert events[7].item_id == 1
    assert events[8] == ServerError("overloaded", "try later")
    assert d.stats.frames == 9 and d.stats.malformed == 0 and d.stats.seq_gaps == 0


def test_utf8_character_split_across_frames_is_joined() -> None:
    s = Sequencer()
    raw = "naïve 🙂".encode()
    d = Demux()
    text = ""
    for i in range(len(raw)):  # one byte per frame
        for e in d.feed_message(s.text(raw[i : i + 1])):
            text += e.text
    assert text == "naïve 🙂"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    d = Demux()
    (e,) = d.feed_message(Sequencer().text(b"a\xffb"))
    assert e.text == "a\ufffdb"


def test_sequence_gap_is_reported_and_resynchronised() -> None:
    s = Sequencer()
    d = Demux()
    d.feed_message(s.text("a"))
    s.text("lost")  # never delivered
    events = d.feed_message(s.text("b"))
    assert isinstance(events[0], ProtocolErrorEvent) and "expected frame 1, got 2" in events[0].reason
    assert events[1] == TextDelta("b")
    assert d.feed_message(s.text("c")) == [TextDelta("c")]
    assert d.stats.seq_gaps == 1


def test_forgiven_sequence_numbers_are_not_gaps() -> None:
    s = Sequencer()
    d = Demux()
    d.feed_message(s.text("a"))
    s.audio(b"", sample_rate=24000, item_id=1)  # seq 1, dropped on purpose by the receive queue
    s.audio(b"", sample_rate=24000, item_id=1)  # seq 2, dropped too
    d.forgive([1, 2])
    assert d.feed_message(s.text("b")) == [TextDelta("b")]
    assert d.stats.seq_gaps == 0


def test_malformed_frames_are_events_and_the_stream_goes_on() -> None:
    s = Sequencer()
    d = Demux(max_payload=64)
    events = d.feed_message(s.text("a") + encode_raw(Kind.TEXT, 1, b"x" * 100) + Sequencer(2).text("b"))
    assert [type(e) for e in events] == [TextDelta, ProtocolErrorEvent, TextDelta]
    assert "expected no more than 64" in events[1].reason
    assert d.stats.malformed == 1 and d.stats.seq_gaps == 0


def test_tool_result_from_server_is_a_protocol_error() -> None:
    (e,) = Demux().feed_message(Sequencer().tool_result("c", ok=True, result=1))
    assert isinstance(e, ProtocolErrorEvent)


def test_stream_mode_flushes_partial_utf8_at_end() -> None:
    d = Demux()
    events = d.feed(Sequencer().text("é".encode()[:1]))
    assert events == []
    assert d.flush_text() == [TextDelta("\ufffd")]


# ------------------------------------------------------------------ hostile input (issue 7)


def deep_control(n: int) -> bytes:
    return ('{"type": "x", "a": ' + "[" * n + "]" * n + "}").encode()


def deep_tool_call(n: int) -> bytes:
    return ('{"call_id": "c", "name": "f", "arguments_delta": "", "x": ' + "{" * n + "}" * n + "}").encode()


def test_deep_json_in_a_message_costs_one_frame_and_is_counted() -> None:
    for kind, payload in ((Kind.CONTROL, deep_control(1000)), (Kind.TOOL_CALL, deep_tool_call(1000))):
        s = Sequencer()
        msg = s.text("before ") + s.raw(kind, payload) + s.control("end_of_turn") + s.text("after")
        for feed in ("feed_message", "feed"):
            d = Demux()
            events = getattr(d, feed)(msg)
            assert [type(e) for e in events] == [TextDelta, ProtocolErrorEvent, TurnEnded, TextDelta]
            assert "JSON nested 1001 deep, limit is 64" in events[1].reason
            assert d.stats.malformed == 1 and d.stats.seq_gaps == 0 and d.stats.frames == 4


def test_lone_surrogate_arguments_fail_the_call_and_the_stream_goes_on() -> None:
    s = Sequencer()
    d = Demux()
    events = d.feed_message(s.raw(Kind.TOOL_CALL, b'{"call_id":"c","name":"f","arguments_delta":"\\ud800"}', 1))
    events += d.feed_message(s.text("next"))
    assert [type(e) for e in events] == [ToolCallStarted, ToolCallInvalid, TextDelta]
    assert events[1].error["type"] == "invalid_arguments" and "U+D800" in events[1].error["message"]
    assert d.tools.open_calls == 0 and d.tools.open_bytes == 0 and d.stats.malformed == 0


def test_a_bad_call_id_is_a_malformed_frame() -> None:
    s = Sequencer()
    d = Demux()
    events = d.feed_message(
        s.raw(Kind.TOOL_CALL, b'{"call_id":"\\udfff","name":"f","arguments_delta":"{}"}', 1)
        + s.raw(Kind.TOOL_CALL, ('{"call_id":"' + "i" * 400_000 + '","name":"f"}').encode(), 1)
        + s.tool_call("ok", "{}", name="f", final=True)
    )
    assert [type(e) for e in events] == [
        ProtocolErrorEvent,
        ProtocolErrorEvent,
        ToolCallStarted,
        ToolCallArgumentsDelta,
        ToolCallReady,
    ]
    assert "lone surrogate U+DFFF" in events[0].reason
    assert "'call_id' of 400000 characters, limit is 256" in events[1].reason
    assert d.stats.malformed == 2


def test_a_routing_bug_becomes_a_counted_protocol_error(monkeypatch) -> None:
    s = Sequencer()
    d = Demux()

    def broken(frame):
        raise KeyError("oops")

    monkeypatch.setattr(d.tools, "feed", broken)
    events = d.feed_message(s.text("a") + s.tool_call("c", "{}", name="f") + s.text("b"))
    assert [type(e) for e in events] == [TextDelta, ProtocolErrorEvent, TextDelta]
    assert events[1].reason == "internal decoder error: KeyError: 'oops'" and events[1].seq == 1
    assert d.stats.malformed == 1


def test_open_tool_calls_time_out_in_the_event_stream() -> None:
    now = [1000.0]
    s = Sequencer()
    d = Demux(open_call_timeout=120.0, clock=lambda: now[0])
    assert [type(e) for e in d.feed_message(s.tool_call("slow", '{"a":', name="f"))] == [
        ToolCallStarted,
        ToolCallArgumentsDelta,
    ]
    now[0] += 119.0
    assert d.feed_message(s.text("x")) == [TextDelta("x")]
    assert d.tools.next_expiry == 1120.0
    now[0] += 1.5
    events = d.feed_message(s.text("y"))
    assert [type(e) for e in events] == [ToolCallInvalid, TextDelta]
    assert events[0].call_id == "slow" and events[0].error["type"] == "arguments_timeout"
    assert (
        "no FIN 120.5 s after the call began, limit is 120 s (5 bytes of arguments received)"
        in events[0].error["message"]
    )
    assert d.tools.open_calls == 0 and d.expire() == []


class _NoFastPath:
    """A byte source that does not say where it lies (no ``span``): every message takes the general path."""

    def __init__(self, data: bytes) -> None:
        self._src = BytesSource(data)

    def __len__(self) -> int:
        return len(self._src)

    def bytes_at(self, offset: int, length: int) -> bytes:
        return self._src.bytes_at(offset, length)

    def view_at(self, offset: int, length: int) -> Any:
        return self._src.view_at(offset, length)


_messages = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.binary(max_size=12)),
        st.tuples(st.just("split"), st.sampled_from(["é", "🙂", "日本"])),
        st.tuples(st.just("call"), st.booleans()),
        st.tuples(st.just("skip"), st.integers(1, 3)),  # a sequence gap
        st.tuples(st.just("raw"), st.binary(max_size=30)),  # anything at all
        st.tuples(st.just("two"), st.just(b"")),  # two frames in one message
        st.tuples(st.just("badversion"), st.just(b"")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_the_text_fast_path_decides_exactly_as_the_general_path(script: list[tuple[str, Any]]) -> None:
    s = Sequencer()
    wire: list[bytes] = []
    for op, arg in script:
        if op == "text":
            wire.append(s.text(arg))
        elif op == "split":
            raw = arg.encode()
            wire += [s.text(raw[:1]), s.text(raw[1:])]
        elif op == "call":
            wire.append(s.tool_call("c1", '{"a": 1}', name="f", final=arg))
        elif op == "skip":
            for _ in range(arg):
                s.text("lost")
        elif op == "raw":
            wire.append(arg)
        elif op == "two":
            wire.append(s.text("a") + s.text("b"))
        else:
            frame = bytearray(s.text("v"))
            frame[0] = 9
            wire.append(bytes(frame))
    fast, general = Demux(), Demux()
    for i, msg in enumerate(wire):
        if i % 5 == 4:
            fast.forgive([i])
            general.forgive([i])
        assert fast.feed_message(BytesSource(msg)) == general.feed_message(_NoFastPath(msg))
        assert fast.last_seq == general.last_seq
    assert fast.stats.as_dict() == general.stats.as_dict()
    assert fast.flush_text() == general.flush_text()
