"""Seeded, deterministic scenarios of the simulated AI server (chosen by ``/ws?scenario=``).

Each scenario is a coroutine ``(session, params) -> None``. Given the same parameters and
``seed`` it sends the same frames (timing aside). Parameters come from the query string; every
one has a default and a documented range (docs/PROTOCOL.md, "Dev server scenarios").
"""

from __future__ import annotations

import array
import asyncio
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


@dataclass(frozen=True)
class Params:
    raw: dict[str, str]

    def num(self, name: str, default: float, lo: float, hi: float, cast: type = float) -> Any:
        text = self.raw.get(name)
        if text is None:
            return cast(default)
        try:
            value = cast(float(text)) if cast is int else cast(text)
        except ValueError as exc:
            raise ParamError(f"{name}={text!r} is not a number") from exc
        if not lo <= value <= hi:
            raise ParamError(f"{name}={value} outside {lo}..{hi}")
        return value

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
                await asyncio.sleep(burst * size / n)
        await s.control("end_of_turn", turn=turn)
        if turn < turns - 1 and pause:
            await asyncio.sleep(pause)


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
    (``input_audio_end``) and answers how much audio it heard.
    """
    rng = p.rng()
    seconds = p.num("seconds", 4.0, 0.02, 3600.0)
    items = p.num("items", 1, 1, 1000, int)
    default_rate = p.num("rate", VOICE_RATE, 8000, 96000, int)
    rates = [int(r) for r in p.raw.get("rates", str(default_rate)).split(",") if r.strip()]
    if not rates or not all(8000 <= r <= 96000 for r in rates):
        raise ParamError(f"rates={p.raw.get('rates')!r}: need sample rates in 8000..96000")
    jitter = p.num("jitter", 0.0, 0.0, 2000.0) / 1000
    barge = p.num("barge", 0.0, 0.0, 3600.0)
    listen = p.num("listen", 0.0, 0.0, 3600.0)
    frames = max(1, round(seconds * 1000 / FRAME_MS))
    pitch = 140 + rng.random() * 80
    for item_id in range(1, items + 1):
        rate = rates[(item_id - 1) % len(rates)]
        per_frame = rate * FRAME_MS // 1000
        words = _tokens(rng, max(1, int(seconds * 2.5)))
        word_every = max(1, frames // len(words))
        t0 = time.monotonic()
        sent_words = 0
        stall_until = 0.0
        for i in range(frames):
            due = t0 + i * FRAME_MS / 1000
            if jitter and rng.random() < STALL_PROBABILITY:
                stall_until = max(stall_until, due + rng.random() * jitter)
            delay = max(due, stall_until) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if item_id in s.cut_items:
                break  # the client cut this item (barge-in): stop sending it
            if barge and i * FRAME_MS / 1000 >= barge:
                await s.control("interrupted", item_id=item_id)
                break
            pcm = _synth_frame(rng, i * per_frame, per_frame, rate, pitch)
            await s.audio(pcm, sample_rate=rate, item_id=item_id, final=i == frames - 1)
            if i % word_every == 0 and sent_words < len(words):
                await s.text(words[sent_words])
                sent_words += 1
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
    s._pending[call_id] = {"name": "calculator", "expect": None}
    s.stats.tool_calls_sent += 1
    await s.raw(s.seq.tool_call(call_id, '{"expression": ', name="calculator", final=True))
    await s.text("after the faults.")
    await s.control("end_of_turn")


SCENARIOS: dict[str, Callable[[Session, Params], Awaitable[None]]] = {
    "chat": chat,
    "voice": voice,
    "flood": flood,
    "faults": faults,
    "upload": upload,
}
