"""Helpers shared by the JSON protocols' codecs (OpenAI Realtime, Gemini Live), sans-I/O."""

from __future__ import annotations

import binascii
import re
from collections import OrderedDict
from typing import Any

from ..events import ProtocolErrorEvent
from ..frames import encode_json
from .base import Incoming

MAX_COUNTED_TYPES = 64


def message(obj: dict[str, Any]) -> str:
    """One outgoing JSON text message (strict: ``encode_json`` raises ``EncodeError``)."""
    return encode_json(obj).decode("utf-8")


def b64(pcm: Any) -> str:
    """PCM bytes as base64 text: one C call, never per sample."""
    return binascii.b2a_base64(pcm, newline=False).decode("ascii")


def pcm_from_base64(text: str) -> bytes:
    """PCM16 bytes from base64 text (one C call, never per sample); raises ``ValueError``
    saying why. An odd last byte is dropped: half a sample would shift every later one."""
    pcm = binascii.a2b_base64(text)  # binascii.Error is a ValueError
    if not pcm:
        raise ValueError("no base64 data in it")
    return pcm[:-1] if len(pcm) % 2 else pcm


def base64_samples(message: Incoming, key: str) -> int:
    """PCM16 samples in the base64 string value of ``key`` (e.g. ``delta``) in a JSON message,
    counted from its length (a regex search, no decoding): for dropped audio."""
    text = message if isinstance(message, str) else text_of(message)
    if not isinstance(text, str):
        return 0
    m = re.compile(rf'"{re.escape(key)}"\s*:\s*"([A-Za-z0-9+/=]*)"').search(text)
    if m is None:
        return 0
    b64 = m.group(1)
    n = len(b64)
    pad = len(b64) - len(b64.rstrip("="))
    return max(0, n * 3 // 4 - pad) // 2


def text_of(message: Incoming) -> str | ProtocolErrorEvent:
    """The JSON text of a message: text as is, binary (bytes or a ByteSource) as UTF-8."""
    if isinstance(message, str):
        return message
    bytes_like = isinstance(message, (bytes, bytearray, memoryview))
    raw = bytes(message) if bytes_like else message.bytes_at(0, len(message))  # type: ignore[union-attr]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ProtocolErrorEvent(f"binary message of {len(raw)} bytes is not UTF-8 JSON: {exc.reason}", len(raw))


class Counter:
    """Counts by name with at most ``limit`` names; the rest are summed under ``other``."""

    def __init__(self, limit: int = MAX_COUNTED_TYPES) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        if name in self.counts or len(self.counts) < self.limit:
            self.counts[name] = self.counts.get(name, 0) + 1
        else:
            self.counts["other"] = self.counts.get("other", 0) + 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class Bounded(OrderedDict):  # type: ignore[type-arg]
    """An insertion-ordered dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)
