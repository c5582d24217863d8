"""Frame encode/decode: round trips, every split point, malformed input, limits, fuzzing."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.errors import EncodeError, UsageError
from pyclient.frames import (
    AUDIO_META,
    HEADER,
    HEADER_SIZE,
    MAX_JSON_DEPTH,
    AudioFrame,
    BytesSource,
    ControlFrame,
    CreditFrame,
    FrameDecoder,
    Kind,
    Malformed,
    Sequencer,
    TextFrame,
    ToolCallFrame,
    ToolResultFrame,
    decode_json,
    encode_frame,
    encode_json,
    encode_raw,
    json_depth,
)


def sample_frames() -> list[bytes]:
    s = Sequencer()
    return [
        s.control("hello", connection_id=7),
        s.text("hello wörld 🙂"),
        s.audio(b"\x01\x00\xff\x7f" * 10, sample_rate=24000, item_id=3),
        s.tool_call("c1", '{"expr', name="calculator"),
        s.tool_call("c1", 'ession": "6*7"}', final=True),
        s.tool_result("c1", ok=True, result=42),
        s.tool_result("c2", ok=False, error={"type": "tool_error", "message": "boom"}),
        s.credit(65536),
        s.audio(b"", sample_rate=8000, item_id=4, final=True),
        s.control("done"),
    ]


def normalise(frames: list) -> list:
    """Make decoded frames comparable (memoryview payloads -> bytes)."""
    out = []
    for f in frames:
        if isinstance(f, AudioFrame):
            f = AudioFrame(f.seq, f.sample_rate, f.item_id, bytes(f.pcm), f.nbytes, f.flags)
        out.append(f)
    return out


def test_header_layout_is_twelve_big_endian_bytes() -> None:
    raw = encode_raw(Kind.TEXT, 0x01020304, b"hi", flags=1)
    assert raw == bytes([1, 2, 1, 0, 1, 2, 3, 4, 0, 0, 0, 2]) + b"hi"


def test_round_trip_every_kind() -> None:
    stream = sample_frames()
    decoded = normalise(FrameDecoder().feed_message(BytesSource(b"".join(stream))))
    assert [type(f) for f in decoded] == [
        ControlFrame,
        TextFrame,
        AudioFrame,
        ToolCallFrame,
        ToolCallFrame,
        ToolResultFrame,
        ToolResultFrame,
        CreditFrame,
        AudioFrame,
        ControlFrame,
    ]
    assert [f.seq for f in decoded] == list(range(10))
    assert decoded[0].fields == {"connection_id": 7}
    assert decoded[1].data.decode() == "hello wörld 🙂"
    audio = decoded[2]
    assert (audio.sample_rate, audio.item_id, audio.samples, audio.pcm) == (24000, 3, 20, b"\x01\x00\xff\x7f" * 10)
    assert decoded[3].name == "calculator" and not decoded[3].final
    assert decoded[4].name is None and decoded[4].final
    assert decoded[5].ok and decoded[5].result == 42
    assert decoded[6].error == {"type": "tool_error", "message": "boom"}
    assert decoded[7].grant == 65536
    assert decoded[8].final and decoded[8].samples == 0
    # encode(decode(x)) == x
    assert b"".join(encode_frame(f) for f in decoded) == b"".join(stream)


def test_split_at_every_byte_boundary() -> None:
    stream = b"".join(sample_frames())
    whole = normalise(FrameDecoder().feed(stream))
    assert len(whole) == 10
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert normalise(got) == whole, f"split at {cut}"
        assert dec.buffered == 0 and dec.pending_error() is None


def test_one_byte_at_a_time() -> None:
    stream = b"".join(sample_frames())
    dec = FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert normalise(got) == normalise(FrameDecoder().feed(stream))


def test_audio_payload_is_a_zero_copy_view() -> None:
    data = bytearray(Sequencer().audio(b"\x00\x01" * 4, sample_rate=24000, item_id=1))
    (frame,) = FrameDecoder().feed_message(BytesSource(data))
    assert isinstance(frame.pcm, memoryview)
    data[HEADER_SIZE + AUDIO_META.size] = 0x55  # the view sees the change: no copy was made
    assert frame.pcm[0] == 0x55


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (encode_raw(Kind.CONTROL, 1, b"{not json"), "invalid JSON"),
        (encode_raw(Kind.CONTROL, 1, b"[1, 2]"), "expected an object"),
        (encode_raw(Kind.CONTROL, 1, b'{"no_type": 1}'), "without a string 'type'"),
        (encode_raw(Kind.TOOL_CALL, 1, b'{"name": "x"}'), "'call_id'"),
        (encode_raw(Kind.TOOL_CALL, 1, b'{"call_id": "a", "arguments_delta": 5}'), "not a string"),
        (encode_raw(Kind.TOOL_RESULT, 1, b'{"call_id": "a"}'), "boolean 'ok'"),
        (encode_raw(Kind.TOOL_RESULT, 1, b'{"call_id": "a", "ok": false}'), "'error' object"),
        (encode_raw(Kind.AUDIO, 1, b"\x00" * 5), "need 8 bytes"),
        (encode_raw(Kind.AUDIO, 1, AUDIO_META.pack(24000, 1) + b"\x00"), "even number"),
        (encode_raw(Kind.AUDIO, 1, AUDIO_META.pack(1000, 1) + b"\x00\x00"), "sample rate 1000 Hz"),
        (encode_raw(Kind.CREDIT, 1, b"\x00\x00"), "credit payload of 2 bytes"),
        (encode_raw(99, 1, b"xyz"), "unknown frame kind 99"),
        (encode_raw(Kind.TEXT, 1, b"x", version=2), "protocol version 2"),
        (HEADER.pack(1, Kind.TEXT, 0, 7, 1, 1) + b"x", "reserved header byte is 7"),
        (b"\x01\x02\x00", "message ended after 3 bytes of a 12-byte frame"),
        (encode_raw(Kind.TEXT, 1, b"hello")[:-2], "message ended after 15 bytes of a 17-byte frame"),
    ],
)
def test_malformed_frames_become_values_not_exceptions(raw: bytes, reason: str) -> None:
    (bad,) = FrameDecoder().feed_message(BytesSource(raw))
    assert isinstance(bad, Malformed)
    assert reason in bad.reason


def test_decoding_continues_after_a_malformed_frame() -> None:
    s = Sequencer()
    stream = s.text("a") + encode_raw(Kind.CONTROL, 1, b"{oops") + encode_raw(42, 2, b"??") + s.text("b")
    for decoder_input in (lambda d: d.feed_message(BytesSource(stream)), lambda d: d.feed(stream)):
        got = decoder_input(FrameDecoder())
        assert [type(f).__name__ for f in got] == ["TextFrame", "Malformed", "Malformed", "TextFrame"]


def test_oversize_frame_is_reported_with_the_numbers_and_skipped_without_buffering() -> None:
    limit = 1024
    big = encode_raw(Kind.TEXT, 5, b"x" * 5000)
    tail = Sequencer(6).text("after")
    dec = FrameDecoder(max_payload=limit)
    got = []
    for i in range(0, len(big), 100):  # arrives in pieces; never stored
        got += dec.feed(big[i : i + 100])
        assert dec.buffered <= HEADER_SIZE
    got += dec.feed(tail)
    assert isinstance(got[0], Malformed)
    assert got[0].reason == "frame payload of 5000 bytes, expected no more than 1024"
    assert isinstance(got[1], TextFrame) and got[1].data == b"after"


def test_oversize_frame_in_message_mode() -> None:
    big = encode_raw(Kind.TEXT, 5, b"x" * 2000) + Sequencer(6).text("after")
    got = FrameDecoder(max_payload=1000).feed_message(BytesSource(big))
    assert "expected no more than 1000" in got[0].reason
    assert got[1].data == b"after"


def test_truncated_stream_is_reported_at_the_end() -> None:
    dec = FrameDecoder()
    assert dec.feed(Sequencer().text("hello")[:-1]) == []
    err = dec.pending_error()
    assert err is not None and "16 bytes of a 17-byte frame" in err.reason


def test_max_payload_must_hold_audio_metadata() -> None:
    with pytest.raises(ValueError, match="below the 8-byte minimum"):
        FrameDecoder(max_payload=4)


def test_sequence_numbers_wrap_at_32_bits() -> None:
    s = Sequencer(start=2**32 - 1)
    a, b = s.text("x"), s.text("y")
    assert struct.unpack_from("!I", a, 4)[0] == 2**32 - 1
    assert struct.unpack_from("!I", b, 4)[0] == 0


# ------------------------------------------------------------------ fuzzing

frame_strategy = st.one_of(
    st.text(max_size=40).map(lambda t: ("text", t)),
    st.binary(max_size=64).filter(lambda b: len(b) % 2 == 0).map(lambda b: ("audio", b)),
    st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=30), st.booleans()).map(lambda t: ("tool", t)),
    st.integers(0, 2**32 - 1).map(lambda n: ("credit", n)),
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "type"), st.integers(), max_size=3).map(
        lambda d: ("control", d)
    ),
)


def build(items: list) -> bytes:
    s = Sequencer()
    out = []
    for kind, value in items:
        if kind == "text":
            out.append(s.text(value))
        elif kind == "audio":
            out.append(s.audio(value, sample_rate=24000, item_id=1))
        elif kind == "tool":
            out.append(s.tool_call(value[0], value[1], name="t", final=value[2]))
        elif kind == "credit":
            out.append(s.credit(value))
        else:
            out.append(s.control("x", **value))
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(frame_strategy, max_size=12), st.lists(st.integers(0, 2000), max_size=6))
def test_fuzz_valid_streams_round_trip_under_any_split(items: list, cuts: list[int]) -> None:
    stream = build(items)
    expected = normalise(FrameDecoder().feed_message(BytesSource(stream)))
    assert not any(isinstance(f, Malformed) for f in expected)
    assert len(expected) == len(items)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    dec, got, prev = FrameDecoder(), [], 0
    for p in [*points, len(stream)]:
        got += dec.feed(stream[prev:p])
        prev = p
    assert normalise(got) == expected


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(8, 256))
def test_fuzz_garbage_never_raises_and_stays_bounded(data: bytes, limit: int) -> None:
    dec = FrameDecoder(max_payload=limit)
    for i in range(0, len(data), 7):
        for f in dec.feed(data[i : i + 7]):
            assert isinstance(
                f, (Malformed, AudioFrame, TextFrame, ToolCallFrame, ToolResultFrame, ControlFrame, CreditFrame)
            )
        assert dec.buffered <= HEADER_SIZE + limit
    dec.pending_error()
    FrameDecoder(max_payload=limit).feed_message(BytesSource(data))


# ------------------------------------------------------------------ hostile JSON (issue 7)


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


def test_deep_json_is_refused_before_parsing_with_the_numbers() -> None:
    payload = ('{"type": "x", "a": ' + deep(1000) + "}").encode()
    (bad,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.CONTROL, 1, payload)))
    assert isinstance(bad, Malformed)
    assert "JSON nested 1001 deep, limit is 64" in bad.reason


def test_deep_objects_and_unclosed_brackets_count_too() -> None:
    objects = '{"type": "x", "a": ' + '{"k":' * 200 + "1" + "}" * 200 + "}"
    unclosed = '{"type": "x", "a": ' + "[" * 100_000
    for text in (objects, unclosed):
        (bad,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.CONTROL, 1, text.encode())))
        assert isinstance(bad, Malformed) and "limit is 64" in bad.reason


def test_nesting_up_to_the_limit_decodes_and_brackets_in_strings_do_not_count() -> None:
    ok = '{"type": "x", "a": ' + deep(MAX_JSON_DEPTH - 1) + ', "s": "' + "[{" * 5000 + '\\"[["}'
    (frame,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.CONTROL, 1, ok.encode())))
    assert isinstance(frame, ControlFrame) and frame.fields["s"].startswith("[{[{")
    too_deep = '{"type": "x", "a": ' + deep(MAX_JSON_DEPTH) + "}"
    (bad,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.CONTROL, 1, too_deep.encode())))
    assert "JSON nested 65 deep, limit is 64" in bad.reason


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("1", 0),
        ("[]", 1),
        ("[[], {}]", 2),
        ('["]]]]", "\\\\", "\\"[["]', 1),
        ('["unterminated [[[[', 1),
        ("]]]]", 0),
        ("[[[", 3),
    ],
)
def test_json_depth_scan(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_scan_is_linear_on_quote_and_backslash_floods() -> None:
    text = '"\\"' * 200_000 + "[" * 100  # every quote opens a string that never ends
    assert json_depth(text) == 0  # one unterminated string swallows the rest; returns quickly
    with pytest.raises(ValueError):
        decode_json(text)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
_JSON_TEXTS = st.one_of(
    st.builds(json.dumps, _JSON_VALUES),
    st.builds(
        lambda v, a, b: a + json.dumps(v) + b,
        _JSON_VALUES,
        st.sampled_from(["", " ", "\n\t", "x", "]"]),
        st.sampled_from(["", " ", "\r\n", "}", "1", " x"]),
    ),
    st.text(alphabet='{}[]",:0123456789.eE+-truefalsn \\u', max_size=24),
)


@settings(max_examples=400, deadline=None)
@given(_JSON_TEXTS)
def test_decode_json_is_json_loads(text: str) -> None:
    """The one-call scanner path gives json.loads's result, or fails where json.loads fails."""
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            decode_json(text)
        return
    assert decode_json(text) == expected


