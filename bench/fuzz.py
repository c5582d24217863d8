"""Fuzz the decoders: generated hostile input must never make one raise.

    python -m bench fuzz [--cases N] [--seed S]

Runs ``--cases`` generated cases (default 100,000) through each decoder:

* ``FrameDecoder.feed_message``: one WebSocket message per case;
* ``FrameDecoder.feed``: the same kind of message split at 0-3 random points, then
  ``pending_error()``; the bytes held are checked against the bound after every piece;
* ``Demux.feed_message`` / ``feed``: one long-lived demux (sequence numbers, open tool calls,
  split UTF-8 all carry over from case to case; a fake clock moves 1 s per case so open calls
  time out), every 8th case in stream mode;
* ``ToolCallAssembler``: streams of TOOL_CALL frames over a small pool of call ids (hostile ones
  included), decoded by ``FrameDecoder`` and fed to one long-lived assembler (fake clock, 0.5 s
  per case); its bounds on open calls and bytes are checked after every frame.

Cases are structure-aware: valid frames of every kind, then mutations of the header (version,
kind, flags, reserved byte, sequence number, a length that lies, 4 GiB), of the JSON tree (deep
nesting, lone surrogates in each string field, NaN/Infinity, huge numbers and strings, duplicate
keys, wrong types, missing fields, non-objects) and of the payload bytes (bit flips, inserts,
deletes, truncation, BOMs, overlong and CESU-8 UTF-8), and messages of 1-3 frames cut anywhere.

Counts per decoder: exceptions (must be 0; the first few are kept with their input), bound
violations (must be 0), malformed frames, events, time. Writes docs/benchmarks/fuzz.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyclient.demux import Demux
from pyclient.events import ProtocolErrorEvent, ToolCallInvalid, ToolCallReady
from pyclient.frames import (
    AUDIO_META,
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_JSON_DEPTH,
    BytesSource,
    FrameDecoder,
    Kind,
    Malformed,
    ToolCallFrame,
)
from pyclient.tools import DEFAULT_MAX_OPEN_BYTES, DEFAULT_MAX_OPEN_CALLS, ToolCallAssembler

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
MAX_EXAMPLES = 5  # exceptions kept with their input

# ------------------------------------------------------------------ hostile ingredients

LONE = ["\ud800", "\udfff", "x\udbff", "\udc00\ud800", "a\ud83d", "\ude00b"]
HOSTILE_STRINGS = [*LONE, "", "\x00", "\ufeff", "\u2028", "🙂", "n" * 129, "i" * 257, "é" * 70]
RAW_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 4400, "-0", "1E400", "0.1e-99999", "nul"]
BAD_UTF8 = [
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xff",
    b"\xf0\x9f\x99",
]
CONTROL_TYPES = ["hello", "end_of_turn", "interrupted", "error", "done", "playback_position", "x", ""]
TOOL_NAMES = ["calculator", "clock", "f", "", None, "n" * 129, "calc\ud800", "名前"]
CALL_IDS = ["a", "b", "c", "d", "call_1", "i" * 256, "i" * 257, "\ud800", "", "é"]
RAW = "\x00RAW{}\x00"  # placeholder for raw JSON text spliced into json.dumps output


class Gen:
    """Structure-aware case generator (deterministic for a seed)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.seq = 0

    # ---- leaves

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def word(self) -> str:
        r = self.r
        if self.chance(0.15):
            return r.choice(HOSTILE_STRINGS)
        if self.chance(0.003):
            return "s" * r.randrange(10_000, 400_000)  # huge, rare: they cost time
        return "".join(r.choice('abcxyz é🙂"\\{[]}') for _ in range(r.randrange(0, 12)))

    def deep_text(self) -> str:
        r = self.r
        n = r.choice([MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 200, 1000, r.randrange(0, 3000)])
        style = r.randrange(4)
        if style == 0:
            return "[" * n + "]" * n
        if style == 1:
            return '{"k":' * n + "1" + "}" * n
        if style == 2:
            return "[" * n  # never closed
        return "".join(r.choice(["[", '{"k":']) for _ in range(n)) + "0" + "]}" * (n // 2)

    def value(self, depth: int = 0) -> Any:
        r = self.r
        k = r.randrange(10)
        if k == 0 and depth < 3:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        if k == 1 and depth < 3:
            return {self.word(): self.value(depth + 1) for _ in range(r.randrange(4))}
        if k == 2:
            return r.choice([None, True, False, 0, -1, 2**31, 2**64, 1.5, -0.0])
        if k == 3:
            return r.randrange(-(10**6), 10**6)
        return self.word()

    def hostile_value(self, raws: list[str]) -> Any:
        r = self.r
        k = r.randrange(6)
        if k == 0:
            raws.append(self.deep_text())
            return RAW.format(len(raws) - 1)
        if k == 1:
            raws.append(r.choice(RAW_LITERALS))
            return RAW.format(len(raws) - 1)
        if k == 2:
            return r.choice(LONE)
        if k == 3:
            return r.choice([None, 5, 1.5, True, [], {}, ["x"], {"a": 1}])
        return self.value()

    # ---- JSON payloads

    def json_object(self, kind: int) -> dict[str, Any]:
        r = self.r
        if kind == Kind.CONTROL:
            obj: dict[str, Any] = {"type": r.choice(CONTROL_TYPES)}
            for key in r.sample(["item_id", "code", "message", "connection_id", "turn", "x"], r.randrange(3)):
                obj[key] = self.value()
            return obj
        if kind == Kind.TOOL_CALL:
            obj = {"call_id": r.choice(CALL_IDS), "arguments_delta": self.arguments_piece()}
            name = r.choice(TOOL_NAMES)
            if name is not None:
                obj["name"] = name
            return obj
        ok = self.chance(0.5)
        obj = {"call_id": r.choice(CALL_IDS), "ok": ok}
        obj["result" if ok else "error"] = self.value() if ok else {"type": "tool_error", "message": self.word()}
        return obj

    def arguments_piece(self) -> str:
        r = self.r
        k = r.randrange(8)
        if k == 0:
            return json.dumps({"expression": "6*7", "x": self.value()})
        if k == 1:
            return r.choice(['{"a":', "1}", '"', "}", "{", "", " ", ',"b":[1,2]}'])
        if k == 2:
            return self.deep_text()
        if k == 3:
            return r.choice(LONE) + r.choice(["", "}"])
        if k == 4:
            return '{"v":' + r.choice(RAW_LITERALS) + "}"
        if k == 5:
            return '{"s":"\\ud800"}' if self.chance(0.5) else '{"a":1,"a":2}'
        return self.word()

    def json_payload(self, kind: int) -> bytes:
        r = self.r
        raws: list[str] = []
        obj: Any = self.json_object(kind)
        k = r.randrange(10)
        if k < 4:  # replace or add a field with something hostile
            key = r.choice([*obj, self.word()])
            obj[key] = self.hostile_value(raws)
        elif k == 4 and obj:  # drop a field
            del obj[r.choice(list(obj))]
        elif k == 5:  # not an object at all
            obj = self.hostile_value(raws) if self.chance(0.5) else [obj]
        text = json.dumps(obj, ensure_ascii=self.chance(0.7), allow_nan=True)
        for i, raw in enumerate(raws):
            text = text.replace(json.dumps(RAW.format(i), ensure_ascii=False), raw)
        if self.chance(0.05):  # duplicate key, spliced in as text
            text = text.replace("{", '{"type":"done","call_id":"dup",', 1)
        return text.encode("utf-8", "surrogatepass")  # raw surrogates become CESU-8 bytes

    # ---- frames and messages

    def payload(self, kind: int) -> bytes:
        r = self.r
        if kind in (Kind.CONTROL, Kind.TOOL_CALL, Kind.TOOL_RESULT):
            return self.json_payload(kind)
        if kind == Kind.AUDIO:
            rate = r.choice([24000, 48000, 8000, 192000, 7999, 192001, 0, 0xFFFFFFFF])
            pcm = r.randbytes(2 * r.randrange(0, 64) + (1 if self.chance(0.1) else 0))
            meta = AUDIO_META.pack(rate, r.choice([0, 1, 7, 0xFFFFFFFF]))
            return meta[: r.randrange(9)] if self.chance(0.05) else meta + pcm
        if kind == Kind.TEXT:
            data = self.word().encode("utf-8", "surrogatepass")
            return r.choice(BAD_UTF8) + data if self.chance(0.2) else data
        if kind == Kind.CREDIT:
            return r.randbytes(4 if self.chance(0.85) else r.randrange(9))
        return r.randbytes(r.randrange(32))

    def mutate_bytes(self, data: bytes) -> bytes:
        r = self.r
        b = bytearray(data)
        for _ in range(r.randrange(1, 4)):
            k = r.randrange(6)
            if k == 0 and b:
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            elif k == 1:
                pos = r.randrange(len(b) + 1)
                b[pos:pos] = r.choice(BAD_UTF8) if self.chance(0.5) else r.randbytes(r.randrange(1, 8))
            elif k == 2 and b:
                start = r.randrange(len(b))
                del b[start : start + r.randrange(1, 8)]
            elif k == 3:
                del b[r.randrange(len(b) + 1) :]
            elif k == 4 and b:
                b[r.randrange(len(b))] = r.choice(b'[]{}"\\:,')
            else:
                b = bytearray(r.choice(BAD_UTF8)) + b
        return bytes(b)

    def frame(self, kind: int | None = None) -> bytes:
        r = self.r
        if kind is None:
            kind = r.choice([*Kind, *Kind, *Kind, r.randrange(256)])
        payload = self.payload(kind)
        if self.chance(0.2):
            payload = self.mutate_bytes(payload)
        version, flags, reserved = 1, r.choice([0, 0, 1, r.randrange(256)]), 0
        seq, length = self.seq, len(payload)
        self.seq = (self.seq + 1) % (1 << 32)
        if self.chance(0.25):  # header mutation
            k = r.randrange(7)
            if k == 0:
                version = r.choice([0, 2, 255])
            elif k == 1:
                reserved = r.randrange(1, 256)
            elif k == 2:
                seq = r.choice([0, 0xFFFFFFFF, r.randrange(1 << 32), (seq + 2) % (1 << 32)])
                self.seq = (seq + 1) % (1 << 32)
            elif k == 3:
                length = max(0, length + r.randrange(-8, 9))
            elif k == 4:
                length = r.choice([0xFFFFFFFF, DEFAULT_MAX_PAYLOAD + 1, 1 << 31])
            elif k == 5:
                kind = r.randrange(256)
            else:
                length = 0
        return HEADER.pack(version, kind & 0xFF, flags, reserved, seq, length) + payload

    def message(self) -> bytes:
        r = self.r
        msg = b"".join(self.frame() for _ in range(r.choice([1, 1, 1, 2, 3])))
        if self.chance(0.05):
            msg = msg[: r.randrange(len(msg) + 1)] or msg[:1]
        return msg

    def tool_call_frame(self) -> bytes:
        r = self.r
        obj: dict[str, Any] = {"call_id": r.choice(CALL_IDS[:5]) if self.chance(0.9) else r.choice(CALL_IDS)}
        if self.chance(0.35):
            name = r.choice(TOOL_NAMES)
            if name is not None:
                obj["name"] = name
        obj["arguments_delta"] = self.arguments_piece()
        payload = json.dumps(obj, ensure_ascii=self.chance(0.7)).encode("utf-8", "surrogatepass")
        if self.chance(0.05):
            payload = self.mutate_bytes(payload)
        flags = 1 if self.chance(0.3) else 0
        return HEADER.pack(1, Kind.TOOL_CALL, flags, 0, 0, len(payload)) + payload


# ------------------------------------------------------------------ runs


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cases = 0
        self.exceptions = 0
        self.violations = 0
        self.malformed = 0
        self.events = 0
        self.failed_calls = 0
        self.ready_calls = 0
        self.input_bytes = 0
        self.seconds = 0.0
        self.examples: list[dict[str, Any]] = []

    def exception(self, index: int, data: bytes, exc: BaseException) -> None:
        self.exceptions += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "case": index,
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    "input_hex": data[:400].hex(),
                    "input_bytes": len(data),
                    "traceback": traceback.format_exc(limit=6)[-2000:],
                }
            )

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "examples"}
        out["cases_per_s"] = round(self.cases / self.seconds) if self.seconds else 0
        out["seconds"] = round(self.seconds, 2)
        out["examples"] = self.examples
        return out


