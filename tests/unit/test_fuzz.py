"""The quick fuzz run: hostile input never makes a decoder raise, and every frame is accounted for.

A fixed corpus of everything hostile we could think of (deep nesting, lone surrogates in every
string field, huge ids and names, NaN, duplicate keys, BOMs, overlong UTF-8, every truncation of
valid messages, 4 GiB headers, empty payloads of every kind, unknown kinds and versions, seq
wrap, interleaved and orphan tool calls...) goes through each decoder -- FrameDecoder in message
and stream mode (split at every byte for small inputs), Demux in both modes -- and hypothesis
adds random bytes, random frames behind valid headers, and random JSON trees. The long run
(>= 100,000 generated cases per decoder) is a program: ``python -m bench fuzz``.
"""

from __future__ import annotations

import json
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyclient.demux import Demux
from pyclient.errors import EncodeError
from pyclient.events import ProtocolErrorEvent, ToolCallInvalid, ToolCallReady
from pyclient.frames import (
    AUDIO_META,
    HEADER,
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
    encode_json,
    encode_raw,
)
from pyclient.tools import ToolCallAssembler

FRAME_TYPES = (AudioFrame, TextFrame, ToolCallFrame, ToolResultFrame, ControlFrame, CreditFrame, Malformed)
FIN = 1


# ------------------------------------------------------------------ the hostile corpus


def j(obj: object) -> bytes:
    """JSON with \\u escapes, so lone surrogates in ``obj`` reach the wire as escapes."""
    return json.dumps(obj).encode()


def frame(kind: int, payload: bytes, seq: int = 0, flags: int = 0, version: int = 1, reserved: int = 0) -> bytes:
    return HEADER.pack(version, kind, flags, reserved, seq, len(payload)) + payload


def valid_messages() -> list[bytes]:
    s = Sequencer()
    return [
        s.control("hello", connection_id=7, protocol="pyclient.v1"),
        s.text("hello wörld 🙂"),
        s.audio(b"\x01\x00\xff\x7f" * 8, sample_rate=24000, item_id=3),
        s.tool_call("c1", '{"expr', name="calculator"),
        s.tool_call("c1", 'ession": "6*7"}', final=True),
        s.tool_result("c1", ok=True, result=42),
        s.credit(65536),
        s.control("done"),
        s.text("a") + s.tool_call("c2", "{}", name="f", final=True) + s.control("end_of_turn"),
    ]