def test_decode_json_error_messages_are_json_loads_messages() -> None:
    for text in ["", "  ", '{"a": 1} x', '{"a": }', "[1, 2", " [1] ]"]:
        with pytest.raises(ValueError) as ours:
            decode_json(text)
        with pytest.raises(ValueError) as theirs:
            json.loads(text)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_not_json(literal: str) -> None:
    raw = encode_raw(Kind.CONTROL, 1, f'{{"type": "x", "v": {literal}}}'.encode())
    (bad,) = FrameDecoder().feed_message(BytesSource(raw))
    assert isinstance(bad, Malformed) and f"{literal} is not JSON" in bad.reason


@pytest.mark.parametrize(
    ("call_id", "reason"),
    [
        ('"\\ud800"', "lone surrogate U+D800 at character 0"),
        ('"ab\\udfff"', "lone surrogate U+DFFF at character 2"),
        ('"' + "x" * 257 + '"', "'call_id' of 257 characters, limit is 256"),
        ('""', "without a string 'call_id'"),
        ("7", "without a string 'call_id'"),
    ],
)
@pytest.mark.parametrize("kind", [Kind.TOOL_CALL, Kind.TOOL_RESULT])
def test_a_call_id_nobody_could_answer_is_malformed(call_id: str, reason: str, kind: Kind) -> None:
    payload = f'{{"call_id": {call_id}, "name": "f", "arguments_delta": "", "ok": true}}'.encode()
    (bad,) = FrameDecoder().feed_message(BytesSource(encode_raw(kind, 1, payload)))
    assert isinstance(bad, Malformed) and reason in bad.reason