def count_decoded(t: Tally, decoded: list[Any]) -> None:
    t.malformed += sum(isinstance(d, Malformed) for d in decoded)
    t.events += len(decoded)


def run_message_mode(cases: int, seed: int) -> Tally:
    t, g = Tally("FrameDecoder.feed_message"), Gen(seed)
    dec = FrameDecoder()
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        t.input_bytes += len(msg)
        try:
            decoded = dec.feed_message(BytesSource(msg))
            count_decoded(t, decoded)
            if not decoded:
                t.violations += 1  # a non-empty message must yield at least one frame or Malformed
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


def run_stream_mode(cases: int, seed: int) -> Tally:
    t, g = Tally("FrameDecoder.feed"), Gen(seed)
    bound = HEADER_SIZE + DEFAULT_MAX_PAYLOAD
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        if g.chance(0.1):
            msg += g.message()
        t.input_bytes += len(msg)
        cuts = sorted(g.r.randrange(len(msg) + 1) for _ in range(g.r.randrange(4)))
        try:
            dec = FrameDecoder()
            prev = 0
            for cut in [*cuts, len(msg)]:
                count_decoded(t, dec.feed(msg[prev:cut]))
                prev = cut
                if dec.buffered > bound:
                    t.violations += 1
            if dec.pending_error() is not None:
                t.malformed += 1
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