def hostile_corpus() -> list[tuple[str, bytes]]:
    cases: list[tuple[str, bytes]] = []

    def add(name: str, *frames: bytes) -> None:
        cases.append((name, b"".join(frames)))

    def tc(obj: object, flags: int = FIN, seq: int = 0) -> bytes:
        return frame(Kind.TOOL_CALL, j(obj), seq, flags)

    # deep nesting, in every JSON kind, at the limit and far beyond, closed and unclosed
    for n in (MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1000, 100_000):
        for o, c in (("[", "]"), ("{", "}"), ("[{", "}]")):
            nest = (o.replace("{", '{"k":') * n)[: n * 5] if o != "[" else o * n
            body = nest + "1" if "{" in o else nest
            closed = body + c * n
            for kind, head in (
                (Kind.CONTROL, '{"type":"x","a":'),
                (Kind.TOOL_CALL, '{"call_id":"c","name":"f","arguments_delta":"","a":'),
                (Kind.TOOL_RESULT, '{"call_id":"c","ok":true,"result":'),
            ):
                add(f"deep-{o}-{n}-{kind.name}", frame(kind, (head + closed + "}").encode()))
                add(f"unclosed-{o}-{n}-{kind.name}", frame(kind, (head + body).encode()))
        add(f"deep-arguments-{n}", tc({"call_id": "c", "name": "f", "arguments_delta": "[" * n + "]" * n}))
        add(f"deep-bare-array-{n}", frame(Kind.CONTROL, b"[" * n + b"]" * n))
    add("brackets-in-strings", frame(Kind.CONTROL, j({"type": "x", "s": "[{" * 50_000})))
    add("quote-flood", frame(Kind.CONTROL, b'{"type":"' + b'\\"' * 50_000 + b"[" * 100))
    add("backslash-flood", frame(Kind.CONTROL, b'{"type":"' + b"\\" * 50_001 + b"[" * 100))

    # lone surrogates in each string field (high, low, reversed pair, at the end)
    for bad in ("\ud800", "\udfff", "x\udbff", "\udc00\ud800"):
        add(f"surrogate-call_id-{bad!r}", tc({"call_id": bad, "name": "f", "arguments_delta": "{}"}))
        add(f"surrogate-name-{bad!r}", tc({"call_id": "c", "name": bad, "arguments_delta": "{}"}))
        add(f"surrogate-delta-{bad!r}", tc({"call_id": "c", "name": "f", "arguments_delta": bad}))
        add(f"surrogate-args-{bad!r}", tc({"call_id": "c", "name": "f", "arguments_delta": j({"a": bad}).decode()}))
        add(f"surrogate-type-{bad!r}", frame(Kind.CONTROL, j({"type": bad})))
        add(f"surrogate-field-{bad!r}", frame(Kind.CONTROL, j({"type": "error", "code": bad, "message": bad})))
        add(f"surrogate-key-{bad!r}", frame(Kind.CONTROL, j({"type": "x", bad: 1})))
        add(f"surrogate-result-{bad!r}", frame(Kind.TOOL_RESULT, j({"call_id": "c", "ok": True, "result": [bad]})))
        add(f"surrogate-result-id-{bad!r}", frame(Kind.TOOL_RESULT, j({"call_id": bad, "ok": True})))
        add(f"surrogate-error-{bad!r}", frame(Kind.TOOL_RESULT, j({"call_id": "c", "ok": False, "error": {bad: bad}})))

    # huge ids, names, arguments
    big = 400 * 1024
    add("huge-call_id", tc({"call_id": "i" * big, "name": "f", "arguments_delta": "{}"}))
    add("huge-name", tc({"call_id": "c", "name": "n" * big, "arguments_delta": "{}"}))
    add("huge-arguments", tc({"call_id": "c", "name": "f", "arguments_delta": '"' + "a" * (300 * 1024) + '"'}))
    add("long-call_id-257", tc({"call_id": "i" * 257, "name": "f"}))
    add("long-name-129", tc({"call_id": "c", "name": "n" * 129}))
    add("huge-control-string", frame(Kind.CONTROL, j({"type": "x", "s": "s" * (900 * 1024)})))

    # NaN / Infinity / huge numbers
    for lit in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 5000, b"-0", b"1E400"):
        add(f"number-{lit[:10]!r}", frame(Kind.CONTROL, b'{"type":"interrupted","item_id":' + lit + b"}"))
        args = b'{"a":' + lit + b"}"
        add(f"number-args-{lit[:10]!r}", tc({"call_id": "c", "name": "f", "arguments_delta": args.decode()}))

    # duplicate keys, non-object JSON, wrong types
    add("duplicate-type", frame(Kind.CONTROL, b'{"type":"hello","type":"done"}'))
    add("duplicate-call_id", frame(Kind.TOOL_CALL, b'{"call_id":"a","call_id":"b","name":"f"}', 0, FIN))
    add("duplicate-args", tc({"call_id": "c", "name": "f", "arguments_delta": '{"a":1,"a":2}'}))
    for raw in (b"[]", b'"s"', b"1", b"null", b"true", b"", b" ", b"{", b"}", b"{}", b'{"type":5}', b'{"type":""}'):
        for kind in (Kind.CONTROL, Kind.TOOL_CALL, Kind.TOOL_RESULT):
            add(f"shape-{kind.name}-{raw!r}", frame(kind, raw))
    add("name-not-str", tc({"call_id": "c", "name": 5}))
    add("delta-not-str", tc({"call_id": "c", "name": "f", "arguments_delta": ["x"]}))
    add("ok-not-bool", frame(Kind.TOOL_RESULT, j({"call_id": "c", "ok": 1})))
    add("error-not-object", frame(Kind.TOOL_RESULT, j({"call_id": "c", "ok": False, "error": "e"})))
    add("interrupted-item-odd", frame(Kind.CONTROL, j({"type": "interrupted", "item_id": {"a": [1]}})))
    add("error-code-object", frame(Kind.CONTROL, j({"type": "error", "code": {"x": [1, 2]}, "message": None})))
    add("control-nul", frame(Kind.CONTROL, j({"type": "\x00", "x": "\u0000\u001f"})))

    # BOMs, overlong and invalid UTF-8, in JSON and in text
    for name, raw in (
        ("bom-utf8", b"\xef\xbb\xbf"),
        ("bom-utf16", b"\xff\xfe"),
        ("overlong-slash", b"\xc0\xaf"),
        ("overlong-3", b"\xe0\x80\xaf"),
        ("overlong-nul", b"\xc0\x80"),
        ("utf8-surrogate", b"\xed\xa0\x80"),
        ("invalid-ff", b"\xff"),
        ("truncated-4", b"\xf0\x9f\x99"),
        ("above-max", b"\xf4\x90\x80\x80"),
    ):
        add(f"{name}-control", frame(Kind.CONTROL, raw + b'{"type":"x"}'))
        add(f"{name}-in-string", frame(Kind.CONTROL, b'{"type":"x' + raw + b'"}'))
        add(f"{name}-text", frame(Kind.TEXT, raw + b"text" + raw))
        add(f"{name}-tool", frame(Kind.TOOL_CALL, b'{"call_id":"c' + raw + b'","name":"f"}', 0, FIN))

    # headers: 4 GiB, just over the limit, truncated, unknown kinds and versions, reserved, flags
    add("4gib-alone", frame(Kind.TEXT, b"")[:8] + struct.pack("!I", 0xFFFFFFFF))
    add("4gib-with-data", frame(Kind.TEXT, b"")[:8] + struct.pack("!I", 0xFFFFFFFF) + b"x" * 100)
    add("over-limit", HEADER.pack(1, Kind.TEXT, 0, 0, 0, (1 << 20) + 1) + b"x" * 64)
    add("length-too-long", HEADER.pack(1, Kind.CONTROL, 0, 0, 0, 50) + b'{"type":"x"}')
    for kind in range(0, 10):
        add(f"empty-kind-{kind}", frame(kind, b""))
        add(f"empty-kind-{kind}-fin", frame(kind, b"", flags=0xFF))
    for kind in (0, 7, 99, 255):
        add(f"unknown-kind-{kind}", frame(kind, b"whatever"))
    for version in (0, 2, 255):
        add(f"version-{version}", frame(Kind.TEXT, b"v", version=version))
    add("reserved-set", frame(Kind.TEXT, b"r", reserved=1))
    add("all-flags", frame(Kind.TEXT, b"f", flags=0xFF))
    add("header-only-part", b"\x01\x02\x00")
    add("one-byte", b"\x01")

    # audio and credit edges
    for rate in (0, 7999, 192_001, 0xFFFFFFFF):
        add(f"audio-rate-{rate}", frame(Kind.AUDIO, AUDIO_META.pack(rate, 1) + b"\x00\x00"))
    add("audio-odd", frame(Kind.AUDIO, AUDIO_META.pack(24000, 1) + b"\x00"))
    add("audio-short-meta", frame(Kind.AUDIO, b"\x00" * 7))
    add("audio-max-item", frame(Kind.AUDIO, AUDIO_META.pack(24000, 0xFFFFFFFF), flags=FIN))
    for n in range(9):
        add(f"credit-{n}-bytes", frame(Kind.CREDIT, b"\xff" * n))

    # sequence numbers: wrap, repeat, jump
    add("seq-wrap", frame(Kind.TEXT, b"a", 0xFFFFFFFF) + frame(Kind.TEXT, b"b", 0))
    add("seq-repeat", frame(Kind.TEXT, b"a", 5) + frame(Kind.TEXT, b"b", 5))
    add("seq-jump", frame(Kind.TEXT, b"a", 0) + frame(Kind.TEXT, b"b", 0x80000000))

    # tool-call choreography
    add("fin-never-started", tc({"call_id": "ghost", "arguments_delta": "}"}))
    add("fin-never-started-named", tc({"call_id": "ghost2", "name": "f"}))
    add("double-fin", tc({"call_id": "d", "name": "f", "arguments_delta": "{}"}), tc({"call_id": "d"}))
    add(
        "interleaved",
        tc({"call_id": "a", "name": "f", "arguments_delta": '{"x":'}, flags=0),
        tc({"call_id": "b", "name": "g", "arguments_delta": '{"y":'}, flags=0),
        tc({"call_id": "a", "arguments_delta": "1}"}),
        tc({"call_id": "b", "arguments_delta": "2}"}),
    )
    add(
        "too-many-open",
        *(tc({"call_id": f"o{i}", "name": "f", "arguments_delta": "{"}, flags=0) for i in range(40)),
    )
    add(
        "split-surrogate-pair",  # each half alone is a lone surrogate in its fragment
        tc({"call_id": "p", "name": "f", "arguments_delta": '{"e":"\ud83d'}, flags=0),
        tc({"call_id": "p", "arguments_delta": '\ude00"}'}),
    )
    add("tool-result-from-server", frame(Kind.TOOL_RESULT, j({"call_id": "c", "ok": True, "result": 1})))

    # a bad frame in the middle of good ones
    good = valid_messages()
    add("bad-in-the-middle", good[1], frame(Kind.CONTROL, b"[" * 5000), good[6])

    # every truncation of valid messages
    for i, msg in enumerate(good):
        for cut in range(len(msg)):
            add(f"truncated-{i}-{cut}", msg[:cut] if cut else msg[:1])
    return cases


