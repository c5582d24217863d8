"""The protobuf wire format, the small part Pipecat's frames need: sans-I/O, never per-byte FFI.

Why not the ``protobuf`` package: its pure-Python runtime is about 1 MB to load in the page
and builds a descriptor pool at import, for five tiny messages. This reader is ~100 lines,
reads a received JS ArrayBuffer through a ``ByteSource`` in a couple of windows (audio stays
a zero-copy view), and raises only ``WireError`` (a ``ValueError``), which the codec turns into
a counted malformed message. ``tests/unit/test_protowire.py`` checks it against the
``protobuf`` package (Pipecat's own generated ``frames_pb2``) under CPython.

Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit; groups (3, 4) are
refused, as proto3 never produces them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..frames import ByteSource, BytesSource

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10
WINDOW = 256  # bytes read per window of a ByteSource (headers of a frame fit in one)
SMALL_LEN = 4096  # a length-delimited field at most this long is read into Python; longer: a view


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


# --------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # int64 negatives: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A varint field (proto3 leaves 0 out: so does this)."""
    return _varint(number << 3 | VARINT) + _varint(value) if value else b""


def len_field(number: int, data: bytes | bytearray | memoryview) -> bytes:
    """A length-delimited field: bytes, a UTF-8 string, or an embedded message."""
    return _varint(number << 3 | LEN) + _varint(len(data)) + bytes(data)


def string_field(number: int, text: str) -> bytes:
    return len_field(number, text.encode("utf-8")) if text else b""


# --------------------------------------------------------------------------- decoding


class Reader:
    """Reads fields of the message at ``[start, end)`` of a ``ByteSource`` (or bytes).

    Each field is ``(number, wire_type, value)``: an ``int`` for varint and fixed fields; for
    a length-delimited field ``bytes`` when it is at most ``SMALL_LEN`` long, else a view of the
    source (``ByteSource.view_at``: a JS ``Uint8Array`` in the page, a ``memoryview`` here).
    ``nested(start, end)`` reads an embedded message: use ``fields(raw_spans=True)`` to get
    ``(start, end)`` spans for length-delimited fields instead of their contents.
    """

    __slots__ = ("_base", "_buf", "_src", "end", "start")

    def __init__(self, source: ByteSource | bytes | bytearray | memoryview, start: int = 0, end: int | None = None):
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = BytesSource(source)
        self._src = source
        self.start = start
        self.end = len(source) if end is None else end
        self._base = 0
        self._buf = b""

    def nested(self, start: int, end: int) -> Reader:
        r = Reader.__new__(Reader)
        r._src, r.start, r.end, r._base, r._buf = self._src, start, end, self._base, self._buf
        return r

    def _byte_window(self, pos: int) -> tuple[bytes, int]:
        """Bytes holding ``pos`` (as many as the window has), and ``pos``'s index in them."""
        if not (self._base <= pos < self._base + len(self._buf)):
            self._base = pos
            self._buf = self._src.bytes_at(pos, min(WINDOW, self.end - pos))
        return self._buf, pos - self._base

    def _varint_at(self, pos: int) -> tuple[int, int]:
        result = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            if pos >= self.end:
                raise WireError(f"truncated varint at byte {pos}")
            buf, i = self._byte_window(pos)
            b = buf[i]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result & 0xFFFF_FFFF_FFFF_FFFF, pos  # as protobuf: 64 bits, the rest dropped
            shift += 7
        raise WireError(f"varint longer than {MAX_VARINT_BYTES} bytes at byte {pos - MAX_VARINT_BYTES}")

    def _bytes(self, start: int, length: int) -> bytes:
        buf, i = self._byte_window(start)
        if i + length <= len(buf):
            return buf[i : i + length]
        return self._src.bytes_at(start, length)

    def fields(self, raw_spans: bool = False) -> Iterator[tuple[int, int, Any]]:
        pos = self.start
        while pos < self.end:
            key, pos = self._varint_at(pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise WireError(f"field number 0 at byte {pos}")
            if wire_type == VARINT:
                value, pos = self._varint_at(pos)
            elif wire_type == LEN:
                length, pos = self._varint_at(pos)
                if length > self.end - pos:
                    raise WireError(f"field {number}: {length} bytes declared, {self.end - pos} left")
                if raw_spans:
                    value = (pos, pos + length)
                elif length <= SMALL_LEN:
                    value = self._bytes(pos, length)
                else:
                    value = self._src.view_at(pos, length)
                pos += length
            elif wire_type in (I64, I32):
                size = 8 if wire_type == I64 else 4
                if size > self.end - pos:
                    raise WireError(f"field {number}: truncated fixed{size * 8}")
                value = int.from_bytes(self._bytes(pos, size), "little")
                pos += size
            else:
                raise WireError(f"field {number}: wire type {wire_type} (groups are not proto3)")
            yield number, wire_type, value


def as_text(value: Any, what: str) -> str:
    """A string field's value: strict UTF-8 (``WireError`` otherwise)."""
    if not isinstance(value, bytes):
        value = bytes(value.to_bytes() if hasattr(value, "to_bytes") else value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not UTF-8: {exc.reason}") from exc