def run_demux(cases: int, seed: int) -> Tally:
    t, g = Tally("Demux"), Gen(seed)
    now = [0.0]
    d = Demux(clock=lambda: now[0])
    start = time.perf_counter()
    for i in range(cases):
        msg = g.message()
        t.input_bytes += len(msg)
        now[0] += 1.0
        try:
            events = d.feed(msg) if i % 8 == 7 else d.feed_message(msg)
            t.events += len(events)
            t.failed_calls += sum(isinstance(e, ToolCallInvalid) for e in events)
            t.ready_calls += sum(isinstance(e, ToolCallReady) for e in events)
            if any(isinstance(e, ProtocolErrorEvent) and e.reason.startswith("internal") for e in events):
                t.violations += 1  # the last line of defence must not be needed
            if d.tools.open_bytes > d.tools.max_open_bytes or d.tools.open_calls > d.tools.max_open_calls:
                t.violations += 1
            if i % 8 == 7 and d.decoder.buffered:  # stream mode: start the next case in sync
                d.decoder = FrameDecoder(d.decoder.max_payload)
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.malformed = d.stats.malformed
    t.seconds = time.perf_counter() - start
    return t


def run_assembler(cases: int, seed: int) -> Tally:
    t, g = Tally("ToolCallAssembler"), Gen(seed)
    now = [0.0]
    a = ToolCallAssembler(clock=lambda: now[0])
    dec = FrameDecoder()
    start = time.perf_counter()
    for i in range(cases):
        msg = g.tool_call_frame()
        t.input_bytes += len(msg)
        now[0] += 0.5
        try:
            events: list[Any] = list(a.expire())
            for f in dec.feed_message(BytesSource(msg)):
                if isinstance(f, Malformed):
                    t.malformed += 1
                elif isinstance(f, ToolCallFrame):
                    events += a.feed(f)
                if a.open_bytes > DEFAULT_MAX_OPEN_BYTES or a.open_calls > DEFAULT_MAX_OPEN_CALLS or a.open_bytes < 0:
                    t.violations += 1
            t.events += len(events)
            t.failed_calls += sum(isinstance(e, ToolCallInvalid) for e in events)
            t.ready_calls += sum(isinstance(e, ToolCallReady) for e in events)
        except Exception as exc:
            t.exception(i, msg, exc)
        t.cases += 1
    t.seconds = time.perf_counter() - start
    return t


