"""Demux routing: channels, sequence checks, UTF-8 across frames, control events."""

from __future__ import annotations

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
    ToolCallReady,
    ToolCallStarted,
    TurnEnded,
)
from pyclient.frames import Kind, Sequencer, encode_raw


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