CORPUS = hostile_corpus()
SMALL = [(name, msg) for name, msg in CORPUS if len(msg) <= 400]


def normalise(frames: list) -> list:
    return [
        AudioFrame(f.seq, f.sample_rate, f.item_id, bytes(f.pcm), f.nbytes, f.flags) if isinstance(f, AudioFrame) else f
        for f in frames
    ]


def check_decoded(got: list) -> None:
    for f in got:
        assert isinstance(f, FRAME_TYPES), f


# ------------------------------------------------------------------ corpus through every decoder


def test_the_corpus_is_large() -> None:
    assert len(CORPUS) > 700


def test_corpus_message_mode_never_raises_and_yields() -> None:
    failures = []
    for name, msg in CORPUS:
        got = FrameDecoder().feed_message(BytesSource(msg))
        check_decoded(got)
        internal = [f for f in got if isinstance(f, Malformed) and f.reason.startswith("internal decoder error")]
        if not got or internal:  # every non-empty message yields at least one frame or Malformed
            failures.append((name, got))
    assert not failures


def test_corpus_demux_accounts_for_every_frame() -> None:
    for mode in ("feed_message", "feed"):
        d = Demux()
        for name, msg in CORPUS:
            frames_before, malformed_before = d.stats.frames, d.stats.malformed
            decoded = FrameDecoder().feed_message(BytesSource(msg)) if mode == "feed_message" else None
            events = getattr(d, mode)(msg)
            if decoded is not None:
                assert d.stats.frames - frames_before == len(decoded), name
                bad = sum(isinstance(f, Malformed) for f in decoded)
                assert d.stats.malformed - malformed_before == bad, name
                assert events or all(isinstance(f, (TextFrame, ToolCallFrame)) for f in decoded), name
            for e in events:
                if isinstance(e, ProtocolErrorEvent):
                    assert not e.reason.startswith("internal decoder error"), (name, e)
            d.tools.expire(math.inf)
        assert d.decoder.buffered <= 12 + d.decoder.max_payload