def test_longest_call_id_and_surrogate_pairs_are_fine() -> None:
    payload = ('{"call_id": "' + "x" * 256 + '", "name": "f", "arguments_delta": "\\ud83d\\ude00"}').encode()
    (frame,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.TOOL_CALL, 1, payload)))
    assert isinstance(frame, ToolCallFrame) and frame.arguments_delta == "😀"


def test_tool_call_name_and_delta_keep_lone_surrogates_for_the_assembler() -> None:
    payload = b'{"call_id": "c", "name": "f\\ud800", "arguments_delta": "\\udc00"}'
    (frame,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.TOOL_CALL, 1, payload)))
    assert isinstance(frame, ToolCallFrame)
    assert (frame.name, frame.arguments_delta) == ("f\ud800", "\udc00")


def test_lone_surrogates_in_control_and_result_json_become_replacement_characters() -> None:
    control = b'{"type": "error", "message": "a\\ud800b", "\\udc00": ["\\ud83d"]}'
    result = b'{"call_id": "c", "ok": true, "result": {"t": "\\udbff"}}'
    stream = encode_raw(Kind.CONTROL, 1, control) + encode_raw(Kind.TOOL_RESULT, 2, result)
    ctrl, res = FrameDecoder().feed_message(BytesSource(stream))
    assert ctrl.fields == {"message": "a\ufffdb", "\ufffd": ["\ufffd"]}
    assert res.result == {"t": "\ufffd"}
    # an escaped backslash before "ud800" is no escape at all: left alone
    (plain,) = FrameDecoder().feed_message(BytesSource(encode_raw(Kind.CONTROL, 3, b'{"type": "x\\\\ud800"}')))
    assert plain.type == "x\\ud800"


