"""Replay a recorded session through a codec, under plain CPython: what would the page have shown?

    python -m pyclient.replay --protocol pyclient|openai-realtime|gemini-live FILE

FILE holds one received WebSocket message per line: a text message as is, a binary message as
``b64:`` followed by its base64. Empty lines are skipped. The output is ONE JSON object on
stdout::

    {"protocol", "messages", "text", "user_text", "audio": {"samples", "sample_rate", "sha256"},
     "tool_calls": [{"id", "name", "arguments"}], "turns", "interruptions", "ignored",
     "errors": [{"line", "error"}], "server_errors": [{"code", "message"}]}

``text`` is all assistant text in order (the codec's one transcript source), ``user_text`` the
input transcriptions in order, ``audio.sha256`` the SHA-256 of all PCM16 LE bytes in order (so
it compares with a server's own checksum), ``sample_rate`` the rate of the last audio (None
without audio). A tool call that cannot run is listed with ``arguments: null`` and its
``error``. A line that cannot be read (bad base64) and every ``ProtocolErrorEvent`` is an entry
in ``errors``; nothing raises. The exit status is 0, or 2 (with one line on stderr) when FILE
cannot be read.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .events import (
    AudioChunk,
    Event,
    Ignored,
    Interrupted,
    ProtocolErrorEvent,
    ServerError,
    TextDelta,
    ToolCallInvalid,
    ToolCallReady,
    TurnEnded,
    UserTranscript,
)

PROTOCOLS = ("pyclient", "openai-realtime", "gemini-live")
MAX_ERRORS = 1000  # errors listed; more are counted in errors_omitted


def _decoder(protocol: str) -> tuple[Callable[[str | bytes], list[Event]], Callable[[], list[Event]]]:
    """``(decode, finish)`` for a protocol."""
    if protocol == "openai-realtime":
        from .protocols.openai_realtime import OpenAIRealtimeCodec

        codec: Any = OpenAIRealtimeCodec()
        return codec.decode, codec.finish
    if protocol == "gemini-live":
        from .protocols.gemini_live import GeminiLiveCodec

        codec = GeminiLiveCodec()
        return codec.decode, codec.finish
    try:
        from .protocols import get_codec  # type: ignore[attr-defined]
    except ImportError:
        get_codec = None
    if get_codec is not None:
        codec = get_codec("pyclient")
        codec = codec() if isinstance(codec, type) else codec
        return codec.decode, codec.finish
    from .demux import Demux

    demux = Demux()

    def decode(message: str | bytes) -> list[Event]:
        if isinstance(message, str):
            return [ProtocolErrorEvent(f"text message of {len(message)} characters: pyclient.v1 is binary")]
        return demux.feed_message(message)

    return decode, lambda: list(demux.flush_text())


class Summary:
    """What the events of a session add up to (the replay's output)."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.messages = 0
        self.text: list[str] = []
        self.user_text: list[str] = []
        self.samples = 0
        self.sample_rate: int | None = None
        self.sha = hashlib.sha256()
        self.tool_calls: list[dict[str, Any]] = []
        self.turns = 0
        self.interruptions = 0
        self.ignored = 0
        self.errors: list[dict[str, Any]] = []
        self.errors_omitted = 0
        self.server_errors: list[dict[str, str]] = []

    def error(self, line: int, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "error": reason})
        else:
            self.errors_omitted += 1

    def add(self, line: int, events: Iterable[Event]) -> None:
        for ev in events:
            if isinstance(ev, TextDelta):
                self.text.append(ev.text)
            elif isinstance(ev, AudioChunk):
                if ev.samples:
                    self.samples += ev.samples
                    self.sample_rate = ev.sample_rate
                    self.sha.update(bytes(ev.pcm))
            elif isinstance(ev, UserTranscript):
                self.user_text.append(ev.text)
            elif isinstance(ev, ToolCallReady):
                self.tool_calls.append({"id": ev.call_id, "name": ev.name, "arguments": ev.arguments})
            elif isinstance(ev, ToolCallInvalid):
                self.tool_calls.append({"id": ev.call_id, "name": ev.name, "arguments": None, "error": ev.error})
            elif isinstance(ev, TurnEnded):
                self.turns += 1
            elif isinstance(ev, Interrupted):
                self.interruptions += 1
            elif isinstance(ev, Ignored):
                self.ignored += 1
            elif isinstance(ev, ProtocolErrorEvent):
                self.error(line, ev.reason)
            elif isinstance(ev, ServerError):
                self.server_errors.append({"code": ev.code, "message": ev.message})

    def as_dict(self) -> dict[str, Any]:
        out = {
            "protocol": self.protocol,
            "messages": self.messages,
            "text": "".join(self.text),
            "user_text": self.user_text,
            "audio": {"samples": self.samples, "sample_rate": self.sample_rate, "sha256": self.sha.hexdigest()},
            "tool_calls": self.tool_calls,
            "turns": self.turns,
            "interruptions": self.interruptions,
            "ignored": self.ignored,
            "errors": self.errors,
            "server_errors": self.server_errors,
        }
        if self.errors_omitted:
            out["errors_omitted"] = self.errors_omitted
        return out


def replay(protocol: str, lines: Iterable[str]) -> dict[str, Any]:
    """Decode every message line through ``protocol``'s codec; the summary as a dict."""
    decode, finish = _decoder(protocol)
    summary = Summary(protocol)
    n = 0
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        message: str | bytes = line
        if line.startswith("b64:"):
            try:
                message = binascii.a2b_base64(line[4:].strip())
            except (binascii.Error, ValueError) as exc:
                summary.error(n, f"bad b64: line: {exc}")
                continue
        summary.messages += 1
        try:
            summary.add(n, decode(message))
        except Exception as exc:  # a codec bug: still a result, never a traceback
            summary.error(n, f"decoder raised {type(exc).__name__}: {str(exc)[:200]}")
    try:
        summary.add(n, finish())
    except Exception as exc:
        summary.error(n, f"finish raised {type(exc).__name__}: {str(exc)[:200]}")
    return summary.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyclient.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True)
    parser.add_argument("file", metavar="FILE", help="one received message per line (binary as b64:...)")
    args = parser.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8", errors="surrogateescape", newline="") as f:
            lines = f.read().split("\n")
    except OSError as exc:
        print(f"replay: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    result = replay(args.protocol, lines)
    text = json.dumps(result, ensure_ascii=False)
    # lone surrogates (from JSON escapes or undecodable bytes) leave as \\udXXX: still valid JSON
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