def test_small_corpus_stream_mode_every_split() -> None:
    for name, msg in SMALL:
        whole_dec = FrameDecoder()
        whole = normalise(whole_dec.feed(msg))
        pending = whole_dec.pending_error()
        for cut in range(len(msg) + 1):
            dec = FrameDecoder()
            got = normalise(dec.feed(msg[:cut]) + dec.feed(msg[cut:]))
            assert got == whole, f"{name}: split at {cut}"
            assert dec.pending_error() == pending, f"{name}: split at {cut}"
        d = Demux()
        for i in range(len(msg)):
            d.feed(msg[i : i + 1])
        d.flush_text()


def test_deep_json_and_surrogates_become_the_documented_outcomes() -> None:
    by_name = dict(CORPUS)

    def feed(name: str) -> list:
        d = Demux()
        events = d.feed_message(by_name[name])
        assert d.tools.open_calls == 0
        return [e for e in events if not (isinstance(e, ProtocolErrorEvent) and "sequence gap" in e.reason)]

    (e,) = feed("deep-[-1000-CONTROL")
    assert isinstance(e, ProtocolErrorEvent) and "JSON nested 1001 deep, limit is 64" in e.reason
    events = feed("surrogate-delta-'\\ud800'")
    assert isinstance(events[-1], ToolCallInvalid) and events[-1].error["type"] == "invalid_arguments"
    (e,) = feed("surrogate-call_id-'\\ud800'")
    assert isinstance(e, ProtocolErrorEvent) and "lone surrogate" in e.reason
    assert [ev.error["type"] for ev in feed("surrogate-name-'\\ud800'")] == ["invalid_name"]
    assert feed("split-surrogate-pair")[-1].error["type"] == "invalid_arguments"
    events = [ev for ev in feed("interleaved") if isinstance(ev, ToolCallReady)]
    assert [ev.arguments for ev in events] == [{"x": 1}, {"y": 2}]