def test_a_decoder_bug_costs_one_frame_not_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyclient.frames as frames_module

    real = frames_module.decode_payload

    def flaky(kind: int, *args: object) -> object:
        if kind == Kind.CREDIT:
            raise RuntimeError("boom")
        return real(kind, *args)

    monkeypatch.setattr(frames_module, "decode_payload", flaky)
    s = Sequencer()
    stream = s.text("a") + s.credit(5) + s.text("b")
    for got in (FrameDecoder().feed_message(BytesSource(stream)), FrameDecoder().feed(stream)):
        assert [type(f).__name__ for f in got] == ["TextFrame", "Malformed", "TextFrame"]
        assert got[1].reason == "internal decoder error: RuntimeError: boom" and got[1].seq == 1


def test_feed_message_accepts_bytes_directly() -> None:
    (frame,) = FrameDecoder().feed_message(Sequencer().text("x"))
    assert isinstance(frame, TextFrame)


# ------------------------------------------------------------------ strict encoding (issue 7)


def test_encode_json_is_compact_utf8() -> None:
    assert encode_json({"a": [1, 2.5, None, True], "é": "🙂"}) == '{"a":[1,2.5,null,true],"é":"🙂"}'.encode()
    shared = [1]
    assert encode_json([shared, shared]) == b"[[1],[1]]"
    assert encode_json(json.loads(deep(MAX_JSON_DEPTH))) == deep(MAX_JSON_DEPTH).encode()