RUNS: list[tuple[str, Callable[[int, int], Tally]]] = [
    ("message", run_message_mode),
    ("stream", run_stream_mode),
    ("demux", run_demux),
    ("assembler", run_assembler),
]


def write(out: Path, args: argparse.Namespace, tallies: list[Tally]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "args": {"cases": args.cases, "seed": args.seed},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "decoders": [t.as_dict() for t in tallies],
    }
    (out / "fuzz.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "# Decoder fuzzing",
        "",
        f"{args.cases:,} generated cases per decoder, seed {args.seed}, CPython {data['python']}. "
        "Cases start from valid frames of every kind and mutate header fields, JSON structure (deep "
        "nesting, lone surrogates, NaN, huge values, wrong types) and payload bytes; see bench/fuzz.py. "
        "Exceptions and bound violations must be 0. Malformed: frames reported as malformed "
        "(counted, the stream goes on). Out: decoded items (FrameDecoder: frames and Malformed; Demux and "
        "assembler: events). Failed calls: tool calls answered with a failed result.",
        "",
        "| decoder | cases | exceptions | bound violations | malformed | out | failed calls | seconds | cases/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tallies:
        lines.append(
            f"| {t.name} | {t.cases:,} | {t.exceptions} | {t.violations} | {t.malformed:,} | {t.events:,} "
            f"| {t.failed_calls:,} | {t.seconds:.1f} | {t.cases / t.seconds if t.seconds else 0:,.0f} |"
        )
    lines += ["", f"Reproduce: `./dev bench fuzz --cases {args.cases} --seed {args.seed}`", ""]
    md = "\n".join(lines)
    (out / "fuzz.md").write_text(md)
    return md


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", type=int, default=100_000, help="generated cases per decoder (default 100,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", choices=[name for name, _ in RUNS], action="append", help="run only these decoders")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    tallies = []
    for k, (name, run) in enumerate(RUNS):
        if args.only and name not in args.only:
            continue
        print(f"{name}: {args.cases:,} cases ...", flush=True)
        t = run(args.cases, args.seed * 1000 + k)
        print(f"  {t.exceptions} exceptions, {t.violations} violations, {t.malformed:,} malformed, {t.seconds:.1f} s")
        for ex in t.examples:
            print(f"  case {ex['case']}: {ex['error']}\n{ex['traceback']}", file=sys.stderr)
        tallies.append(t)
    print(write(args.out, args, tallies))
    return 1 if any(t.exceptions or t.violations for t in tallies) else 0
