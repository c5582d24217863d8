"""Seeded, deterministic scenarios of the simulated AI server (chosen by ``/ws?scenario=``).

Each scenario is a coroutine ``(session, params) -> None``. Given the same parameters and
``seed`` it sends the same frames (timing aside). Parameters come from the query string; every
one has a default and a documented range (docs/PROTOCOL.md, "Dev server scenarios").

A scenario is a script of protocol-neutral *steps* on its session: ``text``, ``audio``,
``tool_call``, ``control("end_of_turn" | "interrupted" | "error")``, ``cut_items``,
``pause_reading``/``resume_reading``, ``wait_mic_end``, ``sleep`` (pacing: a resumed emulated
session fast-forwards through turns already delivered without waiting). ``session.Session`` renders them as
pyclient.v1 frames; the emulated providers (devserver/emulation.py) render the same steps as
OpenAI Realtime events or Gemini Live messages, so one seed gives the same words, samples and
tool calls on every protocol. ``faults`` and ``hostile`` forge pyclient.v1 frames (``raw``,
``seq``): the emulations have their own ``faults``, and no ``hostile``.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .session import Session

VOICE_RATE = 24_000
FRAME_MS = 20
STALL_PROBABILITY = FRAME_MS / 500  # voice jitter: a network stall about every 0.5 s

_WORDS = tuple(
    " ".join(
        (
            "the model streams tokens in bursts while the page keeps up and every buffer stays bounded",
            "audio frames arrive as pcm sixteen at twenty four kilohertz and the worklet plays them",
            "backpressure reaches tcp so a slow consumer stalls the server instead of the page",
            "café naïve résumé über straße 東京 🙂 ✓ ≤ 1 MB",
        )
    ).split(" ")
)


class ParamError(ValueError):
    pass


MAX_PARAM_CHARS = 64  # a number never needs more; longer text is refused before parsing
MAX_LIST_ITEMS = 64


@dataclass(frozen=True)
class Params:
    """Query parameters of one ``/ws`` connection; every accessor validates (``ParamError``)."""

    raw: dict[str, str]

    def _number(self, name: str, text: str, lo: float, hi: float, cast: type) -> Any:
        """``text`` as a finite number in ``lo..hi`` (an ``int`` cast truncates: ``2.5`` is 2)."""
        if len(text) > MAX_PARAM_CHARS:
            raise ParamError(f"{name}: {len(text)} characters, expected a number of at most {MAX_PARAM_CHARS}")
        try:
            value = float(text)
        except ValueError as exc:
            raise ParamError(f"{name}={text!r} is not a number") from exc
        if not math.isfinite(value):  # inf, nan, 1e400
            raise ParamError(f"{name}={text!r} is not a finite number")
        if cast is int:
            value = int(value)
        if not lo <= value <= hi:
            raise ParamError(f"{name}={value} outside {lo}..{hi}")
        return value

    def num(self, name: str, default: float, lo: float, hi: float, cast: type = float) -> Any:
        text = self.raw.get(name)
        if text is None:
            return cast(default)
        return self._number(name, text, lo, hi, cast)

    def num_list(self, name: str, default: list[Any], lo: float, hi: float, cast: type = float) -> list[Any]:
        """A comma-separated list of 1..MAX_LIST_ITEMS numbers; an empty item is an error."""
        text = self.raw.get(name)
        if text is None:
            return list(default)
        items = text.split(",")
        if len(items) > MAX_LIST_ITEMS:
            raise ParamError(f"{name}: {len(items)} items, expected at most {MAX_LIST_ITEMS}")
        if any(not item.strip() for item in items):
            raise ParamError(f"{name}={text!r}: an empty item; expected comma-separated numbers")
        return [self._number(name, item.strip(), lo, hi, cast) for item in items]

    def rng(self) -> random.Random:
        return random.Random(self.num("seed", 1, 0, 2**31, int))


def _tokens(rng: random.Random, n: int) -> list[str]:
    return [(" " if i else "") + rng.choice(_WORDS) for i in range(n)]


def _calc_expect(a: int, b: int) -> Callable[[Any], bool]:
    def check(frame: Any) -> bool:
        return frame.ok and isinstance(frame.result, (int, float)) and abs(frame.result - a * b) < 1e-9

    return check


def _is_string_result(frame: Any) -> bool:
    return frame.ok and isinstance(frame.result, str) and bool(frame.result)


async def _send_split_utf8(s: Session, token: str) -> None:
    """Send a token in two frames split inside a multi-byte character."""
    raw = token.encode()
    cut = next((i for i in range(1, len(raw)) if raw[i] & 0xC0 == 0x80), len(raw) // 2)
    await s.text(raw[:cut])
    await s.text(raw[cut:])


async def chat(s: Session, p: Params) -> None:
    """Bursty token text: ~``tokens`` tokens over ~``burst`` s, then ``pause`` s, ``turns`` times.

    Each turn streams one tool call mid-text (a calculator, then a clock, alternating) and one
    token split inside a UTF-8 character. ``badtool=1`` adds a call to a tool nobody has.
    """
    rng = p.rng()
    turns = p.num("turns", 3, 1, 1000, int)
    n = p.num("tokens", 200, 1, 100_000, int)
    burst = p.num("burst", 1.0, 0.0, 60.0)
    pause = p.num("pause", 3.0, 0.0, 600.0)
    badtool = p.num("badtool", 0, 0, 1, int)
    for turn in range(turns):
        tokens = _tokens(rng, n)
        if turn:
            tokens[0] = "\n\n" + tokens[0]
        tool_at, split_at = n // 2, n // 3
        i = 0
        while i < n:
            size = rng.randint(5, 25)
            for j in range(i, min(n, i + size)):
                if j == split_at:
                    await _send_split_utf8(s, tokens[j] + " 🙂")
                else:
                    await s.text(tokens[j])
                if j == tool_at:
                    if turn % 2 == 0:
                        a, b = rng.randint(2, 999), rng.randint(2, 999)
                        await s.tool_call("calculator", {"expression": f"{a} * {b}"}, _calc_expect(a, b))
                    else:
                        await s.tool_call("clock", {}, _is_string_result)
                    if badtool:
                        await s.tool_call("launch_rockets", {"count": 3})
            i += size
            if burst:
                await s.sleep(burst * size / n)
        await s.control("end_of_turn", turn=turn)
        if turn < turns - 1 and pause:
            await s.sleep(pause)


def _synth_frame(rng: random.Random, start: int, count: int, rate: int, pitch: float) -> bytes:
    """Voice-like test signal: a pitched tone with two harmonics, tremolo and a little noise."""
    out = array.array("h", bytes(2 * count))
    two_pi = 2 * math.pi
    for k in range(count):
        t = (start + k) / rate
        env = 0.55 + 0.45 * math.sin(two_pi * 3.0 * t)
        phase = two_pi * pitch * t
        v = math.sin(phase) + 0.4 * math.sin(2 * phase) + 0.2 * math.sin(3 * phase)
        out[k] = int(max(-32767, min(32767, 9000 * env * v + rng.uniform(-300, 300))))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


async def voice(s: Session, p: Params) -> None:
    """``items`` utterances of ``seconds`` each: PCM16 mono in 20 ms frames at real time, with
    the transcript as text and a clock tool call in the first.

    ``rates`` (comma-separated, default ``rate`` = 24000) cycles the sample rate per item.
    ``jitter`` (ms) makes the network bursty: about every half second the link stalls for up
    to that long, then the frames that waited go out at once (the average rate stays real
    time). ``barge`` (s) makes the server cut each item that far in with an
    ``interrupted`` frame (server-side barge-in). A client's ``playback_position`` report for
    the current item also cuts it. ``listen`` (s) then waits for the client's microphone
    (``input_audio_end``) and answers how much audio it heard. ``tps`` (tokens/s) replaces
    the transcript's pace (2.5 words/s, one with a frame) with bursts of text: every 250 ms,
    a quarter second's worth of tokens at once (voice load for bench/mainthread.py).
    """
    rng = p.rng()
    seconds = p.num("seconds", 4.0, 0.02, 3600.0)
    items = p.num("items", 1, 1, 1000, int)
    default_rate = p.num("rate", VOICE_RATE, 8000, 96000, int)
    rates = p.num_list("rates", [default_rate], 8000, 96000, int)
    jitter = p.num("jitter", 0.0, 0.0, 2000.0) / 1000
    barge = p.num("barge", 0.0, 0.0, 3600.0)
    listen = p.num("listen", 0.0, 0.0, 3600.0)
    tps = p.num("tps", 0.0, 0.0, 10_000.0)
    frames = max(1, round(seconds * 1000 / FRAME_MS))
    pitch = 140 + rng.random() * 80
    burst_frames = 250 // FRAME_MS  # with tps: text goes every this many frames ...
    per_burst = max(1, round(tps * burst_frames * FRAME_MS / 1000))  # ... this many tokens at once
    for item_id in range(1, items + 1):
        rate = rates[(item_id - 1) % len(rates)]
        per_frame = rate * FRAME_MS // 1000
        words = _tokens(rng, max(1, int(seconds * (tps or 2.5))))
        word_every = burst_frames if tps else max(1, frames // len(words))
        words_at_once = per_burst if tps else 1
        t0 = time.monotonic()
        sent_words = 0
        stall_until = 0.0
        for i in range(frames):
            due = t0 + i * FRAME_MS / 1000
            if jitter and rng.random() < STALL_PROBABILITY:
                stall_until = max(stall_until, due + rng.random() * jitter)
            delay = max(due, stall_until) - time.monotonic()
            if delay > 0:
                await s.sleep(delay)
            if item_id in s.cut_items:
                break  # the client cut this item (barge-in): stop sending it
            if barge and i * FRAME_MS / 1000 >= barge:
                await s.control("interrupted", item_id=item_id)
                break
            pcm = _synth_frame(rng, i * per_frame, per_frame, rate, pitch)
            await s.audio(pcm, sample_rate=rate, item_id=item_id, final=i == frames - 1)
            if i % word_every == 0 and sent_words < len(words):
                for w in words[sent_words : sent_words + words_at_once]:
                    await s.text(w)
                sent_words = min(len(words), sent_words + words_at_once)
            if item_id == 1 and i == frames // 2:
                await s.tool_call("clock", {}, _is_string_result)
        else:
            for w in words[sent_words:]:
                await s.text(w)
        await s.control("end_of_turn", item_id=item_id)
    if listen:
        heard = await s.wait_mic_end(listen)
        await s.text(
            f"\n\nI heard {heard['ms']:.0f} ms of your audio ({heard['samples']} samples at {heard['rate']} Hz)."
        )


async def flood(s: Session, p: Params) -> None:
    """Audio as fast as the socket takes it: up to ``mb`` MB within ``seconds`` s.

    ``text_every=N`` sends a text token after every N audio frames and ``tool_every=M`` a
    calculator call after every M: text and tools must survive any audio overflow policy.
    """
    rng = p.rng()
    limit = int(p.num("mb", 50.0, 0.001, 10_000.0) * 1_000_000)
    seconds = p.num("seconds", 30.0, 0.1, 3600.0)
    text_every = p.num("text_every", 0, 0, 1_000_000, int)
    tool_every = p.num("tool_every", 0, 0, 1_000_000, int)
    rate = VOICE_RATE
    per_frame = rate * FRAME_MS // 1000
    bank = [_synth_frame(rng, i * per_frame, per_frame, rate, 180.0) for i in range(50)]
    deadline = time.monotonic() + seconds
    i = 0
    while s.stats.audio_samples_sent * 2 < limit and time.monotonic() < deadline:
        await s.audio(bank[i % len(bank)], sample_rate=rate, item_id=1)
        i += 1
        if text_every and i % text_every == 0:
            await s.text(f"{i // text_every}{rng.choice(_WORDS)} ")
        if tool_every and i % tool_every == 0:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            await s.tool_call("calculator", {"expression": f"{a} * {b}"}, _calc_expect(a, b))
    await s.control("end_of_turn", item_id=1)


async def upload(s: Session, p: Params) -> None:
    """Send-side backpressure: the server stops reading for ``hold`` s while it asks for
    ``calls`` tool results of ``kb`` KiB each (the demo's ``repeat`` tool)."""
    hold = p.num("hold", 3.0, 0.0, 120.0)
    calls = p.num("calls", 8, 1, 1000, int)
    kb = p.num("kb", 256, 1, 1024, int)
    s.pause_reading()
    for _ in range(calls):
        expected = kb * 1024

        def check(frame: Any, expected: int = expected) -> bool:
            return frame.ok and isinstance(frame.result, str) and len(frame.result) == expected

        await s.tool_call("repeat", {"text": "0123456789abcdef" * 64, "times": kb}, check)
    await s.text(f"asked for {calls} results of {kb} KiB while not reading for {hold} s. ")
    await asyncio.sleep(hold)
    s.resume_reading()


async def faults(s: Session, p: Params) -> None:
    """Valid text around frames a robust client must survive (docs/PROTOCOL.md lists them).

    Malformed frames: bad JSON, unknown kind, wrong version, bad audio rate, odd PCM length,
    a header announcing 2 MiB with 4 bytes behind it. Tool calls that must fail cleanly: a
    tool nobody registered and arguments that are not JSON. Invalid UTF-8 is replaced.
    """
    from pyclient.frames import AUDIO_META, HEADER, Kind

    await s.text("before the faults. ")
    await s.raw(s.seq.raw(Kind.CONTROL, b"{not json"))
    await s.raw(s.seq.raw(77, b"from the future"))
    await s.raw(s.seq.raw(Kind.TEXT, b"v2 text", version=2))
    await s.raw(s.seq.raw(Kind.AUDIO, AUDIO_META.pack(5, 1) + b"\x00\x00"))
    await s.raw(s.seq.raw(Kind.AUDIO, AUDIO_META.pack(24000, 1) + b"\x00"))
    await s.raw(HEADER.pack(1, Kind.TEXT, 0, 0, s.seq._take(), 2 * 1024 * 1024) + b"oops")
    await s.text(b"bad utf-8: \xff! ")
    await s.tool_call("launch_rockets", {"count": 3})
    call_id = "call_badjson"
    s.expect_result(call_id, "calculator")
    s.stats.tool_calls_sent += 1
    await s.raw(s.seq.tool_call(call_id, '{"expression": ', name="calculator", final=True))
    await s.text("after the faults.")
    await s.control("end_of_turn")


async def hostile(s: Session, p: Params) -> None:
    """What a hostile (or broken) server might send to grow a client's state without bound or
    crash its decoder (issue 7), with valid text around it all: ``start. middle. end.``.

    A hello with 1,000 keys; a control frame nested 1,000 deep; tool calls whose arguments are
    nested 1,000 deep or a lone surrogate; call ids holding a lone surrogate or 300 KiB long
    (malformed: nobody can be answered); a 300 KiB tool name; 40 calls left open (32 may stay
    open; the client times them out); 2,000 ``interrupted`` frames for distinct items and 500
    for the same one; 150 finished calls (more cards than the page keeps).
    """
    from pyclient.frames import Kind

    def call_frame(call_id: str, name: str | None, delta: str, final: bool) -> bytes:
        obj: dict[str, Any] = {"call_id": call_id, "arguments_delta": delta}
        if name is not None:
            obj["name"] = name
        return s.seq.raw(Kind.TOOL_CALL, json.dumps(obj).encode(), flags=1 if final else 0)

    deep = "[" * 1000 + "]" * 1000
    await s.text("start. ")
    await s.control("hello", **{f"k{i}": i for i in range(1000)})
    await s.raw(s.seq.raw(Kind.CONTROL, b'{"type":"deep","a":' + deep.encode() + b"}"))
    s.expect_result("call_deep", "calculator")
    s.expect_result("call_surrogate", "calculator")
    s.expect_result("call_long_name", "x" * 100)
    s.stats.tool_calls_sent += 3
    await s.raw(call_frame("call_deep", "calculator", deep, True))
    await s.raw(call_frame("call_surrogate", "calculator", "\ud800", True))
    # json.dumps writes a lone surrogate as the escape \\ud800: valid JSON text that decodes to an
    # invalid string. As the arguments of a call, the call fails; inside a call id, the frame is malformed.
    await s.raw(call_frame("call_\ud800", "calculator", "{}", True))
    await s.raw(call_frame("c" * 300 * 1024, "calculator", "{}", True))
    await s.raw(call_frame("call_long_name", "n" * 300 * 1024, "{}", True))
    for i in range(40):
        s.expect_result(f"call_open_{i}", "clock")
        s.stats.tool_calls_sent += 1
        await s.raw(call_frame(f"call_open_{i}", "clock", "{", False))
    await s.text("middle. ")
    rng = p.rng()
    pcm = _synth_frame(rng, 0, 480, VOICE_RATE, 200.0)
    for _ in range(10):
        await s.audio(pcm, sample_rate=VOICE_RATE, item_id=1)
    for item in range(2, 2002):
        await s.control("interrupted", item_id=item)
    for _ in range(500):
        await s.control("interrupted", item_id=1)
    # The open calls were sent before all of this: `linger` s more than the client's
    # tool_call_timeout and they have expired before the next calls arrive.
    await asyncio.sleep(p.num("linger", 3.0, 0.0, 60.0))
    for _ in range(150):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        await s.tool_call("calculator", {"expression": f"{a} * {b}"}, _calc_expect(a, b))
    await s.text("end.")
    await s.control("end_of_turn")


SCENARIOS: dict[str, Callable[[Session, Params], Awaitable[None]]] = {
    "hostile": hostile,
    "chat": chat,
    "voice": voice,
    "flood": flood,
    "faults": faults,
    "upload": upload,
}