def circular() -> list:
    x: list = []
    x.append(x)
    x.append(x)
    return x


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"s": "a\ud800"}, "lone surrogate U+D800 at character 7 of 10"),
        ({"\udfff": 1}, "lone surrogate U+DFFF"),
        (float("nan"), "float nan (NaN and infinities are not JSON)"),
        ({"x": [float("-inf")]}, "float -inf"),
        ({float("inf"): 1}, "ValueError"),
        ({1, 2}, "TypeError: Object of type set is not JSON serializable"),
        (b"bytes", "Object of type bytes"),
        ({"o": object()}, "Object of type object"),
        ({(1, 2): 3}, "TypeError: keys must be"),
        pytest.param(10**5000, "4300 digits", id="huge-int"),
        (json.loads(deep(MAX_JSON_DEPTH + 1)), "nested more than 64 deep (or circular), limit is 64"),
        (circular(), "nested more than 64 deep (or circular)"),
    ],
)
def test_encode_json_refuses_what_the_peer_could_not_decode(obj: object, reason: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode_json(obj)
    assert reason in str(info.value)
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: s.tool_result("c\ud800", ok=True, result=1),
        lambda s: s.tool_result("c", ok=True, result="\udc00"),
        lambda s: s.tool_result("c", ok=True, result=float("nan")),
        lambda s: s.tool_result("c", ok=True, result={1, 2}),
        lambda s: s.tool_result("c", ok=True, result=json.loads(deep(200))),
        lambda s: s.tool_result("", ok=True, result=1),
        lambda s: s.tool_result("x" * 257, ok=True, result=1),
        lambda s: s.tool_call("c", "\ud800", name="f"),
        lambda s: s.control("x", v=float("inf")),
        lambda s: s.control(""),
        lambda s: s.text("a\ud800"),
        lambda s: s.audio(b"\x00", sample_rate=24000, item_id=1),
        lambda s: s.audio(b"", sample_rate=1000, item_id=1),
        lambda s: s.audio(b"", sample_rate=24000, item_id=-1),
        lambda s: s.credit(-1),
        lambda s: s.credit(2**32),
        lambda s: s.raw(256, b""),
        lambda s: s.raw(Kind.TEXT, b"", flags=300),
    ],
)
def test_a_frame_that_cannot_be_encoded_uses_no_sequence_number(build) -> None:
    s = Sequencer(start=41)
    with pytest.raises(EncodeError):
        build(s)
    assert s.next_seq == 41
    assert struct.unpack_from("!I", s.text("next"), 4)[0] == 41  # no gap on the wire


def test_encode_frame_refuses_a_non_frame() -> None:
    with pytest.raises(EncodeError, match="not a frame: int"):
        encode_frame(3)  # type: ignore[arg-type]
