"""Our protobuf wire reader/writer against the ``protobuf`` package and Pipecat's own
generated ``frames_pb2`` (the reference), both directions, plus arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.protocols.protowire import (
    LEN,
    VARINT,
    Reader,
    WireError,
    as_text,
    len_field,
    string_field,
    varint_field,
)
from tests.pipecat_bot.harness import PIPECAT_MISSING, load_frames_pb2

frames_pb2 = load_frames_pb2()
pytestmark = pytest.mark.skipif(frames_pb2 is None, reason=PIPECAT_MISSING)


def fields_of(data: bytes) -> list[tuple[int, int, object]]:
    return list(Reader(data).fields())


def test_reads_every_pipecat_frame_kind_as_protobuf_writes_it() -> None:
    audio = bytes(range(256)) * 40  # 10 KiB: read as a view, not copied
    f = frames_pb2.Frame()
    f.audio.id, f.audio.name, f.audio.audio = 2**40 + 7, "TTSAudioRawFrame#3", audio
    f.audio.sample_rate, f.audio.num_channels, f.audio.pts = 24000, 1, 123456789
    ((number, wire_type, span),) = list(Reader(f.SerializeToString()).fields(raw_spans=True))
    assert (number, wire_type) == (2, LEN)
    inner = Reader(f.SerializeToString()).nested(*span)
    got = {n: v for n, _, v in inner.fields()}
    assert got[1] == 2**40 + 7 and as_text(got[2], "name") == "TTSAudioRawFrame#3"
    assert bytes(got[3]) == audio and got[4] == 24000 and got[5] == 1 and got[6] == 123456789

    t = frames_pb2.Frame()
    t.text.text = "café 🙂"
    ((_, _, body),) = fields_of(t.SerializeToString())
    assert {n: as_text(v, "t") for n, _, v in fields_of(body) if n == 3} == {3: "café 🙂"}

    m = frames_pb2.Frame()
    m.message.data = '{"label":"rtvi-ai","type":"bot-ready"}'
    ((n, _, body),) = fields_of(m.SerializeToString())
    assert n == 4 and as_text(fields_of(body)[0][2], "data") == m.message.data

    i = frames_pb2.Frame()
    i.interruption.SetInParent()  # an empty message: present, no fields
    assert fields_of(i.SerializeToString()) == [(5, LEN, b"")]


def test_what_we_write_protobuf_reads() -> None:
    pcm = b"\x01\x02" * 320
    ours = len_field(2, len_field(3, pcm) + varint_field(4, 16000) + varint_field(5, 1))
    f = frames_pb2.Frame.FromString(ours)
    assert f.WhichOneof("frame") == "audio"
    assert (f.audio.audio, f.audio.sample_rate, f.audio.num_channels) == (pcm, 16000, 1)
    msg = len_field(4, string_field(1, '{"x": "é"}'))
    assert frames_pb2.Frame.FromString(msg).message.data == '{"x": "é"}'
    assert varint_field(1, 0) == b"" and string_field(1, "") == b""  # proto3 leaves defaults out


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip_with_protobuf(value: int) -> None:
    f = frames_pb2.Frame()
    f.audio.id = value
    f.audio.sample_rate = 16000
    ((_, _, body),) = fields_of(f.SerializeToString())
    got = {n: v for n, t, v in fields_of(body) if t == VARINT}
    assert got.get(1, 0) == value
    assert frames_pb2.AudioRawFrame.FromString(varint_field(1, value)).id == value


def test_a_ten_byte_varint_keeps_64_bits_as_protobuf_does() -> None:
    eleven_ones = b"\x08" + b"\xff" * 9 + b"\x7f"  # 70 bits of ones in ten bytes
    ((_, _, value),) = fields_of(eleven_ones)
    assert value == frames_pb2.AudioRawFrame.FromString(eleven_ones).id == 2**64 - 1


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x12", "truncated varint"),
        (b"\x12\x05ab", "5 bytes declared"),
        (b"\x08" + b"\xff" * 11, "longer than 10"),
        (b"\x0b", "wire type 3"),
        (b"\x00\x01", "field number 0"),
        (b"\x09\x01\x02", "truncated fixed64"),
    ],
)
def test_malformed_input_raises_wire_error_only(data: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        fields_of(data)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    try:
        for _, wire_type, value in Reader(data).fields():
            if wire_type == LEN:
                list(Reader(value).fields())  # a nested message, read to its end
    except WireError:
        pass


def test_as_text_refuses_bad_utf8() -> None:
    with pytest.raises(WireError, match="not UTF-8"):
        as_text(b"\xff\xfe", "TextFrame.text")