# ------------------------------------------------------------------ hypothesis

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(), max_size=12),  # includes lone surrogates
)
json_tree = st.recursive(
    json_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(st.characters(), max_size=6), kids, max_size=4)
    ),
    max_leaves=40,
)


def nested(depth: int, leaf: object) -> object:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


json_deep_tree = st.builds(nested, st.integers(0, 300), json_tree)


def wire_json(obj: object) -> bytes:
    """Any tree as JSON text on the wire (NaN literals, surrogate escapes and all)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=True).encode()


@FAST
@given(st.binary(max_size=400), st.integers(8, 300))
def test_random_bytes(data: bytes, limit: int) -> None:
    check_decoded(FrameDecoder(max_payload=limit).feed_message(BytesSource(data)))
    dec = FrameDecoder(max_payload=limit)
    for i in range(0, len(data), 5):
        check_decoded(dec.feed(data[i : i + 5]))
        assert dec.buffered <= 12 + limit
    dec.pending_error()
    Demux(max_payload=limit).feed_message(data)
    Demux(max_payload=limit).feed(data)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 8), st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=80)),
        min_size=1,
        max_size=6,
    )
)
def test_random_frames_behind_valid_headers(frames: list[tuple[int, int, int, bytes]]) -> None:
    msg = b"".join(encode_raw(kind, seq, payload, flags) for kind, flags, seq, payload in frames)
    got = FrameDecoder().feed_message(BytesSource(msg))
    check_decoded(got)
    assert len(got) == len(frames)  # valid headers: every frame decodes to exactly one item
    d = Demux()
    d.feed_message(msg)
    assert d.stats.frames == len(frames)


@FAST
@given(json_deep_tree, st.sampled_from(["control", "tool_call", "tool_result", "arguments"]))
def test_random_json_trees_in_every_json_kind(tree: object, where: str) -> None:
    if where == "control":
        payload = b'{"type":"x","v":' + wire_json(tree) + b"}"
        msg = encode_raw(Kind.CONTROL, 0, payload)
    elif where == "tool_call":
        msg = encode_raw(Kind.TOOL_CALL, 0, b'{"call_id":"c","name":"f","x":' + wire_json(tree) + b"}", FIN)
    elif where == "tool_result":
        msg = encode_raw(Kind.TOOL_RESULT, 0, b'{"call_id":"c","ok":true,"result":' + wire_json(tree) + b"}")
    else:
        delta = wire_json({"a": tree}).decode()
        msg = encode_raw(Kind.TOOL_CALL, 0, wire_json({"call_id": "c", "name": "f", "arguments_delta": delta}), FIN)
    d = Demux()
    events = d.feed_message(msg)
    assert events
    assert not any(isinstance(e, ProtocolErrorEvent) and "internal" in e.reason for e in events)
    assert d.tools.open_calls == 0


@FAST
@given(json_deep_tree)
def test_encode_json_either_encodes_a_round_trip_or_raises_encode_error(tree: object) -> None:
    try:
        raw = encode_json(tree)
    except EncodeError:
        return
    assert decode_json(raw.decode("utf-8")) == tree


@FAST
@given(st.text(st.characters(), min_size=0, max_size=300), json_tree)
def test_sequencer_never_sends_what_cannot_be_decoded(call_id: str, result: object) -> None:
    s = Sequencer(start=2**32 - 1)
    try:
        raw = s.tool_result(call_id, ok=True, result=result)
    except EncodeError:
        assert s.next_seq == 2**32 - 1
        return
    assert s.next_seq == 0
    (got,) = FrameDecoder().feed_message(BytesSource(raw))
    assert isinstance(got, ToolResultFrame) and got.call_id == call_id and got.result == result


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "\ud800"]),
            st.one_of(st.none(), st.sampled_from(["f", "", "n" * 129, "g\udfff"])),
            st.text(st.characters(), max_size=20),
            st.booleans(),
        ),
        max_size=20,
    ),
    st.floats(0, 300),
)
def test_assembler_random_fragments_never_raise_and_release_everything(fragments: list, later: float) -> None:
    now = [0.0]
    a = ToolCallAssembler(max_open_calls=2, max_argument_bytes=30, max_open_bytes=60, clock=lambda: now[0])
    for call_id, name, delta, final in fragments:
        a.feed(ToolCallFrame(0, call_id, name, delta, FIN if final else 0))
        assert a.open_bytes <= 60 and a.open_calls <= 2
        now[0] += 7.0
    a.expire(now[0] + later + 120.0)
    assert a.open_calls == 0 and a.open_bytes == 0
